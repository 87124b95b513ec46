"""Tasks: creation, deduplication by key, lifecycle transitions, projection and replay."""

from __future__ import annotations

import pytest

import grace_core as g
from grace_core.errors import PermissionDenied, TaskError


def test_create_is_an_event_and_a_row(ws: g.Workspace) -> None:
    task = ws.tasks.create(
        "Look at the failing loop", kind="learned", actor="learning", priority=70, details={"n": 3}
    )
    event = ws.ledger.get(task.id)
    assert event.topic == "task.created"
    assert event.payload["details"] == {"n": 3}
    assert (task.state, task.priority, task.created_by) == ("pending", 70, "learning")
    frame = ws.tasks.list(state="pending")
    assert list(frame["id"]) == [task.id]


def test_an_open_task_with_the_same_key_is_not_duplicated(ws: g.Workspace) -> None:
    first = ws.tasks.create(
        "Security alert: aws", kind="security_alert", actor="hunter", key="hunter:aws:chat"
    )
    again = ws.tasks.create(
        "Security alert: aws", kind="security_alert", actor="hunter", key="hunter:aws:chat"
    )
    assert again.id == first.id
    assert len(ws.tasks.list()) == 1
    ws.tasks.transition(first.id, "done", actor="executor", result={"ok": True})
    third = ws.tasks.create(
        "Security alert: aws", kind="security_alert", actor="hunter", key="hunter:aws:chat"
    )
    assert third.id != first.id  # the old one is closed: a new occurrence gets a new task


def test_transitions_follow_the_lifecycle(ws: g.Workspace) -> None:
    task = ws.tasks.create("Do it", kind="manual", actor="alice")
    running = ws.tasks.transition(task.id, "running", actor="executor")
    assert running.state == "running"
    done = ws.tasks.transition(task.id, "done", actor="executor", result={"answer": 42})
    assert (done.state, done.result) == ("done", {"answer": 42})
    with pytest.raises(TaskError, match="cannot become running"):
        ws.tasks.transition(task.id, "running", actor="executor")
    with pytest.raises(TaskError, match="unknown task state"):
        ws.tasks.transition(task.id, "finished", actor="executor")
    changes = ws.events(topic="task.state_changed")
    assert [p["to"] for p in changes["payload"]] == ["running", "done"]


@pytest.mark.parametrize(
    ("title", "priority", "message"),
    [("", 50, "title"), ("x" * 501, 50, "title"), ("ok", 101, "priority"), ("ok", True, "priority")],
)
def test_bad_tasks_are_refused_and_nothing_is_written(
    ws: g.Workspace, title: str, priority: int, message: str
) -> None:
    head = ws.ledger.head
    with pytest.raises(TaskError, match=message):
        ws.tasks.create(title, kind="manual", actor="alice", priority=priority)
    assert ws.ledger.head == head


def test_unknown_task(ws: g.Workspace) -> None:
    with pytest.raises(TaskError, match="no task"):
        ws.tasks.get("nope")


def test_replay_rebuilds_tasks(ws: g.Workspace) -> None:
    task = ws.tasks.create("A", kind="manual", actor="alice")
    ws.tasks.transition(task.id, "cancelled", actor="alice", reason="not needed")
    ws.tasks.create("B", kind="manual", actor="bob", key="b")
    copy = g.replay(ws, ":memory:")
    try:
        assert g.projection_differences(ws, copy) == {}
        assert copy.tasks.get(task.id).state == "cancelled"
    finally:
        copy.close()


def test_attempts_errors_and_retry_times_are_projected(ws: g.Workspace) -> None:
    task = ws.tasks.create("Retry me", kind="manual", actor="alice")
    ws.tasks.transition(task.id, "running", actor="executor", attempt=1)
    retry_at = ws.clock.time() + 30
    back = ws.tasks.transition(
        task.id, "pending", actor="executor", attempt=1, error="RuntimeError: down", retry_at=retry_at
    )
    assert (back.state, back.attempts, back.last_error) == ("pending", 1, "RuntimeError: down")
    assert back.next_attempt_at is not None
    assert back.next_attempt_at.timestamp() == retry_at
    again = ws.tasks.transition(task.id, "running", actor="executor", attempt=2)
    assert (again.attempts, again.next_attempt_at) == (2, None)
    assert again.last_error == "RuntimeError: down"  # kept until a later failure replaces it
    copy = g.replay(ws, ":memory:")
    try:
        assert g.projection_differences(ws, copy) == {}
    finally:
        copy.close()


def test_a_note_is_recorded_once_and_cleared_when_the_task_runs(ws: g.Workspace) -> None:
    task = ws.tasks.create("Wait", kind="manual", actor="alice")
    ws.tasks.note(task.id, "waiting for a person", actor="executor")
    ws.tasks.note(task.id, "waiting for a person", actor="executor")
    assert len(ws.events(topic="task.noted")) == 1
    assert ws.tasks.get(task.id).note == "waiting for a person"
    assert ws.tasks.transition(task.id, "running", actor="executor").note is None


def test_cancel_is_governed(ws: g.Workspace) -> None:
    ws.auth.register("ada", "correct horse battery staple 42", role="admin", by="system")
    ws.auth.register("vic", "correct horse battery staple 42", role="viewer", by="ada")
    task = ws.tasks.create("Keep", kind="manual", actor="alice")
    with pytest.raises(PermissionDenied):
        ws.tasks.cancel(task.id, actor="vic")
    assert ws.tasks.cancel(task.id, actor="system", reason="not needed").state == "cancelled"
