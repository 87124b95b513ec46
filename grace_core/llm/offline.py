"""The offline policy: a pure Python function per prompt, of the prompt's structured inputs.

It needs no model and gives the same answer for the same inputs, so deterministic runs (ManualClock + seed)
stay deterministic with the loops calling ``ws.llm``. The default handlers are deliberately simple and say
what they do:

* ``chat.answer``: extractive: the sentence of the retrieved passages that shares the most words with the
  question, citing its passage id, after its part that the question does not already say (the short answer,
  first line); "I do not know." when no passage shares a word. Lessons and history are in the recorded prompt
  for a model to read; this policy does not use them.
* ``reflection.questions``: one question per finding of the reflection's own analysis among the observations
  (items with ``finding``: failure causes first, then failure rates, alerts, unanswered questions, anomalies,
  chat topics), then one per most frequent topic of the other observations, topics with failures first.
* ``reflection.insights``: the failure analysis (``grace_core.diagnosis``) of the task runs among the retrieved
  statements (items with ``run``), each cause citing its runs and any earlier insight with the same key; when
  it finds no cause, per task kind with two or more failed runs among them how many failed and with which
  errors; without runs, for the words that recur most across the statements an insight naming the word and how
  often it recurs, citing (at most 10 of) the statements that contain it.
* ``learning.operations``: version 2 (the learning loop's) answers with the learning rules
  (``grace_core.learning.insight_operations``), so offline learning is exactly the rule-based learning.
  Version 1: UPVOTE a lesson whose measured outcome improved, DOWNVOTE one that got worse, ADD each new insight
  that is not yet a lesson (citing it); it never EDITs.

Replace or add a handler with ``ws.llm.register_offline(name, fn)``; ``fn(inputs) -> str`` gets the inputs
with defaults filled in and list items as dicts, and returns the answer text (JSON text for json prompts).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from grace_core.bm25 import tokenize
from grace_core.diagnosis import diagnose, error_type
from grace_core.errors import LanguageModelError, ModelCallError
from grace_core.learning import answer_of, insight_operations, request_of_inputs

from .base import Request, Result

__all__ = [
    "DEFAULT_HANDLERS",
    "OfflineBackend",
    "OfflineHandler",
    "answer_by_extraction",
    "handler_name",
    "short_answer",
]

OfflineHandler = Callable[[Mapping[str, Any]], str]

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_FAILURE = re.compile(r"\b(fail\w*|error\w*|denied|timeout|timed out|crash\w*|refused)\b", re.IGNORECASE)


def _count(value: Any, default: int) -> int:
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return default


# -- chat.answer -----------------------------------------------------------------------------------------------
_TRIM = ".,;:!?\"'()[]"


def _words(text: str) -> list[str]:
    return [w.strip(_TRIM) for w in text.split() if w.strip(_TRIM)]


def short_answer(question: str, sentence: str) -> str:
    """The part of ``sentence`` that answers ``question``: its longest run of words the question does not use
    (a word is the question's when all its parts are: a compound like "results-prod" is new).

    Function words ("the", "by", "is") may sit inside a run but not at its ends; of the runs with the most
    content words the last wins (answers tend to follow what they answer: "X is <answer>"). The whole sentence
    when every content word is in the question.
    """
    asked = set(tokenize(question))
    runs: list[list[str]] = [[]]
    for word in _words(sentence):
        tokens = tokenize(word)
        if tokens and all(t in asked for t in tokens):  # "results-prod" is new even when "results" is asked
            runs.append([])
        else:
            runs[-1].append(word)
    best: list[str] = []
    best_content = 0
    for run in runs:
        while run and not tokenize(run[0]):
            run = run[1:]
        while run and not tokenize(run[-1]):
            run = run[:-1]
        content = sum(1 for w in run if tokenize(w))
        if content and content >= best_content:
            best, best_content = run, content
    return " ".join(best) if best else sentence.strip().rstrip(".")


def answer_by_extraction(inputs: Mapping[str, Any]) -> str:
    """An extractive answer: the short answer on the first line, then the passage sentence it comes from.

    The sentence is the one of the retrieved passages that shares the most words with the question and, among
    those, one that says something the question does not (a heading that only repeats the question's words
    answers nothing); ties: the earlier passage. It is cited by its passage id. "I do not know." when no
    passage shares a word.
    """
    question = str(inputs.get("question", ""))
    asked = set(tokenize(question))
    best: tuple[tuple[int, bool], str, str] | None = None
    for passage in inputs.get("passages") or []:
        for line in str(passage.get("text", "")).strip().splitlines():
            for sentence in _SENTENCE.split(line.strip().lstrip("#-* ")):
                words = set(tokenize(sentence))
                rank = (len(asked & words), bool(words - asked))
                if rank[0] and (best is None or rank > best[0]):
                    best = (rank, sentence.strip(), str(passage.get("id", "")))
    if best is None:
        return "I do not know.\n\nNone of the passages I was given answers that."
    return f"{short_answer(question, best[1])}\n\n{best[1]} [{best[2]}]"


# -- reflection.questions --------------------------------------------------------------------------------------
def _topic(observation: Mapping[str, Any]) -> str:
    topic = observation.get("topic")
    if isinstance(topic, str) and topic:
        return topic
    words = tokenize(str(observation.get("text", "")))
    return words[0] if words else "other"


def questions_from_frequent_topics(inputs: Mapping[str, Any]) -> str:
    """A question per most frequent topic, topics with failures first (ties: first seen)."""
    observations = list(inputs.get("observations") or [])
    count = _count(inputs.get("count"), 3)
    seen: dict[str, int] = {}
    totals: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for i, obs in enumerate(observations):
        topic = _topic(obs)
        seen.setdefault(topic, i)
        totals[topic] += 1
        if _FAILURE.search(str(obs.get("text", ""))):
            failures[topic] += 1
    ranked = sorted(totals, key=lambda t: (-failures[t], -totals[t], seen[t]))[:count]
    questions = []
    for topic in ranked:
        if failures[topic]:
            questions.append(
                f"Why do {topic} events fail ({failures[topic]} of {totals[topic]} recent ones), "
                "and what would prevent it?"
            )
        else:
            questions.append(
                f"What explains the recent {topic} events ({totals[topic]} of {len(observations)} observations)?"
            )
    return json.dumps({"questions": questions})


#: The order in which findings of the reflection's analysis are asked about (failures first).
_FINDING_ORDER = ("failure_cause", "failure_rate", "alert_rate", "unanswered", "anomaly", "chat_topic")


def questions_from_analysis(inputs: Mapping[str, Any]) -> str:
    """A question per finding of the analysis (failures first), then per frequent topic of the rest."""
    observations = list(inputs.get("observations") or [])
    count = _count(inputs.get("count"), 3)
    findings = [o for o in observations if o.get("finding")]
    rank = {kind: i for i, kind in enumerate(_FINDING_ORDER)}
    findings.sort(key=lambda o: rank.get(str(o.get("finding")), len(rank)))  # stable: the analysis's order
    questions = []
    for finding in findings[:count]:
        said = " ".join(str(finding.get("text", "")).split()).rstrip(".")
        questions.append(f"What explains this, and what would prevent it: {said}?")
    if len(questions) < count:
        rest = {
            "observations": [o for o in observations if not o.get("finding")],
            "count": count - len(questions),
        }
        if rest["observations"]:
            questions += json.loads(questions_from_frequent_topics(rest))["questions"]
    return json.dumps({"questions": questions or ["What happened recently?"]})


# -- reflection.insights ---------------------------------------------------------------------------------------
_MAX_CITED = 10  # the insights schema's maxItems for evidence


def insights_from_diagnosis(inputs: Mapping[str, Any]) -> str:
    """Causes the failure analysis finds in the retrieved runs, citing them; else recurring words."""
    statements = list(inputs.get("statements") or [])
    count = _count(inputs.get("count"), 3)
    runs = [dict(s["run"]) for s in statements if isinstance(s.get("run"), Mapping)]
    ids = {str(s.get("id")) for s in statements}
    insights = []
    for found in diagnose({"runs": runs})["insights"] if runs else []:
        earlier = [str(s["id"]) for s in statements if s.get("key") == found["key"]]
        cited = earlier + [str(i) for i in found["evidence"] if str(i) in ids]
        insights.append({"text": found["text"], "evidence": cited[:_MAX_CITED]})
        if len(insights) == count:
            break
    if not insights and runs:
        insights = _failing_kinds(statements, count)
    if not insights:
        return insights_from_recurring_words(inputs)
    return json.dumps({"insights": insights})


def _failing_kinds(statements: list[Mapping[str, Any]], count: int) -> list[dict[str, Any]]:
    """Per task kind among the retrieved runs with at least two failures: how many failed, and with what."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for s in statements:
        run = s.get("run")
        if isinstance(run, Mapping):
            by_kind.setdefault(str(run.get("kind")), []).append(s)
    out = []
    for kind, held in by_kind.items():
        failed = [s for s in held if not s["run"].get("ok")]
        if len(failed) < 2:
            continue
        errors = Counter(error_type(s["run"].get("error")) for s in failed).most_common()
        said = ", ".join(f"{e} ({n})" for e, n in errors)
        out.append(
            {
                "text": f"{kind} failed in {len(failed)} of its {len(held)} retrieved runs, with {said}.",
                "evidence": [str(s["id"]) for s in failed][:_MAX_CITED],
            }
        )
    return out[:count]


def insights_from_recurring_words(inputs: Mapping[str, Any]) -> str:
    """For the words found in the most statements (at least two), an insight citing those statements."""
    statements = list(inputs.get("statements") or [])
    count = _count(inputs.get("count"), 3)
    holders: dict[str, list[str]] = {}
    for statement in statements:
        for word in dict.fromkeys(tokenize(str(statement.get("text", "")))):
            holders.setdefault(word, []).append(str(statement.get("id", "")))
    order = {w: i for i, w in enumerate(holders)}
    recurring = sorted(
        (w for w in holders if len(holders[w]) >= 2), key=lambda w: (-len(holders[w]), order[w])
    )
    insights = []
    covered: set[tuple[str, ...]] = set()
    for word in recurring:
        ids = tuple(holders[word])
        if ids in covered:  # another word with the same statements says nothing new
            continue
        covered.add(ids)
        insights.append(
            {
                "text": f"'{word}' recurs in {len(ids)} of {len(statements)} statements about: "
                f"{inputs.get('question', '')}",
                "evidence": list(ids)[:_MAX_CITED],
            }
        )
        if len(insights) == count:
            break
    return json.dumps({"insights": insights})


# -- learning.operations ---------------------------------------------------------------------------------------
def _improved(outcome: Mapping[str, Any]) -> bool | None:
    before, after = outcome.get("before"), outcome.get("after")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (before, after)):
        return None
    assert isinstance(before, int | float)
    assert isinstance(after, int | float)
    if before == after:
        return None
    lower_is_better = str(outcome.get("better", "higher")).lower() == "lower"
    return (after < before) if lower_is_better else (after > before)


