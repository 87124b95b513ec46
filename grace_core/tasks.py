"""Tasks: units of work the system and its users create; every transition is an event."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import TaskError
from .events import Event, canonical_json

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["STATES", "Task", "Tasks"]

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


class Tasks:
    """Create, look up and move tasks. A task's id is the id of its ``task.created`` event."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws
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
        self._ws.hunter.screen(
            f"{title}\n{json.dumps(details, ensure_ascii=False)}", target="task", actor=actor
        )
        event = self._ws.publish(
            "task.created",
            {"kind": kind, "title": title, "priority": priority, "details": details, "key": key},
            actor=actor,
        )
        return self.get(event.id)

    def transition(
        self, task_id: str, state: str, *, actor: str, result: Any = None, reason: str = ""
    ) -> Task:
        """Move a task to ``state`` (a ``task.state_changed`` event); refuses moves the lifecycle forbids."""
        task = self.get(task_id)
        if state not in STATES:
            raise TaskError(f"unknown task state {state!r}; states: {', '.join(STATES)}")
        if state not in TRANSITIONS[task.state]:
            raise TaskError(f"task {task_id} is {task.state}; it cannot become {state}")
        self._ws.publish(
            "task.state_changed",
            {"task_id": task_id, "from": task.state, "to": state, "result": result, "reason": reason},
            actor=actor,
            resource=f"task:{task_id}",
        )
        return self.get(task_id)

    def get(self, task_id: str) -> Task:
        row = self._ws.ledger.reader().execute("SELECT * FROM tasks WHERE id = ?", [task_id]).fetchone()
        if row is None:
            raise TaskError(f"no task with id {task_id!r}")
        return _task(row)

    def _open_with_key(self, key: str) -> Task | None:
        row = (
            self._ws.ledger.reader()
            .execute(
                "SELECT * FROM tasks WHERE key = ? AND state IN ('pending', 'running') ORDER BY created_at LIMIT 1",
                [key],
            )
            .fetchone()
        )
        return _task(row) if row else None

    def list(self, *, state: str | None = None, kind: str | None = None) -> pd.DataFrame:
        """Tasks as a DataFrame, highest priority first, then oldest first."""
        sql, params = "SELECT * FROM tasks WHERE true", []
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        return self._ws.sql(sql + " ORDER BY priority DESC, created_at", params)


def _task(row: tuple[Any, ...]) -> Task:
    id_, kind, title, state, priority, key, details, by, created, updated, result = row
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
    )


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "task.created":
            con.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, make_timestamptz(?::BIGINT), "
                "make_timestamptz(?::BIGINT), NULL)",
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
            con.execute(
                "UPDATE tasks SET state = ?, updated_at = make_timestamptz(?::BIGINT), "
                "result = coalesce(?, result) WHERE id = ?",
                [p["to"], e.ts_us, result, p["task_id"]],
            )
