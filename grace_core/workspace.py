"""A workspace: one DuckDB file (or ``:memory:``) with the ledger and every engine wired over it.

The spine (projections, ledger, mesh, causal, metrics, the clock) comes first; then the engines of ``ENGINES``,
in its order, each given the engines it declares it needs. The order and the needs are checked at open.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from . import __version__, merkle
from .auth import Auth, active_admins, lookup_role
from .causal import Causal
from .chat import Chat
from .clock import Clock, ManualClock, SystemClock
from .db import apply_migrations, sql_string
from .errors import LedgerError, ReadOnlyError, SignatureError, WorkspaceError, WorkspaceLockedError
from .events import Event
from .executor import Executor
from .files import (
    PRIVATE_MODE,
    check_private,
    companions,
    hold_private_umask,
    private_umask,
    release_private_umask,
    remove_workspace_files,
    write_private,
)
from .governance import OPERATOR, Governance
from .healing import Healing
from .hunter import Hunter
from .hunter.fanout import AlertFanOut
from .keystore import Secrets, set_aside
from .lake import Lake
from .learning import Learning
from .ledger import InclusionProof, Ledger, VerifyReport
from .llm import LanguageModels
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
from .scenarios import Scenarios
from .settings import DEFAULT_WORKSPACE, Settings, workspace_path
from .tasks import Tasks
from .times import TS
from .witness import Witness, witness_paths

__all__ = [
    "DEFAULT_WORKSPACE",
    "ENGINES",
    "EngineSpec",
    "Workspace",
    "check_engines",
    "open_workspace",
    "replay",
]

MEMORY = ":memory:"
_SIGNING_KEY = "checkpoint_signing_key"
# Tables never copied into snapshots: password hashes, and the secrets table of workspaces made before the key
# file (neither is on the ledger).
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


# -- the engines -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineSpec:
    """One engine: ``make(ws, **needs)`` builds it, given each engine it ``needs`` as a keyword argument.

    ``start``: its ``start()`` runs once every engine is built (and a new workspace has its genesis events), for
    subscribers that must not run before then. ``close``: its ``close()`` runs when the workspace closes, after
    the loops have stopped and the mesh has delivered what was due.
    """

    name: str
    make: Callable[..., Any]
    needs: tuple[str, ...] = ()
    start: bool = False
    close: bool = False


def _governance(ws: Workspace) -> Governance:
    # Roles are read straight from auth's projection (users): governance needs no Auth engine, so Auth, whose
    # user management governance decides, is built after it and the two form no cycle.
    return Governance(
        ws,
        role_of=functools.partial(lookup_role, ws.ledger),
        admins=functools.partial(active_admins, ws.ledger),
    )


def _scheduler(ws: Workspace, *, governance: Governance) -> Scheduler:
    return Scheduler(ws.mesh, governance=governance)  # parameter changes and named control are governed


# Every engine over the spine, in the order they are built; each needs only engines above it. The alert fan-out
# is apart from Hunter because tasks and memory screen their texts with Hunter and the fan-out writes to both.
ENGINES: tuple[EngineSpec, ...] = (
    EngineSpec("governance", _governance),
    EngineSpec("loops", _scheduler, needs=("governance",)),
    EngineSpec("llm", LanguageModels),
    EngineSpec("auth", Auth, needs=("governance",)),
    EngineSpec("modes", Modes, needs=("governance",)),
    EngineSpec("hunter", Hunter, needs=("governance",), start=True),
    EngineSpec("tasks", Tasks, needs=("governance", "hunter")),
    EngineSpec("memory", Memory, needs=("governance", "hunter"), close=True),
    EngineSpec("alert_fanout", AlertFanOut, needs=("tasks", "memory"), start=True),
    EngineSpec("mldl", MLDL, needs=("governance", "hunter"), close=True),
    EngineSpec("sandbox", Sandbox, needs=("governance", "hunter", "modes")),
    EngineSpec("remedy", Remedy, needs=("sandbox",)),
    EngineSpec("reflection", Reflection, needs=("loops", "tasks", "llm", "hunter")),
    EngineSpec("learning", Learning, needs=("loops", "tasks", "llm", "hunter")),
    EngineSpec("chat", Chat, needs=("auth", "governance", "hunter", "modes", "llm", "learning")),
    EngineSpec("executor", Executor, needs=("loops", "governance", "modes", "tasks", "learning")),
    EngineSpec("healing", Healing, needs=("loops", "governance", "modes", "tasks", "executor")),
    EngineSpec("meta", Meta, needs=("loops",)),
    EngineSpec("lake", Lake, needs=("loops",), close=True),
    EngineSpec("scenarios", Scenarios),
)
# What the workspace itself holds before any engine: no engine may take these names.
_SPINE = frozenset(
    [
        "path",
        "clock",
        "seed",
        "read_only",
        "live",
        "con",
        "snapshot_of",
        "projections",
        "ledger",
        "mesh",
        "causal",
        "metrics",
        "publish",
        "publish_many",
        "subscribe",
        "secrets",
        "settings",
    ]
)


def check_engines(engines: Sequence[EngineSpec]) -> None:
    """Raise ``WorkspaceError`` unless every engine has its own name, needs only engines that exist, and comes
    after every engine it needs (a cycle is reported as one)."""
    position: dict[str, int] = {}
    for i, spec in enumerate(engines):
        if spec.name in position:
            raise WorkspaceError(f"engine {spec.name!r} is registered twice")
        if spec.name in _SPINE or hasattr(Workspace, spec.name):
            raise WorkspaceError(f"engine name {spec.name!r} is taken by the workspace itself")
        position[spec.name] = i
    for spec in engines:
        for need in spec.needs:
            if need not in position:
                raise WorkspaceError(f"engine {spec.name!r} needs {need!r}, which no engine provides")
    cycle = _cycle(engines)
    if cycle:
        raise WorkspaceError(
            f"engines need each other in a cycle: {' -> '.join(cycle)}; break it (hand one of them a function, "
            "or move the part that needs the other into an engine of its own)"
        )
    for spec in engines:
        for need in spec.needs:
            if position[need] > position[spec.name]:
                raise WorkspaceError(
                    f"engine {spec.name!r} needs {need!r}, which is built after it; move {need!r} above it"
                )


def _cycle(engines: Sequence[EngineSpec]) -> list[str] | None:
    """A cycle of needs as a path that returns to its start (``a -> b -> a``), or None."""
    needs = {spec.name: spec.needs for spec in engines}
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        path.append(name)
        for need in needs[name]:
            if need in path:
                return [*path[path.index(need) :], need]
            if need not in done:
                found = visit(need)
                if found:
                    return found
        path.pop()
        done.add(name)
        return None

    for spec in engines:
        if spec.name not in done:
            found = visit(spec.name)
            if found:
                return found
    return None


def _resolve(path: str | os.PathLike[str] | None) -> str:
    text = workspace_path(path)
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

    ``path`` defaults to ``$GRACE_WORKSPACE``, else ``grace.duckdb`` in the project directory (a source checkout
    holding the current directory) or the current directory (``settings.workspace_path``); ``":memory:"``
    makes a throwaway one. ``clock`` defaults to the wall clock; a ``ManualClock`` makes runs reproducible,
    and with ``seed`` every id repeats too. ``snapshot=True`` opens a consistent read-only copy, which works
    while another process owns the file. ``live`` (default: not a ManualClock) delivers events on a background
    thread instead of in the publishing thread.
    """
    return Workspace(_resolve(path), clock=clock or SystemClock(), seed=seed, snapshot=snapshot, live=live)


