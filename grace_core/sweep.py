"""Sweeps: many simulated experiments (parameters x seeds), each in its own workspace, results in one lake table.

A sweep is described by a YAML file::

    name: reflection-vs-failures
    search: grid              # or: random (then ``samples`` parameter sets are drawn with ``sample_seed``)
    seeds: [1, 2, 3]
    hours: 1                  # simulated time of each run
    simulate: {users: 4}      # fixed keyword arguments of grace_core.workload.simulate
    params:                   # what varies: simulate's arguments, or loop parameters as "loop.param"
      failure_share: [0.0, 0.2]
      reflection.interval: [120, 600]     # random search also takes {min: 60, max: 600} (uniform)
    objective: tasks_done     # what the sweep optimises: a count of SimulationSummary.counts ...
    goal: max                 # ... maximised (max, the default) or minimised (min)
    workers: 2
    workdir: sweep-runs       # each run's workspace file lands here (relative to the YAML file)
    lake: {catalog: "sqlite:sweep-runs/lake.sqlite", data: sweep-runs/lake-data}   # the default

A sweep over a **scenario** (``grace_core.scenarios``) sets ``scenario: ops`` (and optionally ``loops: on|off|all``
or a list of loop names, ``score_every``): each run is ``run_scenario`` instead of ``simulate``, ``params`` are loop
parameters only, and ``objective`` is any score of the scenario (``time_to_done_s`` with ``goal: min``). Scenario
runs also store every score and the learning curve (columns ``scores`` and ``timeline``, JSON), which is what
``grace_core.experiments`` reads back.

Each (parameter set, seed) is one run with a stable id (a hash of what it runs), executed by a backend: Ray
tasks when Ray is installed (a cluster when ``RAY_ADDRESS`` is set, else a local Ray), otherwise a pool of
local processes. The driver appends each finished run to the lake table ``sweep_results`` (the only writer
of that table, so runs never conflict); running the same sweep again skips the runs already there, so an
interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import yaml

from . import settings
from .errors import GraceError, SweepError
from .lake import _attach_sql, _extensions, _normalise_data, _retrying, normalise_catalog, open_lake

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = [
    "RESULTS_TABLE",
    "Run",
    "SweepConfig",
    "SweepReport",
    "backends",
    "execute",
    "load_config",
    "plan",
    "run_one",
    "run_sweep",
]

RESULTS_TABLE = "sweep_results"
GOALS = ("max", "min")
_SIMULATE_ARGS = frozenset({"users", "attack_share", "failure_share", "step", "min_interval", "start_loops"})


@dataclass
class SweepConfig:
    name: str
    params: dict[str, Any]
    seeds: list[int] = field(default_factory=lambda: [1])
    hours: float = 1.0
    search: str = "grid"
    samples: int = 8
    sample_seed: int = 0
    simulate: dict[str, Any] = field(default_factory=dict)
    objective: str = "tasks_done"
    goal: str = "max"
    scenario: str = ""  # set: every run is this scenario, and the objective one of its scores
    loops: str | tuple[str, ...] = "on"  # the scenario's loop selection
    score_every: float = 3600.0
    workers: int = 2
    workdir: Path = Path("sweep-runs")
    catalog: str = ""
    data: str = ""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, base: Path | None = None) -> SweepConfig:
        base = base or Path.cwd()
        unknown = set(raw) - {
            "name", "params", "seeds", "hours", "search", "samples", "sample_seed", "simulate", "objective",
            "goal", "scenario", "loops", "score_every", "workers", "workdir", "lake",
        }  # fmt: skip
        if unknown:
            raise SweepError(f"unknown keys in the sweep config: {', '.join(sorted(unknown))}")
        if not raw.get("name"):
            raise SweepError("a sweep needs a name (it keys the results for resumption)")
        params = dict(raw.get("params") or {})
        objective = str(raw.get("objective", "tasks_done"))
        goal = str(raw.get("goal", "max"))
        if goal not in GOALS:
            raise SweepError(f"goal must be max or min, not {goal!r}")
        scenario = str(raw.get("scenario") or "")
        loops = raw.get("loops", "on")
        loops = loops if isinstance(loops, str) else tuple(str(n) for n in loops)
        if scenario:
            _check_scenario(scenario, objective, params, raw)
        for key in params:
            if "." not in key and key not in _SIMULATE_ARGS:
                raise SweepError(
                    f"parameter {key!r} is neither an argument of simulate ({', '.join(sorted(_SIMULATE_ARGS))}) "
                    "nor a loop parameter written as loop.param"
                )
        search = str(raw.get("search", "grid"))
        if search not in ("grid", "random"):
            raise SweepError(f"search must be grid or random, not {search!r}")
        workdir = Path(raw.get("workdir", "sweep-runs"))
        workdir = workdir if workdir.is_absolute() else base / workdir
        lake = dict(raw.get("lake") or {})
        catalog = str(lake.get("catalog") or f"sqlite:{workdir / 'lake.sqlite'}")
        if catalog.startswith("sqlite:") and not Path(catalog[7:]).is_absolute():
            catalog = f"sqlite:{base / catalog[7:]}"
        data = str(lake.get("data") or workdir / "lake-data")
        if "://" not in data and not Path(data).is_absolute():
            data = str(base / data)
        seeds = raw.get("seeds", [1])
        return cls(
            name=str(raw["name"]),
            params=params,
            seeds=[int(s) for s in (seeds if isinstance(seeds, list) else [seeds])],
            hours=float(raw.get("hours", 1.0)),
            search=search,
            samples=int(raw.get("samples", 8)),
            sample_seed=int(raw.get("sample_seed", 0)),
            simulate=dict(raw.get("simulate") or {}),
            objective=objective,
            goal=goal,
            scenario=scenario,
            loops=loops,
            score_every=float(raw.get("score_every", 3600.0)),
            workers=int(raw.get("workers", 2)),
            workdir=workdir,
            catalog=normalise_catalog(catalog),
            data=_normalise_data(data),
        )


def _check_scenario(scenario: str, objective: str, params: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
    from .scenarios import get_scenario

    try:
        cls = get_scenario(scenario)
    except GraceError as exc:
        raise SweepError(str(exc)) from None
    if objective not in cls.score_names:
        raise SweepError(
            f"objective {objective!r} is not a score of scenario {scenario!r}: {', '.join(cls.score_names)}"
        )
    if raw.get("simulate"):
        raise SweepError("a scenario sweep takes no simulate arguments (the scenario makes its own traffic)")
    plain = [key for key in params if "." not in key]
    if plain:
        raise SweepError(
            f"a scenario sweep varies loop parameters written as loop.param, not {', '.join(map(repr, plain))}"
        )


def load_config(path: str | os.PathLike[str]) -> SweepConfig:
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SweepError(f"cannot read the sweep config {file}: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise SweepError(f"{file} does not hold a mapping")
    return SweepConfig.from_mapping(raw, base=file.resolve().parent)


@dataclass(frozen=True)
class Run:
    """One experiment: a parameter set and a seed (its id is a hash of everything that decides its result)."""

    sweep: str
    params: tuple[tuple[str, Any], ...]
    seed: int
    hours: float
    simulate: tuple[tuple[str, Any], ...]
    objective: str
    workdir: str  # where the run's workspace file lands; "" (scenario runs only): an in-memory workspace
    scenario: str = ""  # set: the run is this scenario (``simulate`` is then empty)
    loops: str | tuple[str, ...] = "on"
    score_every: float = 3600.0
    arm: str = ""  # the experiment arm the run belongs to (a label: the id is what it runs)

    @property
    def id(self) -> str:
        what: list[Any] = [dict(self.params), self.seed, self.hours, dict(self.simulate)]
        if self.scenario:
            loops = self.loops if isinstance(self.loops, str) else sorted(self.loops)
            what += [self.scenario, loops, self.score_every]
        key = json.dumps(what, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def _values(spec: Any, rng: random.Random | None) -> list[Any]:
    if isinstance(spec, Mapping):
        if rng is None:
            raise SweepError("a {min, max} range needs search: random (a grid needs a list of values)")
        low, high = spec["min"], spec["max"]
        if isinstance(low, int) and isinstance(high, int):
            return [rng.randint(low, high)]
        return [rng.uniform(float(low), float(high))]
    values = list(spec) if isinstance(spec, list) else [spec]
    return [rng.choice(values)] if rng is not None else values


def plan(config: SweepConfig) -> list[Run]:
    """Every run of the sweep, in a stable order (grid: the product; random: ``samples`` seeded draws)."""
    keys = sorted(config.params)
    if config.search == "grid":
        combos = [
            dict(zip(keys, vs, strict=True))
            for vs in itertools.product(*(_values(config.params[k], None) for k in keys))
        ]
    else:
        rng = random.Random(config.sample_seed)  # noqa: S311 - a seeded, repeatable draw, not a secret
        combos = [{k: _values(config.params[k], rng)[0] for k in keys} for _ in range(config.samples)]
    fixed = tuple(sorted(config.simulate.items()))
    runs, seen = [], set()
    for combo in combos:
        for seed in config.seeds:
            run = Run(
                config.name,
                tuple(sorted(combo.items())),
                seed,
                config.hours,
                fixed,
                config.objective,
                str(config.workdir),
                scenario=config.scenario,
                loops=config.loops,
                score_every=config.score_every,
            )
            if run.id not in seen:
                seen.add(run.id)
                runs.append(run)
    return runs


def _workspace_path(run: Run) -> str:
    from .files import remove_workspace_files

    if not run.workdir:
        return ":memory:"
    workdir = Path(run.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{run.id}.duckdb"
    remove_workspace_files(path)  # a run cut short starts again from nothing
    return str(path)


def _set_loop_params(ws: Workspace, run: Run, params: Mapping[str, Any]) -> None:
    for key, value in sorted(params.items()):
        loop, param = key.split(".", 1)
        ws.loops.set_param(loop, param, value, actor="system", reason=f"sweep {run.sweep}")


def run_one(run: Run) -> dict[str, Any]:
    """Run one experiment in its own new workspace and return its result row (runs in a worker)."""
    if run.scenario:
        return _run_scenario(run)
    from .clock import ManualClock
    from .workload import simulate
    from .workspace import open_workspace

    path = _workspace_path(run)
    kwargs: dict[str, Any] = dict(run.simulate)
    loop_params = {}
    for key, value in run.params:
        if "." in key:
            loop_params[key] = value
        else:
            kwargs[key] = value
    kwargs.setdefault("progress", False)
    with open_workspace(path, clock=ManualClock(), seed=run.seed) as ws:
        _set_loop_params(ws, run, loop_params)
        summary = simulate(ws, hours=run.hours, seed=run.seed, **kwargs)
    if run.objective not in summary.counts:
        raise SweepError(
            f"objective {run.objective!r} is not a count of the simulation: {', '.join(summary.counts)}"
        )
    return _result_row(
        run,
        value=float(summary.counts[run.objective]),
        counts=summary.counts,
        head=(summary.head_seq, summary.head_hash),
        wall_seconds=summary.wall_seconds,
        workspace=str(path),
    )


def _result_row(
    run: Run,
    *,
    value: float,
    counts: Mapping[str, int],
    head: tuple[int, str],
    wall_seconds: float,
    workspace: str,
) -> dict[str, Any]:
    """The columns every result row has (a simulation's or a scenario's), in the lake table's order."""
    return {
        "sweep": run.sweep,
        "run_id": run.id,
        "params": json.dumps(dict(run.params), sort_keys=True),
        "seed": run.seed,
        "hours": run.hours,
        "objective": run.objective,
        "value": value,
        "counts": json.dumps(counts, sort_keys=True),
        "head_seq": head[0],
        "head_hash": head[1],
        "wall_seconds": wall_seconds,
        "workspace": workspace,
        "host": os.uname().nodename,
    }


