"""The failure analysis: each hidden cause is told apart from the others and from noise, as JSON in and out."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import fisher_exact

from grace_core.diagnosis import diagnose, error_type, fisher_greater

CODECS = ("gzip", "lz4", "snappy", "zstd")
Fails = Callable[[dict[str, Any], int, random.Random], str | None]


def runs_of(
    fails: Fails, *, tasks: int = 120, seed: int = 0, attempts: int = 3, hours: int = 24
) -> list[dict]:
    """Runs of one kind: tasks spread over ``hours``, retried until success or ``attempts``; ``fails`` names the
    error of an attempt (or None). 2% of attempts fail with unrelated noise."""
    rng = random.Random(seed)
    runs = []
    for n in range(tasks):
        features = {"size": round(rng.lognormvariate(5.5, 0.9), 1), "codec": rng.choice(CODECS)}
        hour = (n * hours // tasks) % 24
        for attempt in range(1, attempts + 1):
            error = "ConnectionReset: peer went away" if rng.random() < 0.02 else fails(features, hour, rng)
            runs.append(
                {
                    "id": f"e{n}-{attempt}",
                    "task": f"t{n}",
                    "kind": "ops.k",
                    "attempt": attempt,
                    "ok": error is None,
                    "error": error,
                    "hour": hour,
                    "features": features,
                }
            )
            if error is None:
                break
    return runs


def only(insights: list[dict]) -> dict:
    assert len(insights) == 1, [i["text"] for i in insights]
    return insights[0]


def test_a_bad_parameter_value_is_found_and_replaced() -> None:
    runs = runs_of(lambda f, h, r: "BadRequest: 400" if f["codec"] == "lz4" else None)
    insight = only(diagnose({"runs": runs})["insights"])
    assert insight["key"] == "cause:ops.k:BadRequest"
    effect = insight["data"]["effect"]
    assert effect["when"] == {"codec": "lz4"}
    assert effect["params"]["codec"] in {"gzip", "snappy", "zstd"}
    assert insight["data"]["error"] == "BadRequest"
    assert "codec = lz4" in insight["text"]


def test_a_size_limit_is_found_and_chunked_below_it() -> None:
    runs = runs_of(lambda f, h, r: "OutOfMemory: killed" if f["size"] > 400 else None)
    insight = only(diagnose({"runs": runs})["insights"])
    assert insight["data"]["cause"] == "size_limit"
    chunk = insight["data"]["effect"]["params"]["chunk_size"]
    assert 300 <= chunk <= 400


def test_a_time_window_is_found_once_other_hours_are_seen() -> None:
    def window(f: dict, hour: int, r: random.Random) -> str | None:
        return "ServiceUnavailable: 503" if hour in (2, 3, 4) else None

    insight = only(diagnose({"runs": runs_of(window)})["insights"])
    assert insight["data"]["effect"]["avoid_hours"] == [2, 3, 4]
    # All data from inside the window: "fails at 3 o'clock" and "always fails" look the same. No claim.
    inside = [r for r in runs_of(window) if r["hour"] == 3]
    assert diagnose({"runs": inside})["insights"] == []


def test_a_flaky_dependency_gets_more_attempts() -> None:
    runs = runs_of(lambda f, h, r: "DependencyTimeout: 30 s" if r.random() < 0.6 else None, tasks=80)
    insight = only(diagnose({"runs": runs})["insights"])
    assert insight["data"]["cause"] == "flaky_dependency"
    assert insight["data"]["effect"]["retry"]["max_attempts"] >= 6


def test_noise_alone_is_not_a_cause() -> None:
    assert diagnose({"runs": runs_of(lambda f, h, r: None, tasks=300)})["insights"] == []


def test_the_analysis_is_pure_json_in_json_out() -> None:
    runs = runs_of(lambda f, h, r: "BadRequest: 400" if f["codec"] == "gzip" else None)
    request = {"runs": runs, "params": {"min_share": 0.9}}
    before = copy.deepcopy(request)
    answer = diagnose(json.loads(json.dumps(request)))
    assert request == before
    assert json.loads(json.dumps(answer)) == answer
    assert diagnose(request) == answer  # deterministic
    evidence = set(only(answer["insights"])["evidence"])
    assert evidence <= {r["id"] for r in runs}
    assert any(not r["ok"] and r["id"] in evidence for r in runs)  # the failures it explains...
    assert any(r["ok"] and r["id"] in evidence for r in runs)  # ...and successes it contrasts them with


def test_error_type_is_the_exception_name() -> None:
    assert error_type("TimeoutError: no reply: after 30 s") == "TimeoutError"
    assert error_type(None) == "unknown"


@given(a=st.integers(0, 12), b=st.integers(0, 12), c=st.integers(0, 12), d=st.integers(0, 12))
def test_fisher_greater_matches_scipy(a: int, b: int, c: int, d: int) -> None:
    expected = fisher_exact([[a, b], [c, d]], alternative="greater")[1]
    assert fisher_greater(a, b, c, d) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_little_noise_in_a_few_runs_is_not_a_flaky_dependency() -> None:
    """Three transient failures among eleven runs is a high rate (27%), but not high beyond doubt."""
    runs = [
        {
            "id": f"e{i}",
            "task": f"t{i}",
            "kind": "k",
            "attempt": 1,
            "ok": i >= 3,
            "hour": 1,
            "features": {},
            "error": None if i >= 3 else "ConnectionReset: peer",
        }
        for i in range(11)
    ]
    runs.append({**runs[0], "id": "e0-2", "attempt": 2, "ok": True, "error": None})  # a retry cured one
    assert diagnose({"runs": runs})["insights"] == []
