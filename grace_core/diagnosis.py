"""Failure analysis: why do runs of a task kind fail? Compares failed with successful runs, feature by feature.

``diagnose(request)`` is a pure function of JSON-able input returning JSON-able output (no workspace access), so
that a language model can take its place behind the same contract. The request::

    {"runs": [{"id": "<event id of the run's end>", "task": "<task id>", "kind": "ops.export", "attempt": 1,
               "ok": false, "error": "MemoryError: ...", "hour": 14, "features": {"size": 812.0, "codec": "lz4"}},
              ...],
     "params": {...}}          # optional overrides of PARAMS

It answers ``{"insights": [...]}``: at most one insight per task kind and error type, each::

    {"kind": "failure_cause", "key": "cause:<task kind>:<error type>", "text": "...", "score": 0..1,
     "evidence": [run ids], "data": {"task_kind": ..., "cause": ..., "error": ..., "effect": {...}, ...}}

How: the failed runs of a kind are grouped by error type (the exception name before the first colon), so that
unrelated noise does not blur a pattern. For each error type with at least ``min_failures`` failures, the runs
compared are the successes and the failures of that type, and four explanations are tried:

* a **parameter value** (a categorical feature): runs with that value fail (rate >= ``fail_high``), the others
  do not (<= ``fail_low``) -> ``bad_parameter``, fixed by using another value that works instead of it;
* a **size threshold** (a numeric feature): every run above the largest successful value failed ->
  ``size_limit``, fixed for the feature ``size`` by splitting work into chunks of that largest successful size;
* **hours of the day**: runs started in some hours fail, in the others not -> ``time_window``, fixed by
  deferring runs out of those hours;
* none of the above but a failure rate per attempt high beyond doubt (the lower end of its 95% interval at
  least ``flaky_min``), with tasks that failed once often succeeding on a retry -> ``flaky_dependency``, fixed
  by more attempts (enough that all fail with probability <= ``target``).

An explanation must account for at least ``min_share`` of the failures of its error type, and both the runs it
blames and the others must be at least ``min_runs``; of those, the one with the strongest evidence (the lowest
one-sided Fisher exact p-value that the blamed runs fail more often than the others, at most ``alpha``) is
reported with its evidence and the proposed effect (see ``grace_core.effects``). With data from one hour only,
"it fails in this hour" and "it always fails" cannot be told apart, so no window is reported until other hours
are seen.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .effects import MAX_ATTEMPTS

__all__ = ["PARAMS", "diagnose", "error_type", "fisher_greater"]

#: Defaults of the analysis (a request's ``params`` override them).
PARAMS: Mapping[str, float] = {
    "min_failures": 3,  # failures of one error type before it is analysed
    "min_runs": 3,  # runs a parameter value or a threshold must cover
    "min_tasks": 2,  # distinct tasks among the failures an explanation blames
    "min_hour_runs": 2,  # runs an hour needs before it can be called failing
    "fail_high": 0.8,  # failure rate of the runs an explanation blames
    "fail_low": 0.25,  # failure rate it leaves for the others
    "min_share": 0.8,  # share of the error type's failures an explanation must account for
    "flaky_min": 0.2,  # failure rate per attempt above which retries are worth more attempts
    "flaky_retry_success": 0.3,  # share of once-failed tasks that later succeeded
    "target": 0.02,  # the chance that every attempt fails that more attempts aim for
    "default_attempts": 3,  # the kind's attempts without a lesson
    "max_attempts": 10,  # the most attempts a flaky kind is given
    "max_evidence": 50,  # run ids cited per insight
    "alpha": 0.01,  # the largest p-value an explanation may have
}


_CONTRAST = 10  # successes cited per insight


def error_type(error: str | None) -> str:
    """``"TimeoutError: no reply..."`` -> ``"TimeoutError"`` (the text before the first colon, trimmed)."""
    if not error:
        return "unknown"
    head = error.split(":", 1)[0].strip()
    return head[:80] or "unknown"


def diagnose(request: Mapping[str, Any]) -> dict[str, Any]:
    """Insights about the causes of failures in ``request["runs"]`` (see the module docstring)."""
    params = {**PARAMS, **dict(request.get("params") or {})}
    by_kind: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for run in request.get("runs", []):
        by_kind[str(run["kind"])].append(run)
    insights = []
    for kind in sorted(by_kind):
        runs = by_kind[kind]
        failed_types: dict[str, int] = defaultdict(int)
        for run in runs:
            if not run["ok"]:
                failed_types[error_type(run.get("error"))] += 1
        for etype in sorted(failed_types):
            if failed_types[etype] < params["min_failures"]:
                continue
            compared = [r for r in runs if r["ok"] or error_type(r.get("error")) == etype]
            found = _explain(kind, etype, compared, params)
            if found is not None:
                insights.append(found)
    return {"insights": insights}


# -- explanations ----------------------------------------------------------------------------------------------
def _rate(runs: Sequence[Mapping[str, Any]]) -> float:
    return sum(1 for r in runs if not r["ok"]) / len(runs) if runs else 0.0


def _explain(
    kind: str, etype: str, runs: list[Mapping[str, Any]], p: Mapping[str, float]
) -> dict[str, Any] | None:
    failures = [r for r in runs if not r["ok"]]
    candidates = [
        c
        for c in (
            *_parameter_values(runs, failures, p),
            *_thresholds(runs, failures, p),
            _hours(runs, failures, p),
        )
        if c is not None
    ]
    found = (
        min(candidates, key=lambda c: (c["p_value"], -c["score"], c["cause"], c.get("feature", "")))
        if candidates
        else _flaky(runs, failures, p)
    )
    if found is None:
        return None
    best = found
    blamed: list[Mapping[str, Any]] = best.pop("blamed")
    effect = best.pop("effect")
    cause = best["cause"]
    # The failures it explains, and the latest successes it contrasts them with.
    contrast = [str(r["id"]) for r in runs if r["ok"]][-_CONTRAST:]
    evidence = [str(r["id"]) for r in blamed][-max(1, int(p["max_evidence"]) - len(contrast)) :] + contrast
    if "p_value" in best:
        best["p_value"] = float(f"{best['p_value']:.3g}")
    data: dict[str, Any] = {
        "task_kind": kind,
        "error": etype,
        "runs": len(runs),
        "failures": len(failures),
        "explained": len(blamed),
        **best,
    }
    if effect is not None:
        data["effect"] = {"kind": kind, "cause": cause, **effect}
    return {
        "kind": "failure_cause",
        "key": f"cause:{kind}:{etype}",  # one lesson per kind and error: a better explanation edits it
        "text": _text(kind, etype, data),
        "score": round(float(best["score"]), 6),
        "evidence": evidence,
        "data": data,
    }


def _split(
    runs: list[Mapping[str, Any]],
    failures: list[Mapping[str, Any]],
    blamed_runs: list[Mapping[str, Any]],
    p: Mapping[str, float],
) -> tuple[float, float, float, list[Mapping[str, Any]]] | None:
    """(p-value, failure rate inside, outside, the failures inside) when the explanation qualifies.

    The test counts tasks (one that failed every run it had in a group, or not), not runs: a task's retries
    repeat the same features, and mostly the same hour, and are little new evidence.
    """
    ids = {id(r) for r in blamed_runs}
    rest = [r for r in runs if id(r) not in ids]
    inside, outside = _rate(blamed_runs), _rate(rest)
    blamed = [r for r in blamed_runs if not r["ok"]]
    share = len(blamed) / len(failures)
    if min(len(blamed_runs), len(rest)) < p["min_runs"] or inside < p["fail_high"] or outside > p["fail_low"]:
        return None
    if share < p["min_share"] or len({str(r["task"]) for r in blamed}) < p["min_tasks"]:
        return None
    inside_tasks, rest_tasks = _task_outcomes(blamed_runs), _task_outcomes(rest)
    a, b = sum(1 for ok in inside_tasks.values() if not ok), sum(1 for ok in inside_tasks.values() if ok)
    c, d = sum(1 for ok in rest_tasks.values() if not ok), sum(1 for ok in rest_tasks.values() if ok)
    pvalue = fisher_greater(a, b, c, d)
    if pvalue > p["alpha"]:
        return None
    return pvalue, inside, outside, blamed


def _task_outcomes(runs: list[Mapping[str, Any]]) -> dict[str, bool]:
    """Task id -> whether any of its runs succeeded."""
    out: dict[str, bool] = {}
    for r in runs:
        out[str(r["task"])] = out.get(str(r["task"]), False) or bool(r["ok"])
    return out


def _parameter_values(
    runs: list[Mapping[str, Any]], failures: list[Mapping[str, Any]], p: Mapping[str, float]
) -> list[dict[str, Any]]:
    out = []
    names = sorted({k for r in runs for k, v in r.get("features", {}).items() if _categorical(v)})
    for name in names:
        groups: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
        for r in runs:
            value = r.get("features", {}).get(name)
            if _categorical(value):
                groups[value].append(r)
        for value in sorted(groups, key=str):
            split = _split(runs, failures, groups[value], p)
            if split is None:
                continue
            pvalue, inside, outside, blamed = split
            # The replacement: the first value (in a stable order) that works, so that it does not flip
            # between equally good values from one reflection to the next.
            others = sorted((v for v, g in groups.items() if v != value and len(g) >= p["min_runs"]), key=str)
            good = next((v for v in others if _rate(groups[v]) <= p["fail_low"]), None)
            out.append(
                {
                    "cause": "bad_parameter",
                    "feature": name,
                    "value": value,
                    "replacement": good,
                    "fail_rate": round(inside, 6),
                    "fail_rate_others": round(outside, 6),
                    "p_value": pvalue,
                    "score": inside - outside,
                    "blamed": blamed,
                    "effect": None if good is None else {"when": {name: value}, "params": {name: good}},
                }
            )
    return out


def _categorical(value: Any) -> bool:
    return isinstance(value, str | bool)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _thresholds(
    runs: list[Mapping[str, Any]], failures: list[Mapping[str, Any]], p: Mapping[str, float]
) -> list[dict[str, Any]]:
    out = []
    names = sorted({k for r in runs for k, v in r.get("features", {}).items() if _numeric(v)})
    for name in names:
        valued = [r for r in runs if _numeric(r.get("features", {}).get(name))]
        ok_values = [float(r["features"][name]) for r in valued if r["ok"]]
        if not ok_values:
            continue
        max_ok = max(ok_values)
        above = [r for r in valued if float(r["features"][name]) > max_ok]
        split = _split(runs, failures, above, p)
        if split is None:
            continue
        pvalue, inside, outside, blamed = split
        min_fail = min(float(r["features"][name]) for r in above)
        effect = {"params": {"chunk_size": _round_down(max_ok)}} if name == "size" else None
        out.append(
            {
                "cause": "size_limit",
                "feature": name,
                "max_ok": max_ok,
                "min_fail": min_fail,
                "fail_rate": round(inside, 6),
                "fail_rate_others": round(outside, 6),
                "p_value": pvalue,
                "score": inside - outside,
                "blamed": blamed,
                "effect": effect,
            }
        )
    return out


def _round_down(value: float) -> float:
    """A chunk size a little under the largest size that worked (two significant digits, never above it)."""
    if value <= 0:
        return value
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return float(math.floor(value / scale) * scale)


def _hours(
    runs: list[Mapping[str, Any]], failures: list[Mapping[str, Any]], p: Mapping[str, float]
) -> dict[str, Any] | None:
    by_hour: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in runs:
        if isinstance(r.get("hour"), int):
            by_hour[int(r["hour"])].append(r)
    bad = {h for h, rs in by_hour.items() if len(rs) >= p["min_hour_runs"] and _rate(rs) >= p["fail_high"]}
    if not bad:
        return None
    # An hour with no runs between two failing ones is taken to fail too (a window has no holes).
    filled = set(bad)
    for h in range(24):
        if h not in by_hour and (h - 1) % 24 in bad and (h + 1) % 24 in bad:
            filled.add(h)
    if len(filled) >= 24:
        return None
    blamed_runs = [r for h in sorted(bad) for r in by_hour[h]]
    split = _split(runs, failures, blamed_runs, p)
    if split is None:
        return None
    pvalue, inside, outside, blamed = split
    hours = sorted(filled)
    return {
        "cause": "time_window",
        "feature": "hour",
        "hours": hours,
        "fail_rate": round(inside, 6),
        "fail_rate_others": round(outside, 6),
        "p_value": pvalue,
        "score": inside - outside,
        "blamed": blamed,
        "effect": {"avoid_hours": hours},
    }


def _flaky(
    runs: list[Mapping[str, Any]], failures: list[Mapping[str, Any]], p: Mapping[str, float]
) -> dict[str, Any] | None:
    rate = _rate(runs)
    # The rate must be high beyond doubt (its 95% Wilson lower bound), or a little noise in a few runs would
    # pass for a flaky dependency.
    if _wilson_lower(len(failures), len(runs)) < p["flaky_min"] or rate >= 1.0:
        return None
    by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in runs:
        by_task[str(r["task"])].append(r)
    failed_once = [rs for rs in by_task.values() if any(not r["ok"] for r in rs)]
    recovered = [
        rs
        for rs in failed_once
        if any(r["ok"] and r["attempt"] > min(x["attempt"] for x in rs if not x["ok"]) for r in rs)
    ]
    if not failed_once or len(recovered) / len(failed_once) < p["flaky_retry_success"]:
        return None
    # The rate rounded up to a twentieth, so that the proposal does not change with every few runs.
    coarse = min(0.95, math.ceil(rate * 20) / 20)
    attempts = math.ceil(math.log(p["target"]) / math.log(coarse))
    attempts = int(min(p["max_attempts"], MAX_ATTEMPTS, max(attempts, int(p["default_attempts"]) + 1)))
    return {
        "cause": "flaky_dependency",
        "feature": "attempt",
        "fail_rate": round(rate, 6),
        "recovered": round(len(recovered) / len(failed_once), 6),
        "max_attempts": attempts,
        "score": rate,
        "blamed": failures,
        "effect": {"retry": {"max_attempts": attempts}},
    }


def fisher_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher exact test on the 2x2 table [[a, b], [c, d]] (rows: blamed runs, the others; columns:
    failed, succeeded): the probability of at least ``a`` failures among the blamed runs if failing did not
    depend on being blamed (the hypergeometric upper tail)."""
    n, failed, blamed = a + b + c + d, a + c, a + b
    if n == 0:
        return 1.0

    def log_comb(x: int, k: int) -> float:
        return math.lgamma(x + 1) - math.lgamma(k + 1) - math.lgamma(x - k + 1)

    total = log_comb(n, blamed)
    terms = [
        log_comb(failed, k) + log_comb(n - failed, blamed - k) - total
        for k in range(a, min(failed, blamed) + 1)
        if blamed - k <= n - failed
    ]
    return min(1.0, sum(math.exp(t) for t in terms))


