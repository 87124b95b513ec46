"""The driver: moves a ManualClock workspace through simulated time while traffic acts and the loops tick.

Both ``grace simulate`` (``grace_core.workload``) and the scenarios (``grace_core.scenarios``) run on it. A
``Traffic`` plans each step of ``step`` simulated seconds as ``(offset, action)`` pairs; the driver moves the
clock to each offset, ticking every running loop whenever it is due (``ws.loops.run_for``), calls the action,
and finishes the step the same way. Everything is deterministic: the same traffic on the same workspace gives
the same ledger.

``min_interval`` (seconds, default 120): while the driver runs, a running loop whose interval is shorter ticks
this often instead, so that a simulated day stays quick (a 10 s loop would tick 8640 times a day). The change
goes through ``set_param`` like any other (actor ``system``, a ``loop.param_changed`` event saying why) and is
undone by ``stop()`` unless someone (the meta-loop) changed the value meanwhile. It is also
``ws.loops.min_interval`` while the driver runs, a floor under the bounds of every tunable interval, so the
meta-loop cannot tune a loop back to ticking every few seconds. ``None`` keeps every configured interval.
``intervals`` (loop -> seconds) raises the floor further for single loops, the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from grace_core.clock import ManualClock
from grace_core.errors import GraceError, LoopError

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = ["Action", "Driver", "Traffic", "require_manual_clock"]

Action = Callable[[], object]


class Traffic(Protocol):
    """What acts on a workspace during a simulation, step by step."""

    def plan(self, step: float) -> Sequence[tuple[float, Action]]:
        """The actions of the next ``step`` seconds as (offset in seconds, action), in time order."""
        ...


class Driver:
    """Drive ``ws`` with ``traffic``: ``start()``, then ``run(hours)`` as often as needed, then ``stop()``.

    ``loops``: start every registered loop (True), the named ones, or none (False); loops started already keep
    running either way. Usable as a context manager (start on entry, stop on exit).
    """

    def __init__(
        self,
        ws: Workspace,
        traffic: Traffic,
        *,
        step: float = 60.0,
        loops: bool | Sequence[str] = True,
        min_interval: float | None = 120.0,
        intervals: Mapping[str, float] | None = None,
    ) -> None:
        require_manual_clock(ws)
        if step <= 0:
            raise GraceError(f"step must be positive, not {step!r}")
        self.ws = ws
        self.traffic = traffic
        self.step = float(step)
        self.loops = loops
        self.min_interval = min_interval
        self.intervals = dict(intervals or {})
        self.steps = 0
        self.ticks = 0
        self._raised: dict[str, tuple[Any, float]] = {}
        self._floor: float | None = None
        self._started = False

    def start(self) -> None:
        ws = self.ws
        if self.loops is True:
            ws.loops.start()
        elif self.loops:
            for name in self.loops:
                ws.loops.start(name)
        self._raised = self._raise_intervals()
        self._floor = ws.loops.min_interval
        if self.min_interval is not None:  # the meta-loop may not tune below it either
            ws.loops.min_interval = max(self.min_interval, self._floor or 0.0)
        self._started = True

    def run(
        self,
        hours: float,
        *,
        progress: bool = False,
        desc: str = "simulating",
        after_step: Callable[[float], None] | None = None,
    ) -> int:
        """Simulate ``hours`` (whole steps); ``after_step(elapsed)`` is called after each step with the simulated
        seconds since the first ``run``. Returns the number of steps."""
        if not self._started:
            raise GraceError("start the driver before running it")
        if hours <= 0:
            raise GraceError(f"hours must be positive, not {hours!r}")
        steps = max(1, round(hours * 3600 / self.step))
        loops = self.ws.loops
        bar = _bar(steps, progress, desc)
        try:
            for _ in range(steps):
                done = 0.0
                for offset, action in self.traffic.plan(self.step):
                    self.ticks += loops.run_for(seconds=offset - done)
                    done = offset
                    action()
                self.ticks += loops.run_for(seconds=self.step - done)
                self.steps += 1
                if after_step is not None:
                    after_step(self.steps * self.step)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return steps

    def stop(self) -> None:
        """Give the loops their own schedule back (those the meta-loop did not retune meanwhile)."""
        if not self._started:
            return
        self._started = False
        ws = self.ws
        ws.loops.min_interval = self._floor
        for name, (old, new) in self._raised.items():
            if ws.loops.param(name, "interval") == new:  # untouched since
                ws.loops.set_param(name, "interval", old, actor="system", reason="simulation over")

    def __enter__(self) -> Driver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _raise_intervals(self) -> dict[str, tuple[Any, float]]:
        raised: dict[str, tuple[Any, float]] = {}
        ws = self.ws
        for name in ws.loops.names:
            floor = max(self.min_interval or 0.0, self.intervals.get(name, 0.0))
            old = ws.loops.param(name, "interval")
            if floor and ws.loops.state(name).state == "running" and float(old) < floor:
                reason = f"simulation: tick at most every {floor:g} s of simulated time (was {old:g} s)"
                ws.loops.set_param(name, "interval", float(floor), actor="system", reason=reason)
                raised[name] = (old, float(floor))
        return raised


def require_manual_clock(ws: Workspace) -> None:
    """A simulation steps time itself: refuse a workspace on the wall clock before anything is written."""
    if not isinstance(ws.clock, ManualClock):
        raise LoopError(
            "a simulation needs a workspace opened with a ManualClock (and a seed, to repeat exactly)"
        )


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", desc=desc, file=sys.stderr, leave=False)
