"""The secrets API: get, put, generate, delete; a 0600 key file replaced atomically; read-only stores refuse."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from grace_core import ReadOnlyError, WorkspaceError
from grace_core.keystore import Secrets


def test_put_get_generate_delete_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb.keys"
    keys = Secrets(path)
    assert keys.get("missing") is None
    keys.put("api_key", "sk-123")
    made = keys.generate("jwt_secret", nbytes=64)
    assert len(made) == 64
    assert keys.generate("jwt_secret") == made  # generated once, then kept
    password = keys.generate("demo_password.ada", nbytes=12, text=True).decode()
    assert password.isascii()
    assert len(password) == 16
    keys.put("gone", b"\x00\xff")
    keys.delete("gone")
    again = Secrets(path)
    assert again.names() == ["api_key", "demo_password.ada", "jwt_secret"]
    assert (again.text("api_key"), again.get("jwt_secret")) == ("sk-123", made)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic writes leave no temporary file


def test_in_memory_secrets_touch_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    keys = Secrets(None)
    keys.generate("jwt_secret")
    assert "jwt_secret" in keys
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_store_refuses_every_change(tmp_path: Path) -> None:
    path = tmp_path / "k"
    Secrets(path).put("a", "1")
    reader = Secrets(path, read_only=True)
    assert reader.text("a") == "1"
    for change in (lambda: reader.put("b", "2"), lambda: reader.generate("b"), lambda: reader.delete("a")):
        with pytest.raises(ReadOnlyError, match="read-only"):
            change()
    with pytest.raises(ReadOnlyError):
        Secrets.empty().generate("jwt_secret")


def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(WorkspaceError, match=r"the key file .*k is damaged"):
        Secrets(path)
