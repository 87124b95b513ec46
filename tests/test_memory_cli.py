"""`grace memory ...` as a user runs it: real subprocesses on a real workspace file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import grace

KEY = "AKIAIOSFODNN7EXAMPLE"


def ok(*args: str | Path, stdin: str | None = None) -> str:
    result = grace(*args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    ok("init", "--workspace", path)
    return path


def test_put_cat_mv_rm_restore_and_log(ws: Path, tmp_path: Path) -> None:
    w = ["--workspace", ws]
    assert ok("memory", "put", "/projects/alpha/notes.md", "-", "--tag", "alpha", *w, stdin="# v1\n") == (
        "/projects/alpha/notes.md version 1\n"
    )
    note = tmp_path / "notes.md"
    note.write_text("# v2\nmore\n", encoding="utf-8")
    ok("memory", "put", "/projects/alpha/notes.md", note, "--reason", "expand", *w)
    assert ok("memory", "cat", "/projects/alpha/notes.md", *w) == "# v2\nmore\n"
    assert ok("memory", "cat", "/projects/alpha/notes.md", "--version", "1", *w) == "# v1\n"
    assert "+more" in ok("memory", "diff", "/projects/alpha/notes.md", "1", "2", *w)
    assert ok("memory", "mv", "/projects/alpha", "/archive", *w) == "/archive/notes.md\n"
    listing = [json.loads(line) for line in ok("memory", "ls", "/archive", "--json", *w).splitlines()]
    assert [(r["path"], r["version"], r["tags"]) for r in listing] == [("/archive/notes.md", 2, '["alpha"]')]
    ok("memory", "rm", "/archive/notes.md", "--reason", "obsolete", *w)
    assert ok("memory", "ls", *w).strip() == "" or "/archive/notes.md" not in ok("memory", "ls", *w)
    missing = grace("memory", "cat", "/archive/notes.md", *w)
    assert missing.returncode == 2
    assert missing.stderr.startswith("grace: error:")
    ok("memory", "restore", "/archive/notes.md", *w)
    log = [json.loads(line) for line in ok("memory", "log", "/archive/notes.md", "--json", *w).splitlines()]
    assert [e["action"] for e in log] == ["created", "updated", "moved", "deleted", "restored"]
    assert log[1]["reason"] == "expand"
    assert log[3]["reason"] == "obsolete"
    assert all(e["actor"] == "system" for e in log)


def test_put_masks_secrets_and_governance_guards_system(ws: Path) -> None:
    w = ["--workspace", ws]
    out = ok("memory", "put", "/ops/deploy.md", "-", *w, stdin=f"key {KEY}\n")
    assert "secrets masked" in out
    assert KEY not in ok("memory", "cat", "/ops/deploy.md", *w)
    refused = grace("memory", "put", "/system/prompt.md", "-", *w, stdin="hi")
    assert refused.returncode == 2
    assert "system-memory-admins-only" in refused.stderr


def test_search_import_and_export(ws: Path, tmp_path: Path) -> None:
    w = ["--workspace", ws]
    src = tmp_path / "src"
    (src / "b").mkdir(parents=True)
    (src / "a.md").write_text("The fox jumps over the fox.\n", encoding="utf-8")
    (src / "b" / "c.md").write_text("A dog and one fox.\n", encoding="utf-8")
    assert ok("memory", "import", src, "--into", "/zoo", *w).split() == ["/zoo/a.md", "/zoo/b/c.md"]
    hits = [json.loads(line) for line in ok("memory", "search", "fox", "--json", *w).splitlines()]
    assert [h["path"] for h in hits] == ["/zoo/a.md", "/zoo/b/c.md"]
    assert hits[0]["score"] > hits[1]["score"]
    assert "fox" in hits[0]["snippet"]
    only = ok("memory", "search", "fox", "--prefix", "/zoo/b", *w)
    assert "/zoo/b/c.md" in only
    assert "/zoo/a.md" not in only
    out = tmp_path / "out"
    ok("memory", "export", "/zoo", out, *w)
    assert (out / "b" / "c.md").read_text(encoding="utf-8") == "A dog and one fox.\n"
    assert "/zoo/b" in ok("memory", "ls", "--tree", *w)
