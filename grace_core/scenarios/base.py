"""Scenarios: seeded simulations with a hidden ground truth and scores that the loops can change.

A scenario is a ``Scenario`` subclass registered by name (``@register``). From its seed it draws a **hidden
ground truth** (``draw``), kept in the Python object as ``scenario.truth`` for researchers and never written
to the workspace, so no loop can read it. It prepares a workspace (``setup``: task handlers, users), plans
traffic step by step (``plan``, driven by ``grace_core.scenarios.driver``), and measures scores over a window of
simulated time against its truth (``measure``). Adding a scenario::

    @register
    class Queue(Scenario):
        name = "queue"
        summary = "What it measures, in a line."
        score_names = {"success_rate": "share of tasks done (higher is better)"}

        def draw(self, rng): return {"capacity": rng.randint(3, 9)}          # hidden, JSON-able
        def setup(self, ws): ws.executor.register("queue.job", self._job)
        def plan(self, step): return [(30.0, self._submit)]                   # (offset, action) per step
        def measure(self, ws, since, until): return {"success_rate": ...}     # score -> value or None

``run_scenario(ws_or_path, name, hours=..., seed=...)`` runs one and returns a ``ScenarioResult``: the score
timeline (simulated hours -> each score: the learning curve), the final scores over the whole run, counts, and
the ledger head. The run is on the ledger too: ``scenario.started``, a ``scenario.scored`` every
``score_every`` simulated seconds, ``scenario.finished`` (table ``scenario_scores``, ``ws.scenarios``). Loops
ignore ``scenario.*``: the scores are measured against the ground truth, and reading them would leak it.

**Loops on or off.** ``loops="on"`` runs the loops that learn and act on what they learned: reflection,
learning and the executor (``LOOPS_ON``). ``loops="off"`` runs only the executor (``LOOPS_OFF``), which every
scenario needs to get work done: the workspace does its work, but nothing reflects or learns, so no lesson
ever changes how it runs. ``loops="all"`` adds every other registered loop (self-healing, which backs off and
pauses failing task kinds, and the meta-loop, which tunes the others' parameters): two more adaptive mechanisms,
kept out of "on" so that an on/off comparison measures reflection and learning alone. A list of loop names runs
those (plus the executor). ``ScenarioRun`` is the same run in steps (``start``, ``advance(hours)``, ``finish``), for
interventions in the middle of a run such as injecting a lesson.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pandas as pd

from grace_core.clock import DEFAULT_START, ManualClock
from grace_core.errors import ScenarioError

from .driver import Action, Driver

if TYPE_CHECKING:
    from grace_core.events import Event
    from grace_core.workspace import Workspace

__all__ = [
    "LOOPS_OFF",
    "LOOPS_ON",
    "REGISTRY",
    "Scenario",
    "ScenarioResult",
    "ScenarioRun",
    "get_scenario",
    "loop_selection",
    "register",
    "run_scenario",
    "scenarios",
]

ACTOR = "scenario"
LOOPS_OFF = ("executor",)  # what every scenario needs to get its work done
LOOPS_ON = ("reflection", "learning", "executor")  # the loops that learn, and the one that acts on it
REGISTRY: dict[str, type[Scenario]] = {}
S = TypeVar("S", bound="type[Scenario]")


class Scenario:
    """A seeded scenario (see the module docstring). Subclasses set the class attributes and the four methods."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: score -> what it means (and which way is better); ``measure`` returns these keys.
    score_names: ClassVar[Mapping[str, str]] = {}
    step: ClassVar[float] = 60.0  # simulated seconds per traffic step
    min_interval: ClassVar[float | None] = 120.0  # loops tick at most this often during a run (the driver's)
    intervals: ClassVar[Mapping[str, float]] = {}  # ... and these loops at most this often
    #: option -> what it chooses (e.g. qa's ``questions``); a subclass reads its options in ``__init__``.
    options: ClassVar[Mapping[str, str]] = {}

    def __init__(self, seed: int, **options: Any) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ScenarioError(f"a scenario's seed is a whole number, not {seed!r}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise ScenarioError(f"scenario {self.name} has no option {unknown[0]!r}; its options: {known}")
        self.seed = seed
        self.truth: dict[str, Any] = self.draw(random.Random(f"grace-scenario:{self.name}:{seed}:truth"))  # noqa: S311
        self.rng = random.Random(f"grace-scenario:{self.name}:{seed}:traffic")  # noqa: S311 - reproducible
        self.ws: Workspace | None = None

    # -- what a subclass defines -------------------------------------------------------------------------------
    def draw(self, rng: random.Random) -> dict[str, Any]:
        """The hidden ground truth (JSON-able), drawn from ``rng`` alone."""
        raise NotImplementedError

    def setup(self, ws: Workspace) -> None:
        """Prepare the workspace (handlers, users) before the first step."""

    def plan(self, step: float) -> Sequence[tuple[float, Action]]:
        """The traffic of the next ``step`` seconds: (offset, action) pairs in time order."""
        raise NotImplementedError

    def measure(self, ws: Workspace, since: float, until: float) -> dict[str, float | None]:
        """Every score over [since, until) of simulated time (None: no data); state-like scores at ``until``."""
        raise NotImplementedError

    def counts(self, ws: Workspace, since: float, until: float) -> dict[str, int]:
        """Counts of what happened in [since, until) (tasks, lessons, ...), for the summary."""
        return {}

    # -- description -----------------------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """What the scenario is and measures (never its truth)."""
        return {
            "name": cls.name,
            "summary": cls.summary,
            "scores": dict(cls.score_names),
            "options": dict(cls.options),
            "step_s": cls.step,
            "doc": " ".join((cls.__doc__ or "").split()),
        }


def register(cls: S) -> S:
    """Class decorator: make a ``Scenario`` subclass runnable by its ``name``."""
    if not cls.name or not isinstance(cls.name, str):
        raise ScenarioError(f"{cls.__name__} needs a name to be registered")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ScenarioError(f"a scenario named {cls.name!r} is registered already")
    REGISTRY[cls.name] = cls
    return cls


def scenarios() -> dict[str, type[Scenario]]:
    """The registered scenarios by name."""
    return dict(sorted(REGISTRY.items()))


def get_scenario(name: str) -> type[Scenario]:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise ScenarioError(f"unknown scenario {name!r}; scenarios: {known}") from None


@dataclass
class ScenarioResult:
    """What a scenario run measured: the learning curve, the final scores, counts, and the ledger it left."""

    scenario: str
    seed: int
    hours: float
    loops: list[str]
    run_id: str
    timeline: pd.DataFrame  # one row per scoring window: hours (simulated, at its end), then every score
    scores: dict[str, float | None]  # over the whole run (state-like scores: at its end)
    counts: dict[str, int]
    head_seq: int
    head_hash: str
    wall_seconds: float
    truth: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # the hidden ground truth, for researchers

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "hours": self.hours,
            "loops": list(self.loops),
            "run_id": self.run_id,
            "scores": dict(self.scores),
            "counts": dict(self.counts),
            "timeline": [
                {k: (None if pd.isna(v) else v) for k, v in row.items()}
                for row in self.timeline.to_dict(orient="records")
            ],
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "wall_seconds": round(self.wall_seconds, 3),
        }

    def __str__(self) -> str:
        lines = [
            f"scenario {self.scenario} (seed {self.seed}): {self.hours:g} h simulated in {self.wall_seconds:.1f} s, "
            f"loops {', '.join(self.loops)}",
        ]
        width = max((len(k) for k in (*self.scores, *self.counts)), default=0)
        lines += [f"{k.ljust(width)}  {_fmt(v)}" for k, v in self.scores.items()]
        lines += [f"{k.ljust(width)}  {v}" for k, v in self.counts.items()]
        lines += ["", "learning curve (score per window, by simulated hour at its end):"]
        lines += self.timeline.to_string(index=False, float_format=lambda v: f"{v:.3g}").splitlines()
        lines.append(f"ledger  {self.head_seq} events, head {self.head_hash}")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def loop_selection(ws: Workspace, loops: str | Sequence[str]) -> list[str]:
    """The loops a run starts (see the module docstring): ``on``, ``off``, ``all`` or the named ones."""
    if loops == "all":
        return list(ws.loops.names)
    if loops in ("on", "off"):
        wanted = set(LOOPS_ON if loops == "on" else LOOPS_OFF)
        return [n for n in ws.loops.names if n in wanted]
    if isinstance(loops, str):
        raise ScenarioError(f"loops is 'on', 'off', 'all' or a list of loop names, not {loops!r}")
    known = set(ws.loops.names)
    unknown = [n for n in loops if n not in known]
    if unknown:
        raise ScenarioError(
            f"no loop named {', '.join(map(repr, unknown))}; loops: {', '.join(ws.loops.names)}"
        )
    return [n for n in ws.loops.names if n in set(loops) | set(LOOPS_OFF)]


