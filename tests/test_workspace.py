"""Opening workspaces: default paths, reopening, migrations, read-only snapshots, offline extensions."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from grace_core import (
    ManualClock,
    Message,
    ReadOnlyError,
    Workspace,
    WorkspaceError,
    open_workspace,
)
from grace_core import workspace as workspace_module
from grace_core.db import extension_path, load_extension
from grace_core.workspace import ENGINES, EngineSpec, check_engines

FileWs = Callable[..., Workspace]


# -- where a workspace lives ---------------------------------------------------------------------------------
def test_default_path_is_grace_duckdb_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRACE_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    with open_workspace() as ws:
        assert Path(ws.path) == tmp_path.resolve() / "grace.duckdb"
        ws.publish("demo.hello", {"n": 1}, actor="tester")
    assert (tmp_path / "grace.duckdb").is_file()


def test_default_path_comes_from_grace_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRACE_WORKSPACE", str(tmp_path / "elsewhere" / "team.duckdb"))
    (tmp_path / "elsewhere").mkdir()
    with open_workspace() as ws:
        assert Path(ws.path) == tmp_path.resolve() / "elsewhere" / "team.duckdb"
    monkeypatch.setenv("GRACE_WORKSPACE", "relative.duckdb")  # relative to the current directory
    with open_workspace() as ws:
        assert Path(ws.path) == tmp_path.resolve() / "relative.duckdb"
    assert not (tmp_path / "grace.duckdb").exists()
    # An explicit path beats the environment.
    with open_workspace(tmp_path / "explicit.duckdb") as ws:
        assert Path(ws.path) == tmp_path.resolve() / "explicit.duckdb"


def test_not_a_workspace_file_gives_a_readable_error(tmp_path: Path) -> None:
    junk = tmp_path / "notes.duckdb"
    junk.write_text("just some text\n")
    with pytest.raises(WorkspaceError, match="not a valid DuckDB database"):
        open_workspace(junk)
    with pytest.raises(WorkspaceError, match="no workspace at"):
        open_workspace(tmp_path / "missing.duckdb", snapshot=True)
    with pytest.raises(WorkspaceError, match="in-memory"):
        open_workspace(":memory:", snapshot=True)


# -- reopening and migrations --------------------------------------------------------------------------------
def test_reopen_keeps_data_and_does_not_rerun_genesis(file_ws: FileWs) -> None:
    first = file_ws("keep.duckdb", clock=ManualClock(), seed=5)
    origin = first.origin
    first.publish_many([Message("demo.item", {"i": i}) for i in range(25)], actor="tester")
    head = first.ledger.head
    first.close()

    again = file_ws("keep.duckdb", clock=ManualClock(), seed=5)
    assert again.ledger.head == head
    assert again.origin == origin
    created = again.sql("SELECT count(*) AS n FROM events WHERE topic = 'workspace.created'")["n"][0]
    assert created == 1
    assert [e.payload["i"] for e in again.ledger.events(topic="demo.item")] == list(range(25))
    event = again.publish("demo.item", {"i": 25}, actor="tester")
    assert (event.seq, event.prev_hash) == (head[0] + 1, head[1])
    assert again.verify().ok


def test_migrations_are_recorded_once(file_ws: FileWs) -> None:
    ws = file_ws("m.duckdb")
    migrations = ws.sql("SELECT version, name FROM schema_migrations ORDER BY version")
    assert list(migrations["version"]) == sorted(set(migrations["version"]))
    assert (1, "ledger") in set(zip(migrations["version"], migrations["name"], strict=True))
    ws.close()
    again = file_ws("m.duckdb")
    assert len(again.sql("SELECT * FROM schema_migrations")) == len(migrations)


def test_a_workspace_from_a_newer_grace_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    open_workspace(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', now())")
    con.close()
    with pytest.raises(WorkspaceError, match="newer than this grace_core"):
        open_workspace(path)


def test_same_seed_and_manual_clock_give_the_same_ledger() -> None:
    def run(seed: int) -> bytes:
        clock = ManualClock()
        with open_workspace(":memory:", clock=clock, seed=seed) as ws:
            for i in range(20):
                clock.advance(1.5)
                ws.publish("demo.step", {"i": i}, actor="tester", resource=f"item:{i % 3}")
            return ws.ledger.head[1]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_sql_and_events_frames(ws: Workspace) -> None:
    ws.publish("demo.note", {"text": "grüße", "n": [1, 2]}, actor="tester", resource="doc:1")
    frame = ws.events(topic="demo.*")
    assert list(frame["payload"]) == [{"n": [1, 2], "text": "grüße"}]
    assert list(frame["resource"]) == ["doc:1"]
    assert ws.sql("SELECT count(*) AS n FROM events WHERE actor = ?", ["tester"])["n"][0] == 1
    assert list(ws.events(limit=1)["topic"]) == ["demo.note"]


# -- read-only snapshots -------------------------------------------------------------------------------------
def test_closed_workspace_reopens_as_a_read_only_snapshot(file_ws: FileWs) -> None:
    ws = file_ws("snap.duckdb", clock=ManualClock(), seed=2)
    ws.publish_many([Message("demo.item", {"i": i}) for i in range(10)], actor="tester")
    ws.checkpoint()
    head = ws.ledger.head
    ws.close()

    snap = file_ws("snap.duckdb", snapshot=True)
    assert snap.read_only
    assert snap.ledger.head == head
    assert len(snap.ledger.events(topic="demo.item")) == 10
    assert snap.verify().ok
    snap.check_proof(snap.prove(3))  # proofs need only reads
    with pytest.raises(ReadOnlyError, match="read-only"):
        snap.publish("demo.item", {"i": 10}, actor="tester")
    with pytest.raises(ReadOnlyError):
        snap.publish_many([Message("demo.item", {"i": 11})], actor="tester")
    with pytest.raises(ReadOnlyError):
        snap.checkpoint()
    assert snap.ledger.head == head
    snap.close()
    # The file was not touched: the writer sees exactly what it left.
    again = file_ws("snap.duckdb")
    assert again.ledger.head == head


# -- offline DuckDB extensions -------------------------------------------------------------------------------
# -- the engine registry ---------------------------------------------------------------------------------------
def test_every_engine_of_the_registry_is_on_the_workspace(ws: Workspace) -> None:
    check_engines(ENGINES)
    for spec in ENGINES:
        assert spec.name in Workspace.__annotations__  # typed for users: ws.<engine>
        assert getattr(ws, spec.name) is not None
    # Each engine holds the very engines the workspace offers (one of each, shared).
    assert ws.chat._hunter is ws.hunter
    assert ws.healing._executor is ws.executor
    assert ws.loops.governance is ws.governance


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda e: [*e, EngineSpec("extra", dict, needs=("oracle",))],
            "'extra' needs 'oracle', which no engine",
        ),
        (
            lambda e: [replace(s, needs=(*s.needs, "chat")) if s.name == "hunter" else s for s in e],
            "cycle: hunter -> chat -> hunter",
        ),
        (lambda e: [e[1], e[0], *e[2:]], "'loops' needs 'governance', which is built after it"),
        (lambda e: [*e, e[0]], "'governance' is registered twice"),
        (lambda e: [*e, EngineSpec("ledger", dict)], "name 'ledger' is taken by the workspace itself"),
    ],
)
def test_a_broken_registry_is_a_clear_error_at_open(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[list[EngineSpec]], list[EngineSpec]],
    message: str,
) -> None:
    monkeypatch.setattr(workspace_module, "ENGINES", tuple(change(list(ENGINES))))
    with pytest.raises(WorkspaceError, match=message):
        open_workspace(tmp_path / "w.duckdb")
    assert not (tmp_path / "w.duckdb").exists()  # refused before anything was opened


# Code that uses a workspace the way a user does (views, commands, the server, drivers): not engines.
_USERS = (
    "views/",
    "cli/",
    "server.py",
    "workload.py",
    "bench.py",
    "demo.py",
    "sweep.py",
    "workspace.py",
    "scenarios/",
)


def test_engines_reach_other_engines_only_through_what_the_registry_gives_them() -> None:
    """No engine looks another up on the workspace it holds (``self._ws.tasks``) at run time: each one it uses
    is declared in ``ENGINES`` and handed to it, so the order and the needs there are the whole story."""
    names = {spec.name for spec in ENGINES}
    package = Path(workspace_module.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel.startswith(_USERS):
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, ast.FunctionDef):
                continue
            held = {ast.dump(ast.parse(f"self.{a}", mode="eval").body) for a in ("_ws", "ws")}
            aliases = {
                t.id
                for node in ast.walk(fn)
                if isinstance(node, ast.Assign) and ast.dump(node.value) in held
                for t in node.targets
                if isinstance(t, ast.Name)
            }
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and node.attr in names:
                    value = node.value
                    if ast.dump(value) in held or (isinstance(value, ast.Name) and value.id in aliases):
                        found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], found


def test_fts_extension_loads_offline_and_ranks_with_bm25(tmp_path: Path) -> None:
    con = duckdb.connect()
    # No download and no extension cache: the binary can only come from the pinned wheel.
    con.execute("SET autoinstall_known_extensions = false; SET autoload_known_extensions = false")
    con.execute(f"SET extension_directory = '{(tmp_path / 'no-cache').as_posix()}'")
    con.execute("SET custom_extension_repository = 'http://127.0.0.1:9'")
    load_extension(con, "fts")
    con.execute("CREATE TABLE docs (id INTEGER, body VARCHAR)")
    con.execute("""INSERT INTO docs VALUES
        (1, 'the ledger is a hash chain'), (2, 'a reflection loop tunes parameters'),
        (3, 'ledger checkpoints and ledger proofs')""")
    con.execute("PRAGMA create_fts_index('docs', 'id', 'body')")
    hits = con.execute("""
        SELECT id FROM (SELECT id, fts_main_docs.match_bm25(id, 'ledgers') AS score FROM docs)
        WHERE score IS NOT NULL ORDER BY score DESC""").fetchall()
    assert hits == [(3,), (1,)]  # stemmed match, the document saying it twice first
    con.close()


def test_fts_loads_on_a_workspace_connection(ws: Workspace) -> None:
    load_extension(ws.con, "fts")
    ws.con.execute("CREATE TABLE notes AS SELECT 1 AS id, 'duckdb full text search' AS body")
    ws.con.execute("PRAGMA create_fts_index('notes', 'id', 'body')")
    score = ws.con.execute("SELECT fts_main_notes.match_bm25(id, 'search') FROM notes").fetchone()
    assert score is not None
    assert score[0] > 0


def test_unknown_extension_is_a_workspace_error(ws: Workspace) -> None:
    with pytest.raises(WorkspaceError, match=r"unknown DuckDB extension 'vss'.*fts"):
        load_extension(ws.con, "vss")
    with pytest.raises(WorkspaceError, match="unknown"):
        extension_path("../../etc/passwd")
    assert extension_path("sqlite") == extension_path("sqlite_scanner")
    assert extension_path("fts").name == "fts.duckdb_extension"
    assert extension_path("fts").is_file()


@pytest.mark.slow
def test_a_script_that_never_closes_its_workspace_exits_cleanly() -> None:
    # Open workspaces are closed at interpreter exit; before that, DuckDB could be torn down under the mesh
    # thread and abort the process ("terminate called without an active exception") about one run in five.
    script = (
        "import grace_core as g\nws = g.open_workspace(':memory:')\nws.publish('x.y', {}, actor='system')\n"
    )
    for _ in range(6):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