def _run_scenario(run: Run) -> dict[str, Any]:
    from .scenarios import run_scenario
    from .scenarios.base import _open

    path = _workspace_path(run)
    with _open(path, run.seed) as ws:
        _set_loop_params(ws, run, dict(run.params))
        loops = run.loops if isinstance(run.loops, str) else list(run.loops)
        result = run_scenario(
            ws, run.scenario, hours=run.hours, seed=run.seed, loops=loops, score_every=run.score_every
        )
    if run.objective and run.objective not in result.scores:
        raise SweepError(f"objective {run.objective!r} is not a score of scenario {run.scenario!r}")
    value = result.scores.get(run.objective) if run.objective else None
    described = result.as_dict()
    return {
        **_result_row(
            run,
            value=float("nan") if value is None else float(value),
            counts=result.counts,
            head=(result.head_seq, result.head_hash),
            wall_seconds=result.wall_seconds,
            workspace=path,
        ),
        "scenario": run.scenario,
        "arm": run.arm,
        "loops": json.dumps(result.loops),
        "scores": json.dumps(described["scores"], sort_keys=True),
        "timeline": json.dumps(described["timeline"]),
    }


# -- backends ----------------------------------------------------------------------------------------------------
Submit = Callable[[Iterable[Run], int], Iterator[dict[str, Any]]]


