"""Tasks: units of work the system and its users create; every transition is an event.

A task is ``pending`` until the executor (``ws.executor``) runs it: ``running``, then ``done`` or, when its
handler raised, back to ``pending`` with a retry time (``next_attempt_at``) until its attempts are used up, then
``failed``. Anyone allowed may ``cancel`` an open task. Why a pending task waits (no handler for its kind, its
kind paused) is its ``note`` (a ``task.noted`` event); a pending task the executor puts off until a later time
(a lesson says its kind fails at this hour) is ``deferred`` (a ``task.deferred`` event that sets its retry time).
"""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

import pandas as pd

from .errors import TaskError
from .events import Event, canonical_json
from .mesh import Message
from .times import TS, to_us

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.12+; only the type checker reads it

    from .governance import Governance
    from .hunter import Hunter
    from .workspace import Workspace

__all__ = ["STATES", "Task", "TaskChange", "Tasks"]

STATES = ("pending", "running", "done", "failed", "cancelled")
OPEN_STATES = ("pending", "running")
# Which state may follow which; the executor drives pending -> running -> done | failed (-> pending on retry).
TRANSITIONS = {
    "pending": {"running", "cancelled", "done", "failed"},
    "running": {"done", "failed", "pending", "cancelled"},
    "failed": {"pending"},
    "done": set(),
    "cancelled": set(),
}


class TaskChange(TypedDict, total=False):
    """What a move records besides the new state (the keyword options of ``Tasks.message``)."""

    result: Any
    reason: str
    attempt: int | None
    error: str | None
    retry_at: float | None
    policy: Mapping[str, Any] | None


@dataclass(frozen=True)
class Task:
    id: str
    kind: str
    title: str
    state: str
    priority: int
    key: str | None
    details: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    result: Any
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    note: str | None = None
    deferred_by: tuple[str, ...] = ()  # the lessons that put it off to a later hour (task.deferred)

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


