"""Tasks: creation, deduplication by key, lifecycle transitions, projection and replay."""

from __future__ import annotations

import pytest

import grace_core as g
from grace_core.errors import TaskError


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
