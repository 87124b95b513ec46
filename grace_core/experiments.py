"""Experiments: arms of a scenario compared across seeds, with bootstrap confidence intervals.

An experiment runs one registered scenario under several **arms** for the same seeds. An arm is a loop selection
(``on``, ``off``, ``all`` or loop names) and/or loop parameter overrides (``reflection.interval``)::

    report = run_experiment("ops", arms=["off", "on"], seeds=range(1, 6), hours=6, workers=2)
    report.means          # per arm and score: mean over seeds and its bootstrap interval
    report.differences    # per arm and score: the paired difference to the baseline arm and its interval
    report.curves         # per arm, window and score: the learning curve's mean and interval over seeds

Arms share seeds, so the design is **paired**: seed ``s`` draws the same hidden truth and traffic in every arm,
and an arm's difference to the baseline is bootstrapped over seeds from the per-seed differences
(``scipy.stats.bootstrap(..., paired=True)``). Intervals are BCa (percentile where BCa is undefined), seeded by
``ci_seed``, so the same results give the same intervals; identical values give a zero-width interval, a single
value none (NaN). A score a run could not measure (None, e.g. precision before any lesson) is left out of that
score's statistics (and, for a difference, the seed from both arms).

The runs are sweep runs (``grace_core.sweep``): the same backends (serial, local processes, Ray), the same lake
table ``sweep_results`` (keyed by the experiment's ``name``; a rerun skips the runs stored already), each run in
its own workspace (in memory unless ``keep_workspaces``). Worker processes import ``grace_core.scenarios``, so a
scenario registered only in the calling process (a notebook cell) needs ``workers=1``.

Arm text (``Arm.parse``, the CLI's ``--arm``): ``on``, ``off``, ``all``, or ``NAME:ITEM,ITEM`` where an item is
``loops=on|off|all|loop+loop`` or ``loop.param=value`` (``slow:loops=on,reflection.interval=3600``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from .errors import ExperimentError, GraceError
from .lake import _normalise_data, normalise_catalog
from .sweep import Run, execute

__all__ = [
    "Arm",
    "ExperimentReport",
    "mean_ci",
    "paired_difference_ci",
    "parse_seeds",
    "run_experiment",
]

SELECTIONS = ("on", "off", "all")


@dataclass(frozen=True)
class Arm:
    """One arm: a name, the loops it runs (``on``/``off``/``all`` or loop names) and loop parameter overrides."""

    name: str
    loops: str | tuple[str, ...] = "on"
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Arm:
        """An arm from its text form (see the module docstring)."""
        text = str(text).strip()
        name, sep, spec = text.partition(":")
        name = name.strip()
        if not name:
            raise ExperimentError(f"arm {text!r} has no name (write NAME or NAME:loops=on,loop.param=value)")
        if not sep:
            if name not in SELECTIONS:
                raise ExperimentError(
                    f"arm {name!r} is not on, off or all; write {name}:loops=...,loop.param=value"
                )
            return cls(name, loops=name)
        loops: str | tuple[str, ...] = name if name in SELECTIONS else "on"
        params: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key or not value:
                raise ExperimentError(f"arm {name!r}: {item!r} is not key=value")
            if key == "loops":
                loops = (
                    value if value in SELECTIONS else tuple(v.strip() for v in value.split("+") if v.strip())
                )
            elif "." in key:
                params[key] = yaml.safe_load(value)  # numbers as numbers, words as words
            else:
                raise ExperimentError(
                    f"arm {name!r}: {key!r} is neither loops nor a loop parameter (loop.param)"
                )
        return cls(name, loops=loops, params=tuple(sorted(params.items())))

    @classmethod
    def of(cls, spec: Arm | str | Mapping[str, Any]) -> Arm:
        """An arm from an ``Arm``, its text, or a mapping ``{name, loops, params}``."""
        if isinstance(spec, Arm):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"name", "loops", "params"}
            if unknown or not spec.get("name"):
                raise ExperimentError(f"an arm is {{name, loops, params}}, not {dict(spec)!r}")
            loops = spec.get("loops", "on")
            return cls(
                str(spec["name"]),
                loops=loops if isinstance(loops, str) else tuple(str(n) for n in loops),
                params=tuple(sorted(dict(spec.get("params") or {}).items())),
            )
        raise ExperimentError(f"an arm is a name, NAME:spec text or a mapping, not {spec!r}")

    def describe(self) -> str:
        loops = self.loops if isinstance(self.loops, str) else "+".join(self.loops)
        items = [f"loops={loops}", *(f"{k}={v}" for k, v in self.params)]
        return f"{self.name}:{','.join(items)}"


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``1-5``, ``1,2,7`` or a mix (``1-3,10``), in the order given, without repeats."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        try:
            low, dash, high = part.partition("-") if not part.startswith("-") else (part, "", "")
            values = range(int(low), int(high) + 1) if dash else [int(part)]
        except ValueError:
            raise ExperimentError(f"seeds are whole numbers like 1-5 or 1,2,7, not {text!r}") from None
        seeds += [s for s in values if s not in seeds]
    if not seeds:
        raise ExperimentError(f"no seeds in {text!r}")
    return seeds


# -- statistics --------------------------------------------------------------------------------------------------
def _clean(values: Iterable[float | None]) -> np.ndarray:
    array = np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)
    kept: np.ndarray = array[~np.isnan(array)]
    return kept


def _interval(data: tuple[np.ndarray, ...], statistic: Any, **options: Any) -> tuple[float, float]:
    with warnings.catch_warnings():  # BCa warns (and answers NaN) on samples it cannot handle; handled below
        warnings.simplefilter("ignore")
        for method in ("BCa", "percentile"):
            result = stats.bootstrap(data, statistic, method=method, vectorized=True, **options)
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
            if not (np.isnan(low) or np.isnan(high)):
                return low, high
    return float("nan"), float("nan")


def mean_ci(
    values: Iterable[float | None], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` (None/NaN left out) and its bootstrap confidence interval."""
    x = _clean(values)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) == 1:
        return mean, float("nan"), float("nan")
    if np.ptp(x) == 0:
        return mean, mean, mean
    low, high = _interval(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        rng=np.random.default_rng(seed),
    )
    return mean, low, high


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
    return np.mean(b - a, axis=axis)


