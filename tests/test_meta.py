"""The meta-loop: tunes a loop's parameter within governed bounds, keeps what helps, reverts what hurts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from grace_core import Event, Loop, ManualClock, Scheduler, Workspace, open_workspace
from grace_core.errors import PermissionDenied

BEST = 12.0


class Toy(Loop):
    """A loop whose objective is best when its knob is 12 (and whose other loops are left alone)."""

    name: ClassVar[str] = "toy"
    topics: ClassVar[tuple[str, ...]] = ("toy.*",)
    params: ClassVar[Mapping[str, Any]] = {"interval": 60.0, "knob": 5.0}
    tunable: ClassVar[Mapping[str, tuple[float, float]]] = {"knob": (1.0, 20.0)}

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        return None

    def objective(self, ws: Workspace, since: float, until: float) -> float | None:
        return -abs(float(ws.loops.param(self.name, "knob")) - BEST)


def _ws(seed: int = 5) -> Workspace:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=seed)
    ws.loops.add(Toy())
    return ws


def _tune(ws: Workspace, hours: float) -> None:
    ws.loops.start("toy")
    ws.loops.start("meta")
    ws.loops.run_for(hours=hours)


def test_meta_finds_the_better_value_and_reverts_a_harmful_change() -> None:
    with _ws() as ws:
        assert "toy" in ws.meta.candidates()
        _tune(ws, hours=12)
        changes = ws.meta.changes("toy")
        judged = changes[changes["status"] != "applied"]
        last = judged.iloc[-1]
        settled = last["new_value"] if last["status"] == "kept" else last["old_value"]
        assert abs(settled - BEST) < 1.0, changes  # from 5 it climbed to about 12 (steps of 25 %)
        assert {"kept", "reverted"} <= set(changes["status"])
        reverted = changes[changes["status"] == "reverted"].iloc[0]
        assert reverted["after"] < reverted["baseline"]
        kept = changes[changes["status"] == "kept"].iloc[0]
        assert kept["after"] >= kept["baseline"]
        # every change is a governed param change by "meta", caused by the ledgered decision with its rationale
        applied = ws.ledger.get(kept["id"])
        assert applied.topic == "meta.change_applied"
        assert "baseline objective" in applied.payload["rationale"]
        params = [e for e in ws.ledger.events(topic="loop.param_changed") if e.payload["loop"] == "toy"]
        assert all(e.actor == "meta" for e in params)
        assert any(e.parent_id == kept["id"] for e in params)
        revert = ws.ledger.events(topic="meta.change_reverted")[0]
        assert (
            revert.payload["to"]
            == ws.meta.changes("toy").set_index("id").loc[revert.payload["change_id"]]["old_value"]
        )
        decisions = ws.ledger.events(topic="governance.decision")
        assert any(d.actor == "meta" and d.payload.get("effect") == "allow" for d in decisions)


def test_governance_refuses_meta_an_out_of_bounds_value_but_not_the_operator() -> None:
    with _ws() as ws:
        with pytest.raises(PermissionDenied, match="loop-params-within-bounds"):
            ws.loops.set_param("toy", "knob", 25.0, actor="meta", reason="too far")
        assert ws.loops.param("toy", "knob") == 5.0
        ws.loops.set_param("toy", "knob", 19.5, actor="meta", reason="within bounds")
        assert ws.loops.param("toy", "knob") == 19.5
        ws.loops.set_param("toy", "knob", 25.0, actor="system", reason="the operator knows better")
        assert ws.loops.param("toy", "knob") == 25.0
        with pytest.raises(PermissionDenied):
            ws.loops.set_param("toy", "knob", 3.0, actor="stranger")  # nobody: default deny
        # at 25 (outside), meta moves back towards the bounds: its first proposal is clamped into them
        _tune(ws, hours=2)
        first = ws.meta.changes("toy").iloc[0]
        assert 1.0 <= first["new_value"] <= 20.0


def _run(seed: int) -> tuple[bytes, list[float]]:
    with _ws(seed) as ws:
        _tune(ws, hours=8)
        return ws.ledger.head[1], ws.meta.changes("toy")["new_value"].tolist()


def test_meta_is_deterministic_for_a_seed() -> None:
    first, second = _run(11), _run(11)
    assert first == second
    assert len(first[1]) >= 3


class TwoKnobs(Toy):
    """Two tunable parameters, so which one each decision moves is a random draw."""

    params: ClassVar[Mapping[str, Any]] = {"interval": 60.0, "knob": 5.0, "other": 5.0}
    tunable: ClassVar[Mapping[str, tuple[float, float]]] = {"knob": (1.0, 20.0), "other": (1.0, 20.0)}


def _decisions(ws: Workspace) -> list[tuple[str, float, float, str]]:
    frame = ws.meta.changes("toy")
    return list(zip(frame["key"], frame["old_value"], frame["new_value"], frame["status"], strict=True))


@pytest.mark.slow
def test_a_restart_mid_run_makes_the_same_decisions_as_an_uninterrupted_run(tmp_path: Path) -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=13) as ws:
        ws.loops.add(TwoKnobs())
        _tune(ws, hours=8)
        uninterrupted = _decisions(ws)
    path = tmp_path / "tuned.duckdb"
    clock = ManualClock()
    with open_workspace(path, clock=clock, seed=13) as ws:
        ws.loops.add(TwoKnobs())
        _tune(ws, hours=4)  # the last meta tick is at exactly 4 h
        halfway = len(_decisions(ws))
        stopped_at = clock.time()
    # A new process: a new clock at the next meta tick, a new Meta (no random state carried over).
    with open_workspace(path, clock=ManualClock(stopped_at + 300), seed=13) as ws:
        ws.loops.add(TwoKnobs())
        _tune(ws, hours=4 - 300 / 3600)
        resumed = _decisions(ws)
    assert 0 < halfway < len(resumed)
    assert {"knob", "other"} <= {d[0] for d in resumed[halfway:]}  # draws after the restart mattered
    assert resumed == uninterrupted
