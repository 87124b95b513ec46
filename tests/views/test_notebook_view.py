"""Views for notebooks and Voila: the owned workspace, or a read-only snapshot while another process owns it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from grace_core import open_workspace
from grace_core.server import _NOTEBOOK, notebook_view

HOLD = """
import sys, time
from grace_core import open_workspace
ws = open_workspace(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
ws.close()
"""


@pytest.fixture
def workspace_file(tmp_path, password):
    path = tmp_path / "ws.duckdb"
    ws = open_workspace(path)
    ws.auth.register("ada", password, role="admin", by="system")
    ws.hunter.screen("key AKIAQ7Z3UITESTKEY123", target="chat", actor="ada")
    ws.mesh.drain()
    ws.close()
    yield str(path)
    for key in [k for k in _NOTEBOOK if k == str(path)]:
        _NOTEBOOK.pop(key)[0].close()


def test_owned_workspace_acts_as_grace_user_with_their_role(workspace_file, monkeypatch):
    monkeypatch.setenv("GRACE_USER", "ada")
    layout = notebook_view("hunter", path=workspace_file)
    view = layout.grace_view
    assert (view.user, view.role) == ("ada", "admin")
    assert "acting as **ada** (admin)" in layout[0].object
    assert view.alert_count == 1


def test_unknown_user_is_read_only_and_told_so(workspace_file, monkeypatch):
    monkeypatch.delenv("GRACE_USER", raising=False)
    layout = notebook_view("dashboard", path=workspace_file)
    assert layout.grace_view.role == "viewer"
    assert "read-only" in layout[0].object
    assert all(b.disabled for b in layout.grace_view.buttons.values())


def test_a_workspace_owned_elsewhere_opens_as_a_read_only_snapshot(workspace_file, monkeypatch):
    monkeypatch.setenv("GRACE_USER", "ada")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, workspace_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        layout = notebook_view("hunter", path=workspace_file)
        assert time.monotonic() - started < 30
        view = layout.grace_view
        assert view.ws.read_only
        assert view.role == "viewer"  # an admin too: nothing can be written to a snapshot
        assert "Read-only snapshot" in layout[0].object
        assert view.alert_count == 1  # the content is there to read
        assert view.toggle_button.disabled
    finally:
        holder.stdin.close()
        holder.wait(20)