def paired_difference_ci(
    baseline: Sequence[float | None],
    other: Sequence[float | None],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float, int]:
    """(mean of other - baseline, low, high, pairs): paired by position; pairs with a missing value left out."""
    if len(baseline) != len(other):
        raise ExperimentError(f"paired samples differ in length: {len(baseline)} and {len(other)}")
    a = np.asarray([np.nan if v is None else float(v) for v in baseline], dtype=float)
    b = np.asarray([np.nan if v is None else float(v) for v in other], dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = len(a)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    diff = b - a
    mean = float(diff.mean())
    if n == 1:
        return mean, float("nan"), float("nan"), 1
    if np.ptp(diff) == 0:
        return mean, mean, mean, n
    low, high = _interval(
        (a, b),
        _mean_difference,
        paired=True,
        confidence_level=confidence,
        n_resamples=resamples,
        rng=np.random.default_rng(seed),
    )
    return mean, low, high, n


# -- the report --------------------------------------------------------------------------------------------------
@dataclass
class ExperimentReport:
    """What an experiment measured. ``runs``: one row per (arm, seed) with every score; ``timelines``: one row per
    (arm, seed, window); ``means``, ``differences`` and ``curves``: the statistics (see the module docstring)."""

    name: str
    scenario: str
    arms: list[Arm]
    baseline: str
    seeds: list[int]
    hours: float
    scores: list[str]
    runs: pd.DataFrame
    timelines: pd.DataFrame
    means: pd.DataFrame
    differences: pd.DataFrame
    curves: pd.DataFrame
    backend: str = "serial"
    skipped: int = 0
    ran: int = 0
    seconds: float = 0.0
    confidence: float = 0.95
    lake: dict[str, str] = field(default_factory=dict)

    def table(self, *, digits: int = 3) -> pd.DataFrame:
        """Arms by scores, each cell ``mean [low, high]``: the summary a README shows."""
        cells: dict[str, dict[str, str]] = {}
        for row in self.means.to_dict("records"):
            cells.setdefault(str(row["arm"]), {})[str(row["score"])] = _cell(
                row["mean"], row["low"], row["high"], digits
            )
        frame = pd.DataFrame.from_dict(cells, orient="index")
        return frame.reindex(index=[a.name for a in self.arms], columns=self.scores)

    def difference_table(self, *, digits: int = 3) -> pd.DataFrame:
        """Arms (not the baseline) by scores, each cell the paired difference to the baseline with its interval."""
        cells: dict[str, dict[str, str]] = {}
        for row in self.differences.to_dict("records"):
            cells.setdefault(str(row["arm"]), {})[str(row["score"])] = _cell(
                row["difference"], row["low"], row["high"], digits
            )
        frame = pd.DataFrame.from_dict(cells, orient="index")
        others = [a.name for a in self.arms if a.name != self.baseline]
        return frame.reindex(index=others, columns=self.scores)

    def as_dict(self) -> dict[str, Any]:
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [
                {str(k): (None if _missing(v) else v) for k, v in row.items()}
                for row in frame.to_dict(orient="records")
            ]

        return {
            "name": self.name,
            "scenario": self.scenario,
            "arms": [a.describe() for a in self.arms],
            "baseline": self.baseline,
            "seeds": list(self.seeds),
            "hours": self.hours,
            "confidence": self.confidence,
            "backend": self.backend,
            "ran": self.ran,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
            "means": records(self.means),
            "differences": records(self.differences),
            "curves": records(self.curves),
            "runs": records(self.runs.drop(columns=["timeline"], errors="ignore")),
        }

    def __str__(self) -> str:
        level = f"{self.confidence:.0%}"
        lines = [
            f"experiment {self.name}: scenario {self.scenario}, {len(self.arms)} arms x {len(self.seeds)} seeds "
            f"({', '.join(map(str, self.seeds))}), {self.hours:g} h each; {self.ran} runs in {self.seconds:.1f} s "
            f"on {self.backend}, {self.skipped} stored already",
            "",
            f"mean over seeds [{level} bootstrap interval]:",
            *self.table().to_string().splitlines(),
        ]
        if len(self.arms) > 1:
            lines += [
                "",
                f"paired difference to {self.baseline} (arm - {self.baseline}) [{level} interval]:",
                *self.difference_table().to_string().splitlines(),
            ]
        return "\n".join(lines)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _cell(mean: float, low: float, high: float, digits: int) -> str:
    if _missing(mean):
        return "-"
    text = f"{mean:.{digits}g}"
    if _missing(low) or _missing(high):
        return text
    return f"{text} [{low:.{digits}g}, {high:.{digits}g}]"


# -- running -----------------------------------------------------------------------------------------------------
def _check_arms(scenario: str, arms: Sequence[Arm], baseline: str) -> None:
    """Refuse unknown loops and parameters, or values governance or bounds refuse, before any run starts."""
    from .clock import ManualClock
    from .scenarios import get_scenario, loop_selection
    from .workspace import open_workspace

    get_scenario(scenario)  # an unknown scenario: ScenarioError with the known ones
    names = [a.name for a in arms]
    if not arms:
        raise ExperimentError("an experiment needs at least one arm")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ExperimentError(f"arm names must differ: {', '.join(duplicated)} given twice")
    if baseline not in names:
        raise ExperimentError(f"the baseline {baseline!r} is not an arm: {', '.join(names)}")
    same = [a.name for a in arms if sum(b.loops == a.loops and b.params == a.params for b in arms) > 1]
    if same:
        raise ExperimentError(
            f"arms {', '.join(same)} run the same thing; give them different loops or params"
        )
    with open_workspace(
        ":memory:", clock=ManualClock(), seed=0
    ) as ws:  # a scratch workspace, to ask its loops
        for arm in arms:
            try:
                loop_selection(ws, arm.loops)
                for key, value in arm.params:
                    loop, param = key.split(".", 1)
                    ws.loops.set_param(loop, param, value, actor="system", reason="experiment arm check")
            except GraceError as exc:
                raise ExperimentError(f"arm {arm.name!r}: {exc}") from None


def _lake_location(workdir: Path, catalog: str | None, data: str | None) -> tuple[str, str]:
    return (
        normalise_catalog(catalog or f"sqlite:{workdir / 'lake.sqlite'}"),
        _normalise_data(data or workdir / "lake-data"),
    )


def run_experiment(
    scenario: str,
    *,
    arms: Sequence[Arm | str | Mapping[str, Any]] = ("off", "on"),
    seeds: Iterable[int] = (1, 2, 3, 4, 5),
    hours: float = 6.0,
    score_every: float = 3600.0,
    baseline: str | None = None,
    name: str | None = None,
    workdir: str | os.PathLike[str] = "experiment-runs",
    catalog: str | None = None,
    data: str | None = None,
    keep_workspaces: bool = False,
    workers: int = 1,
    backend: str = "processes",
    progress: bool = False,
    confidence: float = 0.95,
    resamples: int = 2000,
    ci_seed: int = 0,
) -> ExperimentReport:
    """Run ``scenario`` under every arm for every seed (runs already in the lake are skipped) and report.

    ``baseline``: the arm differences are taken to (default: the first). ``name``: the experiment's key in the
    lake table (default ``<scenario>-experiment``). ``workdir``: where the lake (``catalog``/``data`` default
    into it) and, with ``keep_workspaces``, each run's workspace file go. ``workers`` > 1 runs that many at once
    on ``backend`` (``processes`` or ``ray``); 1 runs them here, one after the other.
    """
    started = time.perf_counter()
    arm_list = [Arm.of(a) for a in arms]
    base = baseline if baseline is not None else (arm_list[0].name if arm_list else "")
    seed_list = list(dict.fromkeys(int(s) for s in seeds))
    if not seed_list:
        raise ExperimentError("an experiment needs at least one seed")
    if not hours > 0 or not score_every > 0:
        raise ExperimentError(f"hours and score_every are positive, not {hours!r} and {score_every!r}")
    if not 0 < confidence < 1:
        raise ExperimentError(f"confidence is between 0 and 1, not {confidence!r}")
    if workers < 1:
        raise ExperimentError(f"workers is at least 1, not {workers!r}")
    _check_arms(scenario, arm_list, base)
    from .scenarios import get_scenario

    score_names = list(get_scenario(scenario).score_names)
    folder = Path(workdir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    lake_catalog, lake_data = _lake_location(folder, catalog, data)
    key = name or f"{scenario}-experiment"
    runs = [
        Run(
            key,
            arm.params,
            seed,
            float(hours),
            (),
            "",
            str(folder / "workspaces") if keep_workspaces else "",
            scenario=scenario,
            loops=arm.loops,
            score_every=float(score_every),
            arm=arm.name,
        )
        for arm in arm_list
        for seed in seed_list
    ]
    used, skipped, ran, stored = execute(
        runs,
        name=key,
        catalog=lake_catalog,
        data=lake_data,
        backend="serial" if workers == 1 else backend,
        workers=workers,
        progress=progress,
    )
    arm_of = {r.id: (r.arm, r.seed) for r in runs}
    per_run, windows = _frames(stored, arm_of, score_names)
    options = {"confidence": confidence, "resamples": resamples, "seed": ci_seed}
    return ExperimentReport(
        name=key,
        scenario=scenario,
        arms=arm_list,
        baseline=base,
        seeds=seed_list,
        hours=float(hours),
        scores=score_names,
        runs=per_run,
        timelines=windows,
        means=_means(per_run, arm_list, score_names, **options),
        differences=_differences(per_run, arm_list, base, seed_list, score_names, **options),
        curves=_curves(windows, arm_list, score_names, **options),
        backend=used,
        skipped=skipped,
        ran=ran,
        seconds=time.perf_counter() - started,
        confidence=confidence,
        lake={"catalog": lake_catalog, "data": lake_data},
    )


def _frames(
    stored: pd.DataFrame, arm_of: Mapping[str, tuple[str, int]], score_names: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lake rows as one row per run (every score a column) and one row per run and window."""
    rows, windows = [], []
    for record in stored.to_dict(orient="records"):
        arm, seed = arm_of[str(record["run_id"])]
        scores = json.loads(record["scores"]) if record.get("scores") else {}
        rows.append(
            {
                "arm": arm,
                "seed": seed,
                **{s: _number(scores.get(s)) for s in score_names},
                "run_id": record["run_id"],
                "head_seq": record["head_seq"],
                "head_hash": record["head_hash"],
                "wall_seconds": record["wall_seconds"],
                "counts": json.loads(record["counts"]) if record.get("counts") else {},
            }
        )
        for point in json.loads(record["timeline"]) if record.get("timeline") else []:
            windows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "hours": float(point["hours"]),
                    **{s: _number(point.get(s)) for s in score_names},
                }
            )
    order = ["arm", "seed", *score_names, "run_id", "head_seq", "head_hash", "wall_seconds", "counts"]
    per_run = pd.DataFrame(rows, columns=order).sort_values(["arm", "seed"], ignore_index=True)
    curve = pd.DataFrame(windows, columns=["arm", "seed", "hours", *score_names])
    return per_run, curve.sort_values(["arm", "seed", "hours"], ignore_index=True)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _means(runs: pd.DataFrame, arms: list[Arm], score_names: list[str], **options: Any) -> pd.DataFrame:
    rows = []
    for arm in arms:
        mine = runs[runs["arm"] == arm.name]
        for score in score_names:
            values = mine[score].tolist()
            mean, low, high = mean_ci(values, **options)
            rows.append(
                {
                    "arm": arm.name,
                    "score": score,
                    "n": len(_clean(values)),
                    "mean": mean,
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(rows, columns=["arm", "score", "n", "mean", "low", "high"])


def _differences(
    runs: pd.DataFrame,
    arms: list[Arm],
    baseline: str,
    seeds: list[int],
    score_names: list[str],
    **options: Any,
) -> pd.DataFrame:
    by_seed = runs.set_index(["arm", "seed"])
    rows = []
    for arm in arms:
        if arm.name == baseline:
            continue
        for score in score_names:
            base = [_at(by_seed, baseline, s, score) for s in seeds]
            other = [_at(by_seed, arm.name, s, score) for s in seeds]
            diff, low, high, n = paired_difference_ci(base, other, **options)
            rows.append(
                {
                    "arm": arm.name,
                    "baseline": baseline,
                    "score": score,
                    "n": n,
                    "difference": diff,
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(rows, columns=["arm", "baseline", "score", "n", "difference", "low", "high"])


def _at(frame: pd.DataFrame, arm: str, seed: int, score: str) -> float:
    try:
        value: Any = frame.loc[(arm, seed), score]
        return float(value)
    except KeyError:
        return float("nan")


def _curves(windows: pd.DataFrame, arms: list[Arm], score_names: list[str], **options: Any) -> pd.DataFrame:
    rows = []
    for arm in arms:
        mine = windows[windows["arm"] == arm.name]
        for hours, group in mine.groupby("hours", sort=True):
            for score in score_names:
                values = group[score].tolist()
                mean, low, high = mean_ci(values, **options)
                rows.append(
                    {
                        "arm": arm.name,
                        "hours": float(cast(float, hours)),
                        "score": score,
                        "n": len(_clean(values)),
                        "mean": mean,
                        "low": low,
                        "high": high,
                    }
                )
    return pd.DataFrame(rows, columns=["arm", "hours", "score", "n", "mean", "low", "high"])
