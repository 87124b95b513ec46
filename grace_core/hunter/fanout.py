"""Hunter's alert fan-out: a durable subscriber that turns each ``hunter.alert`` into a task, a memory entry and a
live notification.

It sits beside the Hunter engine rather than inside it: the scanner screens the texts that tasks and memory
take in, and this subscriber writes tasks and memory, so it is built after all three (``ws.alert_fanout``).
Everything it publishes is caused by the alert:

* a task "Security alert: <rule>" (kind ``security_alert``, key ``hunter:<rule>:<resource or target>``, so a
  repeat while the task is open does not add another),
* a memory entry ``/security/alerts/<alert id>.md`` with the details (excerpts are masked, and masked text
  fires no rule),
* a ``hunter.notification`` event: the live notification. Views subscribe to it
  (``ws.subscribe("hunter.notification", callback)``); it names the task and the memory entry, and it marks the
  alert's fan-out as done (``hunter_alerts.notified_at``).

The subscriber keeps a cursor in the workspace, so a crash between an alert and its fan-out is resumed on the
next open; each step is idempotent (the task dedupes by key, the memory entry is written once, a notified
alert is skipped). Alerts raised while screening Hunter's own reports (actor ``hunter``) are recorded but not
fanned out, so no report can start a loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grace_core.errors import ArtifactError
from grace_core.events import Event

from . import HUNTER

if TYPE_CHECKING:
    from grace_core.memory import Memory
    from grace_core.tasks import Tasks
    from grace_core.workspace import Workspace

__all__ = ["ALERT_FOLDER", "FANOUT", "AlertFanOut"]

FANOUT = "hunter.fanout"  # the durable subscriber's name (its cursor is mesh:hunter.fanout)
ALERT_FOLDER = "/security/alerts"
PRIORITY = {"info": 10, "low": 30, "medium": 50, "high": 75, "critical": 90}


class AlertFanOut:
    """The fan-out of Hunter's alerts (``ws.alert_fanout``)."""

    def __init__(self, ws: Workspace, *, tasks: Tasks, memory: Memory) -> None:
        self._ws = ws
        self._tasks = tasks
        self._memory = memory
        self._started = False

    def start(self) -> None:
        """Subscribe (once the workspace is wired and a new one has its genesis; a snapshot never fans out)."""
        if self._started or self._ws.read_only:
            return
        self._started = True
        self._ws.subscribe("hunter.alert", self._fan_out, name=FANOUT, durable=True)

    def _fan_out(self, alert: Event) -> None:
        p = alert.payload
        if p.get("actor") == HUNTER:
            return  # raised while screening one of Hunter's own reports: on the ledger, never fanned out
        row = (
            self._ws.ledger.reader()
            .execute("SELECT notified_at FROM hunter_alerts WHERE id = ?", [alert.id])
            .fetchone()
        )
        if row is not None and row[0] is not None:
            return  # fanned out before (a redelivery after a crash, or a replayed ledger)
        rule, severity, target = p["rule"], p["severity"], p["target"]
        resource = p.get("resource")
        path = f"{ALERT_FOLDER}/{alert.id}.md"
        task = self._tasks.create(
            f"Security alert: {rule}",
            kind="security_alert",
            actor=HUNTER,
            priority=PRIORITY.get(severity, 50),
            details={
                "alert": alert.id,
                "rule": rule,
                "severity": severity,
                "target": target,
                "resource": resource,
                "count": p["count"],
                "memory_path": path,
            },
            key=f"hunter:{rule}:{resource or target}",
        )
        try:
            self._memory.read(path)
        except ArtifactError:
            self._memory.write(
                path,
                _report(alert),
                actor=HUNTER,
                tags=("security", "alert", severity, rule),
                reason=f"details of Hunter alert {alert.id}",
            )
        self._ws.publish(
            "hunter.notification",
            {
                "alert": alert.id,
                "rule": rule,
                "severity": severity,
                "target": target,
                "resource": resource,
                "count": p["count"],
                "title": f"Security alert: {rule}",
                "message": f"{p.get('description', rule)}: {p['count']} occurrence(s) in {resource or target}",
                "task": task.id,
                "memory_path": path,
            },
            actor=HUNTER,
            resource=alert.resource,
        )


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("`", "'").replace("\n", " ")


def _report(alert: Event) -> str:
    """The markdown of an alert's memory entry: only fields of the alert, whose excerpts are masked."""
    p = alert.payload
    lines = [
        f"# Security alert: {p['rule']}",
        "",
        "| field | value |",
        "|---|---|",
        f"| rule | `{_cell(p['rule'])}` |",
        f"| description | {_cell(p.get('description', ''))} |",
        f"| severity | {_cell(p['severity'])} |",
        f"| target | {_cell(p['target'])} |",
        f"| resource | {_cell(p.get('resource') or '-')} |",
        f"| text from | {_cell(p.get('actor', '-'))} |",
        f"| occurrences | {p['count']} |",
        f"| alert | {alert.id} (ledger seq {alert.seq}) |",
        f"| time | {alert.ts.isoformat()} |",
        "",
        "## Occurrences",
        "",
        "| # | line | column | start | end |",
        "|---|---|---|---|---|",
    ]
    spans = p.get("spans", [])
    lines += [
        f"| {i} | {s['line']} | {s['column']} | {s['start']} | {s['end']} |" for i, s in enumerate(spans, 1)
    ]
    if p.get("spans_truncated"):
        lines.append(f"| ... | {p['spans_truncated']} more | | | |")
    lines += ["", "## Masked excerpts", ""]
    lines += [f"- `{_cell(e)}`" for e in p.get("excerpts", [])]
    for d in p.get("details", []):
        lines.append(f"- {_cell(d)}")
    return "\n".join(lines) + "\n"
