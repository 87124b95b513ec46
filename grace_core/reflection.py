"""Reflection: a loop that reads the ledger and writes insights about what has been happening.

The loop ticks every ``interval`` seconds (default 10) and folds the new events into the *pending window*: the
events since the last reflection. It **reflects** on that window when

* ``period`` seconds have passed since the last reflection (trigger ``interval``), or
* the summed importance of the window's events reaches ``importance_threshold`` (trigger ``importance``), as in
  Generative Agents (Park et al., 2023): a burst of important events is reflected on at the next tick instead
  of waiting for the period to end.

A reflection writes one ``reflection.insight`` per finding and one ``reflection.completed`` (window, trigger,
importance, rolling baseline) in a single transaction. Kinds of insight:

``chat_topic``
    recurring chat topics: TF-IDF keyphrases (scikit-learn, uni- and bigrams) of the window's questions that
    occur in at least ``min_count`` of them (questions that raised Hunter alerts are left to ``alert_rate``).
``failure_rate``
    failures by source: ``mesh.delivery_failed`` (by subscriber), failed tasks (by kind), and any ``*.failed``,
    ``*_failed`` or ``*error*`` topic.
``alert_rate``
    Hunter alerts by rule (with severity, targets and actors).
``unanswered``
    refused questions, failed answers, and answers that found nothing.
``anomaly``
    a topic whose rate is ``anomaly_ratio`` times its rolling baseline (an exponentially weighted mean of
    events per minute over earlier reflections, stored in each ``reflection.completed``).
``resolution``
    a conversation its owner resolved (``chat.conversation.resolved``): the summary of what resolved it, with the
    conversation's questions as evidence. Knowledge, not a pattern: learning has it written to memory
    (``/knowledge``), where retrieval, and so chat, finds it.
``failure_cause``
    why the runs of a task kind fail: the failure analysis (``grace_core.diagnosis``) compares its failed and
    successful runs of the last ``cause_lookback`` seconds that no lesson changed (``ws.tasks.runs``) by
    feature (parameter values, size threshold, hour of day, retry-then-success) and proposes an executable
    effect, which learning turns into a lesson for the executor. Run for the kinds with a new failed run.
``false_positive``
    where a Hunter rule fires on harmless text: the analysis of the analysts' verdicts
    (``grace_core.hunter.verdicts``) compares the rule's false positives of the last ``cause_lookback`` seconds
    with its confirmed alerts by the words around them and proposes an allowlist (a Hunter effect), which
    learning turns into a lesson for Hunter. Run for the rules with a new verdict.

``generative``
    the model step (Generative Agents, Park et al. 2023): in a reflection triggered by importance (parameter
    ``generative`` = ``on``), the loop publishes ``reflection.started`` with the analysis's insights, then,
    caused by it, asks ``ws.llm`` for the ``questions`` most salient questions about them and the most recent
    window events (prompt ``reflection.questions``); for each it retrieves ``statements`` events and earlier
    insights by recency, importance and relevance (``grace_core.generative.retrieve``) and asks for insights
    citing them (``reflection.insights``). An answer citing anything not retrieved for its question is rejected
    whole (``llm.output_rejected``); a failed call is ``llm.failed``; the reflection completes either way.
    Insights citing insights are reflections over reflections (``data.level``).

Each insight lists every event it rests on (``evidence``) and is published as caused by one of them (the most
recent, or the question behind a refusal), so ``ws.causal.lineage(insight_id)`` reaches back to the messages
that caused it. The pending window is derived from the ledger (the last reflection's ``to_seq`` and the loop's
cursor), so a restart resumes exactly where the last run stopped. Wording is deterministic by default; with the
parameter ``wording = "model"`` the model interface (``ws.llm``, prompt ``reflection.wording``, the backend of
the workspace's default backend) rephrases it, the plain wording kept alongside; if the call fails
(recorded as ``llm.failed``) the plain wording is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from .causal import handling
from .diagnosis import diagnose
from .errors import GraceError, ModelCallError, ModelOutputError
from .events import Event, canonical_json
from .generative import INSIGHT_IMPORTANCE, Statement, check_insights, retrieve
from .hunter.verdicts import false_positives
from .loops import Loop, Scheduler
from .mesh import Message
from .times import TS, US_PER_SECOND, to_us

if TYPE_CHECKING:
    from .hunter import Hunter
    from .llm import Completion, LanguageModels
    from .tasks import Tasks
    from .workspace import Workspace

__all__ = ["IMPORTANCE", "SEVERITY_IMPORTANCE", "Reflection", "ReflectionLoop", "importance"]

ACTOR = "reflection"
# Events by these actors are the loops' own output: reflecting on them would feed the loop its own echo.
_SELF_ACTORS = frozenset({"reflection", "learning"})
# Bookkeeping that says nothing about the workspace's users or engines. ``scenario.`` events carry the scores a
# scenario measures against its hidden ground truth: a loop that read them would learn from the answer key.
_IGNORED_PREFIXES = ("loop.", "reflection.", "learning.", "metrics.", "ledger.", "llm.", "scenario.")
_TOKEN = r"(?u)\b[a-zA-Z][a-zA-Z0-9_]{2,}\b"  # noqa: S105 - a regex: words of 3+ characters
MAX_EVIDENCE = 20_000  # ids per insight; far above any window the defaults produce (keeps payloads < 1 MB)

# -- importance ------------------------------------------------------------------------------------------------
#: Importance of a Hunter alert by the rule's severity.
SEVERITY_IMPORTANCE: Mapping[str, float] = {
    "critical": 10.0,
    "high": 8.0,
    "medium": 5.0,
    "low": 3.0,
    "info": 1.0,
}
#: Importance by topic (exact topic, or a ``prefix.*``); the first match wins. Anything else: 1.
#: Special cases decided on the payload are in ``importance()``: alerts (severity), governance decisions
#: (deny 4, review 3, allow 0), task transitions (to failed 6, otherwise 1), and any failure/error topic (6).
IMPORTANCE: tuple[tuple[str, float], ...] = (
    ("healing.mode_entered", 8.0),
    ("healing.incident_opened", 8.0),
    ("mesh.delivery_failed", 7.0),
    ("sandbox.execution_failed", 6.0),
    ("chat.message.failed", 6.0),
    ("chat.message.refused", 5.0),
    ("healing.*", 3.0),
    ("chat.conversation.resolved", 4.0),
    ("chat.message.received", 2.0),
    ("task.created", 2.0),
    ("chat.message.responded", 1.0),
    ("chat.conversation.started", 0.0),
)


def _is_failure_topic(topic: str) -> bool:
    last = topic.rsplit(".", 1)[-1]
    return last == "failed" or last.endswith("_failed") or "error" in topic


def importance(event: Event) -> float:
    """How much one event should push the loop towards reflecting (see ``IMPORTANCE``)."""
    topic = event.topic
    if topic.startswith(_IGNORED_PREFIXES) or event.actor in _SELF_ACTORS:
        return 0.0
    if topic == "hunter.alert":
        return SEVERITY_IMPORTANCE.get(str(event.payload.get("severity")), 3.0)
    if topic == "governance.decision":
        return {"deny": 4.0, "review": 3.0}.get(str(event.payload.get("effect")), 0.0)
    if topic == "task.state_changed":
        return 6.0 if event.payload.get("to") == "failed" else 1.0
    for pattern, value in IMPORTANCE:
        if topic == pattern or (pattern.endswith(".*") and topic.startswith(pattern[:-1])):
            return value
    return 6.0 if _is_failure_topic(topic) else 1.0


# -- findings ------------------------------------------------------------------------------------------------
@dataclass
class Finding:
    """An insight before it is published."""

    kind: str
    key: str
    text: str
    score: float
    evidence: list[str]
    cause: Event
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Last:
    n: int
    to_seq: int
    end_us: int | None
    baseline: dict[str, float]
    windows: int


def _relevant(event: Event) -> bool:
    if event.topic.startswith(_IGNORED_PREFIXES) or event.actor in _SELF_ACTORS:
        return False
    # Alerts raised while screening the loops' own tasks are echoes as well.
    return not (event.topic == "hunter.alert" and event.payload.get("actor") in _SELF_ACTORS)


def _minutes(text_us: float) -> str:
    return f"{text_us / 60e6:.1f}"


class ReflectionLoop(Loop):
    """The ``reflection`` loop (see the module docstring)."""

    name: ClassVar[str] = "reflection"
    topics: ClassVar[tuple[str, ...]] = ("*",)
    params: ClassVar[Mapping[str, Any]] = {
        "interval": 10.0,  # seconds between ticks
        "batch_size": 10_000,
        "period": 300.0,  # seconds between reflections when nothing important happens
        "lookback": 3600.0,  # seconds of history in which a topic, failure or alert must recur
        "importance_threshold": 60.0,  # summed importance that triggers a reflection early
        "min_count": 3.0,  # messages sharing a topic, failures of a source, refusals
        "min_alerts": 2.0,  # alerts of one rule
        "anomaly_ratio": 3.0,  # rate / baseline that counts as an anomaly
        "baseline_alpha": 0.3,  # weight of the newest window in the rolling baseline
        "baseline_windows": 3,  # reflections needed before anomalies are reported
        "max_topics": 3,  # chat topics per reflection
        "cause_lookback": 86400.0,  # seconds of task runs the failure analysis compares
        "wording": "plain",  # plain | model
        # The model step (Generative Agents), in reflections triggered by importance:
        "generative": "on",  # on | off: the model step
        "questions": 3.0,  # salient questions asked per reflection
        "observations": 100.0,  # most recent window events shown to the model when it asks them
        "statements": 10.0,  # statements retrieved per question
        "insight_lookback": 86400.0,  # seconds of earlier insights retrieval may cite
        "recency_half_life": 3600.0,  # seconds after which a statement's recency score halves
        "w_recency": 1.0,  # weights of retrieval (grace_core.generative.WEIGHTS)
        "w_importance": 1.0,
        "w_relevance": 1.0,
    }
    # Ticks with no new event still run: pending events are reflected on once the period is over.
    process_idle: ClassVar[bool] = True
    #: Bounds the meta-loop may tune within (all float parameters).
    tunable: ClassVar[Mapping[str, tuple[float, float]]] = {
        "interval": (2.0, 120.0),
        "period": (30.0, 3600.0),
        "lookback": (300.0, 86400.0),
        "importance_threshold": (10.0, 500.0),
        "min_count": (2.0, 20.0),
        "anomaly_ratio": (1.5, 20.0),
    }

    def __init__(
        self, ws: Workspace, loops: Scheduler, tasks: Tasks, llm: LanguageModels, hunter: Hunter
    ) -> None:
        self._ws = ws
        self._loops = loops
        self._tasks = tasks
        self._llm = llm
        self._hunter = hunter
        # The pending window kept in memory between ticks: the relevant events in (_from, _upto].
        self._pending: list[Event] = []
        self._from: int | None = None
        self._upto = 0
        self._proposed: dict[str, Any] = {}  # insight key -> the effect its latest insight proposed

    # -- the tick ----------------------------------------------------------------------------------------------
    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        ws = self._ws
        last = self.last()
        cursor = scheduler.cursor(self.name)
        if self._from != last.to_seq or self._upto > cursor:
            # First tick of this process, or the state moved under us: rebuild the window from the ledger.
            self._pending, self._from, self._upto = [], last.to_seq, last.to_seq
        if cursor > self._upto:
            self._pending += [e for e in ws.ledger.events(since=self._upto, until=cursor) if _relevant(e)]
        self._pending += [e for e in events if e.seq > max(last.to_seq, cursor) and _relevant(e)]
        upto = max(events[-1].seq, cursor) if events else cursor
        self._upto = upto
        pending = self._pending
        total = sum(importance(e) for e in pending)
        now_us = to_us(ws.clock.time())
        start_us = last.end_us if last.end_us is not None else (pending[0].ts_us if pending else now_us)
        threshold = float(self._param("importance_threshold"))
        if not pending:
            return {"pending": 0, "importance": 0.0}
        if total >= threshold:
            trigger = "importance"
        elif now_us - start_us >= float(self._param("period")) * US_PER_SECOND:
            trigger = "interval"
        else:
            return {"pending": len(pending), "importance": total}
        published = self.reflect(
            pending, trigger=trigger, last=last, start_us=start_us, end_us=now_us, upto=upto
        )
        self._pending, self._from = [], upto
        return {"reflected": trigger, "insights": published, "importance": total, "pending": 0}

    def objective(self, ws: Workspace, since: float, until: float) -> float | None:
        """Usefulness of the insights written in [since, until) (see ``insight_usefulness``)."""
        return insight_usefulness(ws, since, until)

    def _param(self, key: str) -> Any:
        return self._loops.param(self.name, key)

    def last(self) -> _Last:
        row = (
            self._ws.ledger.reader()
            .execute(
                "SELECT n, to_seq, epoch_us(window_end), baseline, "
                "(SELECT count(*) FROM reflections) FROM reflections ORDER BY n DESC LIMIT 1"
            )
            .fetchone()
        )
        if row is None:
            return _Last(0, 0, None, {}, 0)
        return _Last(int(row[0]), int(row[1]), int(row[2]), json.loads(row[3]), int(row[4]))

    # -- a reflection ----------------------------------------------------------------------------------------
    def reflect(
        self, window: list[Event], *, trigger: str, last: _Last, start_us: int, end_us: int, upto: int
    ) -> int:
        """Analyse ``window`` and publish its insights and the ``reflection.completed`` in one transaction."""
        n = last.n + 1
        # Recurrence is judged over the last ``lookback`` seconds (a topic asked about three times in an hour
        # recurs even if each window holds one question), but only findings with new evidence are reported.
        span, span_start = self._span(window, end_us)
        # Rates over the whole lookback (not the span seen so far), so a steady pattern keeps a steady rate.
        span_minutes = float(self._param("lookback")) / 60
        new = {e.id for e in window}
        findings = [
            f
            for f in (
                *self._chat_topics(span, span_minutes),
                *self._failures(span, span_minutes),
                *self._alerts(span, span_minutes),
                *self._unanswered(span),
                *self._resolutions(window, span),
                *self._causes(window),
                *self._false_positives(window),
            )
            if any(i in new for i in f.evidence)
        ]
        minutes = max(end_us - start_us, 60e6) / 60e6
        counts = Counter(e.topic for e in window)
        rates = {t: c / minutes for t, c in counts.items()}
        if last.windows >= int(self._param("baseline_windows")):
            findings += self._anomalies(window, rates, last.baseline, minutes)
        alpha = float(self._param("baseline_alpha"))
        baseline = {
            t: round(alpha * rates.get(t, 0.0) + (1 - alpha) * last.baseline.get(t, 0.0), 6)
            for t in sorted(set(rates) | set(last.baseline))
        }
        baseline = {t: v for t, v in baseline.items() if v >= 1e-4}
        common = {
            "reflection": n,
            "trigger": trigger,
            "window": {
                "from_seq": last.to_seq,
                "to_seq": upto,
                "start_us": start_us,
                "end_us": end_us,
                "lookback_start_us": span_start,
            },
        }
        messages: list[Message] = []
        for f in findings:
            payload: dict[str, Any] = {
                "kind": f.kind,
                "key": f.key,
                "text": f.text,
                "score": round(f.score, 6),
                "evidence": f.evidence[:MAX_EVIDENCE],
                "evidence_count": len(f.evidence),
                "data": f.data,
                "wording": "plain",
                **common,
            }
            worded = self._word(f)
            if worded is not None:
                payload.update(text=worded[1], plain=f.text, wording=worded[0])
            messages.append(Message("reflection.insight", payload, f"insight:{f.key}", cause=f.cause))
        importance_sum = round(sum(importance(e) for e in window), 6)
        generated: list[Message] = []
        model: dict[str, Any] = {}
        if trigger == "importance" and self._param("generative") == "on":
            # The model step: its calls and insights are caused by this reflection's ``reflection.started``,
            # published with the analysis's insights so that the model may cite them. The start is caused by the
            # window's most important event (the latest of them), so lineage reaches the raw events.
            started, *analysed = self._ws.publish_many(
                [
                    Message(
                        "reflection.started",
                        {
                            "n": n,
                            "trigger": trigger,
                            "importance": importance_sum,
                            "from_seq": last.to_seq,
                            "to_seq": upto,
                        },
                        "reflection",
                        cause=max(reversed(window), key=importance),
                    ),
                    *messages,
                ],
                actor=ACTOR,
            )
            with handling(started):
                generated, model = self._generate(window, span, analysed, end_us=end_us, common=common)
            messages = generated
        kinds = Counter(f.kind for f in findings) + Counter(str((m.payload or {})["kind"]) for m in generated)
        messages.append(
            Message(
                "reflection.completed",
                {
                    "n": n,
                    "trigger": trigger,
                    "importance": importance_sum,
                    "threshold": float(self._param("importance_threshold")),
                    "events": len(window),
                    "insights": len(findings) + len(generated),
                    "kinds": dict(sorted(kinds.items())),
                    **({"model": model} if model else {}),
                    "from_seq": last.to_seq,
                    "to_seq": upto,
                    "start_us": start_us,
                    "end_us": end_us,
                    "baseline": baseline,
                },
                "reflection",
                cause=None,
            )
        )
        self._ws.publish_many(messages, actor=ACTOR)
        for f in findings:
            if f.kind in ("failure_cause", "false_positive"):
                self._proposed[f.key] = f.data.get("effect")
        return len(findings) + len(generated)

    # -- the model step ----------------------------------------------------------------------------------------
    def _generate(
        self,
        window: list[Event],
        span: list[Event],
        analysed: list[Event],
        *,
        end_us: int,
        common: dict[str, Any],
    ) -> tuple[list[Message], dict[str, Any]]:
        """Questions about the window, retrieval per question, insights citing what was retrieved.

        Returns the insights to publish and what happened (questions asked, insights kept, answers rejected,
        calls failed). A failed call or a rejected answer is on the ledger already (``llm.failed``,
        ``llm.output_rejected``) and the reflection carries on without it.
        """
        summary = {"questions": 0, "insights": 0, "rejected": 0, "failed": 0}
        recent = window[-int(self._param("observations")) :]
        # The analysis's findings first (what the loop already computed), then the most recent events.
        observations = [
            {
                "id": e.id,
                "text": str(e.payload["text"]),
                "finding": e.payload["kind"],
                "key": e.payload["key"],
            }
            for e in analysed
        ] + [{"id": e.id, "text": describe(e), "topic": _observation_topic(e)} for e in recent]
        try:
            asked = self._llm.complete_json(
                "reflection.questions",
                {"observations": observations, "count": int(self._param("questions"))},
                purpose="reflection",
                actor=ACTOR,
            )
        except ModelOutputError:
            return [], {**summary, "rejected": 1}
        except ModelCallError:
            return [], {**summary, "failed": 1}
        questions = [" ".join(str(q).split()) for q in asked.data["questions"]]
        questions = list(dict.fromkeys(q for q in questions if q))[: int(self._param("questions"))]
        summary["questions"] = len(questions)
        statements = self._statements(span, end_us)
        known = [s.id for s in statements]
        levels = {s.id: s.level for s in statements}
        weights = {w: float(self._param(f"w_{w}")) for w in ("recency", "importance", "relevance")}
        out: list[Message] = []
        keys: set[str] = set()
        for question in questions:
            hits = retrieve(
                question,
                statements,
                now_us=end_us,
                k=int(self._param("statements")),
                half_life_s=float(self._param("recency_half_life")),
                weights=weights,
            )
            scores = {s.id: score for s, score in hits}
            try:
                answer = self._llm.complete_json(
                    "reflection.insights",
                    {"question": question, "statements": [s.as_input() for s, _ in hits]},
                    purpose="reflection",
                    actor=ACTOR,
                )
                found = self._checked(answer, retrieved=list(scores), known=known)
            except ModelOutputError:
                summary["rejected"] += 1
                continue
            except ModelCallError:
                summary["failed"] += 1
                continue
            completed = self._ws.ledger.get(answer.event_id)
            for insight in found:
                cited = insight["evidence"]
                text = insight["text"][:2000]
                key = "generative:" + hashlib.sha256(text.lower().encode()).hexdigest()[:12]
                if key in keys:
                    continue  # another question led to the same insight
                keys.add(key)
                payload = {
                    "kind": "generative",
                    "key": key,
                    "text": text,
                    "score": round(sum(scores[i] for i in cited) / len(cited), 6),
                    "evidence": cited,
                    "evidence_count": len(cited),
                    "data": {
                        "question": question,
                        "level": 1 + max(levels[i] for i in cited),
                        "cites_insights": [i for i in cited if levels[i] > 0],
                        "retrieved": list(scores),
                        "completion": answer.event_id,
                        "questions_completion": asked.event_id,
                    },
                    "wording": f"{answer.backend}:{answer.model}",
                    **common,
                }
                out.append(Message("reflection.insight", payload, f"insight:{key}", cause=completed))
        summary["insights"] = len(out)
        return out, summary

    def _checked(self, answer: Completion, *, retrieved: list[str], known: list[str]) -> list[dict[str, Any]]:
        try:
            return check_insights(answer.data, retrieved=retrieved, known=known)
        except ModelOutputError as exc:
            raise self._llm.reject(answer, str(exc), actor=ACTOR) from exc

    def _statements(self, span: list[Event], end_us: int) -> list[Statement]:
        """What retrieval ranks: the events of the lookback and the insights of ``insight_lookback``."""
        since_us = end_us - to_us(float(self._param("insight_lookback")))
        rows = (
            self._ws.ledger.reader()
            .execute(
                'SELECT i.id, i.text, epoch_us(i.created_at), i."key", '
                "coalesce(TRY_CAST(e.payload->>'$.data.level' AS INTEGER), 1) FROM insights i "
                f"JOIN events e ON e.id = i.id WHERE i.created_at >= {TS} ORDER BY e.seq",
                [since_us],
            )
            .fetchall()
        )
        kinds = sorted({str(e.payload.get("kind")) for e in span if _is_run_end(e)})
        since = min(e.ts_us for e in span) / 1e6
        runs = {r["id"]: r for r in self._tasks.runs(kinds=kinds, since=since)} if kinds else {}
        events = [
            Statement(
                e.id,
                describe(e),
                e.ts_us,
                importance(e),
                extra={"topic": _observation_topic(e), **({"run": runs[e.id]} if e.id in runs else {})},
            )
            for e in span
        ]
        insights = [
            Statement(str(r[0]), str(r[1]), int(r[2]), INSIGHT_IMPORTANCE, level=int(r[4]), key=str(r[3]))
            for r in rows
        ]
        return events + insights

    def _span(self, window: list[Event], end_us: int) -> tuple[list[Event], int]:
        """The relevant events of the last ``lookback`` seconds up to the window's end (the window included)."""
        since_us = end_us - to_us(float(self._param("lookback")))
        upto = window[-1].seq
        row = (
            self._ws.ledger.reader()
            .execute(
                f"SELECT min(seq) FROM events WHERE ts >= {TS} AND seq <= ?",
                [since_us, upto],
            )
            .fetchone()
        )
        first = min(int(row[0]) if row and row[0] is not None else window[0].seq, window[0].seq)
        span = [e for e in self._ws.ledger.events(since=first - 1, until=upto) if _relevant(e)]
        return span, max(since_us, min(e.ts_us for e in span))

    def _word(self, f: Finding) -> tuple[str, str] | None:
        if self._param("wording") != "model":
            return None
        try:
            answer = self._llm.complete(
                "reflection.wording", {"insight": f.text}, purpose="reflection.wording", actor=ACTOR
            )
        except GraceError:
            return None  # recorded as llm.failed; the plain wording stands: a flaky model must not stop reflection
        text = answer.text.strip()
        return (f"{answer.backend}:{answer.model}", text[:2000]) if text else None

    # -- kinds of insight ------------------------------------------------------------------------------------
    def _chat_topics(self, window: list[Event], minutes: float) -> list[Finding]:
        min_count = math.ceil(float(self._param("min_count")))
        alerted = {e.parent_id for e in window if e.topic == "hunter.alert"}
        questions = [
            e
            for e in window
            if e.topic == "chat.message.received"
            and e.id not in alerted
            and isinstance(e.payload.get("text"), str)
        ]
        if len(questions) < min_count:
            return []
        from sklearn.feature_extraction.text import TfidfVectorizer  # seconds to import: only when needed

        docs = [_strip_redactions(e.payload["text"]) for e in questions]
        vectorizer = TfidfVectorizer(
            stop_words="english",
            ngram_range=(1, 2),
            min_df=min_count,
            sublinear_tf=True,
            token_pattern=_TOKEN,
        )
        try:
            matrix = vectorizer.fit_transform(docs)
        except ValueError:  # no term left after stop words and min_df
            return []
        terms = vectorizer.get_feature_names_out()
        present = (matrix > 0).tocsc()
        weights = matrix.sum(axis=0).A1
        order = sorted(range(len(terms)), key=lambda i: (-round(float(weights[i]), 9), str(terms[i])))
        # Terms that occur in exactly the same questions are one topic ("password" + "reset"); a term that
        # shares a word with a chosen one and covers a subset or superset of its questions adds nothing.
        groups: list[tuple[list[str], set[int]]] = []
        for i in order:
            term = str(terms[i])
            docs_of = set(present[:, i].nonzero()[0].tolist())
            words = term.split()
            same = next((g for g in groups if g[1] == docs_of), None)
            if same is not None:
                same[0].extend(w for w in words if w not in same[0] and len(same[0]) < 4)
                continue
            if any(set(words) & set(g[0]) and (docs_of <= g[1] or g[1] <= docs_of) for g in groups):
                continue
            if len(groups) < int(self._param("max_topics")):
                groups.append((list(words), docs_of))
        chosen = [(_label(g[0], docs[min(g[1])]), g[1]) for g in groups]
        out = []
        for term, docs_of in chosen:
            evidence = [questions[j] for j in sorted(docs_of)]
            users = sorted({str(e.payload.get("user") or e.actor) for e in evidence})
            out.append(
                Finding(
                    "chat_topic",
                    f"topic:{term}",
                    f'Recurring chat topic "{term}": {len(evidence)} of {len(questions)} questions '
                    f"from {len(users)} user(s) in the last {minutes:.0f} min.",
                    len(evidence) / len(questions),
                    [e.id for e in evidence],
                    evidence[-1],
                    {"term": term, "messages": len(evidence), "questions": len(questions), "users": users},
                )
            )
        return out

    def _failures(self, window: list[Event], minutes: float) -> list[Finding]:
        min_count = float(self._param("min_count"))
        by_source: dict[str, list[Event]] = defaultdict(list)
        for e in window:
            source = self._failure_source(e)
            if source is not None:
                by_source[source].append(e)
        out = []
        for source in sorted(by_source):
            evidence = by_source[source]
            if len(evidence) < min_count:
                continue
            rate = len(evidence) / minutes
            band = _band(rate)
            out.append(
                Finding(
                    "failure_rate",
                    f"failure:{source}",
                    f"{source} failed {len(evidence)} times in the last {minutes:.0f} min ({rate:.2f}/min, {band}).",
                    len(evidence) / len(window),
                    [e.id for e in evidence],
                    evidence[-1],
                    {"source": source, "count": len(evidence), "per_minute": round(rate, 6), "band": band},
                )
            )
        return out

    def _failure_source(self, e: Event) -> str | None:
        if e.topic == "mesh.delivery_failed":
            return f"subscriber:{e.payload.get('subscriber')}"
        if e.topic == "task.state_changed":
            if e.payload.get("to") != "failed":
                return None
            return f"task:{e.payload.get('kind') or 'unknown'}"
        if e.topic == "hunter.alert" or e.topic.startswith("governance."):
            return None
        return e.topic if _is_failure_topic(e.topic) else None

    def _alerts(self, window: list[Event], minutes: float) -> list[Finding]:
        min_alerts = float(self._param("min_alerts"))
        by_rule: dict[str, list[Event]] = defaultdict(list)
        for e in window:
            if e.topic == "hunter.alert":
                by_rule[str(e.payload.get("rule"))].append(e)
        out = []
        for rule in sorted(by_rule):
            evidence = by_rule[rule]
            if len(evidence) < min_alerts:
                continue
            severity = str(evidence[-1].payload.get("severity"))
            targets = sorted({str(e.payload.get("target")) for e in evidence})
            actors = sorted({str(e.payload.get("actor")) for e in evidence})
            out.append(
                Finding(
                    "alert_rate",
                    f"alert:{rule}",
                    f"Hunter rule {rule} ({severity}) fired {len(evidence)} times in the last {minutes:.0f} min "
                    f"on {', '.join(targets)}, from {', '.join(actors)}.",
                    len(evidence) * SEVERITY_IMPORTANCE.get(severity, 3.0) / 10,
                    [e.id for e in evidence],
                    evidence[-1],
                    {
                        "rule": rule,
                        "severity": severity,
                        "count": len(evidence),
                        "per_minute": round(len(evidence) / minutes, 6),
                        "targets": targets,
                        "actors": actors,
                    },
                )
            )
        return out

    def _unanswered(self, window: list[Event]) -> list[Finding]:
        min_count = float(self._param("min_count"))
        groups: dict[str, list[Event]] = defaultdict(list)
        for e in window:
            if e.topic == "chat.message.refused":
                groups["refused"].append(e)
            elif e.topic == "chat.message.failed":
                groups["failed"].append(e)
            elif e.topic == "chat.message.responded" and str(e.payload.get("text", "")).startswith(
                "I do not know"
            ):
                groups["no_answer"].append(e)
        out = []
        what = {
            "refused": "were refused",
            "failed": "got no answer (the model call failed)",
            "no_answer": "found nothing to answer from",
        }
        for reason in sorted(groups):
            answers = groups[reason]
            if len(answers) < min_count:
                continue
            questions = [self._question(a) for a in answers]
            evidence_events = [q for q in questions if q is not None] + answers
            evidence = [e.id for e in sorted(evidence_events, key=lambda e: e.seq)]
            data: dict[str, Any] = {"reason": reason, "count": len(answers)}
            if reason == "refused":
                reasons = Counter(str(a.payload.get("reason", "")) for a in answers)
                data["reasons"] = dict(sorted(reasons.items()))
            out.append(
                Finding(
                    "unanswered",
                    f"unanswered:{reason}",
                    f"{len(answers)} questions {what[reason]}.",
                    float(len(answers)),
                    evidence,
                    next((q for q in reversed(questions) if q is not None), answers[-1]),
                    data,
                )
            )
        return out

    def _resolutions(self, window: list[Event], span: list[Event]) -> list[Finding]:
        """One finding per conversation resolved in the window: its summary, resting on its questions."""
        out = []
        for e in window:
            if e.topic != "chat.conversation.resolved":
                continue
            p = e.payload
            conversation, summary = str(p.get("conversation", "")), str(p.get("summary", "")).strip()
            if not conversation or not summary:
                continue
            questions = [
                q.id
                for q in span
                if q.topic == "chat.message.received" and q.payload.get("conversation") == conversation
            ]
            title = str(p.get("title") or "a conversation")
            out.append(
                Finding(
                    "resolution",
                    f"resolution:{conversation}",
                    f'Resolved "{title}": {summary}',
                    1.0,
                    [*questions, e.id],
                    e,
                    {"conversation": conversation, "title": title, "summary": summary},
                )
            )
        return out

    def _causes(self, window: list[Event]) -> list[Finding]:
        """Failure causes of the task kinds with an ended run in the window (``grace_core.diagnosis``): reported
        when the kind failed again, or when the finding changed (successes outside a failing window are what
        tell a window from a kind that always fails)."""
        latest: dict[str, Event] = {}
        failed: set[str] = set()
        for e in window:
            p = e.payload
            if e.topic == "task.state_changed" and p.get("from") == "running":
                latest[str(p.get("kind"))] = e
                if p.get("to") != "done":
                    failed.add(str(p.get("kind")))
        if not latest:
            return []
        since = self._ws.clock.time() - float(self._param("cause_lookback"))
        runs = self._tasks.runs(kinds=sorted(latest), since=since, unaffected=True)
        out = []
        for insight in diagnose({"runs": runs})["insights"]:
            data = insight["data"]
            kind = data["task_kind"]
            if kind not in failed and self._last_effect(insight["key"]) == data.get("effect"):
                continue  # nothing new: no new failure, the same proposal
            out.append(
                Finding(
                    "failure_cause",
                    insight["key"],
                    insight["text"],
                    float(insight["score"]),
                    list(insight["evidence"]),
                    latest[kind],
                    data,
                )
            )
        return out

    def _false_positives(self, window: list[Event]) -> list[Finding]:
        """Allowlists for the rules with a verdict in the window (``grace_core.hunter.verdicts``): reported when
        the rule got a new false positive, or when the proposal changed."""
        feedback: dict[str, list[Event]] = defaultdict(list)
        for e in window:
            if e.topic == "hunter.feedback":
                feedback[str(e.payload.get("rule"))].append(e)
        if not feedback:
            return []
        since = self._ws.clock.time() - float(self._param("cause_lookback"))
        verdicts = [v for v in self._hunter.verdicts(since=since) if v["rule"] in feedback]
        out = []
        for insight in false_positives({"verdicts": verdicts})["insights"]:
            data = insight["data"]
            events = feedback[data["rule"]]
            fresh = any(e.payload.get("verdict") == "false_positive" for e in events)
            if not fresh and self._last_effect(insight["key"]) == data.get("effect"):
                continue  # nothing new: no new false positive, the same proposal
            out.append(
                Finding(
                    "false_positive",
                    insight["key"],
                    insight["text"],
                    float(insight["score"]),
                    [e.id for e in events] + list(insight["evidence"]),
                    events[-1],
                    data,
                )
            )
        return out

    def _last_effect(self, key: str) -> Any:
        """The effect the latest insight with ``key`` proposed (None: none; ``_NONE``: no such insight). Kept in
        memory once read: only this loop writes insights, and it notes each one it publishes (``reflect``)."""
        if key not in self._proposed:
            row = (
                self._ws.ledger.reader()
                .execute(
                    "SELECT payload->'$.data.effect' FROM events WHERE topic = 'reflection.insight' "
                    "AND (payload->>'$.key') = ? ORDER BY seq DESC LIMIT 1",
                    [key],
                )
                .fetchone()
            )
            self._proposed[key] = _NONE if row is None else (None if row[0] is None else json.loads(row[0]))
        return self._proposed[key]

    def _question(self, answer: Event) -> Event | None:
        if answer.parent_id is None:
            return None
        try:
            parent = self._ws.ledger.get(answer.parent_id)
        except GraceError:
            return None
        return parent if parent.topic == "chat.message.received" else None

    def _anomalies(
        self, window: list[Event], rates: Mapping[str, float], baseline: Mapping[str, float], minutes: float
    ) -> list[Finding]:
        ratio = float(self._param("anomaly_ratio"))
        min_count = 2 * float(self._param("min_count"))
        by_topic: dict[str, list[Event]] = defaultdict(list)
        for e in window:
            by_topic[e.topic].append(e)
        out = []
        for topic in sorted(rates):
            evidence = by_topic[topic]
            expected = max(baseline.get(topic, 0.0), 0.1)  # a topic never seen counts as 0.1 per minute
            if len(evidence) < min_count or rates[topic] < ratio * expected:
                continue
            out.append(
                Finding(
                    "anomaly",
                    f"anomaly:{topic}",
                    f"{topic} ran at {rates[topic]:.2f}/min, {rates[topic] / expected:.1f}x its baseline "
                    f"of {baseline.get(topic, 0.0):.2f}/min.",
                    rates[topic] / expected,
                    [e.id for e in evidence],
                    evidence[-1],
                    {
                        "topic": topic,
                        "per_minute": round(rates[topic], 6),
                        "baseline": baseline.get(topic, 0.0),
                        "count": len(evidence),
                    },
                )
            )
        return out