def _wilson_lower(k: int, n: int, z: float = 1.96) -> float:
    """The lower end of the Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0
    phat = k / n
    centre = phat + z * z / (2 * n)
    spread = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def _text(kind: str, etype: str, d: Mapping[str, Any]) -> str:
    cause = d["cause"]
    if cause == "bad_parameter":
        fix = (
            f"use {d['feature']} = {d['replacement']} instead" if d.get("replacement") is not None else "none"
        )
        return (
            f"Runs of {kind} fail with {etype} when {d['feature']} = {d['value']} "
            f"({d['fail_rate']:.0%} of them; {d['fail_rate_others']:.0%} otherwise). Proposed: {fix}."
        )
    if cause == "size_limit":
        fix = f"chunks of at most {d['effect']['params']['chunk_size']:g}" if "effect" in d else "none"
        return (
            f"Runs of {kind} fail with {etype} when {d['feature']} > {d['max_ok']:g} (every run above it failed; "
            f"{d['fail_rate_others']:.0%} at or below). Proposed: {fix}."
        )
    if cause == "time_window":
        hours = ", ".join(f"{h:02d}" for h in d["hours"])
        return (
            f"Runs of {kind} fail with {etype} when started in the hours {hours} UTC ({d['fail_rate']:.0%} of "
            f"them; {d['fail_rate_others']:.0%} in other hours). Proposed: run outside those hours."
        )
    return (
        f"Runs of {kind} fail with {etype} on {d['fail_rate']:.0%} of attempts whatever their features, and "
        f"{d['recovered']:.0%} of the tasks that failed once succeeded on a retry. "
        f"Proposed: up to {d['max_attempts']} attempts."
    )
