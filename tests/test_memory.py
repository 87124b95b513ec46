"""Memory: paths, versions, listing, projection and replay."""

from __future__ import annotations

import pytest

import grace_core as g
from grace_core.errors import ArtifactError
from grace_core.memory import normalise_path


def test_write_read_and_versions(ws: g.Workspace) -> None:
    first = ws.memory.write("/projects/alpha/notes.md", "# v1", actor="alice", tags=["alpha", "notes"])
    second = ws.memory.write("/projects/alpha/notes.md", "# v2", actor="alice", reason="typo")
    assert (first.version, second.version) == (1, 2)
    assert ws.memory.read("/projects/alpha/notes.md").content == "# v2"
    assert ws.memory.read("/projects/alpha/notes.md", version=1).content == "# v1"
    topics = list(ws.events(topic="memory.item.*")["topic"])
    assert topics == ["memory.item.created", "memory.item.updated"]
    with pytest.raises(ArtifactError, match="no version 3"):
        ws.memory.read("/projects/alpha/notes.md", version=3)


def test_list_by_folder(ws: g.Workspace) -> None:
    ws.memory.write("/projects/alpha/a.md", "a", actor="alice")
    ws.memory.write("/projects/beta/b.md", "b", actor="bob")
    ws.memory.write("/projects/alphabet.md", "c", actor="bob")
    assert set(ws.memory.list("/projects/alpha")["path"]) == {"/projects/alpha/a.md"}
    assert len(ws.memory.list()) == 3


@pytest.mark.parametrize("path", ["relative.md", "/a/../b", "/a/./b", "/", "/a/\x00b", "", "/" + "x" * 1100])
def test_bad_paths_are_refused(ws: g.Workspace, path: str) -> None:
    head = ws.ledger.head
    with pytest.raises(ArtifactError):
        ws.memory.write(path, "text", actor="alice")
    assert ws.ledger.head == head


def test_paths_are_normalised() -> None:
    assert normalise_path("//projects//alpha/notes.md/") == "/projects/alpha/notes.md"


def test_missing_artifact(ws: g.Workspace) -> None:
    with pytest.raises(ArtifactError, match="no memory artifact"):
        ws.memory.read("/nothing/here.md")


def test_replay_rebuilds_memory(ws: g.Workspace) -> None:
    ws.memory.write("/a.md", "one", actor="alice")
    ws.memory.write("/a.md", "two", actor="alice")
    copy = g.replay(ws, ":memory:")
    try:
        assert g.projection_differences(ws, copy) == {}
        assert copy.memory.read("/a.md", version=1).content == "one"
    finally:
        copy.close()
