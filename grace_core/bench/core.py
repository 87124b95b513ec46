"""The benchmark framework: figures against peers, goals, the registry, and ``run``."""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import itertools
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from grace_core.errors import BenchError
from grace_core.files import remove_workspace_files
from grace_core.ledger import EVENTS_ARROW_SCHEMA

if TYPE_CHECKING:
    from grace_core.events import Event
    from grace_core.workspace import Workspace

__all__ = [
    "KEYS",
    "REGISTRY",
    "Benchmark",
    "Context",
    "Figure",
    "Goal",
    "benchmark",
    "figure",
    "goal_status",
    "goals",
    "lower_is_better",
    "ratio_of",
    "run",
]

Figure = dict[str, Any]
KEYS = ("name", "value", "unit", "peer", "peer_value", "ratio")
REPEATS = 3  # throughput figures: best of this many runs
PUBLISHERS = 4  # concurrent publisher threads in the mesh benchmark

# The plain-table twin of the ledger's events table, for the peers (no constraints, like the real one).
_PEER_TABLE = (
    "CREATE TABLE rows (seq BIGINT, id VARCHAR, ts TIMESTAMPTZ, topic VARCHAR, actor VARCHAR, "
    "resource VARCHAR, payload VARCHAR, parent_id VARCHAR, correlation_id VARCHAR, prev_hash BLOB, hash BLOB)"
)


# -- figures -------------------------------------------------------------------------------------------------
def lower_is_better(unit: str) -> bool:
    """Latency units (``ms``, ``s``, ``us``) read lower-is-better; rates (``.../s``) higher-is-better."""
    return unit in ("ms", "s", "us")


def ratio_of(value: float, peer_value: float, unit: str) -> float:
    """How much better than the peer we are (> 1 better, < 1 worse), whichever way the unit reads."""
    return peer_value / value if lower_is_better(unit) else value / peer_value


def _sig(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def figure(name: str, value: float, unit: str, peer: str, peer_value: float) -> Figure:
    """One output line. Values keep 6 significant digits; the ratio is computed from them (4 digits)."""
    if not (value > 0 and peer_value > 0 and math.isfinite(value) and math.isfinite(peer_value)):
        raise BenchError(f"{name}: measured {value} against {peer_value}; both must be positive")
    value, peer_value = _sig(value, 6), _sig(peer_value, 6)
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": _sig(ratio_of(value, peer_value, unit), 4),
    }


@dataclass(frozen=True)
class Goal:
    """A target for one figure: ``value`` (or ``ratio``) compared with ``target``."""

    figure: str
    target: float
    on: str = "value"  # "value" or "ratio"
    text: str = ""

    def met(self, fig: Figure) -> bool:
        x = float(fig[self.on])
        if self.on == "value" and lower_is_better(str(fig["unit"])):
            return x <= self.target
        return x >= self.target


def goals() -> tuple[Goal, ...]:
    """Every registered benchmark's goals, in registry order."""
    return tuple(g for b in REGISTRY.values() for g in b.goals)


def goal_status(fig: Figure) -> list[tuple[Goal, bool]]:
    """The goals that apply to this figure, each with whether it is met."""
    return [(g, g.met(fig)) for g in goals() if g.figure == fig["name"]]