class ScenarioRun:
    """One run of ``scenario`` on ``ws`` (a ManualClock workspace), in steps: ``start()``, ``advance(hours)``
    as often as needed (interventions in between), ``finish()`` -> ``ScenarioResult``."""

    def __init__(
        self,
        ws: Workspace,
        scenario: Scenario,
        *,
        loops: str | Sequence[str] = "on",
        score_every: float = 3600.0,
    ) -> None:
        if not isinstance(ws.clock, ManualClock):
            raise ScenarioError(
                "a scenario needs a workspace opened with a ManualClock (and a seed, to repeat)"
            )
        if not score_every > 0:
            raise ScenarioError(f"score_every is a positive number of seconds, not {score_every!r}")
        self.ws = ws
        self.scenario = scenario
        self.loops = loop_selection(ws, loops)
        self.score_every = float(score_every)
        self.driver = Driver(
            ws,
            scenario,
            step=scenario.step,
            loops=self.loops,
            min_interval=scenario.min_interval,
            intervals=scenario.intervals,
        )
        self.started: Event | None = None
        self.start_time = 0.0
        self._scored_until = 0.0  # simulated seconds since start already scored
        self._rows: list[dict[str, Any]] = []
        self._wall = 0.0

    @property
    def elapsed(self) -> float:
        """Simulated seconds since the start."""
        return self.ws.clock.time() - self.start_time

    def start(self) -> ScenarioRun:
        began = time.perf_counter()
        ws = self.ws
        for name in ws.loops.names:  # "off" means off, whatever ran before
            if name not in self.loops and ws.loops.state(name).state != "stopped":
                ws.loops.stop(name)
        self.start_time = ws.clock.time()
        self.started = ws.publish(
            "scenario.started",
            {
                "scenario": self.scenario.name,
                "seed": self.scenario.seed,
                "loops": self.loops,
                "score_every": self.score_every,
                "step": self.scenario.step,
            },
            actor=ACTOR,
            resource=f"scenario:{self.scenario.name}",
        )
        self.scenario.ws = ws
        self.scenario.setup(ws)
        self.driver.start()
        self._wall += time.perf_counter() - began
        return self

    def advance(self, hours: float, *, progress: bool = False) -> ScenarioRun:
        """Simulate ``hours`` more, recording a ``scenario.scored`` at every ``score_every`` boundary."""
        if self.started is None:
            raise ScenarioError("start the run before advancing it")
        began = time.perf_counter()
        self.driver.run(hours, progress=progress, desc=self.scenario.name, after_step=self._maybe_score)
        self._wall += time.perf_counter() - began
        return self

    def _maybe_score(self, _elapsed: float) -> None:
        while self.elapsed >= self._scored_until + self.score_every - 1e-6:
            self._score(self._scored_until + self.score_every)

    def _score(self, upto: float) -> None:
        since = self._scored_until
        scores = self.scenario.measure(self.ws, self.start_time + since, self.start_time + upto)
        self._scored_until = upto
        self._rows.append({"hours": round(upto / 3600, 6), **scores})
        assert self.started is not None
        self.ws.publish(
            "scenario.scored",
            {
                "run": self.started.id,
                "scenario": self.scenario.name,
                "elapsed_s": upto,
                "window_s": upto - since,
                "scores": scores,
            },
            actor=ACTOR,
            resource=f"scenario:{self.scenario.name}",
        )

    def timeline(self) -> pd.DataFrame:
        """The scores so far, one row per window (``hours``: simulated hours at the window's end)."""
        columns = ["hours", *self.scenario.score_names]
        return pd.DataFrame(self._rows, columns=columns)

    def finish(self) -> ScenarioResult:
        if self.started is None:
            raise ScenarioError("start the run before finishing it")
        began = time.perf_counter()
        ws = self.ws
        if self.elapsed > self._scored_until + 1e-6:
            self._score(self.elapsed)  # the last, shorter window
        now = ws.clock.time()
        scores = self.scenario.measure(ws, self.start_time, now)
        counts = self.scenario.counts(ws, self.start_time, now)
        ws.publish(
            "scenario.finished",
            {
                "run": self.started.id,
                "scenario": self.scenario.name,
                "elapsed_s": self.elapsed,
                "scores": scores,
                "counts": counts,
            },
            actor=ACTOR,
            resource=f"scenario:{self.scenario.name}",
        )
        self.driver.stop()
        head_seq, head_hash = ws.ledger.head
        self._wall += time.perf_counter() - began
        return ScenarioResult(
            scenario=self.scenario.name,
            seed=self.scenario.seed,
            hours=round(self.elapsed / 3600, 6),
            loops=list(self.loops),
            run_id=self.started.id,
            timeline=self.timeline(),
            scores=scores,
            counts=counts,
            head_seq=head_seq,
            head_hash=head_hash.hex() if isinstance(head_hash, bytes) else str(head_hash),
            wall_seconds=self._wall,
            truth=self.scenario.truth,
        )


