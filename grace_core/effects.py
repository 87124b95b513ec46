"""Effects: what a lesson tells an engine to do differently, as data: the executor (a task kind) or Hunter.

An effect is a small JSON object that a lesson (``ws.learning``) may carry. The executor applies the effects of
the active lessons for a task's kind before each run (``ws.executor``), and records which lessons applied to
which run, so that learning can measure whether a lesson helps (votes from outcomes). The schema of an
executor effect (``target`` absent or ``"executor"``):

=============== ==============================================================================================
``kind``        the task kind it applies to (required)
``cause``       what it addresses, as the analysis that proposed it believes: ``size_limit``, ``time_window``,
                ``flaky_dependency``, ``bad_parameter`` or ``other`` (default ``other``; used for reports and
                scores, never by the executor)
``when``        ``{param: value}``: apply only to runs whose task parameters have these values
``params``      ``{param: value}``: override task parameters for the run (``chunk_size`` splits work whose
                ``size`` is larger into chunks of at most that size)
``retry``       ``{"max_attempts": 1..20, "backoff": seconds >= 0}`` (either or both): override the kind's
                retry settings
``avoid_hours`` ``[0..23, ...]``: do not start a run during these hours of the day (UTC, workspace clock); the
                task is deferred to the next allowed hour
=============== ==============================================================================================

At least one of ``params``, ``retry`` and ``avoid_hours`` is required.

A **Hunter effect** (``target: "hunter"``) changes what one detection rule alerts on; Hunter applies the active
ones whenever it screens a text (``ws.hunter``), and records which alerts a held-out lesson would have changed,
so that learning can measure it against the analysts' verdicts:

=============== ==============================================================================================
``target``      ``"hunter"``
``rule``        the rule (or detector) id it applies to (required)
``cause``       ``false_positive`` (the rule fires on harmless text) or ``other`` (default ``other``)
``when``        ``{"target": "chat" | "memory" | "task" | "code" | "file"}``: only texts scanned as that target
``suppress``    ``{"context": [word, ...]}``: raise no alert for a finding with one of these words (lower case
                letters) in its context, the plain words around it (an allowlist for a context)
``severity``    ``info`` .. ``critical``: alert with this severity instead of the rule's
=============== ==============================================================================================

At least one of ``suppress`` and ``severity`` is required. ``validate_effect`` checks an effect and returns its
normal form (sorted hours, floats for seconds, sorted words); ``combine`` merges the executor effects that apply
to one run (later lessons win on the same parameter, hours add up); ``scope`` names what an effect applies to
(a task kind, or ``hunter``); ``suppresses`` tells whether a Hunter effect silences a finding. Everything here is
pure: JSON in, JSON out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import LessonError

__all__ = [
    "CAUSES",
    "EFFECT_KEYS",
    "HUNTER",
    "HUNTER_CAUSES",
    "HUNTER_EFFECT_KEYS",
    "MAX_ATTEMPTS",
    "applies",
    "combine",
    "next_allowed",
    "scope",
    "suppresses",
    "validate_effect",
]

CAUSES = ("size_limit", "time_window", "flaky_dependency", "bad_parameter", "other")
EFFECT_KEYS = ("target", "kind", "cause", "when", "params", "retry", "avoid_hours")
HUNTER = "hunter"  # the target (and scope) of an effect on Hunter's alerts
HUNTER_CAUSES = ("false_positive", "other")
HUNTER_EFFECT_KEYS = ("target", "rule", "cause", "when", "suppress", "severity")
MAX_ATTEMPTS = 20
MAX_WORDS = 20  # words of one suppression
_SCALAR = (str, int, float, bool)
_SEVERITIES = ("info", "low", "medium", "high", "critical")
_SCAN_TARGETS = ("chat", "code", "memory", "file", "task")
_WORD = re.compile(r"[a-z]{2,40}")


def _scalars(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not value:
        raise LessonError(f"effect.{name} is a non-empty object of parameter values, not {value!r}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise LessonError(f"effect.{name} has a parameter without a name")
        if item is not None and not isinstance(item, _SCALAR):
            raise LessonError(f"effect.{name}.{key} is a string, number, boolean or null, not {item!r}")
        if isinstance(item, float) and not math.isfinite(item):
            raise LessonError(f"effect.{name}.{key} is not a finite number")
        out[key] = item
    return dict(sorted(out.items()))


def validate_effect(effect: Any) -> dict[str, Any]:
    """The normal form of ``effect``, or a ``LessonError`` naming what is wrong with it."""
    if not isinstance(effect, Mapping):
        raise LessonError(f"an effect is a JSON object, not {type(effect).__name__}")
    target = effect.get("target", "executor")
    if target == HUNTER:
        return _hunter_effect(effect)
    if target != "executor":
        raise LessonError(f"effect.target is 'executor' (the default) or 'hunter', not {target!r}")
    unknown = sorted(set(effect) - set(EFFECT_KEYS))
    if unknown:
        raise LessonError(f"unknown effect key(s) {', '.join(unknown)}; known: {', '.join(EFFECT_KEYS)}")
    kind = effect.get("kind")
    if not isinstance(kind, str) or not kind:
        raise LessonError("an effect names the task kind it applies to (effect.kind)")
    cause = effect.get("cause", "other")
    if cause not in CAUSES:
        raise LessonError(f"effect.cause is one of {', '.join(CAUSES)}, not {cause!r}")
    out: dict[str, Any] = {"kind": kind, "cause": cause}
    if "when" in effect:
        out["when"] = _scalars("when", effect["when"])
    if "params" in effect:
        out["params"] = _scalars("params", effect["params"])
        size = out["params"].get("chunk_size")
        if "chunk_size" in out["params"] and not (_number(size) and size > 0):
            raise LessonError(f"effect.params.chunk_size is a positive number, not {size!r}")
    if "retry" in effect:
        out["retry"] = _retry(effect["retry"])
    if "avoid_hours" in effect:
        hours = effect["avoid_hours"]
        if not isinstance(hours, list | tuple) or not hours:
            raise LessonError("effect.avoid_hours is a non-empty list of hours 0..23")
        if any(not isinstance(h, int) or isinstance(h, bool) or not 0 <= h <= 23 for h in hours):
            raise LessonError(f"effect.avoid_hours holds whole hours 0..23, not {list(hours)!r}")
        if len(set(hours)) == 24:
            raise LessonError("effect.avoid_hours may not cover the whole day (nothing could ever run)")
        out["avoid_hours"] = sorted(set(hours))
    if not {"params", "retry", "avoid_hours"} & set(out):
        raise LessonError("an effect changes something: params, retry or avoid_hours")
    return out


def _hunter_effect(effect: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(effect) - set(HUNTER_EFFECT_KEYS))
    if unknown:
        raise LessonError(
            f"unknown Hunter effect key(s) {', '.join(unknown)}; known: {', '.join(HUNTER_EFFECT_KEYS)}"
        )
    rule = effect.get("rule")
    if not isinstance(rule, str) or not rule:
        raise LessonError("a Hunter effect names the rule it applies to (effect.rule)")
    cause = effect.get("cause", "other")
    if cause not in HUNTER_CAUSES:
        raise LessonError(f"a Hunter effect's cause is one of {', '.join(HUNTER_CAUSES)}, not {cause!r}")
    out: dict[str, Any] = {"target": HUNTER, "rule": rule, "cause": cause}
    if "when" in effect:
        when = effect["when"]
        if not isinstance(when, Mapping) or set(when) != {"target"} or when["target"] not in _SCAN_TARGETS:
            raise LessonError(
                f"effect.when of a Hunter effect is {{'target': one of {', '.join(_SCAN_TARGETS)}}}, not {when!r}"
            )
        out["when"] = {"target": when["target"]}
    if "suppress" in effect:
        suppress = effect["suppress"]
        words = (
            suppress.get("context")
            if isinstance(suppress, Mapping) and set(suppress) == {"context"}
            else None
        )
        if (
            not isinstance(words, list | tuple)
            or not 0 < len(words) <= MAX_WORDS
            or not all(isinstance(w, str) and _WORD.fullmatch(w) for w in words)
        ):
            raise LessonError(
                f"effect.suppress is {{'context': [1..{MAX_WORDS} lower-case words]}}, not {suppress!r}"
            )
        out["suppress"] = {"context": sorted(set(words))}
    if "severity" in effect:
        if effect["severity"] not in _SEVERITIES:
            raise LessonError(
                f"effect.severity is one of {', '.join(_SEVERITIES)}, not {effect['severity']!r}"
            )
        out["severity"] = effect["severity"]
    if not {"suppress", "severity"} & set(out):
        raise LessonError("a Hunter effect changes something: suppress or severity")
    return out


def scope(effect: Mapping[str, Any]) -> str:
    """What a (normal-form) effect applies to: its task kind, or ``hunter``."""
    return HUNTER if effect.get("target") == HUNTER else str(effect["kind"])


def suppresses(effect: Mapping[str, Any], *, target: str, words: Iterable[str]) -> bool:
    """Whether a (normal-form) Hunter ``effect`` silences a finding of its rule in a text scanned as ``target``
    whose context holds ``words``."""
    when = effect.get("when", {})
    if "target" in when and when["target"] != target:
        return False
    allow = effect.get("suppress", {}).get("context", ())
    return bool(allow) and not set(allow).isdisjoint(words)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _retry(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not value or set(value) - {"max_attempts", "backoff"}:
        raise LessonError(f"effect.retry is an object with max_attempts and/or backoff, not {value!r}")
    out: dict[str, Any] = {}
    if "max_attempts" in value:
        attempts = value["max_attempts"]
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= MAX_ATTEMPTS:
            raise LessonError(
                f"effect.retry.max_attempts is a whole number 1..{MAX_ATTEMPTS}, not {attempts!r}"
            )
        out["max_attempts"] = attempts
    if "backoff" in value:
        backoff = value["backoff"]
        if not _number(backoff) or backoff < 0:
            raise LessonError(f"effect.retry.backoff is a number of seconds >= 0, not {backoff!r}")
        out["backoff"] = float(backoff)
    return out


def applies(effect: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Whether ``effect`` (normal form) applies to a run whose task parameters are ``params``."""
    return all(params.get(k) == v for k, v in effect.get("when", {}).items())


def combine(effects: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One effect from several that apply to the same run, in order: later ones win on a parameter or a retry
    setting, avoided hours add up. Returns ``{}`` for no effect (keys: params, retry, avoid_hours)."""
    params: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    hours: set[int] = set()
    for effect in effects:
        params.update(effect.get("params", {}))
        retry.update(effect.get("retry", {}))
        hours.update(effect.get("avoid_hours", ()))
    out: dict[str, Any] = {}
    if params:
        out["params"] = params
    if retry:
        out["retry"] = retry
    if hours and len(hours) < 24:
        out["avoid_hours"] = sorted(hours)
    return out


def next_allowed(now: float, avoid_hours: Iterable[int]) -> float | None:
    """The first instant at or after ``now`` (epoch seconds) outside ``avoid_hours`` (UTC); None when ``now``
    is allowed already."""
    avoid = set(avoid_hours)
    hour = int(now // 3600)
    if hour % 24 not in avoid:
        return None
    for ahead in range(1, 25):
        if (hour + ahead) % 24 not in avoid:
            return float((hour + ahead) * 3600)
    return None  # every hour avoided: validate_effect and combine never let that through