def _serial(runs: Iterable[Run], workers: int) -> Iterator[dict[str, Any]]:
    for run in runs:
        yield run_one(run)


def _processes(runs: Iterable[Run], workers: int) -> Iterator[dict[str, Any]]:
    import multiprocessing

    # spawn: workers must not inherit the driver's DuckDB handles (the lake) or its threads.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: set[Future[dict[str, Any]]] = {pool.submit(run_one, run) for run in runs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


def _ray(runs: Iterable[Run], workers: int) -> Iterator[dict[str, Any]]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        address = settings.from_env(settings.RAY_ADDRESS)
        # Local Ray: only as many CPUs as asked for, no dashboard (2-core machines).
        options: dict[str, Any] = {} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(address=address, log_to_driver=False, **options)
    try:
        remote = ray.remote(run_one)
        pending = [remote.remote(run) for run in runs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


def backends() -> dict[str, Submit]:
    found: dict[str, Submit] = {"serial": _serial, "processes": _processes}
    if importlib.util.find_spec("ray") is not None:
        found["ray"] = _ray
    return found


def _backend(name: str) -> tuple[str, Submit]:
    available = backends()
    if name == "auto":
        name = "ray" if "ray" in available else "processes"
    if name not in available:
        hint = " (pip install ray)" if name == "ray" else ""
        raise SweepError(f"no sweep backend {name!r}{hint}; available: {', '.join(available)}")
    return name, available[name]


# -- the driver --------------------------------------------------------------------------------------------------
_SCENARIO_COLUMNS = ("scenario", "arm", "loops", "scores", "timeline")


def execute(
    runs: list[Run],
    *,
    name: str,
    catalog: str,
    data: str,
    backend: str = "auto",
    workers: int = 2,
    progress: bool = False,
    limit: int | None = None,
) -> tuple[str, int, int, pd.DataFrame]:
    """Run the ``runs`` of sweep ``name`` not in its lake table yet (at most ``limit``) on ``backend``, appending
    each result as it finishes; returns (backend, skipped, ran, every stored row of those runs)."""
    backend_name, submit = _backend(backend)
    results = _Results(catalog, data)
    try:
        done = results.done(name)
        todo = [r for r in runs if r.id not in done]
        skipped = len(runs) - len(todo)
        if limit is not None:
            todo = todo[:limit]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(runs), initial=skipped, desc=name, unit="run", file=sys.stderr)
        ran = 0
        try:
            for row in submit(todo, workers):
                results.add(row)
                ran += 1
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    finally:
        results.close()
    with open_lake(catalog) as lake:
        frame = lake.sql(
            f"SELECT * FROM {RESULTS_TABLE} WHERE sweep = ? AND list_contains(?, run_id) ORDER BY params, seed",
            [name, [r.id for r in runs]],
        )
    return backend_name, skipped, ran, frame