_NONE = object()  # "no earlier insight", distinct from an insight that proposed no effect


def _is_run_end(e: Event) -> bool:
    return e.topic == "task.state_changed" and e.payload.get("from") == "running"


_DESCRIBED = ("kind", "title", "rule", "severity", "target", "reason", "error", "status", "name")


def describe(event: Event) -> str:
    """One line about an event, as a statement a model reads (at most 300 characters)."""
    p = event.payload
    if event.topic == "task.state_changed":
        what = f"task {p.get('kind')} went from {p.get('from')} to {p.get('to')}"
        if p.get("attempt") is not None:
            what += f" (attempt {p.get('attempt')})"
        text = f"{what}: {p['error']}" if p.get("error") else what
    elif event.topic.startswith("chat.message.") and isinstance(p.get("text"), str):
        text = f"{event.topic} from {p.get('user') or event.actor}: {_strip_redactions(p['text'])}"
    elif event.topic == "reflection.insight":
        text = str(p.get("text", ""))
    else:
        fields = ", ".join(
            f"{k} {p[k]}" for k in _DESCRIBED if isinstance(p.get(k), str | int | float) and p.get(k) != ""
        )
        text = f"{event.topic} by {event.actor}" + (f": {fields}" if fields else "")
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _observation_topic(e: Event) -> str:
    """What an observation is about, for the offline policy's grouping: a task kind, a rule, or the topic."""
    if e.topic.startswith("task.") and e.payload.get("kind"):
        return f"task {e.payload['kind']}"
    if e.topic == "hunter.alert":
        return f"rule {e.payload.get('rule')}"
    return e.topic


