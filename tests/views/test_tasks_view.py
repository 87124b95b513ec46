"""The tasks and approvals view: the board live, cancel and retry by role, approvals with four eyes."""

from __future__ import annotations

import pytest

from grace_core.errors import PermissionDenied
from grace_core.sandbox import Limits
from grace_core.views.tasks import TasksView


def _failed_task(ws):
    task = ws.tasks.create("Rebuild the index", kind="index", actor="bob")
    ws.tasks.transition(task.id, "running", actor="executor", attempt=1)
    ws.tasks.transition(task.id, "failed", actor="executor", attempt=1, error="disk full")
    return task


def _approval(ws, requester="bob"):
    with pytest.raises(PermissionDenied, match="approval"):
        ws.sandbox.run("print(1)", actor=requester, limits=Limits(timeout_s=600))
    return ws.governance.approvals("pending")["id"].iloc[-1]


def test_board_groups_by_state_and_follows_task_events_live(vws):
    view = TasksView(ws=vws, user="bob", role="researcher")
    assert view.board.groupby == ["state"]
    assert view.counts["pending"] == 0
    task = vws.tasks.create("Write the report", kind="report", actor="bob")
    assert view.counts["pending"] == 1  # arrived over the mesh, no reload
    assert "Write the report" in set(view.board.value["title"])
    vws.tasks.transition(task.id, "running", actor="executor", attempt=1)
    assert view.counts == {**view.counts, "pending": 0, "running": 1}
    view.close()


def test_cancel_and_retry_for_researchers_not_viewers(vws):
    open_task = vws.tasks.create("Tidy notes", kind="notes", actor="bob")
    failed = _failed_task(vws)
    viewer = TasksView(ws=vws, user="vic", role="viewer")
    viewer.selected_task = open_task.id
    assert viewer.cancel_button.disabled
    viewer.cancel()
    assert viewer.message.startswith("refused")
    assert vws.tasks.get(open_task.id).state == "pending"

    view = TasksView(ws=vws, user="bob", role="researcher")
    view.selected_task = open_task.id
    assert not view.cancel_button.disabled
    assert view.retry_button.disabled
    view.reason = "not needed"
    view.cancel()
    assert vws.tasks.get(open_task.id).state == "cancelled"
    view.selected_task = failed.id
    assert view.cancel_button.disabled
    assert not view.retry_button.disabled
    view.retry()
    assert vws.tasks.get(failed.id).state == "pending"
    assert view.counts["failed"] == 0


def test_admin_approves_with_a_reason_and_four_eyes_are_enforced(vws):
    approval_id = _approval(vws, "bob")
    researcher = TasksView(ws=vws, user="bob", role="researcher")
    researcher.selected_approval = approval_id
    assert researcher.approve_button.disabled
    researcher.reason = "me"
    researcher.answer("approved")
    assert researcher.message.startswith("refused")

    admin = TasksView(ws=vws, user="ada", role="admin")
    assert admin.pending_approvals == 1
    admin.selected_approval = approval_id
    assert not admin.approve_button.disabled
    admin.answer("approved")
    assert "reason" in admin.message  # a reason is required
    admin.reason = "a long batch job, fine"
    admin.answer("approved")
    assert vws.governance.approval(approval_id).state == "approved"
    assert admin.pending_approvals == 0
    assert researcher.pending_approvals == 0  # the other open view followed live

    # An admin's own request: governance refuses to let them decide it, and the view says so.
    vws.governance.add_policy(
        {"id": "review-admin-long", "effect": "review", "roles": ["admin"], "actions": ["sandbox.execute"],
         "conditions": [{"key": "timeout_s", "op": "gt", "value": 300}], "priority": 60,
         "description": "test: admins' long runs need a second admin"},
        actor="ada",
    )  # fmt: skip
    own = _approval(vws, "ada")
    admin.selected_approval = own
    admin.reason = "self-service"
    admin.answer("rejected")
    assert "someone else must decide" in admin.message
    assert vws.governance.approval(own).state == "pending"


def test_who_answers_approvals_is_policy_and_the_view_follows_it(vws):
    approval_id = _approval(vws, "bob")
    vic = TasksView(ws=vws, user="vic", role="viewer")
    vic.selected_approval = approval_id
    assert vic.approve_button.disabled
    # The admins hand approvals to viewers: a policy change, no code change, and the view follows it.
    vws.governance.remove_policy("approvals-decided-by-admins", actor="ada")
    vws.governance.add_policy(
        {"id": "viewers-answer", "effect": "allow", "roles": ["viewer"],
         "actions": ["governance.approval.decide"]},
        actor="ada",
    )  # fmt: skip
    again = TasksView(ws=vws, user="vic", role="viewer")
    again.selected_approval = approval_id
    assert not again.approve_button.disabled
    again.reason = "fine by me"
    again.answer("approved")
    assert vws.governance.approval(approval_id).state == "approved"
