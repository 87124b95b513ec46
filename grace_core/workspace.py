"""A workspace: one DuckDB file (or ``:memory:``) with the ledger and every engine wired over it."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from . import __version__, merkle
from .auth import Auth
from .causal import Causal
from .chat import Chat
from .clock import Clock, ManualClock, SystemClock
from .db import apply_migrations
from .errors import LedgerError, ReadOnlyError, SignatureError, WorkspaceError, WorkspaceLockedError
from .events import Event
from .executor import Executor
from .governance import Governance
from .healing import Healing
from .hunter import Hunter
from .lake import Lake
from .learning import Learning
from .ledger import InclusionProof, Ledger, VerifyReport
from .loops import Scheduler, apply_loop_params
from .memory import Memory
from .mesh import Mesh, apply_dead_letters
from .meta import Meta
from .metrics import Metrics, apply_metric_samples
from .mldl import MLDL
from .modes import Modes
from .projections import Projections
from .reflection import Reflection
from .remedy import Remedy
from .sandbox import Sandbox
from .tasks import Tasks

__all__ = ["DEFAULT_WORKSPACE", "Workspace", "open_workspace", "replay"]

DEFAULT_WORKSPACE = "grace.duckdb"
MEMORY = ":memory:"
_SIGNING_KEY = "checkpoint_signing_key"
# Tables never copied into snapshots: key material and password hashes (neither is on the ledger).
_SECRET_TABLES = frozenset({"workspace_secrets", "credentials"})
_PID = re.compile(r"PID (\d+)")
# Workspaces still open when the interpreter exits (a notebook or script that never called close()): closing
# them at exit stops the mesh and loop threads before Python finalises, instead of DuckDB being torn down under
# a thread that is still inside a query (which aborts the process).
_OPEN: weakref.WeakSet[Workspace] = weakref.WeakSet()


@atexit.register
def _close_open_workspaces() -> None:
    for ws in list(_OPEN):
        with contextlib.suppress(Exception):
            ws.close()


def _resolve(path: str | os.PathLike[str] | None) -> str:
    if path is None:
        path = os.environ.get("GRACE_WORKSPACE") or DEFAULT_WORKSPACE
    text = os.fspath(path)
    return text if text == MEMORY else str(Path(text).expanduser().resolve())


def open_workspace(
    path: str | os.PathLike[str] | None = None,
    *,
    clock: Clock | None = None,
    seed: int | None = None,
    snapshot: bool = False,
    live: bool | None = None,
) -> Workspace:
    """Open (creating if needed) a workspace file and wire its engines.

    ``path`` defaults to ``$GRACE_WORKSPACE`` or ``grace.duckdb`` in the current directory; ``":memory:"``
    makes a throwaway one. ``clock`` defaults to the wall clock; a ``ManualClock`` makes runs reproducible,
    and with ``seed`` every id repeats too. ``snapshot=True`` opens a consistent read-only copy, which works
    while another process owns the file. ``live`` (default: not a ManualClock) delivers events on a background
    thread instead of in the publishing thread.
    """
    return Workspace(_resolve(path), clock=clock or SystemClock(), seed=seed, snapshot=snapshot, live=live)


class Workspace:
    """The engines of one workspace. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        path: str,
        *,
        clock: Clock,
        seed: int | None = None,
        snapshot: bool = False,
        live: bool | None = None,
        genesis: bool = True,
    ) -> None:
        self.path = path
        self.clock = clock
        self.seed = seed
        self.read_only = snapshot
        self.live = not isinstance(clock, ManualClock) if live is None else live
        self._closed = False
        self._housekeeper: threading.Thread | None = None
        self._stop = threading.Event()
        self.con, self.snapshot_of = self._connect(path, snapshot)
        try:
            self.con.execute("SET TimeZone = 'UTC'")
            # DuckDB draws a progress bar on stdout for long queries; it would corrupt JSON output of the CLI.
            self.con.execute("SET enable_progress_bar = false")
            if not snapshot:
                apply_migrations(self.con)
            self.projections = Projections()
            self.projections.register("dead_letters", "mesh.*", apply_dead_letters, tables=["dead_letters"])
            self.projections.register(
                "loop_params", "loop.param_changed", apply_loop_params, tables=["loop_params"]
            )
            self.projections.register(
                "metric_samples", "metrics.sampled", apply_metric_samples, tables=["metric_samples"]
            )
            self.projections.register(
                "signing_keys", "ledger.key_published", _apply_signing_key, tables=["signing_keys"]
            )
            self.projections.register(
                "checkpoints", "ledger.checkpoint", _apply_checkpoint, tables=["checkpoints"]
            )
            self.ledger = Ledger(self.con, self.projections, read_only=snapshot)
            self.mesh = Mesh(self.ledger, clock, threaded=self.live and not snapshot, seed=seed)
            self.causal = Causal(self.ledger)
            self.metrics = Metrics(self.ledger, self.mesh, clock)
            self.loops = Scheduler(self.mesh)
            # The public verbs of the mesh, on the workspace itself (the same functions, not copies).
            self.publish = self.mesh.publish
            self.publish_many = self.mesh.publish_many
            self.subscribe = self.mesh.subscribe
            # Engines: each registers its projections and, in a writable workspace, its subscribers.
            self.auth = Auth(self)
            self.modes = Modes(self)
            self.governance = Governance(self)
            self.loops.governance = self.governance  # parameter changes and named control are governed
            self.hunter = Hunter(self)
            self.tasks = Tasks(self)
            self.memory = Memory(self)
            self.chat = Chat(self)
            self.mldl = MLDL(self)
            self.sandbox = Sandbox(self)
            self.remedy = Remedy(self)
            self.reflection = Reflection(self)
            self.learning = Learning(self)
            self.executor = Executor(self)
            self.healing = Healing(self)
            self.meta = Meta(self)
            self.lake = Lake(self)
            if not snapshot:
                if genesis and self.ledger.head[0] == 0:
                    self._genesis()
                # Subscribers whose handlers use other engines start once every engine is wired.
                self.hunter.start()
                self._claim()
        except BaseException:
            self._abort()
            raise
        _OPEN.add(self)

    # -- opening ---------------------------------------------------------------------------------------------
    @staticmethod
    def _connect(path: str, snapshot: bool) -> tuple[duckdb.DuckDBPyConnection, str | None]:
        if path == MEMORY:
            if snapshot:
                raise WorkspaceError(
                    "an in-memory workspace has no snapshot: it lives only in its own process"
                )
            return duckdb.connect(MEMORY), None
        if snapshot and not Path(path).exists():
            raise WorkspaceError(f"no workspace at {path}")
        try:
            return duckdb.connect(path, read_only=snapshot), None
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" not in message.lower():
                raise WorkspaceError(f"cannot open workspace {path}: {message}") from exc
            match = _PID.search(message)
            pid = int(match.group(1)) if match else None
            if snapshot:
                return duckdb.connect(_fresh_snapshot(path), read_only=True), path
            raise WorkspaceLockedError(path, owner_pid=pid, owner=_owner_description(path)) from exc
        except duckdb.Error as exc:
            raise WorkspaceError(f"cannot open workspace {path}: {exc}") from exc

    def _genesis(self) -> None:
        origin = f"grace-workbench/{self.mesh.new_id()}"
        self.con.execute("INSERT INTO workspace_meta VALUES ('origin', ?) ON CONFLICT DO NOTHING", [origin])
        self.publish(
            "workspace.created", {"origin": self.origin, "grace_version": __version__}, actor="system"
        )
        # Governed and guarded from the first minute: each engine publishes its whole default pack in one event.
        self.governance.seed_defaults()
        self.hunter.seed_defaults()
        self.mldl.seed_defaults()

    def _claim(self) -> None:
        if self.path == MEMORY:
            return
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv[:4], "since": time.time()}
        with contextlib.suppress(OSError):
            Path(self.path + ".owner").write_text(json.dumps(owner))
        self._housekeeper = threading.Thread(target=self._housekeep, name="grace-housekeeping", daemon=True)
        self._housekeeper.start()

    def _housekeep(self) -> None:
        # Serves snapshot requests from other processes (they cannot open the file while this one owns it).
        request = Path(self.path + ".snapshot-request")
        while not self._stop.wait(0.25):
            if request.exists():
                try:
                    self.export_snapshot()
                except Exception as exc:  # noqa: BLE001 - report in the snapshot's place, keep serving
                    with contextlib.suppress(OSError):
                        Path(self.path + ".snapshot-error").write_text(str(exc))
                with contextlib.suppress(OSError):
                    request.unlink()

    # -- basics ----------------------------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        row = self.con.cursor().execute("SELECT value FROM workspace_meta WHERE key = 'origin'").fetchone()
        if row is None:
            raise WorkspaceError("this workspace has no origin yet (it was never initialised)")
        return str(row[0])

    def sql(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a read query on the workspace and return a DataFrame."""
        return self.ledger.reader().execute(query, params).df()

    def events(self, *, since: int = 0, topic: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """The ledger as a DataFrame (``limit`` keeps the newest)."""
        return self.ledger.frame(since=since, topic=topic, limit=limit)

    def verify(self, *, progress: bool = False) -> VerifyReport:
        return self.ledger.verify(progress=progress)

    def __repr__(self) -> str:
        mode = "snapshot" if self.read_only else ("live" if self.live else "deterministic")
        return f"<Workspace {self.path} events={self.ledger.head[0]} {mode} clock={self.clock!r}>"

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checkpoints and proofs --------------------------------------------------------------------------------
    def _signing_key(self) -> merkle.SigningKey:
        row = (
            self.con.cursor()
            .execute("SELECT value FROM workspace_secrets WHERE name = ?", [_SIGNING_KEY])
            .fetchone()
        )
        if row is not None:
            return merkle.SigningKey.from_bytes(self.origin, bytes(row[0]))
        key = merkle.SigningKey.generate(self.origin)
        self.con.cursor().execute(
            "INSERT INTO workspace_secrets VALUES (?, ?)", [_SIGNING_KEY, key.private_bytes()]
        )
        self.publish(
            "ledger.key_published",
            {"key_name": self.origin, "verifier_key": key.verifier_key()},
            actor="system",
        )
        return key

    @property
    def verifier_keys(self) -> list[str]:
        """Public keys (C2SP note verifier keys) that checkpoints of this ledger are signed with."""
        rows = self.ledger.reader().execute("SELECT verifier_key FROM signing_keys").fetchall()
        return [str(r[0]) for r in rows]

    def checkpoint(self, *, actor: str = "system") -> str:
        """Sign a checkpoint of the ledger as it stands (Ed25519, C2SP signed-note text) and record it."""
        if self.read_only:
            raise ReadOnlyError("a read-only snapshot cannot sign checkpoints")
        key = self._signing_key()
        cp = self.ledger.make_checkpoint(origin=self.origin)
        note = merkle.sign_checkpoint(cp, key)
        self.publish(
            "ledger.checkpoint",
            {"size": cp.size, "root": cp.root.hex(), "chain_hash": cp.extensions[0].split()[1], "note": note},
            actor=actor,
        )
        return note

    def latest_checkpoint(self, *, covering: int = 1) -> tuple[int, str]:
        row = (
            self.ledger.reader()
            .execute(
                "SELECT size, note FROM checkpoints WHERE size >= ? ORDER BY size DESC LIMIT 1", [covering]
            )
            .fetchone()
        )
        if row is None:
            raise LedgerError(f"no signed checkpoint covers seq {covering}; make one with checkpoint()")
        return int(row[0]), str(row[1])

    def prove(self, seq: int) -> InclusionProof:
        """An inclusion proof of event ``seq`` in the latest signed checkpoint that covers it."""
        size, note = self.latest_checkpoint(covering=seq)
        return self.ledger.inclusion_proof(seq, checkpoint=note, size=size)

    def check_proof(self, proof: InclusionProof) -> merkle.Checkpoint:
        """Check a proof with nothing but the proof, its leaf and this ledger's public keys."""
        return verify_inclusion_proof(proof, verifier_keys=self.verifier_keys)

    # -- snapshots, replay, closing ----------------------------------------------------------------------------
    def export_snapshot(self, target: str | os.PathLike[str] | None = None) -> Path:
        """Write a consistent read-only copy (without secrets or password hashes) and return its path."""
        if self.path == MEMORY and target is None:
            raise WorkspaceError("an in-memory workspace needs a target path for its snapshot")
        dest = Path(target) if target is not None else Path(self.path + ".snapshot")
        tmp = dest.with_name(dest.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        cur = self.con.cursor()
        db = cur.execute("SELECT current_database()").fetchone()
        assert db is not None
        cur.execute(f"ATTACH '{tmp.as_posix()}' AS grace_snapshot")
        try:
            cur.execute("BEGIN TRANSACTION")
            for (table,) in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'",
                [db[0]],
            ).fetchall():
                rows = "WHERE false" if table in _SECRET_TABLES else ""
                cur.execute(
                    f'CREATE TABLE grace_snapshot."{table}" AS SELECT * FROM "{db[0]}"."{table}" {rows}'
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.execute("DETACH grace_snapshot")
        os.replace(tmp, dest)
        return dest

    def close(self) -> None:
        """Stop the loops, finish due deliveries, flush and release the file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            self.loops.close()
            self.mesh.close()
            self.memory.close()
            self.mldl.close()
            self.lake.close()
            if not self.read_only and self.path != MEMORY and Path(self.path + ".snapshot").exists():
                with contextlib.suppress(Exception):
                    self.export_snapshot()
            if self._housekeeper is not None:
                self._housekeeper.join(5)
        finally:
            self._abort()

    def _abort(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.con.close()
        if not self.read_only and self.path != MEMORY:
            with contextlib.suppress(OSError):
                owner = json.loads(Path(self.path + ".owner").read_text())
                if owner.get("pid") == os.getpid():
                    Path(self.path + ".owner").unlink()


def verify_inclusion_proof(proof: InclusionProof, *, verifier_keys: Sequence[str]) -> merkle.Checkpoint:
    """Check a proof standalone: the checkpoint's signature, then the leaf's path to the signed root."""
    errors = []
    for vkey in verifier_keys:
        try:
            cp = merkle.open_checkpoint(proof.checkpoint, verifier_key=vkey)
            break
        except SignatureError as exc:
            errors.append(str(exc))
    else:
        raise SignatureError("the checkpoint is not signed by any of the given keys: " + "; ".join(errors))
    if cp.size != proof.size:
        raise SignatureError(f"the proof is for size {proof.size} but the checkpoint is of size {cp.size}")
    merkle.verify_inclusion(
        leaf=proof.leaf, index=proof.index, size=proof.size, proof=proof.path, root=cp.root
    )
    return cp


def replay(source: Workspace, target: str | os.PathLike[str], *, progress: bool = False) -> Workspace:
    """Rebuild a workspace from ``source``'s ledger alone into a new file (or ``:memory:``).

    Events are copied verbatim (same ids, hashes) and every projection is rebuilt by the same appliers that
    built the original, so ``projection_differences(source, result)`` is empty.
    """
    path = _resolve(target)
    if path != MEMORY and Path(path).exists():
        raise WorkspaceError(f"{path} exists already; replay needs a new file")
    result = Workspace(path, clock=source.clock, live=False, genesis=False)
    try:
        origin = source.origin
        result.con.execute("INSERT INTO workspace_meta VALUES ('origin', ?)", [origin])
        result.ledger.import_from(source.ledger, progress=progress)
    except BaseException:
        result.close()
        if path != MEMORY:  # a half-built copy would block the retry ("exists already")
            for leftover in (path, path + ".wal"):
                with contextlib.suppress(OSError):
                    Path(leftover).unlink()
        raise
    return result


def projection_differences(a: Workspace, b: Workspace) -> dict[str, int]:
    """Rows that differ between two workspaces, per projection table (empty when they are equal)."""
    diffs = {}
    for table in sorted(set(a.projections.tables) | set(b.projections.tables)):
        left = a.sql(f'SELECT * FROM "{table}"')
        right = b.sql(f'SELECT * FROM "{table}"')
        if list(left.columns) != list(right.columns):
            diffs[table] = max(len(left), len(right)) or 1
            continue
        merged = left.astype(str).merge(right.astype(str), how="outer", indicator=True)
        n = int((merged["_merge"] != "both").sum())
        if n or len(left) != len(right):
            diffs[table] = max(n, abs(len(left) - len(right)))
    return diffs


def _fresh_snapshot(path: str) -> str:
    """Ask the owning process for a fresh snapshot and wait for it (10 s at most)."""
    snap = Path(path + ".snapshot")
    request = Path(path + ".snapshot-request")
    error = Path(path + ".snapshot-error")
    with contextlib.suppress(OSError):
        error.unlink()
    asked = time.time()
    request.write_text(str(os.getpid()))
    deadline = asked + 10
    while time.time() < deadline:
        if snap.exists() and snap.stat().st_mtime >= asked - 0.01 and not request.exists():
            return str(snap)
        if error.exists():
            raise WorkspaceError(f"the owner of {path} could not write a snapshot: {error.read_text()}")
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        request.unlink()
    if snap.exists():
        return str(snap)  # older, but consistent
    raise WorkspaceError(
        f"{path} is owned by another process ({_owner_description(path) or 'unknown'}) that did not answer a "
        "snapshot request within 10 s"
    )


def _owner_description(path: str) -> str | None:
    try:
        owner = json.loads(Path(path + ".owner").read_text())
    except (OSError, ValueError):
        return None
    argv = " ".join(str(a) for a in owner.get("argv", []))
    return f"pid {owner.get('pid')} on {owner.get('host')}: {argv}".strip()


def _apply_signing_key(con: Any, events: list[Event]) -> None:
    for e in events:
        con.execute(
            "INSERT INTO signing_keys VALUES (?, ?, ?)",
            [e.payload["key_name"], e.payload["verifier_key"], e.id],
        )


def _apply_checkpoint(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        con.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, make_timestamptz(?::BIGINT))",
            [p["size"], bytes.fromhex(p["root"]), bytes.fromhex(p["chain_hash"]), p["note"], e.id, e.ts_us],
        )
