"""DuckLake publishing: incremental sync, time travel, readers beside a writing owner, tamper detection,
maintenance, the lake loop, the CLI, and a real PostgreSQL catalog."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from grace_core import ManualClock, open_workspace
from grace_core.db import load_extension
from grace_core.errors import LakeError
from grace_core.lake import Lake, open_lake, parse_duration, redact, verify_lake
from tests.support import free_port, grace


def _catalog(tmp_path: Path) -> str:
    return f"sqlite:{tmp_path / 'catalog.sqlite'}"


def _publish(ws, n: int, topic: str = "test.item") -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        ws.publish(topic, {"i": i}, actor="system")


def test_sync_is_incremental_and_each_sync_is_a_snapshot_to_travel_back_to(tmp_path: Path, ws) -> None:  # type: ignore[no-untyped-def]
    ws.lake.attach(_catalog(tmp_path), tmp_path / "data")
    first = ws.lake.sync()
    assert first.seq_from == 0
    assert first.seq_to == ws.ledger.head[0]
    assert "policies" in first.tables
    assert "events" not in first.tables
    _publish(ws, 20)
    ws.tasks.create("look at the lake", kind="manual", actor="system")
    second = ws.lake.sync()
    assert second.seq_from == first.seq_to
    assert second.seq_to == ws.ledger.head[0]
    assert "tasks" in second.tables
    assert "policies" not in second.tables
    assert ws.lake.sync().events == 0  # nothing new, nothing written

    with open_lake(_catalog(tmp_path), tmp_path / "data") as lake:
        assert lake.head == ws.ledger.head
        frame = lake.sql("SELECT seq, hash FROM events ORDER BY seq")
        assert list(frame["seq"]) == list(range(1, ws.ledger.head[0] + 1))
        assert lake.sql("SELECT title FROM tasks")["title"].tolist() == ["look at the lake"]
        snaps = lake.snapshots()["snapshot_id"].tolist()
        # Time travel inside one query, as any DuckDB user would write it.
        old = lake.sql(f"SELECT count(*) AS n FROM lake.events AT (VERSION => {snaps[-2]})")
        assert int(old["n"].iloc[0]) == first.seq_to
    with open_lake(_catalog(tmp_path), snapshot=snaps[-2]) as old_lake:
        assert old_lake.head[0] == first.seq_to
        assert old_lake.sql("SELECT count(*) AS n FROM tasks")["n"].iloc[0] == 0
    status = ws.lake.status()
    assert status["behind"] == 0
    assert status["lake_seq"] == ws.ledger.head[0]


def test_attach_is_on_the_ledger_and_a_lake_refuses_a_second_workspace(tmp_path: Path, ws) -> None:  # type: ignore[no-untyped-def]
    assert not ws.lake.attached
    assert ws.lake.status() == {"attached": False}
    with pytest.raises(LakeError, match="no lake is attached"):
        ws.lake.sync()
    ws.lake.attach(_catalog(tmp_path), tmp_path / "data", retention="2d")
    event = ws.ledger.events(topic="lake.attached")[-1]
    assert event.payload["retention_s"] == 2 * 86400
    assert event.payload["catalog"].startswith("sqlite:/")
    ws.lake.sync()
    with open_workspace(":memory:", clock=ManualClock()) as other:
        other.lake.attach(_catalog(tmp_path), tmp_path / "data")
        with pytest.raises(LakeError, match="another workspace"):
            other.lake.sync()


def test_redacted_catalog_and_durations() -> None:
    assert (
        redact("postgres:dbname=g host=h password=s3cret user=u")
        == "postgres:dbname=g host=h password=*** user=u"
    )
    assert parse_duration("12h") == 43200
    assert parse_duration("90s") == 90
    assert parse_duration(5) == 5
    with pytest.raises(LakeError, match="not a duration"):
        parse_duration("soon")


@pytest.mark.slow
def test_the_chain_verifies_from_the_lake_alone_and_a_tampered_row_is_caught(tmp_path: Path, ws) -> None:  # type: ignore[no-untyped-def]
    _publish(ws, 30)
    ws.checkpoint()
    ws.lake.attach(_catalog(tmp_path), tmp_path / "data")
    ws.lake.sync()
    report = verify_lake(_catalog(tmp_path), tmp_path / "data")
    assert report.ok
    assert report.size == ws.ledger.head[0]
    assert report.checkpoints_checked == 1
    tampered_seq = 10
    # Someone with write access to the catalog edits one payload in the lake.
    con = duckdb.connect()
    load_extension(con, "ducklake")
    load_extension(con, "sqlite_scanner")
    con.execute(f"ATTACH 'ducklake:{_catalog(tmp_path)}' AS evil")
    con.execute("UPDATE evil.events SET payload = '{\"i\":999}' WHERE seq = ?", [tampered_seq])
    con.close()
    broken = verify_lake(_catalog(tmp_path))
    assert not broken.ok
    assert broken.first_bad_seq == tampered_seq
    assert "do not match the hash" in broken.reason
    # The snapshot before the edit still verifies: the lake keeps the history the edit tried to replace.
    with open_lake(_catalog(tmp_path)) as lake:
        before = int(lake.snapshots()["snapshot_id"].iloc[-2])
    assert verify_lake(_catalog(tmp_path), snapshot=before).ok


def test_a_sync_is_retried_on_a_commit_conflict(tmp_path: Path, ws, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    ws.lake.attach(_catalog(tmp_path), tmp_path / "data")
    real = Lake._sync_once
    failures = []

    def conflicted(self, cur):  # type: ignore[no-untyped-def]
        if len(failures) < 2:  # another writer committed first, twice (the fault DuckLake reports)
            failures.append(1)
            raise duckdb.TransactionException("Transaction conflict: another transaction committed first")
        return real(self, cur)

    monkeypatch.setattr(Lake, "_sync_once", conflicted)
    report = ws.lake.sync()
    assert report.attempts == 3
    assert report.seq_to == ws.ledger.head[0]


@pytest.mark.slow
def test_compact_and_expire_keep_the_lake_readable(tmp_path: Path, ws) -> None:  # type: ignore[no-untyped-def]
    ws.lake.attach(_catalog(tmp_path), tmp_path / "data")
    for _ in range(4):
        _publish(ws, 5)
        ws.lake.sync()
    with open_lake(_catalog(tmp_path)) as lake:
        oldest = int(lake.snapshots()["snapshot_id"].iloc[1])
    files = ws.lake.compact()
    assert files["files_after"] >= 1
    assert ws.lake.expire("7d")["snapshots_expired"] == 0  # all younger than the retention
    expired = ws.lake.expire(0)
    assert expired["snapshots_expired"] >= 4
    with pytest.raises(LakeError, match="snapshot"):
        open_lake(_catalog(tmp_path), snapshot=oldest)
    with open_lake(_catalog(tmp_path)) as lake:
        assert lake.head == ws.ledger.head
        assert lake.verify().ok


def test_the_lake_loop_syncs_on_its_schedule_once_started(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_workspace(":memory:", clock=clock, seed=3) as ws:
        ws.lake.attach(_catalog(tmp_path), tmp_path / "data")
        assert "lake" in ws.loops.names
        _publish(ws, 3)
        ws.loops.run_for(minutes=5)  # not started: nothing syncs
        assert ws.lake.status()["lake_seq"] == 0
        ws.loops.start("lake")
        ws.loops.run_for(minutes=1)
        status = ws.lake.status()
        assert status["lake_seq"] > 0
        assert status["behind"] <= 1
        ticked = ws.ledger.events(topic="loop.ticked")[-1].payload
        assert ticked["loop"] == "lake" or "lake" in json.dumps(ticked)


def test_a_reopened_workspace_with_a_lake_registers_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_workspace(path) as ws:
        ws.lake.attach(_catalog(tmp_path), tmp_path / "data")
    with open_workspace(path) as ws:
        assert "lake" in ws.loops.names
        assert ws.lake.config["data"].startswith(str(tmp_path))


_OWNER = textwrap.dedent(
    """
    import sys, time
    from grace_core import open_workspace
    path, catalog, data, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with open_workspace(path) as ws:
        ws.lake.attach(catalog, data)
        ws.lake.sync()
        print("ready", flush=True)
        for r in range(rounds):
            for i in range(20):
                ws.publish("test.item", {"round": r, "i": i}, actor="system")
            ws.lake.sync()
            time.sleep(0.2)
        print("done", ws.ledger.head[0], flush=True)
    """
)


@pytest.mark.slow
def test_readers_query_the_lake_while_the_owner_keeps_writing(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _OWNER,
            str(tmp_path / "w.duckdb"),
            _catalog(tmp_path),
            str(tmp_path / "data"),
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        seen = []
        with open_lake(_catalog(tmp_path)) as lake:  # one reader, kept open: it sees each new snapshot
            while owner.poll() is None:
                frame = lake.sql("SELECT count(*) AS n, coalesce(max(seq), 0) AS top FROM events")
                assert frame["n"].iloc[0] == frame["top"].iloc[0]  # a whole sync or none of it
                seen.append(int(frame["top"].iloc[0]))
                time.sleep(0.02)
        out, err = owner.communicate(timeout=60)
        assert owner.returncode == 0, err
    finally:
        if owner.poll() is None:
            owner.kill()
    final = int(out.split()[-1])
    assert seen == sorted(seen)
    assert len(set(seen)) >= 2
    report = verify_lake(_catalog(tmp_path))
    assert report.ok
    assert report.size == final


@pytest.mark.slow
def test_the_cli_attaches_syncs_and_reads_the_lake(tmp_path: Path) -> None:
    ws_path = tmp_path / "w.duckdb"
    assert grace("init", "--workspace", ws_path).returncode == 0
    done = grace(
        "lake", "attach", "--catalog", _catalog(tmp_path), "--data", tmp_path / "data", "--workspace", ws_path
    )
    assert done.returncode == 0, done.stderr
    synced = grace("lake", "sync", "--json", "--workspace", ws_path)
    assert synced.returncode == 0, synced.stderr
    events = json.loads(synced.stdout)["events"]
    assert events >= 3
    status = json.loads(grace("lake", "status", "--json", "--workspace", ws_path).stdout)
    assert status["behind"] == 0
    # Readers need only the catalog: not the workspace file.
    query = grace(
        "lake", "query", "SELECT count(*) AS n FROM events", "--catalog", _catalog(tmp_path), "--json"
    )
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)["n"] == events
    verified = grace("lake", "verify", "--catalog", _catalog(tmp_path))
    assert verified.returncode == 0
    assert "intact" in verified.stdout
    missing = grace("lake", "sync", "--workspace", tmp_path / "nothing.duckdb")
    assert missing.returncode == 2
    assert "no workspace" in missing.stderr


# -- PostgreSQL catalog ----------------------------------------------------------------------------------------
def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A private PostgreSQL cluster on 127.0.0.1 (a free port), torn down after the module."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
    root = Path(tempfile.mkdtemp(prefix="grace-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres user
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    pgdata = root / "data"

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    run(str(bindir / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "grace_lake")
        yield f"postgres:dbname=grace_lake host=127.0.0.1 port={port} user=postgres"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_a_postgres_catalog_serves_readers_and_keeps_the_password_off_the_ledger(
    tmp_path: Path, postgres: str
) -> None:
    catalog = postgres + " password=not-on-the-ledger"
    with open_workspace(tmp_path / "w.duckdb") as ws:
        ws.lake.attach(catalog, tmp_path / "data")
        _publish(ws, 25)
        ws.checkpoint()
        report = ws.lake.sync()
        assert report.seq_to == ws.ledger.head[0]
        head = ws.ledger.head
        assert (
            "not-on-the-ledger" not in ws.sql("SELECT string_agg(payload, '') AS p FROM events")["p"].iloc[0]
        )
        assert (
            "not-on-the-ledger"
            not in ws.sql("SELECT string_agg(value, '') AS v FROM workspace_meta")["v"].iloc[0]
        )
        assert ws.lake.config["catalog"].endswith("password=***")
        _publish(ws, 5)
        ws.lake.sync()
    with open_lake(catalog) as lake:  # the data path is recorded in the catalog
        assert lake.head[0] == head[0] + 5
        assert lake.verify().ok
        first = int(lake.snapshots()["snapshot_id"].iloc[-2])
    with open_lake(catalog, snapshot=first) as old:
        assert old.head == head


def test_started_loops_keep_a_live_workspace_synced_as_grace_serve_does(tmp_path: Path) -> None:
    with open_workspace(tmp_path / "w.duckdb") as ws:
        ws.lake.attach(_catalog(tmp_path), tmp_path / "data")
        ws.loops.set_param("lake", "interval", 0.2, actor="system", reason="test: sync quickly")
        ws.loops.start("lake")  # `grace serve` starts every registered loop, this one included
        _publish(ws, 10)
        target = ws.ledger.head[0]
        deadline = time.monotonic() + 20
        while ws.lake.status()["lake_seq"] < target and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ws.lake.status()["lake_seq"] >= target