class _Results:
    """The lake table the driver appends results to (created on first use; columns added since, added)."""

    def __init__(self, catalog: str, data: str) -> None:
        self.con = duckdb.connect()
        _extensions(self.con, catalog)
        if catalog.startswith("sqlite:"):
            Path(catalog[7:]).parent.mkdir(parents=True, exist_ok=True)
        self.con.execute(_attach_sql(catalog, data, "sweep_lake"))
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS sweep_lake.{RESULTS_TABLE} (sweep VARCHAR, run_id VARCHAR, params VARCHAR, "
            "seed BIGINT, hours DOUBLE, objective VARCHAR, value DOUBLE, counts VARCHAR, head_seq BIGINT, "
            "head_hash VARCHAR, wall_seconds DOUBLE, workspace VARCHAR, host VARCHAR, finished_at TIMESTAMPTZ)"
        )
        for column in _SCENARIO_COLUMNS:  # scenario runs (a lake made before them lacks these)
            self.con.execute(
                f"ALTER TABLE sweep_lake.{RESULTS_TABLE} ADD COLUMN IF NOT EXISTS {column} VARCHAR"
            )

    def done(self, sweep: str) -> set[str]:
        rows = self.con.execute(
            f"SELECT run_id FROM sweep_lake.{RESULTS_TABLE} WHERE sweep = ?", [sweep]
        ).fetchall()
        return {str(r[0]) for r in rows}

    def add(self, row: Mapping[str, Any]) -> None:
        columns = ", ".join(row)
        self.con.register("sweep_row", pd.DataFrame([dict(row)]))
        try:
            _retrying(
                lambda: self.con.execute(
                    f"INSERT INTO sweep_lake.{RESULTS_TABLE} ({columns}, finished_at) "
                    f"SELECT {columns}, now() FROM sweep_row"
                )
            )
        finally:
            self.con.unregister("sweep_row")

    def close(self) -> None:
        self.con.close()


