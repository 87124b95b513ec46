"""Learning: turns insights into lessons that change behaviour, votes on them by measured outcomes, and opens tasks.

The ``learning`` loop runs on ``reflection.completed`` events (one per reflection, after its insights). For each
reflection, in ledger order:

* **Lessons**, as in ExpeL (Zhao et al., 2024): a registry of rules with votes, changed by four operations,
  each an event (``learning.rule_added|rule_edited|rule_upvoted|rule_downvoted``; tables ``learned_rules`` and
  ``learned_rule_history`` are their projections):

  - **ADD** (2 votes) a lesson for an insight pattern (its ``key``) that has none. An insight that proposes an
    executable **effect** (``failure_cause`` insights, see ``grace_core.diagnosis``) gives a lesson with that
    effect: the executor applies it to the tasks of its kind (``grace_core.effects``). An effect once dropped
    for doing harm is not added again.
  - **EDIT** a lesson whose pattern recurs with a different wording or a different proposed effect (0 votes).
  - **UPVOTE** (+1) / **DOWNVOTE** (-1). A lesson *with an effect* is voted on by **measured outcomes** only:
    the tasks it applied to against a seeded **holdout** (below); it gains a vote when its tasks succeed
    significantly more often (a two-proportion z-test, ``vote_z``), loses one when they succeed significantly
    less often. A lesson with a **Hunter effect** (a ``false_positive`` insight: an allowlist of context words
    for one rule) is measured on the alerts it would have silenced but that were held out of it, against the
    analysts' verdicts: silencing a set of alerts of precision ``q`` raises F1 exactly when ``q < F1 / 2``, so
    it gains a vote when the confirmed share of those alerts is significantly below ``P / (1 + P)`` (half the F1
    the verdicted alerts would have if they missed nothing; ``P`` = their confirmed share), and loses one when it
    is significantly above (a one-proportion z-test, ``vote_z``). A lesson *without* an effect (advice a person
    reads) is voted on by recurrence: its pattern recurring upvotes it, its pattern staying away for
    ``decay_after`` reflections downvotes it (again after each further ``decay_after``).

  A lesson *about chat* (its pattern a ``chat_topic`` or ``unanswered`` one) goes into the context of chat's
  answers; chat holds it out of a seeded share of the questions and records which lessons each answer had and
  whether it answered (``chat.message.responded``: ``lessons``, ``answered``), so it is voted on by measured
  outcomes the same way: answers with it against answers without it.

  At zero votes a lesson is dropped and its effect stops applying. ``choose_operations`` decides all of this as
  a pure function of JSON-able input (no workspace access): ``insight_operations`` (ADD, EDIT, recurrence and
  quiet votes) and ``outcome_operations`` (the outcome votes). **The model chooses the first part**: the loop
  asks ``ws.llm`` (prompt ``learning.operations`` v2, caused by the ``reflection.completed``), whose offline
  policy answers with ``insight_operations``; ``operations_of_answer`` checks a model's answer (one bad
  operation rejects it all, as ``llm.output_rejected``). The outcome votes are always the loop's own, and a
  model may not vote on a lesson with an effect, so it can neither keep alive nor bring back what measured
  outcomes demote.

* **Tasks.** A pattern seen in at least ``min_insights`` insights over the last ``task_window`` reflections
  creates a ``learned`` task (key ``learned:<pattern>``, one open task per pattern), caused by the latest of
  those insights. Patterns whose insight proposes an effect do not: their lesson acts on them already.

* **Knowledge.** A ``resolution`` insight (a conversation resolved with a summary) is not a pattern to vote on
  but a fact: it creates a ``knowledge`` task at once (key ``knowledge:<conversation>``), whose handler writes the
  summary to a memory note under ``/knowledge`` with its provenance (insight and evidence ids), governed like any
  write. Retrieval then finds it, so later questions about it get answered.

**Why a holdout, not before/after.** Comparing a kind's runs before a lesson with those after it confounds the
lesson with everything else that changed meanwhile: the hour of day (a failure window at night makes any lesson
added at dawn look good), the mix of work, other lessons added at the same time. Instead the executor holds a
seeded share ``holdout_share`` of tasks out of each lesson (a hash of the workspace seed, the task and the
lesson, so it is the same on every replay) and records, for each held-out task, the lessons that would have
applied (``lesson_runs``): both arms see the same hours, the same work and the same other conditions, so the
difference between them is the lesson's. Each lesson draws its holdout on its own, so a second lesson of the
same kind is applied equally often in both arms of the first one's comparison and cannot take its credit. The
price is that the held-out share does not benefit; a smaller share costs less and takes longer to reach a vote
(``min_runs`` held-out tasks per arm).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import pandas as pd

from .causal import handling
from .effects import HUNTER, scope, validate_effect
from .errors import EventError, GraceError, LessonError, ModelCallError, ModelOutputError
from .events import Event, canonical_json
from .loops import Loop, Scheduler
from .mesh import Message
from .times import TS, to_us

if TYPE_CHECKING:
    from .hunter import Hunter
    from .llm import LanguageModels
    from .tasks import Task, Tasks
    from .workspace import Workspace

__all__ = [
    "CHAT_LESSON_KEYS",
    "INITIAL_VOTES",
    "ActiveEffect",
    "Learning",
    "LearningLoop",
    "answer_of",
    "choose_operations",
    "describe_effect",
    "held_out",
    "insight_operations",
    "is_chat_lesson",
    "lesson_text",
    "model_inputs",
    "operations_of_answer",
    "outcome_operations",
    "request_of_inputs",
    "rule_votes",
]

ACTOR = "learning"
KNOWLEDGE_KINDS = frozenset({"resolution"})  # insights that are facts for memory, not patterns for lessons
#: Lessons about chat (by their pattern's kind): chat puts them into its answers' context, holding each out of a
#: seeded share of the questions, and they are voted on by measured outcomes (answered or not), like effects.
CHAT_LESSON_KEYS = ("chat_topic:", "unanswered:")
GENERATIVE = "generative"  # the kind of the insights reflection's model step writes


def is_chat_lesson(key: str) -> bool:
    return str(key).startswith(CHAT_LESSON_KEYS)


INITIAL_VOTES = 2  # as in ExpeL: a new rule starts with two votes
_PRIORITY = {"alert_rate": 70, "failure_rate": 60, "anomaly": 55, "unanswered": 50, "chat_topic": 40}
#: Operation -> (event topic, history op, vote delta).
OPERATIONS: Mapping[str, tuple[str, str, int]] = {
    "ADD": ("learning.rule_added", "add", INITIAL_VOTES),
    "EDIT": ("learning.rule_edited", "edit", 0),
    "UPVOTE": ("learning.rule_upvoted", "upvote", 1),
    "DOWNVOTE": ("learning.rule_downvoted", "downvote", -1),
}


def describe_effect(effect: Mapping[str, Any]) -> str:
    """What an effect makes the executor do, in a few words."""
    parts = []
    if effect.get("params"):
        what = ", ".join(f"{k} = {v}" for k, v in effect["params"].items())
        parts.append(f"use {what}")
    if effect.get("retry"):
        retry = effect["retry"]
        if "max_attempts" in retry:
            parts.append(f"give it up to {retry['max_attempts']} attempts")
        if "backoff" in retry:
            parts.append(f"wait {retry['backoff']:g} s before a retry")
    if effect.get("avoid_hours"):
        parts.append(
            "run it outside the hours " + ", ".join(f"{h:02d}" for h in effect["avoid_hours"]) + " UTC"
        )
    when = effect.get("when")
    condition = " when " + ", ".join(f"{k} = {v}" for k, v in when.items()) if when else ""
    return f"{effect.get('kind')}{condition}: " + "; ".join(parts)


def lesson_text(kind: str, key: str, data: Mapping[str, Any]) -> str:
    """The lesson an insight teaches, worded from its stable parts (so recurrence reads the same)."""
    pattern = key.split(":", 1)[-1]
    if kind == "failure_cause":
        effect = data.get("effect")
        cause = str(data.get("cause", "")).replace("_", " ")
        what = f"{data.get('task_kind')} fails with {data.get('error')} ({cause})"
        return f"{what}: {describe_effect(effect).split(': ', 1)[1]}." if effect else f"{what}."
    if kind == "false_positive":
        effect = data.get("effect") or {}
        words = ", ".join(f'"{w}"' for w in effect.get("suppress", {}).get("context", ()))
        return f"Hunter rule {data.get('rule')} fires on harmless text" + (
            f" with {words} nearby: do not alert there." if words else "."
        )
    if kind == "chat_topic":
        return f'Users keep asking about "{pattern}": keep a memory note that answers it.'
    if kind == "failure_rate":
        how = {"occasional": "now and then", "frequent": "frequently", "constant": "constantly"}
        return f"{pattern} fails {how.get(str(data.get('band')), 'repeatedly')}: investigate the cause."
    if kind == "alert_rate":
        return (
            f"Hunter rule {pattern} ({data.get('severity', '?')}) fires repeatedly: "
            "find where the flagged text comes from and stop it at the source."
        )
    if kind == "unanswered":
        return f"Questions keep going unanswered ({pattern}): add knowledge or adjust the policy behind it."
    if kind == "anomaly":
        return f"{pattern} spikes above its baseline: check what drives the bursts."
    return f"Pattern {key} recurs."


def _task_title(kind: str, key: str, data: Mapping[str, Any]) -> str:
    pattern = key.split(":", 1)[-1]
    titles = {
        "chat_topic": f'Write a memory note on the recurring question "{pattern}"',
        "failure_rate": f"Investigate recurring failures of {pattern}",
        "alert_rate": f"Investigate repeated Hunter alerts of rule {pattern}",
        "unanswered": f"Review questions that go unanswered ({pattern})",
        "anomaly": f"Explain the recurring spikes of {pattern}",
    }
    return titles.get(kind, f"Look into the recurring pattern {key}")


def held_out(seed: int | None, task: Task, share: float, lesson: str) -> bool:
    """Whether a task is held out of the lesson with key ``lesson``: a hash of the workspace seed, the task (its
    kind, title, details and creation time) and the lesson, below ``share``. Each lesson draws on its own, so the
    other lessons of a kind are spread evenly over both arms of a lesson's comparison. Not the task's id: ids
    are drawn in ledger order, so any unrelated event before a task would change the draw."""
    if share <= 0:
        return False
    what = canonical_json({"kind": task.kind, "title": task.title, "details": task.details})
    created = to_us(task.created_at.timestamp())
    digest = hashlib.sha256(f"grace-holdout:{seed}:{lesson}:{created}:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class ActiveEffect(NamedTuple):
    """An active lesson with an effect, as the executor applies it."""

    id: str
    key: str
    effect: dict[str, Any]


# -- the choice of operations (pure) ----------------------------------------------------------------------------
#: Defaults of ``choose_operations`` (a request's ``params`` override them).
CHOICE_PARAMS: Mapping[str, float] = {"decay_after": 3, "min_runs": 3, "vote_z": 1.96}


def _effect_of(data: Mapping[str, Any]) -> dict[str, Any] | None:
    effect = data.get("effect")
    if effect is None:
        return None
    try:
        return validate_effect(effect)
    except LessonError:
        return None  # a malformed proposal teaches advice, not behaviour


def _z(applied: Mapping[str, Any], held: Mapping[str, Any]) -> float:
    """Two-proportion z statistic of success (applied minus held out); 0 when both arms are all alike."""
    n1, n0 = int(applied["tasks"]), int(held["tasks"])
    s1, s0 = int(applied["done"]), int(held["done"])
    pooled = (s1 + s0) / (n1 + n0)
    if pooled in (0.0, 1.0):
        return 0.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    return (s1 / n1 - s0 / n0) / se


def _z_silenced(silenced: Mapping[str, Any], alerts: Mapping[str, Any]) -> float:
    """One-proportion z statistic of a Hunter lesson: how far the confirmed share of the alerts it would silence
    lies below the share that leaves F1 unchanged (``P / (1 + P)``, see the module docstring); > 0 is good."""
    n, k = int(silenced["alerts"]), int(silenced["confirmed"])
    total, confirmed = int(alerts["alerts"]), int(alerts["confirmed"])
    precision = confirmed / total if total else 0.0
    neutral = min(0.99, max(0.01, precision / (1 + precision)))
    return (neutral - k / n) / math.sqrt(neutral * (1 - neutral) / n)


def choose_operations(request: Mapping[str, Any]) -> dict[str, Any]:
    """The ExpeL operations the rules make after one reflection (JSON in, JSON out; no workspace access):
    ``insight_operations`` then ``outcome_operations``.

    ``request``: ``reflection`` (its number), ``insights`` (this reflection's, in ledger order: id, kind, key,
    text, data), ``lessons`` (the active ones: id, key, text, votes, effect or null, last_reflection),
    ``dropped`` (lessons dropped so far: key, effect), ``outcomes`` (per lesson with an effect, the tasks ended
    since its last outcome vote: ``{"rule_id", "applied": {"tasks", "done"}, "held_out": {"tasks", "done"}}``;
    per lesson with a Hunter effect, the verdicts given since then: ``{"rule_id", "silenced": {"alerts",
    "confirmed"}, "alerts": {"alerts", "confirmed"}}``, the held-out alerts it would have silenced, and all alerts)
    and ``params`` (``CHOICE_PARAMS``). Answers ``{"operations": [...]}``, each with ``op`` (ADD, EDIT, UPVOTE,
    DOWNVOTE), ``basis`` (insight, recurrence, quiet, outcome) and what the op needs (key, text, effect,
    rule_id, insight, evidence).
    """
    return {
        "operations": insight_operations(request)["operations"] + outcome_operations(request)["operations"]
    }


def insight_operations(request: Mapping[str, Any]) -> dict[str, Any]:
    """The operations judged from the insights (ADD, EDIT, UPVOTE on recurrence, DOWNVOTE when quiet): what
    the offline policy answers for ``learning.operations``, and what a model may choose instead."""
    params = {**CHOICE_PARAMS, **dict(request.get("params") or {})}
    n = int(request["reflection"])
    lessons = {str(lesson["key"]): lesson for lesson in request.get("lessons", [])}
    harmful = {
        (str(d["key"]), canonical_json({"e": d["effect"]}))
        for d in request.get("dropped", [])
        if d.get("effect") is not None
    }
    latest: dict[str, Mapping[str, Any]] = {}
    for insight in request.get("insights", []):
        if insight.get("kind") == GENERATIVE:
            continue  # a model's free-text insight: for a model to judge, not for the rules
        latest[str(insight["key"])] = insight  # the last of a key wins
    ops: list[dict[str, Any]] = []
    for key in sorted(latest):
        insight = latest[key]
        if insight["kind"] in KNOWLEDGE_KINDS:
            continue  # a fact to write down (a knowledge task), not a lesson
        data = insight.get("data") or {}
        effect = _effect_of(data)
        text = lesson_text(str(insight["kind"]), key, data)
        lesson = lessons.get(key)
        common = {"key": key, "insight": insight["id"]}
        if lesson is None:
            if effect is not None and (key, canonical_json({"e": effect})) in harmful:
                continue  # measured to do harm once: not again
            op = {"op": "ADD", "basis": "insight", **common, "text": text}
            ops.append({**op, "effect": effect} if effect is not None else op)
            continue
        changed = text != lesson["text"] or (effect is not None and effect != lesson.get("effect"))
        if changed:
            edit = {
                "op": "EDIT",
                "basis": "insight",
                **common,
                "rule_id": lesson["id"],
                "text": text,
                "old_text": lesson["text"],
            }
            if effect is not None:
                edit.update(effect=effect, old_effect=lesson.get("effect"))
            ops.append(edit)
        if lesson.get("effect") is None and effect is None and not is_chat_lesson(key):
            ops.append({"op": "UPVOTE", "basis": "recurrence", **common, "rule_id": lesson["id"]})
    decay_after = max(1, math.floor(float(params["decay_after"])))
    for key in sorted(set(lessons) - set(latest)):
        lesson = lessons[key]
        if lesson.get("effect") is not None or is_chat_lesson(key):
            continue  # measured, not judged by recurrence (a working fix makes its pattern go away)
        quiet = n - int(lesson["last_reflection"])
        if quiet > 0 and quiet % decay_after == 0:
            ops.append(
                {"op": "DOWNVOTE", "basis": "quiet", "key": key, "rule_id": lesson["id"], "quiet": quiet}
            )
    return {"operations": ops}


def outcome_operations(request: Mapping[str, Any]) -> dict[str, Any]:
    """The votes on lessons with an effect from their measured outcomes: always the loop's own, never a model's."""
    params = {**CHOICE_PARAMS, **dict(request.get("params") or {})}
    ops: list[dict[str, Any]] = []
    by_id = {str(lesson["id"]): lesson for lesson in request.get("lessons", [])}
    for outcome in sorted(request.get("outcomes", []), key=lambda o: str(o["rule_id"])):
        lesson = by_id.get(str(outcome["rule_id"]))
        # Lessons with an effect, and chat lessons (which change the responder's context), are measured.
        if lesson is None or (lesson.get("effect") is None and not is_chat_lesson(str(lesson["key"]))):
            continue
        silenced, alerts = outcome.get("silenced"), outcome.get("alerts")
        applied, held = outcome.get("applied"), outcome.get("held_out")
        evidence: dict[str, Any]
        if silenced and alerts:
            if int(silenced["alerts"]) < params["min_runs"]:
                continue
            z = _z_silenced(silenced, alerts)
            evidence = {
                "silenced": {"alerts": int(silenced["alerts"]), "confirmed": int(silenced["confirmed"])},
                "alerts": {"alerts": int(alerts["alerts"]), "confirmed": int(alerts["confirmed"])},
            }
        elif applied and held:
            if min(int(applied["tasks"]), int(held["tasks"])) < params["min_runs"]:
                continue
            z = _z(applied, held)
            evidence = {
                "applied": {"tasks": int(applied["tasks"]), "done": int(applied["done"])},
                "held_out": {"tasks": int(held["tasks"]), "done": int(held["done"])},
            }
        else:
            continue
        if abs(z) < params["vote_z"]:
            continue
        evidence["z"] = round(z, 4)
        ops.append(
            {
                "op": "UPVOTE" if z > 0 else "DOWNVOTE",
                "basis": "outcome",
                "key": lesson["key"],
                "rule_id": lesson["id"],
                "evidence": evidence,
            }
        )
    return {"operations": ops}


# -- the model's operations ---------------------------------------------------------------------------------------
def model_inputs(request: Mapping[str, Any], *, max_operations: int) -> dict[str, Any]:
    """The ``learning.operations`` (version 2) inputs for a ``choose_operations`` request.

    Items carry what the offline policy needs besides what the prompt shows (keys, kinds, data, effects).
    Outcomes are shown as success rates, held out (before) against applied (after).
    """
    outcomes = []
    for o in request.get("outcomes", []):
        applied, held = o.get("applied"), o.get("held_out")
        if applied and held and applied["tasks"] and held["tasks"]:
            outcomes.append(
                {
                    "lesson": o["rule_id"],
                    "metric": "success rate of its tasks (held out -> applied)",
                    "before": round(held["done"] / held["tasks"], 3),
                    "after": round(applied["done"] / applied["tasks"], 3),
                    "better": "higher",
                }
            )
    params = {**CHOICE_PARAMS, **dict(request.get("params") or {})}
    return {
        "reflection": int(request["reflection"]),
        "lessons": [dict(lesson) for lesson in request.get("lessons", [])],
        "insights": [dict(insight) for insight in request.get("insights", [])],
        "dropped": [dict(d) for d in request.get("dropped", [])],
        "outcomes": outcomes,
        "decay_after": max(1, math.floor(float(params["decay_after"]))),
        "max_operations": max_operations,
    }


def request_of_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``choose_operations`` request back from ``model_inputs`` (what the offline policy decides on)."""
    return {
        "reflection": int(inputs["reflection"]),
        "lessons": list(inputs.get("lessons") or []),
        "insights": list(inputs.get("insights") or []),
        "dropped": list(inputs.get("dropped") or []),
        "params": {"decay_after": float(inputs.get("decay_after") or CHOICE_PARAMS["decay_after"])},
    }