def operations_from_outcomes(inputs: Mapping[str, Any]) -> str:
    """Votes from measured outcomes, then ADD for each insight that is not a lesson yet; never EDIT."""
    lessons = list(inputs.get("lessons") or [])
    limit = _count(inputs.get("max_operations"), 4)
    known = {str(lesson.get("id")) for lesson in lessons}
    texts = {" ".join(str(lesson.get("text", "")).lower().split()) for lesson in lessons}
    operations: list[dict[str, Any]] = []
    voted: set[str] = set()
    for outcome in inputs.get("outcomes") or []:
        lesson = str(outcome.get("lesson"))
        improved = _improved(outcome)
        if lesson not in known or lesson in voted or improved is None:
            continue
        voted.add(lesson)
        change = f"{outcome.get('metric')} went from {outcome.get('before')} to {outcome.get('after')}"
        operations.append({"op": "UPVOTE" if improved else "DOWNVOTE", "id": lesson, "reason": change})
    for insight in inputs.get("insights") or []:
        text = " ".join(str(insight.get("text", "")).split())
        if text and text.lower() not in texts:
            texts.add(text.lower())
            operations.append({"op": "ADD", "text": text, "evidence": [str(insight.get("id", ""))]})
    return json.dumps({"operations": operations[:limit]})


