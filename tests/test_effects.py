"""Effects: the schema of what a lesson makes the executor do, how effects combine, and deferral hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grace_core.effects import combine, next_allowed, scope, suppresses, validate_effect
from grace_core.errors import LessonError


def test_a_valid_effect_gets_its_normal_form() -> None:
    effect = validate_effect(
        {"kind": "ops.export", "cause": "time_window", "avoid_hours": [4, 2, 3, 2], "retry": {"backoff": 5}}
    )
    assert effect == {
        "kind": "ops.export",
        "cause": "time_window",
        "avoid_hours": [2, 3, 4],
        "retry": {"backoff": 5.0},
    }
    assert validate_effect({"kind": "k", "params": {"chunk_size": 100}})["cause"] == "other"


@pytest.mark.parametrize(
    ("effect", "message"),
    [
        ([], "JSON object"),
        ({"kind": "k", "params": {"a": 1}, "colour": "red"}, "unknown effect key"),
        ({"params": {"a": 1}}, "names the task kind"),
        ({"kind": "k", "cause": "gremlins", "params": {"a": 1}}, "effect.cause"),
        ({"kind": "k"}, "changes something"),
        ({"kind": "k", "params": {}}, "non-empty object"),
        ({"kind": "k", "params": {"a": [1]}}, "string, number, boolean"),
        ({"kind": "k", "params": {"chunk_size": 0}}, "chunk_size is a positive number"),
        ({"kind": "k", "retry": {"max_attempts": 0}}, "max_attempts"),
        ({"kind": "k", "retry": {"max_attempts": 3, "jitter": 1}}, "effect.retry"),
        ({"kind": "k", "retry": {"backoff": -1}}, "backoff"),
        ({"kind": "k", "avoid_hours": [24]}, "hours 0..23"),
        ({"kind": "k", "avoid_hours": list(range(24))}, "whole day"),
        ({"target": "sandbox", "kind": "k", "params": {"a": 1}}, "effect.target"),
        ({"target": "hunter", "suppress": {"context": ["x1"]}}, "names the rule"),
        ({"target": "hunter", "rule": "r", "params": {"a": 1}}, "unknown Hunter effect key"),
        ({"target": "hunter", "rule": "r", "cause": "size_limit", "severity": "low"}, "cause is one of"),
        ({"target": "hunter", "rule": "r"}, "suppress or severity"),
        ({"target": "hunter", "rule": "r", "suppress": {"context": []}}, "lower-case words"),
        ({"target": "hunter", "rule": "r", "suppress": {"context": ["Example"]}}, "lower-case words"),
        ({"target": "hunter", "rule": "r", "suppress": ["example"]}, "lower-case words"),
        ({"target": "hunter", "rule": "r", "severity": "urgent"}, "severity is one of"),
        ({"target": "hunter", "rule": "r", "severity": "low", "when": {"target": "web"}}, "effect.when"),
    ],
)
def test_a_malformed_effect_is_refused_with_the_reason(effect: object, message: str) -> None:
    with pytest.raises(LessonError, match=message):
        validate_effect(effect)


def test_combine_lets_later_lessons_win_and_adds_up_hours() -> None:
    effects = [
        {"params": {"codec": "zstd", "chunk_size": 100}, "retry": {"max_attempts": 5}, "avoid_hours": [1]},
        {"params": {"codec": "gzip"}, "retry": {"backoff": 10.0}, "avoid_hours": [2]},
    ]
    assert combine(effects) == {
        "params": {"codec": "gzip", "chunk_size": 100},
        "retry": {"max_attempts": 5, "backoff": 10.0},
        "avoid_hours": [1, 2],
    }
    assert combine([]) == {}


def _at(hour: int, minute: int = 0) -> float:
    return datetime(2026, 1, 1, hour, minute, tzinfo=UTC).timestamp()


def test_next_allowed_skips_to_the_first_hour_outside_the_window() -> None:
    assert next_allowed(_at(10, 30), [2, 3]) is None
    assert next_allowed(_at(2, 30), [2, 3]) == _at(4)
    assert next_allowed(_at(23, 15), [23, 0, 1]) == datetime(2026, 1, 2, 2, tzinfo=UTC).timestamp()


@given(
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=23),
    now=st.floats(min_value=_at(0), max_value=_at(0) + 7 * 86400, allow_nan=False),
)
def test_next_allowed_is_the_earliest_allowed_instant(hours: set[int], now: float) -> None:
    until = next_allowed(now, hours)
    if int(now // 3600) % 24 not in hours:
        assert until is None
        return
    assert until is not None
    assert now < until <= now + 24 * 3600
    assert int(until // 3600) % 24 not in hours
    # every whole hour strictly between now and until is avoided
    for start in range(int(now // 3600) + 1, int(until // 3600)):
        assert start % 24 in hours


def test_a_hunter_effect_gets_its_normal_form_and_silences_only_its_context() -> None:
    effect = validate_effect(
        {
            "target": "hunter",
            "rule": "aws-access-key-id",
            "cause": "false_positive",
            "when": {"target": "memory"},
            "suppress": {"context": ["placeholder", "example", "example"]},
        }
    )
    assert effect == {
        "target": "hunter",
        "rule": "aws-access-key-id",
        "cause": "false_positive",
        "when": {"target": "memory"},
        "suppress": {"context": ["example", "placeholder"]},
    }
    assert scope(effect) == "hunter"
    assert scope(validate_effect({"kind": "ops.k", "params": {"a": 1}})) == "ops.k"
    assert suppresses(effect, target="memory", words=["the", "example", "key"])
    assert not suppresses(effect, target="chat", words=["example"])  # another target
    assert not suppresses(effect, target="memory", words=["deploy", "key"])  # another context
    severity_only = validate_effect({"target": "hunter", "rule": "r", "severity": "low"})
    assert not suppresses(severity_only, target="chat", words=["example"])
