"""Tasks and approvals: the task board grouped by state, live, and the governance approvals queue.

The board lists every task grouped by state (pending, running, failed, done, cancelled) with its attempts,
last error and result, and follows ``task.*`` events live. Researchers and admins cancel an open task
(``ws.tasks.cancel``, governed as ``task.cancel``) or retry a failed one (governed as ``task.update``; it goes
back to pending and the executor picks it up). The approvals queue shows the requests governance raised for
``review`` decisions; an admin approves or rejects one with a reason. Governance itself enforces who may
decide: only admins and the system, and never the requester (four eyes); its refusal is shown as is.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pandas as pd
import panel as pn
import param

from grace_core.errors import ViewError
from grace_core.events import Event
from grace_core.tasks import STATES

from .base import GraceView, frame_for_table, short
from .render import UserHTML, code_html, text_html

__all__ = ["APPROVAL_COLUMNS", "TASK_COLUMNS", "TasksView"]

TASK_COLUMNS = ["state", "title", "kind", "priority", "attempts", "last_error", "result", "created_by",
                "updated_at", "id"]  # fmt: skip
APPROVAL_COLUMNS = ["state", "requester", "action", "resource", "context", "reasons", "requested_at",
                    "decided_by", "note", "id"]  # fmt: skip
_WRAP = {"type": "textarea"}  # a long cell wraps instead of being cut off (the formatter escapes it)
DECIDE = "governance.approval.decide"  # the governed action of answering an approval
_STATE_ORDER = {s: i for i, s in enumerate(("running", "pending", "failed", "done", "cancelled"))}


def _task_html(task: Any) -> str:
    """The selected task in full: its title, state, details, result and last error, shown as written."""
    parts = [
        f"<h4>{text_html(task.title)}</h4>",
        text_html(f"{task.state} · {task.kind} · by {task.created_by}"),
    ]
    for label, value in (("details", task.details), ("result", task.result), ("last error", task.last_error)):
        if value:
            shown = (
                value
                if isinstance(value, str)
                else json.dumps(value, indent=2, ensure_ascii=False, default=str)
            )
            parts.append(f"<div><b>{label}</b></div>" + code_html(shown))
    return "".join(parts)


class TasksView(GraceView):
    """The task board (cancel, retry) and the approvals queue (approve, reject: admins)."""

    title = "Tasks"
    live_patterns: ClassVar[tuple[str, ...]] = ("task.*", "governance.approval_*")

    selected_task = param.String(default="", doc="The task the Cancel and Retry buttons act on.")
    selected_approval = param.String(default="", doc="The approval the Approve and Reject buttons act on.")
    reason = param.String(default="", doc="Why: recorded with a cancel, a retry or an approval's answer.")
    show_decided = param.Boolean(default=False, doc="Also list approvals that were decided already.")
    counts = param.Dict(default={}, doc="Tasks per state.")
    pending_approvals = param.Integer(default=0)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.board = pn.widgets.Tabulator(
            pd.DataFrame(columns=TASK_COLUMNS), disabled=True, show_index=False, selectable=1,
            groupby=["state"], pagination="local", page_size=20, sizing_mode="stretch_width", height=300,
            layout="fit_data_stretch", formatters={c: _WRAP for c in ("title", "last_error", "result")},
            widths={"title": 260, "last_error": 220, "result": 220}, hidden_columns=["id"],
        )  # fmt: skip
        self.board.param.watch(self._pick_task, "selection")
        self.cancel_button = pn.widgets.Button(label="Cancel task", color="warning")
        self.cancel_button.on_click(lambda _e: self.cancel())
        self.retry_button = pn.widgets.Button(label="Retry task", color="primary")
        self.retry_button.on_click(lambda _e: self.retry())
        self.approvals = pn.widgets.Tabulator(
            pd.DataFrame(columns=APPROVAL_COLUMNS), disabled=True, show_index=False, selectable=1,
            sizing_mode="stretch_width", height=180, layout="fit_data_stretch",
            formatters={c: _WRAP for c in ("context", "reasons", "note")}, widths={"reasons": 260},
            hidden_columns=["id"],
        )  # fmt: skip
        self.approvals.param.watch(self._pick_approval, "selection")
        self.approve_button = pn.widgets.Button(label="Approve", color="success")
        self.approve_button.on_click(lambda _e: self.answer("approved"))
        self.reject_button = pn.widgets.Button(label="Reject", color="danger")
        self.reject_button.on_click(lambda _e: self.answer("rejected"))
        self.summary = UserHTML("")
        note = (
            "Approve or reject a request with a reason; governance never lets the requester decide their own."
            if self.may(DECIDE)
            else "Only admins decide approvals: you see the queue but cannot answer."
        )
        self.approvals_note = UserHTML(text_html(note))
        self.task_detail = UserHTML("")
        self.refresh()

    # -- data ----------------------------------------------------------------------------------------------
    def task_frame(self) -> pd.DataFrame:
        frame = self.ws.tasks.list()
        if frame.empty:
            return pd.DataFrame(columns=TASK_COLUMNS)
        frame["result"] = frame["result"].map(lambda r: short(r, 60))
        frame["last_error"] = frame["last_error"].map(lambda r: short(r, 60))
        frame = frame.assign(_order=frame["state"].map(_STATE_ORDER)).sort_values(
            ["_order", "priority", "updated_at"], ascending=[True, False, False], kind="stable"
        )
        return frame.reindex(columns=TASK_COLUMNS).reset_index(drop=True)

    def approval_frame(self) -> pd.DataFrame:
        frame = self.ws.governance.approvals(None if self.show_decided else "pending")
        if frame.empty:
            return pd.DataFrame(columns=APPROVAL_COLUMNS)
        frame["context"] = frame["context"].map(lambda c: short(c, 60))
        frame["reasons"] = frame["reasons"].map(lambda r: short("; ".join(json.loads(r)), 90))
        return frame.reindex(columns=APPROVAL_COLUMNS).iloc[::-1].reset_index(drop=True)  # newest first

    @param.depends("show_decided", watch=True)
    def refresh(self) -> None:
        tasks = self.task_frame()
        self.board.value = frame_for_table(tasks)
        self.counts = {s: int((tasks["state"] == s).sum()) for s in STATES}
        approvals = self.approval_frame()
        self.approvals.value = frame_for_table(approvals)
        self.pending_approvals = int((approvals["state"] == "pending").sum()) if len(approvals) else 0
        self.summary.object = text_html(" · ".join(f"{n} {s}" for s, n in self.counts.items()))
        self._sync_buttons()

    def on_event(self, events: list[Event]) -> None:
        self.refresh()

    # -- selection -----------------------------------------------------------------------------------------
    def _pick_task(self, event: Any) -> None:
        if event.new:
            self.selected_task = str(self.board.value.iloc[event.new[0]]["id"])

    def _pick_approval(self, event: Any) -> None:
        if event.new:
            self.selected_approval = str(self.approvals.value.iloc[event.new[0]]["id"])

    @param.depends("selected_task", "selected_approval", watch=True)
    def _sync_buttons(self) -> None:
        state = None
        self.task_detail.object = ""
        if self.selected_task:
            try:
                task = self.ws.tasks.get(self.selected_task)
            except Exception:  # noqa: BLE001 - a stale selection simply disables the buttons
                task = None
            if task is not None:
                state = task.state
                self.task_detail.object = _task_html(task)
        resource = f"task:{self.selected_task}"
        role_reason = self.cannot("cancel or retry tasks")
        may_cancel, may_retry = self.may("task.cancel", resource), self.may("task.update", resource)
        self.allow(
            self.cancel_button,
            may_cancel and state in ("pending", "running"),
            role_reason if not may_cancel else "Select a pending or running task to cancel it.",
        )
        self.allow(
            self.retry_button,
            may_retry and state == "failed",
            role_reason if not may_retry else "Select a failed task to retry it.",
        )
        pending = False
        if self.selected_approval:
            try:
                pending = self.ws.governance.approval(self.selected_approval).pending
            except Exception:  # noqa: BLE001
                pending = False
        may_decide = self.may(DECIDE, f"approval:{self.selected_approval}")
        for button, verb in ((self.approve_button, "approve"), (self.reject_button, "reject")):
            self.allow(
                button,
                may_decide and pending,
                self.cannot(f"{verb} requests", needs="an admin")
                if not may_decide
                else f"Select a pending request to {verb} it.",
            )

    # -- actions -------------------------------------------------------------------------------------------
    def _task_resource(self) -> str | None:
        return f"task:{self.selected_task}" if self.selected_task else None

    def cancel(self) -> Any:
        def go() -> Any:
            if not self.selected_task:
                raise ViewError("select a task first")
            task = self.ws.tasks.cancel(self.selected_task, actor=self.actor, reason=self.reason or "")
            self.message = f"cancelled “{short(task.title, 60)}”"
            self.refresh()
            return task

        return self.act("cancel a task", go, action="task.cancel", resource=self._task_resource())

    def retry(self) -> Any:
        """Send a failed task back to pending (governed as ``task.update``); the executor runs it again."""

        def go() -> Any:
            if not self.selected_task:
                raise ViewError("select a task first")
            resource = f"task:{self.selected_task}"
            self.ws.governance.check(self.actor, "task.update", resource)
            task = self.ws.tasks.transition(
                self.selected_task,
                "pending",
                actor=self.actor,
                reason=self.reason or f"retried by {self.actor}",
            )
            self.message = f"“{short(task.title, 60)}” is pending again"
            self.refresh()
            return task

        return self.act("retry a task", go, action="task.update", resource=self._task_resource())

    def answer(self, state: str) -> Any:
        """Approve (``state="approved"``) or reject the selected approval, with ``reason`` as its note."""
        verb = "approve" if state == "approved" else "reject"

        def go() -> Any:
            if not self.selected_approval:
                raise ViewError("select an approval first")
            if not self.reason.strip():
                raise ViewError(f"give a reason to {verb}")
            fn = self.ws.governance.approve if state == "approved" else self.ws.governance.reject
            approval = fn(self.selected_approval, by=self.actor, note=self.reason.strip())
            self.message = f"{state} {approval.action} for {approval.requester}: {approval.note}"
            self.reason = ""
            self.refresh()
            return approval

        resource = f"approval:{self.selected_approval}" if self.selected_approval else None
        return self.act(f"{verb} approvals", go, action=DECIDE, resource=resource)

    # -- layout --------------------------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        reason = pn.widgets.TextInput.from_param(
            self.param.reason, label="Reason", placeholder="why (recorded on the ledger)", width=360
        )
        decided = pn.widgets.Checkbox.from_param(self.param.show_decided, label="show decided")
        return pn.Column(
            self._status,
            self.read_only_note("cancel or retry tasks", allowed=self.may("task.cancel")),
            pn.pane.Markdown("### Task board"),
            self.summary,
            self.board,
            pn.FlexBox(self.cancel_button, self.retry_button),
            self.task_detail,
            pn.pane.Markdown("### Approvals"),
            self.approvals_note,
            decided,
            self.approvals,
            pn.FlexBox(reason, self.approve_button, self.reject_button, align_items="flex-end"),
            sizing_mode="stretch_width",
        )