def answer_of(operations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Operations as ``choose_operations`` gives them, in the form a model answers ``learning.operations``."""
    out = []
    for op in operations:
        item: dict[str, Any] = {"op": op["op"], "basis": op["basis"]}
        if op["op"] == "ADD":
            item["key"] = op["key"]
        else:
            item["id"] = op["rule_id"]
        if "text" in op:
            item["text"] = op["text"]
        if op.get("effect") is not None:
            item["effect"] = op["effect"]
        if op.get("insight"):
            item["evidence"] = [op["insight"]]
        item["reason"] = {
            "insight": "new insight" if op["op"] == "ADD" else "the insight says it differently",
            "recurrence": "its pattern recurs",
            "quiet": f"no support for {op.get('quiet')} reflections",
        }.get(str(op["basis"]), str(op["basis"]))
        out.append(item)
    return {"operations": out}


def operations_of_answer(answer: Mapping[str, Any], request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A model's ``learning.operations`` answer as operations the loop applies; raises ``ModelOutputError``
    (one line) for the first operation that cannot apply, and then none of them is applied.

    An ADD needs a text and must cite insights of this reflection; its key is given, else its first insight's
    (unless a lesson has it), else one made from its text. EDIT, UPVOTE and DOWNVOTE need an active lesson's
    id, at most one EDIT and one vote per lesson. An effect must pass ``validate_effect``; an ADD may not bring
    back a lesson whose effect was dropped for doing harm. **UPVOTE and DOWNVOTE may not name a lesson with an
    effect**: its votes come from its measured outcomes only (``outcome_operations``), so a model cannot keep
    alive, or resurrect, a lesson the outcomes demote.
    """
    n = int(request["reflection"])
    lessons = {str(lesson["id"]): lesson for lesson in request.get("lessons", [])}
    keys = {str(lesson["key"]) for lesson in lessons.values()}
    insights = {str(i["id"]): i for i in request.get("insights", [])}
    harmful = {
        (str(d["key"]), canonical_json({"e": d["effect"]}))
        for d in request.get("dropped", [])
        if d.get("effect") is not None
    }
    out: list[dict[str, Any]] = []
    touched: set[tuple[str, str]] = set()
    for i, op in enumerate(answer.get("operations") or []):
        kind = str(op.get("op"))
        where = f"operation {i} ({kind})"
        evidence = [str(x) for x in op.get("evidence") or []]
        unknown = [x for x in evidence if x not in insights]
        if unknown:
            raise ModelOutputError(f"{where} cites {unknown[0]!r}, which is no insight of this reflection")
        text = " ".join(str(op.get("text", "")).split())
        effect = None
        if op.get("effect") is not None:
            try:
                effect = validate_effect(op["effect"])
            except LessonError as exc:
                raise ModelOutputError(f"{where}: {exc}") from exc
        cited = {"insight": evidence[0]} if evidence else {}
        if kind == "ADD":
            if not text:
                raise ModelOutputError(f"{where} has no text")
            if not evidence:
                raise ModelOutputError(f"{where} cites no insight")
            first = str(insights[evidence[0]]["key"])
            key = str(op.get("key") or "").strip() or (
                first if first not in keys else "lesson:" + hashlib.sha256(text.encode()).hexdigest()[:12]
            )
            if key in keys:
                raise ModelOutputError(f"{where}: a lesson with key {key!r} exists; EDIT it instead")
            if effect is not None and (key, canonical_json({"e": effect})) in harmful:
                raise ModelOutputError(f"{where}: the effect of {key!r} was dropped for doing harm")
            keys.add(key)
            add = {"op": "ADD", "basis": "insight", "key": key, **cited, "text": text}
            out.append({**add, "effect": effect} if effect is not None else add)
            continue
        rule_id = str(op.get("id", ""))
        lesson = lessons.get(rule_id)
        if lesson is None:
            raise ModelOutputError(f"{where} names {rule_id!r}, which is no active lesson")
        what = (rule_id, "edit" if kind == "EDIT" else "vote")
        if what in touched:
            raise ModelOutputError(f"{where}: a second {what[1]} of lesson {rule_id}")
        touched.add(what)
        common = {"key": str(lesson["key"]), "rule_id": rule_id, **cited}
        if kind == "EDIT":
            if not text:
                raise ModelOutputError(f"{where} has no text")
            edit = {"op": "EDIT", "basis": "insight", **common, "text": text, "old_text": lesson["text"]}
            if effect is not None:
                edit.update(effect=effect, old_effect=lesson.get("effect"))
            out.append(edit)
            continue
        if lesson.get("effect") is not None:
            raise ModelOutputError(
                f"{where}: lesson {rule_id} has an effect, so its measured outcomes vote on it, not the model"
            )
        if kind == "UPVOTE":
            out.append({"op": "UPVOTE", "basis": "recurrence", **common})
        elif op.get("basis") == "quiet":
            quiet = n - int(lesson["last_reflection"])
            out.append({"op": "DOWNVOTE", "basis": "quiet", **common, "quiet": quiet})
        else:
            out.append({"op": "DOWNVOTE", "basis": "insight", **common})
    return out


# -- the loop ----------------------------------------------------------------------------------------------------
class LearningLoop(Loop):
    """The ``learning`` loop (see the module docstring)."""

    name: ClassVar[str] = "learning"
    topics: ClassVar[tuple[str, ...]] = ("reflection.completed",)
    params: ClassVar[Mapping[str, Any]] = {
        "interval": 10.0,
        "batch_size": 10_000,
        "min_insights": 3.0,  # insights with one key that make a task
        "task_window": 10.0,  # ... within this many reflections
        "decay_after": 3.0,  # reflections without support before an advice lesson loses a vote
        "holdout_share": 0.2,  # tasks held out of every lesson, the baseline of outcome votes
        "min_runs": 3,  # ended tasks per arm (applied, held out) before an outcome vote
        "vote_z": 1.96,  # |z| of the difference in success rates that casts a vote
    }
    tunable: ClassVar[Mapping[str, tuple[float, float]]] = {
        "interval": (2.0, 120.0),
        "min_insights": (2.0, 20.0),
        "task_window": (2.0, 100.0),
        "decay_after": (1.0, 50.0),
    }

    def __init__(self, learning: Learning, loops: Scheduler, tasks: Tasks, llm: LanguageModels) -> None:
        self.learning = learning
        self._ws = learning.ws
        self._loops = loops
        self._tasks = tasks
        self._llm = llm

    def objective(self, ws: Workspace, since: float, until: float) -> float | None:
        """Share of the votes cast in [since, until) that were upvotes (None with fewer than 3 votes)."""
        row = (
            ws.ledger.reader()
            .execute(
                "SELECT count(*) FILTER (WHERE op = 'upvote'), count(*) FILTER (WHERE op IN ('upvote', 'downvote')) "
                "FROM learned_rule_history WHERE ts >= make_timestamptz(?::BIGINT) "
                "AND ts < make_timestamptz(?::BIGINT)",
                [int(since * 1e6), int(until * 1e6)],
            )
            .fetchone()
        )
        good, total = (int(row[0]), int(row[1])) if row else (0, 0)
        return good / total if total >= 3 else None

    def _param(self, key: str) -> float:
        return float(self._loops.param(self.name, key))

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        tasks = rules = 0
        for completed in events:
            t, r = self.learn(completed)
            tasks += t
            rules += r
        return {"tasks": tasks, "rule_ops": rules}

    # -- one reflection ----------------------------------------------------------------------------------------
    def learn(self, completed: Event) -> tuple[int, int]:
        """Learn from one ``reflection.completed``: returns (tasks created, lesson operations)."""
        n = int(completed.payload["n"])
        insights = self._insights_of(completed)
        by_id = {e.id: e for e in insights}
        request = {
            "reflection": n,
            "insights": [
                {
                    "id": e.id,
                    "kind": e.payload["kind"],
                    "key": e.payload["key"],
                    "text": e.payload["text"],
                    "data": e.payload.get("data", {}),
                }
                for e in insights
            ],
            "lessons": self.learning.lessons(),
            "dropped": self.learning.lessons(state="dropped", with_effect=True),
            "outcomes": self.learning.pending_outcomes(),
            "params": {k: self._param(k) for k in CHOICE_PARAMS},
        }
        with handling(completed):
            chosen = self._chosen(request)
        operations = chosen + outcome_operations(request)["operations"]
        messages = [self._message(op, n, by_id, completed) for op in operations]
        if messages:
            self._ws.publish_many(messages, actor=ACTOR)
        created = 0
        latest: dict[str, Event] = {}
        for e in insights:
            latest[e.payload["key"]] = e
        for key in sorted(latest):
            if latest[key].payload["kind"] == GENERATIVE:
                continue  # tasks are opened for the analysis' recurring patterns; a model's text rarely recurs
            if latest[key].payload["kind"] in KNOWLEDGE_KINDS:
                created += self._knowledge_task(latest[key])
            elif _effect_of(latest[key].payload.get("data", {})) is None and self._make_task(
                key, n, latest[key]
            ):
                created += 1
        return created, len(messages)

    def _knowledge_task(self, insight: Event) -> bool:
        """A ``knowledge`` task that writes what ``insight`` learned to memory (one per conversation)."""
        p = insight.payload
        data = p.get("data", {})
        key = f"knowledge:{data.get('conversation') or insight.id}"
        if self._tasks._open_with_key(key) is not None:
            return False
        with handling(insight):
            try:
                self._tasks.create(
                    f'Write down what resolved "{str(data.get("title", ""))[:80]}"',
                    kind="knowledge",
                    actor=ACTOR,
                    priority=60,
                    key=key,
                    details={
                        "insight": insight.id,
                        "evidence": list(p.get("evidence", []))[:50],
                        "title": data.get("title"),
                        "summary": data.get("summary"),
                        "conversation": data.get("conversation"),
                    },
                )
            except GraceError:
                return False  # governance or a degraded mode said no; the insight stays on record
        return True

    def _chosen(self, request: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The operations the model (offline: the rules of ``insight_operations``) chooses from the insights.

        No call when there is nothing to judge (no insight and no lesson without an effect). A failed call
        (``llm.failed``) or a rejected answer (``llm.output_rejected``) changes no lesson; the outcome votes and
        the tasks still happen.
        """
        lessons = request.get("lessons", [])
        if not request.get("insights") and all(lesson.get("effect") is not None for lesson in lessons):
            return []
        bound = max(4, len(lessons) + len(request.get("insights", [])))
        try:
            answer = self._llm.complete_json(
                "learning.operations",
                model_inputs(request, max_operations=bound),
                purpose="learning",
                actor=ACTOR,
            )
        except (ModelCallError, ModelOutputError):
            return []
        try:
            chosen = operations_of_answer(answer.data, request)
        except ModelOutputError as exc:
            self._llm.reject(answer, str(exc), actor=ACTOR)
            return []
        return [{**op, "completion": answer.event_id} for op in chosen]

    def _message(
        self, op: Mapping[str, Any], n: int, insights: Mapping[str, Event], completed: Event
    ) -> Message:
        topic = OPERATIONS[op["op"]][0]
        payload: dict[str, Any] = {"key": op["key"], "reflection": n, "basis": op["basis"]}
        for field in (
            "rule_id",
            "text",
            "old_text",
            "effect",
            "old_effect",
            "insight",
            "evidence",
            "quiet",
            "completion",
        ):
            if field in op:
                payload[field] = op[field]
        if op["op"] == "ADD":
            payload["votes"] = INITIAL_VOTES
        cause = insights.get(str(op.get("insight"))) or completed
        resource = f"lesson:{op.get('rule_id') or op['key']}"
        return Message(topic, payload, resource, cause=cause)

    def _make_task(self, key: str, n: int, latest: Event) -> bool:
        window = max(1, math.floor(self._param("task_window")))
        task_key = f"learned:{key}"
        reader = self._ws.ledger.reader()
        if self._tasks._open_with_key(task_key) is not None:
            return False
        # Only insights after the pattern's last task count: a task that was done is not reopened by the
        # very insights that made it, only by the pattern recurring again.
        rows = reader.execute(
            'SELECT i.id FROM insights i JOIN events e ON e.id = i.id WHERE i."key" = ? '
            "AND i.reflection > ? AND i.reflection <= ? AND e.seq > coalesce((SELECT max(t.seq) FROM events t "
            "WHERE t.id IN (SELECT id FROM tasks WHERE key = ?)), 0) ORDER BY e.seq",
            [key, n - window, n, task_key],
        ).fetchall()
        if len(rows) < math.ceil(self._param("min_insights")):
            return False
        p = latest.payload
        with handling(latest):
            try:
                self._tasks.create(
                    _task_title(p["kind"], key, p.get("data", {})),
                    kind="learned",
                    actor=ACTOR,
                    priority=_PRIORITY.get(p["kind"], 50),
                    key=task_key,
                    details={
                        "pattern": key,
                        "insight_kind": p["kind"],
                        "insights": [r[0] for r in rows],
                        "lesson": lesson_text(p["kind"], key, p.get("data", {})),
                        "summary": p["text"],
                    },
                )
            except GraceError:
                return False  # e.g. governance or a degraded mode said no; the next recurrence tries again
        return True

    def _insights_of(self, completed: Event) -> list[Event]:
        """The insights of a reflection, in ledger order (the analysis's and the model's, when it ran)."""
        if not int(completed.payload.get("insights", 0)):
            return []
        row = (
            self._ws.ledger.reader()
            .execute(
                "SELECT min(e.seq), max(e.seq) FROM insights i JOIN events e ON e.id = i.id WHERE i.reflection = ?",
                [int(completed.payload["n"])],
            )
            .fetchone()
        )
        if row is None or row[0] is None:
            return []
        events = self._ws.ledger.events(since=int(row[0]) - 1, until=int(row[1]), topic="reflection.insight")
        return [e for e in events if e.payload.get("reflection") == completed.payload["n"]]


# -- the engine ----------------------------------------------------------------------------------------------
class Learning:
    """``ws.learning``: the loop, the lessons it keeps, their history and the outcomes they are judged by."""

    def __init__(
        self, ws: Workspace, *, loops: Scheduler, tasks: Tasks, llm: LanguageModels, hunter: Hunter
    ) -> None:
        self.ws = ws
        self._tasks = tasks
        self._loops = loops
        self._generation = 0  # bumped whenever a lesson changes; Hunter's lessons are re-read lazily
        self._hunter_cache: tuple[int, list[tuple[str, dict[str, Any]]]] | None = None
        ws.projections.register(
            "learned_rules", "learning.*", self._apply, tables=["learned_rules", "learned_rule_history"]
        )
        ws.projections.register("lesson_runs", "task.*", _apply_runs, tables=["lesson_runs"])
        self.loop = LearningLoop(self, loops, tasks, llm)
        loops.add(self.loop)
        hunter.use_lessons(self)

    def _apply(self, con: Any, events: list[Event]) -> None:
        _apply(con, events)
        self._generation += 1

    # -- Hunter's lessons --------------------------------------------------------------------------------------
    def hunter_lessons(self) -> list[tuple[str, dict[str, Any]]]:
        """The active lessons with a Hunter effect, (id, effect), oldest first (read again after any change)."""
        cached = self._hunter_cache
        generation = self._generation
        if cached is not None and cached[0] == generation:
            return cached[1]
        rows = (
            self.ws.ledger.reader()
            .execute(
                "SELECT id, effect FROM learned_rules WHERE state = 'active' AND task_kind = ? "
                'ORDER BY created_at, "key"',
                [HUNTER],
            )
            .fetchall()
        )
        lessons = [(str(r[0]), json.loads(r[1])) for r in rows]
        self._hunter_cache = (generation, lessons)
        return lessons

    def hunter_held_out(self, lesson: str, key: str) -> bool:
        """Whether the screen ``key`` is held out of ``lesson``: a hash of the workspace seed, the screen and the
        lesson below ``holdout_share``, as for tasks (see ``held_out``)."""
        share = float(self._loops.param(LearningLoop.name, "holdout_share"))
        if share <= 0:
            return False
        digest = hashlib.sha256(f"grace-holdout:{self.ws.seed}:{lesson}:{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < share

    # -- reading ---------------------------------------------------------------------------------------------
    def rules(self, *, include_dropped: bool = False) -> pd.DataFrame:
        """Lessons, strongest first."""
        where = "" if include_dropped else "WHERE state = 'active'"
        return self.ws.sql(f"SELECT * FROM learned_rules {where} ORDER BY votes DESC, created_at, id")

    def history(self, rule_id: str | None = None) -> pd.DataFrame:
        """Every operation on a lesson (or on all lessons), oldest first: op, delta, votes after it, basis."""
        if rule_id is None:
            return self.ws.sql("SELECT * FROM learned_rule_history ORDER BY seq")
        return self.ws.sql("SELECT * FROM learned_rule_history WHERE rule_id = ? ORDER BY seq", [rule_id])

    def tasks(self) -> pd.DataFrame:
        """The tasks learning created."""
        return self._tasks.list(kind="learned")

    def lessons(self, *, state: str = "active", with_effect: bool = False) -> list[dict[str, Any]]:
        """Lessons as JSON-able dicts (id, key, text, votes, effect, last_reflection), oldest first."""
        sql = (
            'SELECT id, "key", text, votes, effect, last_reflection FROM learned_rules WHERE state = ?'
            + (" AND effect IS NOT NULL" if with_effect else "")
            + ' ORDER BY created_at, "key"'
        )
        rows = self.ws.ledger.reader().execute(sql, [state]).fetchall()
        return [
            {
                "id": r[0],
                "key": r[1],
                "text": r[2],
                "votes": int(r[3]),
                "effect": None if r[4] is None else json.loads(r[4]),
                "last_reflection": int(r[5]),
            }
            for r in rows
        ]

    def effects(self) -> dict[str, list[ActiveEffect]]:
        """Task kind -> the active lessons with an executor effect (id, key, effect), oldest first."""
        rows = (
            self.ws.ledger.reader()
            .execute(
                "SELECT task_kind, id, \"key\", effect FROM learned_rules WHERE state = 'active' "
                'AND effect IS NOT NULL AND task_kind <> ? ORDER BY created_at, "key"',
                [HUNTER],
            )
            .fetchall()
        )
        out: dict[str, list[ActiveEffect]] = {}
        for kind, rule_id, key, effect in rows:
            out.setdefault(str(kind), []).append(ActiveEffect(str(rule_id), str(key), json.loads(effect)))
        return out

    def pending_outcomes(self) -> list[dict[str, Any]]:
        """Per active lesson with an effect: its applied and held-out tasks that ended since its last outcome vote."""
        rows = (
            self.ws.ledger.reader()
            .execute(
                "SELECT r.rule_id, r.arm, count(*), count(*) FILTER (WHERE r.outcome = 'done') "
                "FROM lesson_runs r JOIN learned_rules l ON l.id = r.rule_id "
                "WHERE l.state = 'active' AND r.outcome IN ('done', 'failed') "
                "AND r.ended_seq > coalesce(l.evaluated_seq, 0) GROUP BY 1, 2 ORDER BY 1, 2"
            )
            .fetchall()
        )
        out: dict[str, dict[str, Any]] = {}
        for rule_id, arm, tasks, done in rows:
            out.setdefault(str(rule_id), {"rule_id": str(rule_id)})[str(arm)] = {
                "tasks": int(tasks),
                "done": int(done),
            }
        for rule_id, arms in self._chat_outcomes().items():
            out.setdefault(rule_id, {"rule_id": rule_id}).update(arms)
        for rule_id, alerts, confirmed, silenced, silenced_confirmed in self._hunter_outcomes():
            if silenced:
                out[rule_id] = {
                    "rule_id": rule_id,
                    "silenced": {"alerts": silenced, "confirmed": silenced_confirmed},
                    "alerts": {"alerts": alerts, "confirmed": confirmed},
                }
        return [out[k] for k in sorted(out)]

    def _chat_outcomes(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per active chat lesson and arm: answers since its last outcome vote, and how many answered (``tasks``
        and ``done``, as for task lessons). An answer counts as answered unless it says it does not know."""
        reader = self.ws.ledger.reader()
        lessons = {
            str(rule_id): int(seq or 0)
            for rule_id, key, seq in reader.execute(
                "SELECT id, \"key\", evaluated_seq FROM learned_rules WHERE state = 'active' AND effect IS NULL"
            ).fetchall()
            if is_chat_lesson(key)
        }
        if not lessons:
            return {}
        rows = reader.execute(
            "SELECT seq, payload->'$.lessons', (payload->>'$.answered') = 'true' FROM events "
            "WHERE topic = 'chat.message.responded' AND seq > ? AND json_exists(payload, '$.lessons') ORDER BY seq",
            [min(lessons.values())],
        ).fetchall()
        out: dict[str, dict[str, dict[str, int]]] = {}
        for seq, arms, answered in rows:
            for arm, ids in json.loads(arms).items():
                for rule_id in ids:
                    if rule_id in lessons and seq > lessons[rule_id]:
                        counts = out.setdefault(rule_id, {}).setdefault(arm, {"tasks": 0, "done": 0})
                        counts["tasks"] += 1
                        counts["done"] += int(bool(answered))
        return out

    def holds_out(self, lesson: str, *, subject: str) -> bool:
        """Whether ``subject`` (e.g. a chat question) is held out of the lesson with key ``lesson``: a hash of the
        workspace seed, the lesson and the subject below the learning loop's ``holdout_share``."""
        share = float(self._loops.param(LearningLoop.name, "holdout_share"))
        if share <= 0:
            return False
        digest = hashlib.sha256(f"grace-holdout:{self.ws.seed}:{lesson}:{subject}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < share

    def _hunter_outcomes(self) -> list[tuple[str, int, int, int, int]]:
        """Per active Hunter lesson, over the verdicts given since its last outcome vote: all verdicted alerts
        (and how many were confirmed), and those it would have silenced but that were held out of it."""
        rows = (
            self.ws.ledger.reader()
            .execute(
                "SELECT l.id, count(*), count(*) FILTER (WHERE a.verdict = 'confirmed'), "
                "count(*) FILTER (WHERE list_contains(json_extract_string(a.held_out, '$[*]'), l.id)), "
                "count(*) FILTER (WHERE list_contains(json_extract_string(a.held_out, '$[*]'), l.id) "
                "AND a.verdict = 'confirmed') "
                "FROM learned_rules l JOIN hunter_alerts a ON a.verdict_seq > coalesce(l.evaluated_seq, 0) "
                "WHERE l.state = 'active' AND l.task_kind = ? GROUP BY l.id ORDER BY l.id",
                [HUNTER],
            )
            .fetchall()
        )
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]

    def outcomes(self) -> pd.DataFrame:
        """Per lesson and arm (applied, held_out): tasks ended, done, success rate and mean time to done."""
        return self.ws.sql(
            "SELECT r.rule_id, l.key, l.state, r.arm, count(*) AS tasks, "
            "count(*) FILTER (WHERE r.outcome = 'done') AS done, "
            "count(*) FILTER (WHERE r.outcome = 'done') / count(*) AS success_rate, "
            "avg(r.duration_s) FILTER (WHERE r.outcome = 'done') AS mean_time_to_done_s "
            "FROM lesson_runs r JOIN learned_rules l ON l.id = r.rule_id WHERE r.outcome IN ('done', 'failed') "
            "GROUP BY ALL ORDER BY l.key, r.arm"
        )

    # -- writing ---------------------------------------------------------------------------------------------
    def add_lesson(
        self,
        text: str,
        *,
        effect: Mapping[str, Any] | None = None,
        actor: str,
        key: str | None = None,
    ) -> str:
        """Add a lesson by hand (a researcher's, or an experiment's deliberate mistake); returns its id.

        It starts with ``INITIAL_VOTES`` like any other and is judged the same way: a lesson with an ``effect``
        by measured outcomes, one without by the recurrence of its ``key``'s pattern.
        """
        if not isinstance(text, str) or not text.strip():
            raise LessonError("a lesson needs a text")
        normal = None if effect is None else validate_effect(effect)
        key = key or (
            f"manual:{normal.get('rule') or normal['kind']}:{normal['cause']}"
            if normal
            else f"manual:{text.strip()[:60]}"
        )
        if any(lesson["key"] == key for lesson in self.lessons()):
            raise LessonError(f"an active lesson has the key {key!r} already; edit or drop it first")
        row = self.ws.ledger.reader().execute("SELECT coalesce(max(n), 0) FROM reflections").fetchone()
        payload: dict[str, Any] = {
            "key": key,
            "text": text.strip(),
            "votes": INITIAL_VOTES,
            "reflection": int(row[0]) if row else 0,
            "basis": "injected",
        }
        if normal is not None:
            payload["effect"] = normal
        return self.ws.publish("learning.rule_added", payload, actor=actor, resource=f"lesson:{key}").id


def _apply(con: Any, events: Iterable[Event]) -> None:
    ops = {topic: (op, delta) for topic, op, delta in OPERATIONS.values()}
    for e in events:
        if e.topic not in ops:
            continue
        op, delta = ops[e.topic]
        p = e.payload
        reflection = int(p["reflection"])
        basis = str(p.get("basis", "insight"))
        evidence = canonical_json(p["evidence"]) if "evidence" in p else None
        if op == "add":
            rule_id = e.id
            votes = INITIAL_VOTES
            text = p["text"]
            effect = p.get("effect")
            con.execute(
                'INSERT INTO learned_rules (id, "key", text, votes, state, support, last_reflection, created_at, '
                "updated_at, effect, task_kind, created_by, evaluated_seq) VALUES (?, ?, ?, ?, 'active', 1, ?, "
                f"{TS}, {TS}, ?, ?, ?, NULL)",
                [
                    rule_id,
                    p["key"],
                    text,
                    votes,
                    reflection,
                    e.ts_us,
                    e.ts_us,
                    None if effect is None else canonical_json(_valid(effect)),
                    None if effect is None else scope(_valid(effect)),
                    e.actor,
                ],
            )
        else:
            rule_id = p["rule_id"]
            row = con.execute(
                "SELECT votes, text, state, effect FROM learned_rules WHERE id = ?", [rule_id]
            ).fetchone()
            if row is None:
                raise EventError(f"{e.topic} names an unknown rule {rule_id}")
            if row[2] == "dropped":
                raise EventError(f"{e.topic}: rule {rule_id} was dropped at zero votes")
            # The votes follow from the history, whatever the payload claims: replay gives the same numbers.
            votes = int(row[0]) + delta
            text = p.get("text", row[1])
            effect_json = row[3]
            if op == "edit" and p.get("effect") is not None:
                effect_json = canonical_json(_valid(p["effect"]))
            supported = op == "edit" or (op == "upvote" and basis == "recurrence")
            con.execute(
                "UPDATE learned_rules SET votes = ?, text = ?, state = ?, support = support + ?, effect = ?, "
                "task_kind = ?, "
                "last_reflection = CASE WHEN ? THEN ? ELSE last_reflection END, "
                "evaluated_seq = CASE WHEN ? THEN ? ELSE evaluated_seq END, "
                f"updated_at = {TS} WHERE id = ?",
                [
                    votes,
                    text,
                    "active" if votes > 0 else "dropped",
                    int(supported),
                    effect_json,
                    None if effect_json is None else scope(json.loads(effect_json)),
                    supported,
                    reflection,
                    basis == "outcome",
                    e.seq,
                    e.ts_us,
                    rule_id,
                ],
            )
        con.execute(
            "INSERT INTO learned_rule_history (rule_id, seq, event_id, op, delta, votes, text, insight, reflection, "
            f"ts, basis, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {TS}, ?, ?)",
            [
                rule_id,
                e.seq,
                e.id,
                op,
                delta,
                votes,
                text,
                p.get("insight"),
                reflection,
                e.ts_us,
                basis,
                evidence,
            ],
        )


def _valid(effect: Any) -> dict[str, Any]:
    """An effect in its normal form; a malformed one makes the projection refuse the event."""
    try:
        return validate_effect(effect)
    except LessonError as exc:
        raise EventError(str(exc)) from exc


def _apply_runs(con: Any, events: Sequence[Event]) -> None:
    """``lesson_runs`` from the policy the executor records: a run's start or a deferral adds the lessons it
    concerned (applied or held out), the run that ends the task sets their outcome."""
    for e in events:
        p = e.payload
        policy = p.get("policy")
        if not policy:
            continue
        if e.topic == "task.state_changed" and p.get("from") == "running":
            if p.get("to") in ("done", "failed", "cancelled"):
                con.execute(
                    "UPDATE lesson_runs SET outcome = ?, ended_seq = ?, duration_s = (? - created_us) / 1e6 "
                    "WHERE task_id = ? AND outcome IS NULL",
                    [p["to"], e.seq, e.ts_us, p["task_id"]],
                )
            continue
        rows = [
            (rule_id, arm)
            for arm, ids in (("applied", policy.get("lessons", ())), ("held_out", policy.get("held_out", ())))
            for rule_id in ids
        ]
        if rows:
            values = ", ".join(["(?, ?, ?, ?, ?)"] * len(rows))
            con.execute(
                "INSERT INTO lesson_runs (rule_id, task_id, kind, arm, first_seq, created_us) "
                f"SELECT v.*, epoch_us(t.created_at) FROM (VALUES {values}) v JOIN tasks t ON t.id = v.col1 "
                "ON CONFLICT DO NOTHING",
                [x for rule_id, arm in rows for x in (rule_id, p["task_id"], p["kind"], arm, e.seq)],
            )


def rule_votes(ops: Iterable[str]) -> list[int]:
    """The votes after each operation of a sequence (``add`` first), stopping when the rule is dropped.

    The arithmetic of the registry, kept pure for reasoning and tests: ``add`` gives ``INITIAL_VOTES``, ``edit``
    0, ``upvote`` +1, ``downvote`` -1; at zero the rule is gone and later operations do not apply.
    """
    deltas = {op: delta for _topic, op, delta in OPERATIONS.values()}
    out: list[int] = []
    votes = 0
    for op in ops:
        if out and votes <= 0:
            break
        votes = INITIAL_VOTES if op == "add" else votes + deltas[op]
        out.append(votes)
    return out
