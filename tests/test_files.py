"""Every file of a workspace is private to its owner (0600): made so, kept so, checked at open, repaired or refused.

The commands run in a subprocess with the usual umask 022, under which files would be created 0644 (readable
by every local user) unless Grace makes them private.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from support import GRACE, clean_env

from grace_core import ManualClock, WorkspaceError, open_workspace
from grace_core.files import check_private, private_umask, write_private

USUAL_UMASK = 0o022


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """`grace ARGS` as a user with the usual umask would run it."""
    return subprocess.run(
        [*GRACE, *map(str, args)],
        capture_output=True,
        text=True,
        env=clean_env(),
        umask=USUAL_UMASK,
        check=False,
        timeout=120,
        stdin=subprocess.DEVNULL,
        **kwargs,  # type: ignore[call-overload]
    )


def files_and_modes(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in directory.iterdir() if p.is_file()}


def test_files_are_private_after_init_a_write_and_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    done = run("init", "-w", path)
    assert done.returncode == 0, done.stderr
    after_init = files_and_modes(tmp_path)
    assert {"w.duckdb", "w.duckdb.keys"} <= set(after_init)
    assert set(after_init.values()) == {0o600}, after_init
    # A process that keeps the workspace open and writes: the WAL DuckDB creates lazily is private too, and so
    # is the snapshot it writes for another process, and the owner file.
    script = (
        "import sys, os, stat, json\n"
        "from pathlib import Path\n"
        "import grace_core as g\n"
        "ws = g.open_workspace(sys.argv[1])\n"
        "ws.publish('demo.write', {'n': 1}, actor='tester')\n"
        "ws.checkpoint()\n"
        "ws.export_snapshot()\n"
        "d = Path(sys.argv[1]).parent\n"
        "print(json.dumps({p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir() if p.is_file()}))\n"
        "ws.close()\n"
    )
    written = subprocess.run(
        [GRACE[0], "-c", script, str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        umask=USUAL_UMASK,
        check=True,
        timeout=120,
    )
    while_open = json.loads(written.stdout.splitlines()[-1])
    assert {"w.duckdb", "w.duckdb.wal", "w.duckdb.keys", "w.duckdb.owner", "w.duckdb.snapshot"} <= set(
        while_open
    )
    assert set(while_open.values()) == {0o600}, while_open
    assert set(files_and_modes(tmp_path).values()) == {0o600}


def test_a_snapshot_request_from_another_process_is_private(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    owner = open_workspace(path)
    try:
        tail = run("-w", path, "--snapshot", "events", "tail", "-n", "1")
        assert tail.returncode == 0, tail.stderr
        assert set(files_and_modes(tmp_path).values()) == {0o600}, files_and_modes(tmp_path)
    finally:
        owner.close()


def test_a_world_readable_workspace_is_repaired_with_one_warning_line(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    assert run("init", "-w", path).returncode == 0
    path.chmod(0o644)
    Path(f"{path}.keys").chmod(0o640)
    result = run("ledger", "verify", "-w", path)
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert warnings == [
        f"grace: {path} was readable by other users (mode 0644); made it private (0600)",
        f"grace: {path}.keys was readable by other users (mode 0640); made it private (0600)",
    ]
    assert mode(path) == mode(Path(f"{path}.keys")) == 0o600
    again = run("ledger", "verify", "-w", path)
    assert again.stderr == ""  # repaired once, quiet since


def test_a_workspace_that_cannot_be_made_private_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.duckdb"
    open_workspace(path).close()
    path.chmod(0o644)

    def refuse(*_args: object, **_kwargs: object) -> None:  # a file of another user: chmod is not permitted
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    with pytest.raises(WorkspaceError) as caught:
        open_workspace(path)
    message = str(caught.value)
    assert f"{path} is readable by other users (mode 0644)" in message
    assert f"chmod 600 {path}" in message
    monkeypatch.undo()
    assert mode(path) == 0o644  # nothing was opened, nothing changed


def test_the_cli_refuses_an_unrepairable_workspace_in_one_line(tmp_path: Path) -> None:
    # A file of another user cannot be chmod-ed; the failing chmod is injected as a fault (root may chmod all).
    path = tmp_path / "w.duckdb"
    open_workspace(path).close()
    path.chmod(0o644)
    script = (
        "import os, sys\n"
        "def refuse(*a, **k): raise PermissionError(1, 'Operation not permitted')\n"
        "os.chmod = refuse\n"
        "from grace_core.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    result = subprocess.run(
        [GRACE[0], "-c", script, "ledger", "verify", "-w", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"grace: error: {path} is readable by other users (mode 0644)")
    assert "Traceback" not in result.stderr


def test_a_stolen_duckdb_file_holds_no_token_secret_or_signing_key(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    ws = open_workspace(path, clock=ManualClock())
    try:
        ws.auth.register("alice", "correct horse battery", role="admin", by="system")
        ws.auth.login("alice", "correct horse battery")
        ws.checkpoint()
        jwt_secret = ws.secrets.get("jwt_secret")
        signing_key = ws.secrets.get("checkpoint_signing_key")
        assert jwt_secret is not None
        assert signing_key is not None
        while_open = path.read_bytes() + Path(f"{path}.wal").read_bytes()
    finally:
        ws.close()
    keys = json.loads(Path(f"{path}.keys").read_text())["secrets"]
    assert base64.b64decode(keys["jwt_secret"]) == jwt_secret
    for stolen in (while_open, path.read_bytes()):
        for secret in (jwt_secret, signing_key):
            assert secret not in stolen
            assert base64.b64encode(secret) not in stolen
            assert secret.hex().encode() not in stolen


def test_secrets_of_an_older_workspace_move_to_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_workspace(path, clock=ManualClock()) as ws:
        ws.auth.register("alice", "correct horse battery", role="admin", by="system")
        token = ws.auth.login("alice", "correct horse battery").token
        old_secret = ws.secrets.get("jwt_secret")
        assert old_secret is not None
        ws.con.execute("CREATE TABLE workspace_secrets (name VARCHAR PRIMARY KEY, value BLOB NOT NULL)")
        ws.con.execute("INSERT INTO workspace_secrets VALUES ('jwt_secret', ?), ('lake.catalog', ?)",
                       [old_secret, b"postgres:password=hunter2"])  # fmt: skip
    Path(f"{path}.keys").unlink()  # as a workspace made before the key file: its secrets are in the table
    with open_workspace(path, clock=ManualClock()) as ws:
        assert ws.auth.verify_token(token).sub == "alice"  # the same secret, now from the key file
        assert ws.secrets.text("lake.catalog") == "postgres:password=hunter2"
        tables = set(ws.sql("SELECT table_name FROM duckdb_tables()")["table_name"])
        assert "workspace_secrets" not in tables
    assert mode(Path(f"{path}.keys")) == 0o600
    assert set(json.loads(Path(f"{path}.keys").read_text())["secrets"]) == {"jwt_secret", "lake.catalog"}


def test_a_snapshot_copy_has_no_secrets_and_the_key_file_of_a_deleted_workspace_is_set_aside(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.duckdb"
    owner = open_workspace(path)
    try:
        script = (
            "import sys, grace_core as g\n"
            "with g.open_workspace(sys.argv[1], snapshot=True) as snap:\n"
            "    print(snap.snapshot_of is not None, snap.secrets.names())\n"
        )
        another = subprocess.run(  # another process gets a fresh copy made by the owner
            [GRACE[0], "-c", script, str(path)], capture_output=True, text=True, check=True, timeout=120
        )
        assert another.stdout.split() == ["True", "[]"]
    finally:
        owner.close()
    with open_workspace(path, snapshot=True) as direct:  # no owner: the file itself, read-only
        assert "jwt_secret" in direct.secrets.names()
    old = Path(f"{path}.keys").read_bytes()
    for leftover in (path, Path(f"{path}.snapshot")):
        leftover.unlink()
    with open_workspace(path) as fresh:
        assert fresh.secrets.get("jwt_secret") is not None
    assert Path(f"{path}.keys.old").read_bytes() == old  # kept, not reused, not lost
    assert Path(f"{path}.keys").read_bytes() != old


def test_write_private_is_atomic_and_private_from_creation(tmp_path: Path) -> None:
    target = tmp_path / "request"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    assert (target.read_text(), mode(target)) == ("new", 0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["request"]  # no temporary file left


def test_the_private_umask_is_released_when_the_last_workspace_closes(tmp_path: Path) -> None:
    before = os.umask(USUAL_UMASK)
    try:
        a = open_workspace(tmp_path / "a.duckdb")
        b = open_workspace(tmp_path / "b.duckdb")
        a.close()
        (tmp_path / "while-b-is-open").touch()
        b.close()
        (tmp_path / "after").touch()
        with private_umask():
            (tmp_path / "inside").touch()
        (tmp_path / "outside").touch()
    finally:
        os.umask(before)
    assert mode(tmp_path / "while-b-is-open") == 0o600
    assert mode(tmp_path / "after") == 0o644  # the process gets its own umask back
    assert (mode(tmp_path / "inside"), mode(tmp_path / "outside")) == (0o600, 0o644)


def test_check_private_leaves_a_private_file_alone(tmp_path: Path) -> None:
    private = tmp_path / "p"
    private.write_text("x")
    private.chmod(0o600)
    check_private(private)
    check_private(tmp_path / "missing")  # nothing to check
    assert mode(private) == 0o600