def _band(rate: float) -> str:
    """A coarse level for a rate per minute (>= 1 constant, >= 0.1 frequent); learning edits a lesson on change."""
    return "constant" if rate >= 1 else "frequent" if rate >= 0.1 else "occasional"


def _label(words: list[str], doc: str) -> str:
    """The topic's words in the order they appear in its first question ("summarise results")."""
    lower = doc.lower()
    return " ".join(sorted(words, key=lambda w: (lower.find(w) if w in lower else len(lower), w)))


def _strip_redactions(text: str) -> str:
    return re.sub(r"\[redacted:[^\]]*\]", " ", text)


# -- the engine ----------------------------------------------------------------------------------------------
class Reflection:
    """``ws.reflection``: the loop, its insights and reflections as DataFrames."""

    def __init__(
        self, ws: Workspace, *, loops: Scheduler, tasks: Tasks, llm: LanguageModels, hunter: Hunter
    ) -> None:
        self._ws = ws
        ws.projections.register("insights", "reflection.*", _apply, tables=["insights", "reflections"])
        self.loop = ReflectionLoop(ws, loops, tasks, llm, hunter)
        loops.add(self.loop)

    def insights(self, *, kind: str | None = None, since: float | None = None) -> pd.DataFrame:
        """Insights, oldest first (``since``: workspace-clock epoch seconds)."""
        sql = "SELECT * FROM insights WHERE true"
        params: list[Any] = []
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if since is not None:
            sql += f" AND created_at >= {TS}"
            params.append(to_us(since))
        return self._ws.sql(sql + " ORDER BY created_at, id", params)

    def latest_insights(self, limit: int = 8) -> pd.DataFrame:
        """The ``limit`` newest insights, newest first: created_at, kind, text, score, evidence_count."""
        return self._ws.sql(
            "SELECT created_at, kind, text, score, evidence_count FROM insights "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            [int(limit)],
        )

    def insight(self, insight_id: str) -> dict[str, Any]:
        """One insight: its row plus the full event payload."""
        event = self._ws.ledger.get(insight_id)
        if event.topic != "reflection.insight":
            raise GraceError(f"{insight_id} is a {event.topic} event, not an insight")
        return {"id": event.id, "ts": event.ts, "parent_id": event.parent_id, **event.payload}

    def reflections(self) -> pd.DataFrame:
        return self._ws.sql("SELECT * FROM reflections ORDER BY n")

    def evidence(self, insight_id: str) -> pd.DataFrame:
        """The events an insight rests on."""
        ids = self.insight(insight_id)["evidence"]
        return self._ws.sql(
            "SELECT seq, id, ts, topic, actor, resource, payload FROM events WHERE list_contains(?, id) "
            "ORDER BY seq",
            [ids],
        )


