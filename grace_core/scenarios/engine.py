"""``ws.scenarios``: the scenario runs a workspace remembers (projections of ``scenario.*`` events)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from grace_core.events import Event, canonical_json

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = ["Scenarios"]


class Scenarios:
    """The scenario runs recorded in a workspace and their score timelines (``run_scenario`` makes them)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        ws.projections.register(
            "scenarios", "scenario.*", _apply, tables=["scenario_runs", "scenario_scores"]
        )

    def runs(self) -> pd.DataFrame:
        """Scenario runs, oldest first: scenario, seed, loops, state, final scores."""
        return self.ws.sql("SELECT * FROM scenario_runs ORDER BY started_at, id")

    def scores(self, run_id: str | None = None) -> pd.DataFrame:
        """The learning curve of a run (the latest when not named): one row per window, a column per score."""
        if run_id is None:
            runs = self.runs()
            if runs.empty:
                return pd.DataFrame(columns=["hours"])
            run_id = str(runs["id"].iloc[-1])
        long = self.ws.sql(
            "SELECT seq, elapsed_s / 3600 AS hours, score, value FROM scenario_scores WHERE run_id = ? ORDER BY seq",
            [run_id],
        )
        if long.empty:
            return pd.DataFrame(columns=["hours"])
        order = list(dict.fromkeys(long["score"]))
        wide = long.pivot_table(index="hours", columns="score", values="value", aggfunc="last", dropna=False)
        return wide.reindex(columns=order).reset_index().rename_axis(columns=None)


def _apply(con: Any, events: Iterable[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "scenario.started":
            con.execute(
                "INSERT INTO scenario_runs VALUES (?, ?, ?, 0, ?, 'running', make_timestamptz(?::BIGINT), NULL, NULL)",
                [e.id, p["scenario"], int(p["seed"]), json.dumps(list(p["loops"])), e.ts_us],
            )
        elif e.topic == "scenario.scored":
            rows = [
                [p["run"], e.seq, e.ts_us, float(p["elapsed_s"]), str(k), None if v is None else float(v)]
                for k, v in p["scores"].items()
            ]
            if rows:
                con.executemany(
                    "INSERT INTO scenario_scores VALUES (?, ?, make_timestamptz(?::BIGINT), ?, ?, ?)", rows
                )
        elif e.topic == "scenario.finished":
            con.execute(
                "UPDATE scenario_runs SET state = 'finished', finished_at = make_timestamptz(?::BIGINT), "
                "hours = ? / 3600, scores = ? WHERE id = ?",
                [e.ts_us, float(p["elapsed_s"]), canonical_json(p["scores"]), p["run"]],
            )
