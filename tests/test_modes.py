"""Degraded modes: entered and left by events, enforced by the engines, kept across reopen and replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import grace

import grace_core as g
from grace_core.errors import DegradedModeError, ModeError, PermissionDenied, ReadOnlyError

PASSWORD = "correct horse battery staple 42"


def test_enter_guard_and_leave(ws: g.Workspace) -> None:
    ws.modes.guard("chat_paused")  # not active: no error
    event = ws.modes.enter("chat_paused", actor="healing", reason="the responder keeps failing")
    assert event is not None
    assert event.topic == "healing.mode_entered"
    assert ws.modes.is_active("chat_paused")
    with pytest.raises(DegradedModeError, match=r"entered by healing.*the responder keeps failing") as info:
        ws.modes.guard("chat_paused")
    assert info.value.mode == "chat_paused"
    assert ws.modes.enter("chat_paused", actor="healing", reason="again") is None  # already active
    assert set(ws.modes.active()) == {"chat_paused"}
    left = ws.modes.leave("chat_paused", actor="healing", reason="answers again")
    assert left is not None
    assert left.topic == "healing.mode_left"
    assert ws.modes.active() == {}
    assert ws.modes.leave("chat_paused", actor="healing", reason="x") is None


def test_read_only_refuses_writes_but_health_events_land(ws: g.Workspace) -> None:
    ws.modes.enter("read_only", actor="healing", reason="disk almost full")
    head = ws.ledger.head
    with pytest.raises(ReadOnlyError, match="disk almost full"):
        ws.publish("notes.added", {"text": "hello"}, actor="alice")
    with pytest.raises(ReadOnlyError):
        ws.memory.write("/notes/a.md", "text", actor="system")
    assert ws.ledger.head == head
    checks = ws.healing.check()  # healing, loop and metrics bookkeeping still records
    assert checks
    assert ws.ledger.head[0] > head[0]
    assert set(ws.events(since=head[0])["topic"]) <= {
        "healing.checked",
        "metrics.sampled",
        "healing.status_changed",
    }
    ws.modes.leave("read_only", actor="healing", reason="room again")
    ws.publish("notes.added", {"text": "hello"}, actor="alice")
    assert ws.memory.write("/notes/a.md", "text", actor="system").version == 1


def test_only_admins_and_service_actors_switch_modes(ws: g.Workspace) -> None:
    ws.auth.register("ada", PASSWORD, role="admin", by="system")
    ws.auth.register("rita", PASSWORD, role="researcher", by="ada")
    with pytest.raises(PermissionDenied, match="may not switch"):
        ws.modes.enter("sandbox_disabled", actor="rita", reason="I want to")
    with pytest.raises(PermissionDenied):
        ws.modes.enter("sandbox_disabled", actor="mallory", reason="x")
    assert ws.modes.enter("sandbox_disabled", actor="ada", reason="maintenance") is not None
    with pytest.raises(ModeError, match="unknown degraded mode"):
        ws.modes.enter("panic", actor="ada", reason="x")
    with pytest.raises(ModeError, match="needs a reason"):
        ws.modes.enter("chat_paused", actor="ada", reason=" ")


def test_who_switches_modes_is_policy_and_refusals_are_recorded(ws: g.Workspace) -> None:
    ws.auth.register("ada", PASSWORD, role="admin", by="system")
    ws.auth.register("rita", PASSWORD, role="researcher", by="ada")
    head = ws.ledger.head[0]
    ws.modes.enter("chat_paused", actor="ada", reason="maintenance")
    assert [e.topic for e in ws.ledger.events(since=head)] == ["healing.mode_entered"]  # no decision event
    with pytest.raises(
        PermissionDenied, match=r"rita may not switch degraded modes: .*modes-switched-by-admins"
    ):
        ws.modes.leave("chat_paused", actor="rita", reason="I want to chat")
    refusal = ws.ledger.events(topic="governance.decision")[-1]
    assert (refusal.actor, refusal.payload["action"], refusal.resource) == (
        "rita",
        "healing.mode.leave",
        "mode:chat_paused",
    )
    # Who may switch is data: the admins hand it to researchers with a policy change, no code change.
    ws.governance.remove_policy("modes-switched-by-admins", actor="ada")
    ws.governance.add_policy(
        {
            "id": "researchers-switch",
            "effect": "allow",
            "roles": ["researcher"],
            "actions": ["healing.mode.*"],
        },
        actor="ada",
    )
    assert ws.modes.leave("chat_paused", actor="rita", reason="done") is not None


def test_modes_survive_reopen_and_replay(file_ws) -> None:  # type: ignore[no-untyped-def]
    ws = file_ws(clock=g.ManualClock(), seed=3)
    ws.modes.enter("sandbox_disabled", actor="healing", reason="sandbox crashes")
    ws.modes.enter("read_only", actor="healing", reason="disk full")
    path = ws.path
    copy = g.replay(ws, ":memory:")
    try:
        assert set(copy.modes.active()) == {"sandbox_disabled", "read_only"}
        assert g.projection_differences(ws, copy) == {}
    finally:
        copy.close()
    ws.close()
    again = g.open_workspace(path, clock=g.ManualClock(), seed=3)
    try:
        assert again.modes.active()["read_only"].reason == "disk full"
        with pytest.raises(ReadOnlyError):
            again.publish("notes.added", {}, actor="alice")
        again.modes.leave("read_only", actor="healing", reason="room")
        again.publish("notes.added", {}, actor="alice")
    finally:
        again.close()


@pytest.mark.slow
def test_cli_modes_ls_enter_leave(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    g.open_workspace(path).close()
    entered = grace("modes", "enter", "chat_paused", "--reason", "responder down", "-w", path)
    assert entered.returncode == 0, entered.stderr
    listed = grace("modes", "ls", "--json", "-w", path)
    rows = {r["mode"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows["chat_paused"]["active"]
    assert rows["chat_paused"]["reason"] == "responder down"
    assert not rows["read_only"]["active"]
    refused = grace("modes", "enter", "read_only", "--reason", "x", "--by", "nobody", "-w", path)
    assert refused.returncode == 2
    assert "may not switch" in refused.stderr
    left = grace("modes", "leave", "chat_paused", "-w", path)
    assert left.returncode == 0
    assert "left" in left.stdout