# -- registry ------------------------------------------------------------------------------------------------
BenchFunc = Callable[["Context"], Iterator[Figure]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    figures: tuple[str, ...]
    func: BenchFunc
    goals: tuple[Goal, ...] = ()


REGISTRY: dict[str, Benchmark] = {}


def benchmark(
    name: str, *, figures: Sequence[str] | None = None, goals: Sequence[Goal] = ()
) -> Callable[[BenchFunc], BenchFunc]:
    """Register a benchmark (a generator of figures) under ``name``: ``figures`` lists what it yields,
    ``goals`` the targets its figures are held to (declared with the benchmark, reported by ``goal_status``)."""

    figure_names = tuple(figures or (name,))
    strays = [g.figure for g in goals if g.figure not in figure_names]
    if strays:
        raise BenchError(f"benchmark {name!r} has goals for figures it does not yield: {', '.join(strays)}")

    def register(func: BenchFunc) -> BenchFunc:
        if name in REGISTRY:
            raise BenchError(f"a benchmark named {name!r} is registered already")
        REGISTRY[name] = Benchmark(name, figure_names, func, tuple(goals))
        return func

    return register


class Context:
    """What a benchmark gets: sizes for this run, a temp directory, and the shared benchmark ledger."""

    def __init__(self, directory: Path, *, quick: bool, scale: float) -> None:
        self.dir = directory
        self.quick = quick
        self.scale = scale
        self._counter = itertools.count()
        self._ledger: Workspace | None = None
        self._closers: list[Callable[[], None]] = []

    def size(self, full: int, quick: int, *, minimum: int = 1) -> int:
        """A count for this run: ``full`` or ``quick``, times ``scale``."""
        return max(minimum, round((quick if self.quick else full) * self.scale))

    def seconds(self, full: float, quick: float, *, minimum: float = 0.05) -> float:
        return max(minimum, (quick if self.quick else full) * self.scale)

    def path(self, stem: str) -> Path:
        """A fresh file path in the run's temp directory."""
        return self.dir / f"{stem}-{next(self._counter)}.duckdb"

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def workspace(self, stem: str) -> Workspace:
        """A fresh file workspace (wall clock, live delivery: the way a served one runs), closed and its files
        removed when the run ends."""
        path = self.path(stem)
        ws = _open(path)

        def close() -> None:
            ws.close()
            _remove(path)

        self.on_close(close)
        return ws

    def simulated_workspace(self, *, seed: int) -> Workspace:
        """A throwaway in-memory workspace on a ManualClock with ``seed``, closed when the run ends."""
        from grace_core.clock import ManualClock
        from grace_core.workspace import open_workspace

        ws = open_workspace(":memory:", clock=ManualClock(), seed=seed)
        self.on_close(ws.close)
        return ws

    @property
    def ledger_size(self) -> int:
        return self.size(200_000, 20_000, minimum=10)

    def set_ledger(self, ws: Workspace) -> None:
        """Make ``ws`` the benchmark ledger; the previous one is closed and its file removed."""
        old, self._ledger = self._ledger, ws
        if old is not None:
            old.close()
            if old.path != ":memory:":
                _remove(Path(old.path))

    def ledger(self) -> Workspace:
        """The benchmark ledger (``ledger_size`` events on a file): the last one ``ledger.append`` wrote."""
        if self._ledger is None:
            ws = _open(self.path("ledger"))
            ws.publish_many(_messages(self.ledger_size), actor="bench")
            self._ledger = ws
        return self._ledger

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


def _selected(only: Sequence[str] | None) -> list[tuple[Benchmark, Callable[[str], bool]]]:
    """(benchmark, figure filter) for every benchmark ``only`` touches, in registry order."""
    if not only:
        return [(b, lambda _name: True) for b in REGISTRY.values()]
    patterns = list(only)
    unknown = [
        p
        for p in patterns
        if not any(fnmatch.fnmatchcase(n, p) for b in REGISTRY.values() for n in (b.name, *b.figures))
    ]
    if unknown:
        names = sorted({n for b in REGISTRY.values() for n in (b.name, *b.figures)})
        raise BenchError(f"no benchmark or figure named {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = []
    for b in REGISTRY.values():
        if any(fnmatch.fnmatchcase(b.name, p) for p in patterns):
            chosen.append((b, lambda _name: True))
        elif any(fnmatch.fnmatchcase(f, p) for f in b.figures for p in patterns):
            chosen.append((b, lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)))
    return chosen


def run(
    *,
    quick: bool = False,
    only: Sequence[str] | None = None,
    progress: bool = False,
    scale: float = 1.0,
    workdir: str | Path | None = None,
) -> Iterator[Figure]:
    """Run the benchmarks and yield one figure dict per line of output.

    ``quick`` uses sizes about 10x smaller (seconds instead of a minute); ``only`` selects benchmarks or
    figures by name or glob (``"mesh.*"``); ``progress`` shows a bar on stderr; ``scale`` multiplies every
    size and duration (tests use a tiny one); ``workdir`` is where the temp directory goes (default: the
    system's), so a particular disk can be measured. Every file the run creates is removed at the end.
    """
    if not scale > 0:
        raise BenchError("scale must be positive")
    selected = _selected(only)  # raises here, at the call, for an unknown name
    return _run(selected, quick=quick, progress=progress, scale=scale, workdir=workdir)


def _run(
    selected: list[tuple[Benchmark, Callable[[str], bool]]],
    *,
    quick: bool,
    progress: bool,
    scale: float,
    workdir: str | Path | None,
) -> Iterator[Figure]:
    directory = Path(tempfile.mkdtemp(prefix="grace-bench-", dir=workdir))
    ctx = Context(directory, quick=quick, scale=scale)
    bar = _bar(len(selected), progress)
    try:
        for bench, wanted in selected:
            if bar is not None:
                bar.set_description(bench.name)
            gc.collect()
            for fig in bench.func(ctx):
                if wanted(fig["name"]):
                    if bar is not None:
                        bar.write(
                            f"{fig['name']}: {fig['value']:,} {fig['unit']} "
                            f"(peer {fig['peer_value']:,}, ratio {fig['ratio']})",
                            file=sys.stderr,
                        )
                    yield fig
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        ctx.close()
        shutil.rmtree(directory, ignore_errors=True)


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm  # the plain bar: it goes to stderr even in a notebook

    return tqdm(total=total, unit="bench", file=sys.stderr, leave=False)


# -- helpers shared by the benchmarks ------------------------------------------------------------------------
def _open(path: Path) -> Workspace:
    from grace_core.workspace import open_workspace

    return open_workspace(path)  # wall clock, live delivery: the way a served workspace runs


def _messages(n: int) -> list[Any]:
    from grace_core.mesh import Message

    text = "the quick brown fox jumps over the lazy dog"
    return [
        Message("bench.event", {"i": i, "user": f"u{i % 97}", "text": text}, f"item/{i % 100}")
        for i in range(n)
    ]


def _best_rate(count: int, seconds: Sequence[float]) -> float:
    return count / min(seconds)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call. No gc.collect() per call: a full collection costs ~0.1 s, and
    ``run()`` does one before each benchmark; the garbage of one repeat is freed by reference counting."""
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _peer_connection(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(_PEER_TABLE)
    return con


def _peer_columns(events: Sequence[Event]) -> list[list[Any]]:
    return [list(col) for col in zip(*events, strict=True)]


def _peer_arrow_insert(path: Path, columns: list[list[Any]]) -> float:
    """Seconds to land the rows through Arrow in one transaction (the table is built from Python lists)."""
    con = _peer_connection(path)
    try:
        started = time.perf_counter()
        seq, id_, ts_us, topic, actor, resource, payload, parent, corr, prev, hsh = columns
        table = pa.Table.from_arrays(
            [
                pa.array(seq, pa.int64()),
                pa.array(id_, pa.string()),
                pa.array(ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array(topic, pa.string()),
                pa.array(actor, pa.string()),
                pa.array(resource, pa.string()),
                pa.array(payload, pa.string()),
                pa.array(parent, pa.string()),
                pa.array(corr, pa.string()),
                pa.array(prev, pa.binary()),
                pa.array(hsh, pa.binary()),
            ],
            schema=EVENTS_ARROW_SCHEMA,
        )
        con.execute("BEGIN TRANSACTION")
        con.register("batch", table)
        con.execute("INSERT INTO rows SELECT * FROM batch")
        con.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        con.close()


def _remove(path: Path) -> None:
    remove_workspace_files(path)
