"""The meta-loop: tunes the other loops' parameters within governed bounds, and reverts what did not help.

Every loop that declares ``tunable`` (parameter -> (min, max)) and ``objective(ws, since, until)`` (higher is
better) is a candidate. Each tick of the ``meta`` loop, for each candidate in registration order:

1. If a change of that loop is being evaluated and its evaluation window is over, the objective over the window
   since the change is compared with the baseline measured before it: ``meta.change_evaluated`` records both;
   when it got worse, the old value is restored through ``set_param`` (``meta.change_reverted``), otherwise
   the change is kept.
2. Otherwise it measures the objective over the last ``window`` seconds (the baseline; no data, no change), picks
   one tunable parameter and a direction (a seeded hill-climb: keep going the way that last helped, turn around
   after a revert, a coin toss otherwise), moves the value by ``step`` (a fraction of it), clamped to the bounds,
   and records ``meta.change_applied`` with its rationale and baseline. The change itself is a
   ``loop.param_changed`` event by actor ``meta``, caused by that decision, and governance decides it like any
   other: the default pack refuses the meta-loop any value outside the loop's bounds.

Everything the meta-loop decides is on the ledger and in the ``meta_changes`` table. Each decision's randomness
is a ``random.Random`` seeded with the workspace seed, the loop's name and the number of decisions about that
loop so far (a count kept in the workspace), so a run interrupted by a restart decides exactly as an
uninterrupted one; time comes only from the workspace clock.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from .causal import handling
from .errors import GraceError
from .events import Event
from .loops import Loop, Scheduler
from .times import TS, to_us

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["ACTOR", "Meta", "MetaLoop"]

ACTOR = "meta"


class MetaLoop(Loop):
    """The ``meta`` loop (see the module docstring)."""

    name: ClassVar[str] = "meta"
    topics: ClassVar[tuple[str, ...]] = ("meta.*",)
    params: ClassVar[Mapping[str, Any]] = {
        "interval": 300.0,  # seconds between ticks
        "window": 1800.0,  # seconds of history the baseline objective is measured over
        "evaluation": 1800.0,  # seconds a change runs before it is judged
        "step": 0.25,  # a change moves a value by this fraction of it (at least 1 for whole numbers)
        "patience": 3.0,  # evaluation windows without data before a change is judged anyway (and kept)
    }
    process_idle: ClassVar[bool] = True

    def __init__(self, meta: Meta) -> None:
        self.meta = meta

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        return self.meta.tick()


class Meta:
    """The meta-loop's engine (``ws.meta``): its decisions and the table of changes."""

    def __init__(self, ws: Workspace, *, loops: Scheduler) -> None:
        self.ws = ws
        self._loops = loops
        ws.projections.register("meta_changes", "meta.change_*", _apply, tables=["meta_changes"])
        self.loop = loops.add(MetaLoop(self))

    # -- reading ---------------------------------------------------------------------------------------------
    def changes(self, loop: str | None = None) -> pd.DataFrame:
        """Every change the meta-loop made, oldest first."""
        sql = "SELECT * FROM meta_changes" + (" WHERE loop = ?" if loop else "") + " ORDER BY applied_at, id"
        return self.ws.sql(sql, [loop] if loop else None)

    def candidates(self) -> list[str]:
        """Loops the meta-loop tunes: those declaring ``tunable`` and an ``objective`` of their own."""
        return [
            name
            for name in self._loops.names
            if name != MetaLoop.name
            and type(self._loops[name]).tunable
            and type(self._loops[name]).objective is not Loop.objective
        ]

    def _param(self, key: str) -> float:
        return float(self._loops.param(MetaLoop.name, key))

    # -- one tick --------------------------------------------------------------------------------------------
    def tick(self) -> dict[str, Any]:
        applied = evaluated = 0
        pending_by_loop = self._pending()
        for name in self.candidates():
            pending = pending_by_loop.get(name)
            if pending is not None:
                evaluated += self._evaluate(name, pending)
            else:
                applied += self._propose(name)
        return {"applied": applied, "evaluated": evaluated} if applied or evaluated else {}

    def _pending(self) -> dict[str, dict[str, Any]]:
        """loop -> its newest change still being evaluated (one query for every loop, once a tick)."""
        cur = self.ws.ledger.reader().execute(
            'SELECT loop, id, "key", old_value, new_value, baseline, epoch(applied_at) AS applied_at '
            "FROM meta_changes WHERE status = 'applied' ORDER BY applied_at, id"
        )
        columns = [d[0] for d in cur.description]
        return {str(row[0]): dict(zip(columns, row, strict=True)) for row in cur.fetchall()}  # newest wins

    def _objective(self, loop: str, since: float, until: float) -> float | None:
        try:
            value = self._loops[loop].objective(self.ws, since, until)
        except Exception:  # noqa: BLE001 - a broken objective must not stop the tuning of the other loops
            return None
        return float(value) if value is not None and math.isfinite(float(value)) else None

    def _evaluate(self, loop: str, change: dict[str, Any]) -> int:
        now = self.ws.clock.time()
        applied_at = float(change["applied_at"])
        evaluation = self._param("evaluation")
        if now < applied_at + evaluation:
            return 0
        after = self._objective(loop, applied_at, now)
        if after is None and now < applied_at + evaluation * self._param("patience"):
            return 0  # no data yet: wait, up to `patience` windows
        baseline = float(change["baseline"])
        worse = after is not None and after < baseline
        decision = "reverted" if worse else "kept"
        why = (
            f"objective {after:.4g} after the change vs {baseline:.4g} before"
            if after is not None
            else "no data on the objective since the change; keeping it"
        )
        applied = self.ws.ledger.get(str(change["id"]))
        with handling(applied):  # the judgement is a causal child of the decision it judges
            evaluated = self.ws.publish(
                "meta.change_evaluated",
                {
                    "change_id": change["id"],
                    "loop": loop,
                    "key": change["key"],
                    "baseline": baseline,
                    "after": after,
                    "decision": decision,
                    "rationale": why,
                },
                actor=ACTOR,
                resource=f"loop:{loop}",
            )
        if worse:
            old, new = change["old_value"], change["new_value"]
            reason = f"revert meta change {change['id']}: {why} (worse)"
            with handling(evaluated):
                try:
                    self._loops.set_param(loop, change["key"], self._typed(loop, change["key"], old),
                                            actor=ACTOR, reason=reason)  # fmt: skip
                except GraceError as exc:
                    reason = f"{reason}; the revert was refused: {exc}"
                self.ws.publish(
                    "meta.change_reverted",
                    {"change_id": change["id"], "loop": loop, "key": change["key"], "from": new, "to": old,
                     "rationale": reason},
                    actor=ACTOR,
                    resource=f"loop:{loop}",
                )  # fmt: skip
        return 1

    def _propose(self, loop: str) -> int:
        now = self.ws.clock.time()
        window = self._param("window")
        baseline = self._objective(loop, now - window, now)
        if baseline is None:
            return 0
        # The bounds governance holds the meta-loop to (a simulation's floor under intervals included); a
        # parameter pinned by them (min == max) is not a candidate.
        movable: dict[str, tuple[float, float]] = {}
        for k in sorted(type(self._loops[loop]).tunable):
            b = self._loops.bounds(loop, k)
            if b is not None and b[0] < b[1]:
                movable[k] = b
        if not movable:
            return 0
        rng = self._rng(loop)
        key = rng.choice(sorted(movable))
        lo, hi = movable[key]
        old = float(self._loops.param(loop, key))
        direction, why = self._direction(loop, key, rng)
        step = self._param("step")
        new = self._move(loop, key, old, direction, step, lo, hi)
        if new == old:  # at a bound: go the other way
            direction = -direction
            why += f"; {key} is at its {'upper' if direction < 0 else 'lower'} bound, so the other way"
            new = self._move(loop, key, old, direction, step, lo, hi)
        if new == old:
            return 0
        rationale = (
            f"{'raise' if new > old else 'lower'} {loop}.{key} {old:g} -> {new:g} "
            f"(bounds {lo:g}..{hi:g}): {why}; baseline objective {baseline:.4g} over the last {window:g} s"
        )
        cause = self._latest_output(loop, now - window, now)
        with handling(cause) if cause is not None else contextlib.nullcontext():
            decision = self.ws.publish(
                "meta.change_applied",
                {"loop": loop, "key": key, "old": old, "new": new, "baseline": baseline, "window": window,
                 "bounds": [lo, hi], "rationale": rationale, "evidence": cause.id if cause else None},
                actor=ACTOR,
                resource=f"loop:{loop}",
            )  # fmt: skip
        with handling(decision):
            try:
                self._loops.set_param(loop, key, self._typed(loop, key, new), actor=ACTOR, reason=rationale)
            except GraceError as exc:
                self.ws.publish(
                    "meta.change_refused",
                    {"change_id": decision.id, "loop": loop, "key": key, "error": str(exc)[:1000]},
                    actor=ACTOR,
                    resource=f"loop:{loop}",
                )
                return 0
        return 1

    def _latest_output(self, loop: str, since: float, until: float) -> Event | None:
        """The newest event the loop itself wrote in the window as a consequence of another (an insight, an
        incident, a task transition; not its bookkeeping). The decision is published as its causal child, so
        ``ws.causal.lineage`` of a decision reaches back through the output it measured to the raw events
        behind that output. None when the loop wrote no such event."""
        row = (
            self.ws.ledger.reader()
            .execute(
                f"SELECT max(seq) FROM events WHERE actor = ? AND ts >= {TS} "
                f"AND ts < {TS} AND NOT starts_with(topic, 'loop.') "
                "AND NOT starts_with(topic, 'metrics.') AND parent_id IS NOT NULL",
                [loop, to_us(since), to_us(until) + 1],
            )
            .fetchone()
        )
        return None if row is None or row[0] is None else self.ws.ledger.at(int(row[0]))

    def _rng(self, loop: str) -> random.Random:
        """The randomness of the next decision about ``loop``: from the workspace seed and the number of decisions
        about it so far (both in the workspace), so a restart mid-run makes the decisions an uninterrupted run
        makes; a generator created at startup would start its stream over."""
        row = (
            self.ws.ledger.reader()
            .execute("SELECT count(*) FROM meta_changes WHERE loop = ?", [loop])
            .fetchone()
        )
        made = int(row[0]) if row else 0
        return random.Random(f"grace-meta:{self.ws.seed}:{loop}:{made}")  # noqa: S311 - reproducible, not secret

    def _direction(self, loop: str, key: str, rng: random.Random) -> tuple[int, str]:
        """Hill-climb: repeat a kept move, turn around after a reverted one, toss a coin otherwise."""
        frame = self.ws.sql(
            'SELECT old_value, new_value, status FROM meta_changes WHERE loop = ? AND "key" = ? '
            "AND status IN ('kept', 'reverted') ORDER BY applied_at DESC, id DESC LIMIT 1",
            [loop, key],
        )
        coin = 1 if rng.random() < 0.5 else -1
        if frame.empty:
            return coin, "exploring (no earlier change of this parameter)"
        last = frame.iloc[0]
        went = 1 if float(last["new_value"]) > float(last["old_value"]) else -1
        if last["status"] == "kept":
            return went, "the last move this way was kept"
        return -went, "the last move the other way was reverted"

    def _move(
        self, loop: str, key: str, old: float, direction: int, step: float, lo: float, hi: float
    ) -> float:
        delta = abs(old) * step
        if self._whole(loop, key):
            delta = max(1.0, round(delta))
        new = min(hi, max(lo, old + direction * (delta or step)))
        return float(round(new)) if self._whole(loop, key) else round(new, 6)

    def _whole(self, loop: str, key: str) -> bool:
        default = self._loops[loop].params[key]
        return isinstance(default, int) and not isinstance(default, bool) and key != "interval"

    def _typed(self, loop: str, key: str, value: float) -> float | int:
        return int(value) if self._whole(loop, key) else float(value)


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "meta.change_applied":
            con.execute(
                f"INSERT INTO meta_changes VALUES (?, ?, ?, ?, ?, ?, NULL, 'applied', ?, {TS}, NULL)",
                [e.id, p["loop"], p["key"], p["old"], p["new"], p["baseline"], p["rationale"], e.ts_us],
            )
        elif e.topic == "meta.change_evaluated":
            con.execute(
                f"UPDATE meta_changes SET after = ?, status = ?, evaluated_at = {TS} WHERE id = ?",
                [p["after"], p["decision"], e.ts_us, p["change_id"]],
            )
        elif e.topic == "meta.change_refused":
            con.execute("UPDATE meta_changes SET status = 'refused' WHERE id = ?", [p["change_id"]])