class Tasks:
    """Create, look up and move tasks. A task's id is the id of its ``task.created`` event."""

    def __init__(self, ws: Workspace, *, governance: Governance, hunter: Hunter) -> None:
        self._ws = ws
        self._governance = governance
        self._hunter = hunter
        ws.projections.register("tasks", "task.*", _apply, tables=["tasks"])

    def create(
        self,
        title: str,
        *,
        kind: str,
        actor: str,
        priority: int = 50,
        details: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Task:
        """Create a pending task. With ``key``, an open task with the same key is returned instead of a new one.

        The title and details are screened by Hunter like any other text that enters the workspace.
        """
        if not isinstance(title, str) or not title.strip() or len(title) > 500:
            raise TaskError("a task needs a title of 1 to 500 characters")
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100:
            raise TaskError(f"priority is an integer from 0 (lowest) to 100, not {priority!r}")
        if key is not None:
            existing = self._open_with_key(key)
            if existing is not None:
                return existing
        details = dict(details or {})
        canonical_json(details)  # fail before anything is written
        self._hunter.screen(f"{title}\n{json.dumps(details, ensure_ascii=False)}", target="task", actor=actor)
        event = self._ws.publish(
            "task.created",
            {"kind": kind, "title": title, "priority": priority, "details": details, "key": key},
            actor=actor,
        )
        # The new row, as the projection wrote it (without reading it back).
        p = event.payload
        return Task(
            event.id, kind, title, "pending", priority, key, p["details"], actor, event.ts, event.ts, None
        )

    def transition(self, task_id: str, state: str, *, actor: str, **changes: Unpack[TaskChange]) -> Task:
        """Move a task to ``state`` (a ``task.state_changed`` event); refuses moves the lifecycle forbids.

        The executor adds ``attempt`` (the number of the run that starts or ends), ``error`` (why it failed),
        ``retry_at`` (workspace-clock epoch seconds before which a retry must not start) and ``policy`` (the
        lessons that applied to the run, or would have but the task is held out, and what they changed).
        Returns the task as it is afterwards.
        """
        self.move(self.get(task_id), state, actor=actor, **changes)
        return self.get(task_id)

    def move(self, task: Task, state: str, *, actor: str, **changes: Unpack[TaskChange]) -> None:
        """``transition`` for a caller that holds the task's current row (the executor, under its lock): the
        same checks and event, without reading the task before or after."""
        message = self.message(task, state, **changes)
        self._ws.publish(message.topic, message.payload, actor=actor, resource=message.resource)

    def message(
        self,
        task: Task,
        state: str,
        *,
        result: Any = None,
        reason: str = "",
        attempt: int | None = None,
        error: str | None = None,
        retry_at: float | None = None,
        policy: Mapping[str, Any] | None = None,
        cause: Event | None = None,
    ) -> Message:
        """The ``task.state_changed`` message of ``move``, to publish with others in one batch
        (``ws.publish_many``); refuses moves the lifecycle forbids."""
        if state not in STATES:
            raise TaskError(f"unknown task state {state!r}; states: {', '.join(STATES)}")
        if state not in TRANSITIONS[task.state]:
            raise TaskError(f"task {task.id} is {task.state}; it cannot become {state}")
        payload: dict[str, Any] = {
            "task_id": task.id,
            "kind": task.kind,
            "from": task.state,
            "to": state,
            "result": result,
            "reason": reason,
        }
        if attempt is not None:
            payload["attempt"] = attempt
        if error is not None:
            payload["error"] = error[:2000]
        if retry_at is not None:
            payload["retry_at_us"] = to_us(retry_at)
        if policy:
            payload["policy"] = dict(policy)
        if cause is None:
            return Message("task.state_changed", payload, f"task:{task.id}")
        return Message("task.state_changed", payload, f"task:{task.id}", cause=cause)

    def defer(
        self, task: Task, until: float, *, actor: str, reason: str, policy: Mapping[str, Any] | None = None
    ) -> None:
        """Put a pending task off until ``until`` (workspace-clock epoch seconds): a ``task.deferred`` event."""
        if task.state != "pending":
            raise TaskError(f"task {task.id} is {task.state}; only a pending task can be deferred")
        payload: dict[str, Any] = {
            "task_id": task.id,
            "kind": task.kind,
            "until_us": to_us(until),
            "reason": reason,
        }
        if policy:
            payload["policy"] = dict(policy)
        self._ws.publish("task.deferred", payload, actor=actor, resource=f"task:{task.id}")

    def cancel(self, task_id: str, *, actor: str, reason: str = "") -> Task:
        """Cancel an open task (governed: ``task.cancel`` on ``task:<id>``)."""
        self._governance.check(actor, "task.cancel", resource=f"task:{task_id}")
        return self.transition(task_id, "cancelled", actor=actor, reason=reason or "cancelled")

    def note(self, task_id: str, note: str, *, actor: str) -> Task:
        """Say why a pending task waits (a ``task.noted`` event); a repeat of the current note is not recorded."""
        task = self.get(task_id)
        if task.note != note:
            self._ws.publish(
                "task.noted", {"task_id": task_id, "note": note}, actor=actor, resource=f"task:{task_id}"
            )
            task = self.get(task_id)
        return task

    def get(self, task_id: str) -> Task:
        row = (
            self._ws.ledger.reader()
            .execute(f"SELECT {COLUMNS} FROM tasks WHERE id = ?", [task_id])
            .fetchone()
        )
        if row is None:
            raise TaskError(f"no task with id {task_id!r}")
        return _task(row)

    def _open_with_key(self, key: str) -> Task | None:
        row = (
            self._ws.ledger.reader()
            .execute(
                f"SELECT {COLUMNS} FROM tasks WHERE key = ? AND state IN ('pending', 'running') "
                "ORDER BY created_at LIMIT 1",
                [key],
            )
            .fetchone()
        )
        return _task(row) if row else None

    def open_count(self) -> int:
        """How many tasks are open (pending or running)."""
        row = (
            self._ws.ledger.reader()
            .execute("SELECT count(*) FROM tasks WHERE state IN ('pending', 'running')")
            .fetchone()
        )
        return int(row[0]) if row else 0

    def list(self, *, state: str | None = None, kind: str | None = None) -> pd.DataFrame:
        """Tasks as a DataFrame, highest priority first, then oldest first."""
        sql, params = f"SELECT {COLUMNS} FROM tasks WHERE true", []
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        return self._ws.sql(sql + " ORDER BY priority DESC, created_at", params)

    def runs(
        self, *, kinds: Sequence[str] | None = None, since: float | None = None, unaffected: bool = False
    ) -> builtins.list[dict[str, Any]]:  # builtins: the method `list` shadows the type here
        """Ended runs as JSON-able records, the input of ``grace_core.diagnosis.diagnose``, oldest first.

        Each: ``id`` (the event that ended it), ``task``, ``kind``, ``attempt``, ``ok``, ``error``, ``hour`` (of the
        day, UTC) and ``features``: the task's ``details.params`` values and its ``details.size``. With
        ``unaffected`` only runs no lesson changed (held-out runs and those before any lesson), so that what
        the lessons did does not blur what the runs show.
        """
        sql = (
            "SELECT e.id, e.payload->>'$.task_id', e.payload->>'$.kind', "
            "TRY_CAST(e.payload->>'$.attempt' AS INTEGER), (e.payload->>'$.to') = 'done', "
            "e.payload->>'$.error', hour(e.ts), t.details FROM events e JOIN tasks t "
            "ON t.id = (e.payload->>'$.task_id') WHERE e.topic = 'task.state_changed' "
            "AND (e.payload->>'$.from') = 'running'"
        )
        params: list[Any] = []
        if since is not None:
            sql += f" AND e.ts >= {TS}"
            params.append(to_us(since))
        if kinds is not None:
            sql += " AND (e.payload->>'$.kind') IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(kinds))
        if unaffected:
            sql += " AND json_extract(e.payload, '$.policy.lessons') IS NULL"
        out = []
        for event_id, task_id, kind, attempt, ok, error, hour, details in (
            self._ws.ledger.reader().execute(sql + " ORDER BY e.seq", params).fetchall()
        ):
            d = json.loads(details)
            features = {
                k: v for k, v in (d.get("params") or {}).items() if isinstance(v, str | bool) or _finite(v)
            }
            if _finite(d.get("size")) and not isinstance(d.get("size"), bool):
                features["size"] = d["size"]
            out.append(
                {
                    "id": event_id,
                    "task": task_id,
                    "kind": kind,
                    "attempt": int(attempt or 1),
                    "ok": bool(ok),
                    "error": error,
                    "hour": int(hour),
                    "features": features,
                }
            )
        return out


COLUMNS = (
    "id, kind, title, state, priority, key, details, created_by, created_at, updated_at, result, "
    "attempts, last_error, next_attempt_at, note, deferred_by"
)


def _task(row: tuple[Any, ...]) -> Task:
    id_, kind, title, state, priority, key, details, by, created, updated, result, *rest = row
    attempts, last_error, next_at, note, deferred_by = rest
    return Task(
        id_,
        kind,
        title,
        state,
        int(priority),
        key,
        json.loads(details),
        by,
        created,
        updated,
        None if result is None else json.loads(result),
        int(attempts or 0),
        last_error,
        next_at,
        note,
        tuple(json.loads(deferred_by)) if deferred_by else (),
    )


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "task.created":
            con.execute(
                f"INSERT INTO tasks ({COLUMNS}) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, "
                f"{TS}, {TS}, NULL, 0, NULL, NULL, NULL, NULL)",
                [
                    e.id,
                    p["kind"],
                    p["title"],
                    p["priority"],
                    p["key"],
                    canonical_json(p["details"]),
                    e.actor,
                    e.ts_us,
                    e.ts_us,
                ],
            )
        elif e.topic == "task.state_changed":
            result = None if p.get("result") is None else json.dumps(p["result"], sort_keys=True)
            starting = p["to"] == "running"
            con.execute(
                f"UPDATE tasks SET state = ?, updated_at = {TS}, "
                "result = coalesce(?, result), attempts = coalesce(?, attempts), "
                "last_error = CASE WHEN ? THEN ? ELSE last_error END, "
                f"next_attempt_at = {TS}, "
                "note = CASE WHEN ? THEN NULL ELSE note END WHERE id = ?",
                [
                    p["to"],
                    e.ts_us,
                    result,
                    p.get("attempt"),
                    "error" in p,
                    p.get("error"),
                    p.get("retry_at_us"),
                    starting,
                    p["task_id"],
                ],
            )
        elif e.topic == "task.noted":
            con.execute("UPDATE tasks SET note = ? WHERE id = ?", [p["note"], p["task_id"]])
        elif e.topic == "task.deferred":
            lessons = (p.get("policy") or {}).get("lessons")
            con.execute(
                f"UPDATE tasks SET next_attempt_at = {TS}, note = ?, "
                "deferred_by = coalesce(?, deferred_by) WHERE id = ?",
                [p["until_us"], p["reason"], json.dumps(sorted(lessons)) if lessons else None, p["task_id"]],
            )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
