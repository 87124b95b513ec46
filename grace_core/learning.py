"""Learning: turns insights into tasks and into a registry of lessons that strengthen and decay.

The ``learning`` loop runs on ``reflection.completed`` events (one per reflection, after that reflection's
insights). For each reflection, in ledger order:

* **Tasks.** A pattern (an insight ``key`` such as ``alert:secret.aws_key`` or ``failure:sandbox.execution_failed``)
  seen in at least ``min_insights`` insights over the last ``task_window`` reflections creates a task
  ``ws.tasks.create(title, kind="learned", actor="learning", key="learned:<pattern>", details={...})``, published
  while handling the latest of those insights, so the task's causes are the insights (and, through them, the
  events they rest on). The key deduplicates: while the task is open, the same pattern does not open another.
* **Lessons**, in the manner of ExpeL (Zhao et al., 2024): a registry of rules with votes. A pattern seen for
  the first time **adds** a rule (2 votes); the pattern recurring in a later reflection **agrees** (+1), or
  **edits** the rule (+1, new text) when its wording changed (e.g. a failure went from occasional to frequent);
  a rule whose pattern has not recurred for ``decay_after`` reflections is **removed** once (-1) and again after
  each further ``decay_after`` reflections; at zero votes it is dropped. Each operation is an event
  (``learning.rule_added|rule_agreed|rule_edited|rule_removed``); tables ``learned_rules`` and
  ``learned_rule_history`` are their projections. ``ws.learning.rules()`` and ``ws.learning.history(rule_id)``
  show them as DataFrames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from .causal import handling
from .errors import EventError, GraceError
from .events import Event
from .loops import Loop, Scheduler
from .mesh import Message

if TYPE_CHECKING:
    from .tasks import Tasks
    from .workspace import Workspace

__all__ = ["INITIAL_VOTES", "Learning", "LearningLoop", "lesson_text", "rule_votes"]

ACTOR = "learning"
INITIAL_VOTES = 2  # as in ExpeL: a new rule starts with two votes
_PRIORITY = {"alert_rate": 70, "failure_rate": 60, "anomaly": 55, "unanswered": 50, "chat_topic": 40}


def lesson_text(kind: str, key: str, data: Mapping[str, Any]) -> str:
    """The lesson an insight teaches, worded from its stable parts (so recurrence reads the same)."""
    pattern = key.split(":", 1)[-1]
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


class LearningLoop(Loop):
    """The ``learning`` loop (see the module docstring)."""

    name: ClassVar[str] = "learning"
    topics: ClassVar[tuple[str, ...]] = ("reflection.completed",)
    params: ClassVar[Mapping[str, Any]] = {
        "interval": 10.0,
        "batch_size": 10_000,
        "min_insights": 3.0,  # insights with one key that make a task
        "task_window": 10.0,  # ... within this many reflections
        "decay_after": 3.0,  # reflections without support before a rule loses a vote
    }
    tunable: ClassVar[Mapping[str, tuple[float, float]]] = {
        "interval": (2.0, 120.0),
        "min_insights": (2.0, 20.0),
        "task_window": (2.0, 100.0),
        "decay_after": (1.0, 50.0),
    }

    def __init__(self, ws: Workspace, loops: Scheduler, tasks: Tasks) -> None:
        self._ws = ws
        self._loops = loops
        self._tasks = tasks

    def objective(self, ws: Workspace, since: float, until: float) -> float | None:
        """Share of the lessons' votes in [since, until) that held up: agreements and edits / all votes cast.

        A lesson that keeps being confirmed scores; one that decays for lack of support does not. None when
        fewer than 3 votes were cast.
        """
        row = (
            ws.ledger.reader()
            .execute(
                "SELECT count(*) FILTER (WHERE op IN ('agree', 'edit')), count(*) FILTER (WHERE op <> 'add') "
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
        """Learn from one ``reflection.completed``: returns (tasks created, rule operations)."""
        ws = self._ws
        n = int(completed.payload["n"])
        insights = self._insights_of(n)
        by_key: dict[str, list[Event]] = {}
        for insight in insights:
            by_key.setdefault(insight.payload["key"], []).append(insight)
        ops = 0
        created = 0
        rules = self._active_rules()
        messages: list[Message] = []
        for key in sorted(by_key):
            latest = by_key[key][-1]
            p = latest.payload
            text = lesson_text(p["kind"], key, p.get("data", {}))
            common = {"key": key, "reflection": n, "insight": latest.id}
            rule = rules.get(key)
            if rule is None:
                messages.append(
                    Message(
                        "learning.rule_added",
                        {**common, "text": text, "votes": INITIAL_VOTES},
                        f"lesson:{key}",
                        cause=latest,
                    )
                )
            elif rule["text"] != text:
                messages.append(
                    Message(
                        "learning.rule_edited",
                        {
                            **common,
                            "rule_id": rule["id"],
                            "text": text,
                            "old_text": rule["text"],
                            "votes": rule["votes"] + 1,
                        },
                        f"lesson:{rule['id']}",
                        cause=latest,
                    )
                )
            else:
                messages.append(
                    Message(
                        "learning.rule_agreed",
                        {**common, "rule_id": rule["id"], "votes": rule["votes"] + 1},
                        f"lesson:{rule['id']}",
                        cause=latest,
                    )
                )
        decay_after = max(1, math.floor(self._param("decay_after")))
        for key in sorted(set(rules) - set(by_key)):
            rule = rules[key]
            quiet = n - rule["last_reflection"]
            if quiet > 0 and quiet % decay_after == 0:
                votes = rule["votes"] - 1
                messages.append(
                    Message(
                        "learning.rule_removed",
                        {
                            "key": key,
                            "rule_id": rule["id"],
                            "reflection": n,
                            "votes": votes,
                            "dropped": votes <= 0,
                            "quiet": quiet,
                        },
                        f"lesson:{rule['id']}",
                        cause=completed,
                    )
                )
        if messages:
            ws.publish_many(messages, actor=ACTOR)
            ops = len(messages)
        for key in sorted(by_key):
            if self._make_task(key, n, by_key[key][-1]):
                created += 1
        return created, ops

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

    def _insights_of(self, n: int) -> list[Event]:
        ids = [
            r[0]
            for r in self._ws.ledger.reader()
            .execute("SELECT id FROM insights WHERE reflection = ?", [n])
            .fetchall()
        ]
        events = [self._ws.ledger.get(i) for i in ids]
        return sorted(events, key=lambda e: e.seq)

    def _active_rules(self) -> dict[str, dict[str, Any]]:
        frame = (
            self._ws.ledger.reader()
            .execute(
                "SELECT id, \"key\", text, votes, last_reflection FROM learned_rules WHERE state = 'active'"
            )
            .fetchall()
        )
        return {
            r[1]: {"id": r[0], "key": r[1], "text": r[2], "votes": int(r[3]), "last_reflection": int(r[4])}
            for r in frame
        }


class Learning:
    """``ws.learning``: the loop, the lessons it keeps and their history."""

    def __init__(self, ws: Workspace, *, loops: Scheduler, tasks: Tasks) -> None:
        self._ws = ws
        self._tasks = tasks
        ws.projections.register(
            "learned_rules", "learning.*", _apply, tables=["learned_rules", "learned_rule_history"]
        )
        self.loop = LearningLoop(ws, loops, tasks)
        loops.add(self.loop)

    def rules(self, *, include_dropped: bool = False) -> pd.DataFrame:
        """Lessons, strongest first."""
        where = "" if include_dropped else "WHERE state = 'active'"
        return self._ws.sql(f"SELECT * FROM learned_rules {where} ORDER BY votes DESC, created_at, id")

    def history(self, rule_id: str | None = None) -> pd.DataFrame:
        """Every vote on a lesson (or on all lessons), oldest first: op, delta, votes after it, text, insight."""
        if rule_id is None:
            return self._ws.sql("SELECT * FROM learned_rule_history ORDER BY seq")
        return self._ws.sql("SELECT * FROM learned_rule_history WHERE rule_id = ? ORDER BY seq", [rule_id])

    def tasks(self) -> pd.DataFrame:
        """The tasks learning created."""
        return self._tasks.list(kind="learned")


_OPS = {
    "learning.rule_added": ("add", INITIAL_VOTES),
    "learning.rule_agreed": ("agree", 1),
    "learning.rule_edited": ("edit", 1),
    "learning.rule_removed": ("remove", -1),
}


def _apply(con: Any, events: Iterable[Event]) -> None:
    for e in events:
        if e.topic not in _OPS:
            continue
        op, delta = _OPS[e.topic]
        p = e.payload
        reflection = int(p["reflection"])
        if op == "add":
            rule_id = e.id
            votes = INITIAL_VOTES
            text = p["text"]
            con.execute(
                "INSERT INTO learned_rules VALUES (?, ?, ?, ?, 'active', 1, ?, make_timestamptz(?::BIGINT), "
                "make_timestamptz(?::BIGINT))",
                [rule_id, p["key"], text, votes, reflection, e.ts_us, e.ts_us],
            )
        else:
            rule_id = p["rule_id"]
            row = con.execute(
                "SELECT votes, text, state FROM learned_rules WHERE id = ?", [rule_id]
            ).fetchone()
            if row is None:
                raise EventError(f"{e.topic} names an unknown rule {rule_id}")
            if row[2] == "dropped":
                raise EventError(f"{e.topic}: rule {rule_id} was dropped at zero votes")
            # The votes follow from the history, whatever the payload claims: replay gives the same numbers.
            votes = int(row[0]) + delta
            text = p.get("text", row[1])
            supported = op in ("agree", "edit")
            con.execute(
                "UPDATE learned_rules SET votes = ?, text = ?, state = ?, support = support + ?, "
                "last_reflection = CASE WHEN ? THEN ? ELSE last_reflection END, "
                "updated_at = make_timestamptz(?::BIGINT) WHERE id = ?",
                [
                    votes,
                    text,
                    "active" if votes > 0 else "dropped",
                    int(supported),
                    supported,
                    reflection,
                    e.ts_us,
                    rule_id,
                ],
            )
        con.execute(
            "INSERT INTO learned_rule_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, make_timestamptz(?::BIGINT))",
            [rule_id, e.seq, e.id, op, delta, votes, text, p.get("insight"), reflection, e.ts_us],
        )


def rule_votes(ops: Iterable[str]) -> list[int]:
    """The votes after each operation of a sequence (``add`` first), stopping when the rule is dropped.

    The arithmetic of the registry, kept pure for reasoning and tests: ``add`` gives ``INITIAL_VOTES``,
    ``agree`` and ``edit`` +1, ``remove`` -1; at zero the rule is gone and later operations do not apply.
    """
    out: list[int] = []
    votes = 0
    for op in ops:
        if out and votes <= 0:
            break
        votes = INITIAL_VOTES if op == "add" else votes + dict(agree=1, edit=1, remove=-1)[op]
        out.append(votes)
    return out