@dataclass
class SweepReport:
    name: str
    backend: str
    planned: int
    skipped: int
    ran: int
    seconds: float
    results: pd.DataFrame
    goal: str = "max"

    def best(self) -> dict[str, Any]:
        """The parameter set with the best mean objective over its seeds (highest, or lowest for goal min)."""
        means = self.results.groupby("params")["value"].mean().dropna()
        if means.empty:
            return {}
        means = means.sort_values(ascending=self.goal == "min")
        return {"params": json.loads(str(means.index[0])), "mean": float(means.iloc[0])}


def run_sweep(
    config: SweepConfig | str | os.PathLike[str],
    *,
    backend: str = "auto",
    workers: int | None = None,
    progress: bool = False,
    limit: int | None = None,
) -> SweepReport:
    """Run the runs of a sweep not in the lake yet (at most ``limit`` of them) and return all its results."""
    if not isinstance(config, SweepConfig):
        config = load_config(config)
    started = time.perf_counter()
    runs = plan(config)
    Path(config.workdir).mkdir(parents=True, exist_ok=True)
    name, skipped, ran, frame = execute(
        runs,
        name=config.name,
        catalog=config.catalog,
        data=config.data,
        backend=backend,
        workers=workers or config.workers,
        progress=progress,
        limit=limit,
    )
    return SweepReport(
        config.name, name, len(runs), skipped, ran, time.perf_counter() - started, frame, goal=config.goal
    )