def _apply(con: Any, events: Iterable[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "reflection.insight":
            window = p["window"]
            con.execute(
                f"INSERT INTO insights VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {TS}, {TS}, {TS})",
                [
                    e.id,
                    p["kind"],
                    p["key"],
                    p["text"],
                    float(p["score"]),
                    list(p["evidence"]),
                    int(p.get("evidence_count", len(p["evidence"]))),
                    int(p["reflection"]),
                    p["trigger"],
                    int(window["start_us"]),
                    int(window["end_us"]),
                    e.ts_us,
                ],
            )
        elif e.topic == "reflection.completed":
            con.execute(
                f"INSERT INTO reflections VALUES (?, ?, ?, ?, ?, ?, ?, ?, {TS}, {TS}, ?)",
                [
                    int(p["n"]),
                    e.id,
                    p["trigger"],
                    float(p["importance"]),
                    int(p["events"]),
                    int(p["insights"]),
                    int(p["from_seq"]),
                    int(p["to_seq"]),
                    int(p["start_us"]),
                    int(p["end_us"]),
                    canonical_json(p["baseline"]),
                ],
            )


def insight_usefulness(ws: Workspace, since: float, until: float) -> float | None:
    """Usefulness of the insights written in [since, until): how far the tasks they led to got.

    Each insight scores 1 if a task citing it (``details.insights``) is done, 0.5 if such a task is pending or
    running, 0.25 if it failed, 0 if it was cancelled or no task cites it. None with fewer than 3 insights.
    """
    frame = ws.sql(
        f"""
        WITH cited AS (
            SELECT unnest(from_json(json_extract(details, '$.insights'), '["VARCHAR"]')) AS insight, state
            FROM tasks WHERE json_extract(details, '$.insights') IS NOT NULL
        )
        SELECT i.id, max(CASE c.state WHEN 'done' THEN 1.0 WHEN 'pending' THEN 0.5 WHEN 'running' THEN 0.5
                                      WHEN 'failed' THEN 0.25 ELSE 0.0 END) AS value
        FROM insights i LEFT JOIN cited c ON c.insight = i.id
        WHERE i.created_at >= {TS} AND i.created_at < {TS}
        GROUP BY i.id
        """,
        [to_us(since), to_us(until)],
    )
    if len(frame) < 3:
        return None
    return float(frame["value"].fillna(0.0).mean())