class Workspace:
    """The engines of one workspace. Use as a context manager, or call ``close()``."""

    # The engines, built from ENGINES (in its order).
    governance: Governance
    loops: Scheduler
    auth: Auth
    modes: Modes
    hunter: Hunter
    tasks: Tasks
    memory: Memory
    alert_fanout: AlertFanOut
    chat: Chat
    mldl: MLDL
    sandbox: Sandbox
    remedy: Remedy
    reflection: Reflection
    learning: Learning
    executor: Executor
    healing: Healing
    meta: Meta
    llm: LanguageModels
    lake: Lake
    scenarios: Scenarios

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
        check_engines(ENGINES)
        self.path = path
        self.clock = clock
        self.seed = seed
        self.read_only = snapshot
        self.live = not isinstance(clock, ManualClock) if live is None else live
        self._closed = False
        self._housekeeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._private_umask = False
        if path != MEMORY:
            # Every file of the workspace private to its owner: repaired (or refused) at open, and created so.
            for file in [Path(path), *companions(path)]:
                check_private(file)
            if not snapshot:
                if not Path(path).exists():
                    set_aside(Path(path + ".keys"))  # the keys of a deleted workspace are not this one's
                hold_private_umask()
                self._private_umask = True
        try:
            self.con, self.snapshot_of = self._connect(path, snapshot)
        except BaseException:
            self._release_umask()
            raise
        try:
            self.con.execute("SET TimeZone = 'UTC'")
            # DuckDB draws a progress bar on stdout for long queries; it would corrupt JSON output of the CLI.
            self.con.execute("SET enable_progress_bar = false")
            if not snapshot:
                apply_migrations(self.con)
            if path == MEMORY:
                self.secrets = Secrets(None)
            elif self.snapshot_of is not None:
                self.secrets = Secrets.empty()  # a snapshot copy never holds secrets
            else:
                self.secrets = Secrets(path + ".keys", read_only=snapshot)
            self.secrets.adopt_table(self.con)
            self.settings = Settings(self)
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
            # The public verbs of the mesh, on the workspace itself (the same functions, not copies).
            self.publish = self.mesh.publish
            self.publish_many = self.mesh.publish_many
            self.subscribe = self.mesh.subscribe
            # Engines: each registers its projections and, in a writable workspace, its subscribers.
            self._engines: dict[str, Any] = {}
            for spec in ENGINES:
                engine = spec.make(self, **{need: self._engines[need] for need in spec.needs})
                self._engines[spec.name] = engine
                setattr(self, spec.name, engine)
            if not snapshot:
                if genesis and self.ledger.head[0] == 0:
                    self._genesis()
                for spec in ENGINES:
                    if spec.start:
                        self._engines[spec.name].start()
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
            write_private(self.path + ".owner", json.dumps(owner))
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
                        write_private(self.path + ".snapshot-error", str(exc))
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
        """Check the hash chain, the checkpoint events on it, and every witness of its checkpoints."""
        origin = self.con.cursor().execute("SELECT value FROM workspace_meta WHERE key = 'origin'").fetchone()
        return self.ledger.verify(
            progress=progress,
            witnesses=[w.read() for w in self.witnesses],
            origin=str(origin[0]) if origin else None,
            may_be_behind=self.snapshot_of is not None,  # a copy the owner exported may predate its witness
        )

    def __repr__(self) -> str:
        mode = "snapshot" if self.read_only else ("live" if self.live else "deterministic")
        return f"<Workspace {self.path} events={self.ledger.head[0]} {mode} clock={self.clock!r}>"

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checkpoints and proofs --------------------------------------------------------------------------------
    def _signing_key(self) -> merkle.SigningKey:
        stored = self.secrets.get(_SIGNING_KEY)
        if stored is not None:
            return merkle.SigningKey.from_bytes(self.origin, stored)
        key = merkle.SigningKey.generate(self.origin)
        self.secrets.put(_SIGNING_KEY, key.private_bytes())
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

    @property
    def witnesses(self) -> list[Witness]:
        """Where this workspace's checkpoints are witnessed: ``<file>.witness`` beside it, and ``$GRACE_WITNESS``."""
        return [Witness(path) for path in witness_paths(self.path)]

    def checkpoint(self, *, actor: str = OPERATOR) -> str:
        """Sign a checkpoint of the ledger as it stands (Ed25519, C2SP signed-note text), have every witness keep
        a copy, and record it. ``actor`` must be allowed ``ledger.checkpoint`` (``PermissionDenied``, the refusal
        recorded, otherwise). A witness refuses (``WitnessError``, nothing recorded) a ledger that no longer
        extends what it saw, or a key it did not pin."""
        if self.read_only:
            raise ReadOnlyError("a read-only snapshot cannot sign checkpoints")
        # an allowed checkpoint is recorded by its own ledger.checkpoint event: only a refusal needs a decision
        self.governance.check(actor, "ledger.checkpoint", record="refusals", what="sign checkpoints")
        key = self._signing_key()
        cp = self.ledger.make_checkpoint(origin=self.origin)
        note = merkle.sign_checkpoint(cp, key)
        at = self.clock.now()
        for witness in self.witnesses:
            witness.record(self.ledger, cp, note, verifier_key=key.verifier_key(), at=at)
        self.publish(
            "ledger.checkpoint",
            {"size": cp.size, "root": cp.root.hex(), "chain_hash": cp.extensions[0].split()[1], "note": note},
            actor=actor,
        )
        return note

    def checkpoints(self) -> pd.DataFrame:
        """The signed checkpoints, largest first: size, ts, event_id, root (hex)."""
        return self.sql("SELECT size, ts, event_id, hex(root) AS root FROM checkpoints ORDER BY size DESC")

    def pin_signing_key(self) -> list[str]:
        """Pin the current signing key in every witness (after replacing the key on purpose: the witnesses
        refuse checkpoints signed by a key they did not pin). Returns the witnesses that had not pinned it."""
        if self.read_only:
            raise ReadOnlyError("a read-only snapshot cannot pin keys")
        key = self._signing_key()
        at = self.clock.now()
        return [
            str(w.path)
            for w in self.witnesses
            if w.pin(origin=self.origin, verifier_key=key.verifier_key(), at=at)
        ]

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
        with private_umask():  # the copy, and its WAL while it is written, private from their creation
            self._copy_into(tmp)
        os.chmod(tmp, PRIVATE_MODE)  # whatever the umask of an earlier run made of a leftover
        os.replace(tmp, dest)
        return dest

    def _copy_into(self, tmp: Path) -> None:
        cur = self.con.cursor()
        db = cur.execute("SELECT current_database()").fetchone()
        assert db is not None
        cur.execute(f"ATTACH {sql_string(tmp.as_posix())} AS grace_snapshot")
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

    def close(self) -> None:
        """Stop the loops, finish due deliveries, flush and release the file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            self.loops.close()  # loop threads publish: stop them first
            self.mesh.close()  # deliveries due now may still use the engines
            for spec in reversed(ENGINES):
                if spec.close:
                    self._engines[spec.name].close()
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
        self._release_umask()

    def _release_umask(self) -> None:
        if self._private_umask:
            self._private_umask = False
            release_private_umask()


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
            remove_workspace_files(path)
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
    write_private(request, str(os.getpid()))
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
            f"INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, {TS})",
            [p["size"], bytes.fromhex(p["root"]), bytes.fromhex(p["chain_hash"]), p["note"], e.id, e.ts_us],
        )