def run_scenario(
    ws_or_path: Workspace | str | os.PathLike[str],
    name: str,
    *,
    hours: float,
    seed: int,
    loops: str | Sequence[str] = "on",
    score_every: float = 3600.0,
    progress: bool = False,
    before: Callable[[ScenarioRun], None] | None = None,
    options: Mapping[str, Any] | None = None,
) -> ScenarioResult:
    """Run scenario ``name`` for ``hours`` of simulated time; returns its ``ScenarioResult``.

    ``ws_or_path``: a workspace opened with a ManualClock, or a path (``":memory:"`` for a throwaway one) that
    is opened with a ManualClock and ``seed`` (starting after the newest event of an existing file) and closed
    at the end. An unknown ``name`` raises ``ScenarioError`` and, on a given workspace, records a
    ``scenario.rejected`` event. ``before(run)`` is called once the run started, before any traffic.
    """
    if not hours > 0:
        raise ScenarioError(f"hours is a positive number, not {hours!r}")
    if isinstance(ws_or_path, str | os.PathLike):
        path = os.fspath(ws_or_path)
        if name not in REGISTRY:
            if path != ":memory:" and Path(path).expanduser().exists():
                with _open(path, seed) as ws:
                    _reject(ws, name)
            get_scenario(name)  # raises
        with _open(path, seed) as ws:
            return run_scenario(
                ws,
                name,
                hours=hours,
                seed=seed,
                loops=loops,
                score_every=score_every,
                progress=progress,
                before=before,
                options=options,
            )
    ws = ws_or_path
    if name not in REGISTRY:
        _reject(ws, name)
    try:
        scenario = get_scenario(name)(seed, **dict(options or {}))
    except ScenarioError as exc:
        if not ws.read_only:
            ws.publish("scenario.rejected", {"scenario": name, "reason": str(exc)}, actor=ACTOR)
        raise
    run = ScenarioRun(ws, scenario, loops=loops, score_every=score_every).start()
    if before is not None:
        before(run)
    return run.advance(hours, progress=progress).finish()


def _reject(ws: Workspace, name: str) -> None:
    try:
        get_scenario(name)
    except ScenarioError as exc:
        if not ws.read_only:
            ws.publish("scenario.rejected", {"scenario": str(name)[:200], "reason": str(exc)}, actor=ACTOR)
        raise


def _open(path: str, seed: int) -> Workspace:
    from grace_core.workspace import open_workspace

    existed = path != ":memory:" and Path(path).expanduser().exists()
    clock = ManualClock(DEFAULT_START)
    ws = open_workspace(path, clock=clock, seed=seed)
    if path == ":memory:":
        # Thousands of tiny statements: DuckDB's worker threads cost more than they save (~25% CPU).
        ws.con.execute("SET threads = 1")
    head = ws.ledger.head[0]
    if existed and head:  # simulated time goes on after what the workspace holds
        newest = ws.ledger.at(head).ts_us / 1e6
        if newest + 1.0 > clock.time():
            clock.set(newest + 1.0)
    return ws