def operations_by_rules(inputs: Mapping[str, Any]) -> str:
    """Version 2 (with ``reflection``): the learning rules' operations; version 1: ``operations_from_outcomes``."""
    if not inputs.get("reflection"):
        return operations_from_outcomes(inputs)
    return json.dumps(answer_of(insight_operations(request_of_inputs(inputs))["operations"]))


DEFAULT_HANDLERS: Mapping[str, OfflineHandler] = {
    "chat.answer": answer_by_extraction,
    "reflection.questions": questions_from_analysis,
    "reflection.insights": insights_from_diagnosis,
    "learning.operations": operations_by_rules,
}


def handler_name(fn: OfflineHandler) -> str:
    """What the ledger records as the offline backend's model: the handler's qualified name."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', type(fn).__name__)}"


class OfflineBackend:
    """Answers each prompt with its registered handler; deterministic, no model, no latency to record."""

    name = "offline"

    def __init__(self, handlers: Iterable[tuple[str, OfflineHandler]] | None = None) -> None:
        self.handlers: dict[str, OfflineHandler] = dict(
            handlers if handlers is not None else DEFAULT_HANDLERS.items()
        )

    def register(self, name: str, handler: OfflineHandler) -> OfflineHandler | None:
        """Use ``handler`` for prompt ``name`` from now on; returns the handler it replaces, if any."""
        if not callable(handler):
            raise LanguageModelError(f"an offline handler must be callable, not {type(handler).__name__}")
        previous = self.handlers.get(name)
        self.handlers[name] = handler
        return previous

    def for_prompt(self, name: str) -> _Bound:
        """This backend as it answers prompt ``name`` (its ``model`` is that prompt's handler)."""
        return _Bound(self, name)

    @property
    def model(self) -> str:
        return "offline"

    def complete(self, request: Request) -> Result:
        return self.for_prompt(request.prompt).complete(request)


class _Bound:
    """The offline backend for one prompt, so the recorded model names the handler that answered."""

    name = "offline"

    def __init__(self, backend: OfflineBackend, prompt: str) -> None:
        self._backend = backend
        self._prompt = prompt

    @property
    def handler(self) -> OfflineHandler | None:
        return self._backend.handlers.get(self._prompt)

    @property
    def model(self) -> str:
        handler = self.handler
        return handler_name(handler) if handler is not None else "offline"

    def complete(self, request: Request) -> Result:
        handler = self.handler
        if handler is None:
            raise ModelCallError(
                f"the offline backend has no handler for prompt {request.prompt}; register one with "
                "ws.llm.register_offline(name, fn) or use another backend",
                kind="no_handler",
            )
        try:
            text = handler(request.inputs)
        except Exception as exc:
            raise ModelCallError(
                f"the offline handler {handler_name(handler)} failed on {request.prompt}: "
                f"{type(exc).__name__}: {exc}",
                kind="handler_error",
            ) from exc
        if not isinstance(text, str):
            raise ModelCallError(
                f"the offline handler {handler_name(handler)} returned {type(text).__name__}, not text",
                kind="handler_error",
            )
        return Result(text=text, finish_reason="stop")
