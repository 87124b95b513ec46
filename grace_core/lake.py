"""Publish a workspace to a DuckLake, so many readers on many hosts can query it while the owner keeps writing.

A DuckLake is DuckDB's lakehouse format: a catalog (table list, snapshots, file list) in a SQL database and the
rows in Parquet files under a data path. ``ws.lake.attach(catalog, data)`` records the lake in the workspace;
``ws.lake.sync()`` (run by the owning process: the only writer of the workspace file) appends the ledger's new
events (those after the lake's highest seq) and replaces the projection tables whose topics saw new events, all
in one lake transaction, so every lake snapshot is a consistent picture of the workspace at one ledger head.

Readers anywhere call ``open_lake(catalog, data, snapshot=None)``: a read-only view of the lake, optionally as of
an older snapshot (time travel), that never touches the workspace file. ``verify_lake`` re-checks the hash chain
from the lake alone, with the same SQL the ledger uses on its own table.

Catalog URLs: ``sqlite:/path/catalog.sqlite`` (one machine, many processes), ``postgres:dbname=... host=...``
(many machines), or a bare path (a DuckDB-file catalog: one process at a time). The extensions load offline
from their wheels (``grace_core.db.load_extension``).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import duckdb
import pandas as pd

from .db import load_extension, sql_string
from .errors import LakeError
from .ledger import Ledger, VerifyReport
from .loops import Loop
from .projections import Projections

if TYPE_CHECKING:
    from .events import Event
    from .loops import Scheduler
    from .workspace import Workspace

__all__ = [
    "DEFAULT_RETENTION",
    "Lake",
    "LakeLoop",
    "LakeReader",
    "SyncReport",
    "open_lake",
    "parse_duration",
    "verify_lake",
]

ALIAS = "grace_lake"  # the name the lake is attached under in the owner's DuckDB instance
DEFAULT_RETENTION = 7 * 24 * 3600.0  # seconds of snapshots kept for time travel
SYNC_TABLE = "lake_syncs"  # one row per sync: which seqs, which head, which workspace
_APPENDED = ("events", SYNC_TABLE)  # the tables syncs append to (all others are replaced)
# Never published: password hashes and a pre-key-file secrets table (the same tables snapshots leave out).
_SECRET_TABLES = frozenset({"workspace_secrets", "credentials"})
_META = {"catalog": "lake.catalog", "data": "lake.data", "retention": "lake.retention"}
_SECRET = "lake.catalog"  # noqa: S105 - the name of the secret, not its value
_PASSWORD = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)
_RETRYABLE = ("conflict", "locked", "busy", "could not serialize", "deadlock")
_T = TypeVar("_T")


# -- catalogs --------------------------------------------------------------------------------------------------
def normalise_catalog(catalog: str) -> str:
    """``sqlite:relative.db`` -> ``sqlite:/abs/relative.db``; a leading ``ducklake:`` is dropped."""
    text = catalog.strip()
    text = text.removeprefix("ducklake:")
    if text.startswith("sqlite:"):
        return "sqlite:" + str(Path(text[len("sqlite:") :]).expanduser().resolve())
    if text.startswith(("postgres:", "postgresql:", "mysql:")):
        return text
    if not text:
        raise LakeError(
            "an empty catalog URL; use sqlite:PATH, postgres:'dbname=... host=...' or a file path"
        )
    return str(Path(text).expanduser().resolve())


def redact(catalog: str) -> str:
    """The catalog URL without its password: what may be shown, logged and put on the ledger."""
    return _PASSWORD.sub(r"\1***", catalog)


def _extensions(con: duckdb.DuckDBPyConnection, catalog: str) -> None:
    load_extension(con, "ducklake")
    if catalog.startswith("sqlite:"):
        load_extension(con, "sqlite_scanner")
    elif catalog.startswith(("postgres:", "postgresql:")):
        load_extension(con, "postgres_scanner")


def _normalise_data(data: str | os.PathLike[str]) -> str:
    text = os.fspath(data)
    if "://" in text:  # object storage: kept as given
        return text.rstrip("/") + "/"
    return str(Path(text).expanduser().resolve()) + "/"


def _attach_sql(
    catalog: str,
    data: str | None,
    alias: str,
    *,
    read_only: bool = False,
    snapshot: int | datetime | None = None,
) -> str:
    options = []
    if data is not None:
        options.append(f"DATA_PATH {sql_string(data)}")
    if read_only:
        options.append("READ_ONLY")
    if isinstance(snapshot, datetime):
        options.append(f"SNAPSHOT_TIME {sql_string(snapshot.isoformat())}")
    elif snapshot is not None:
        options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
    suffix = f" ({', '.join(options)})" if options else ""
    return f"ATTACH {sql_string('ducklake:' + catalog)} AS {alias}{suffix}"


def _retrying(action: Callable[[], _T], *, attempts: int = 8, backoff: float = 0.05) -> _T:
    """Run ``action``, again on a commit conflict or a busy catalog (DuckLake's optimistic concurrency)."""
    for attempt in range(attempts - 1):
        try:
            return action()
        except duckdb.Error as exc:
            if not any(word in str(exc).lower() for word in _RETRYABLE):
                raise
            time.sleep(backoff * (2**attempt))
    return action()  # the last attempt: its error, if any, is the caller's


def parse_duration(value: str | float | timedelta) -> float:
    """Seconds from ``3600``, ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"`` or a timedelta."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not match:
        raise LakeError(f"not a duration: {value!r} (use e.g. 3600, 90s, 30m, 12h, 7d, 2w)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(match.group(1)) * unit


# -- the owner's side ------------------------------------------------------------------------------------------
@dataclass
class SyncReport:
    """What one sync published: the seqs (``seq_from < seq <= seq_to``), the tables replaced, how long it took."""

    seq_from: int
    seq_to: int
    tables: list[str] = field(default_factory=list)
    seconds: float = 0.0
    attempts: int = 1

    @property
    def events(self) -> int:
        return self.seq_to - self.seq_from

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "events": self.events,
            "tables": list(self.tables),
            "seconds": round(self.seconds, 4),
            "attempts": self.attempts,
        }


class Lake:
    """``ws.lake``: the workspace's DuckLake, if one is attached (``attached``), and the verbs of its owner."""

    def __init__(self, ws: Workspace, *, loops: Scheduler) -> None:
        self.ws = ws
        self._loops = loops
        self._lock = threading.Lock()  # one sync (or maintenance) at a time in this process
        self._attached_as: str | None = None  # the catalog the owner's DuckDB instance has attached now
        if not ws.read_only and self.attached:
            self._add_loop()

    # -- configuration -----------------------------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        keys = list(_META.values())
        rows = (
            self.ws.con.cursor()
            .execute("SELECT key, value FROM workspace_meta WHERE list_contains(?, key)", [keys])
            .fetchall()
        )
        return {str(k): str(v) for k, v in rows}

    @property
    def attached(self) -> bool:
        return _META["catalog"] in self._meta()

    @property
    def config(self) -> dict[str, Any]:
        """Catalog (password redacted), data path and retention (seconds); empty when no lake is attached."""
        meta = self._meta()
        if _META["catalog"] not in meta:
            return {}
        return {
            "catalog": meta[_META["catalog"]],
            "data": meta[_META["data"]],
            "retention": float(meta.get(_META["retention"], DEFAULT_RETENTION)),
        }

    def _catalog(self) -> str:
        """The full catalog URL (with its password, kept among the workspace's secrets if it has one)."""
        stored = self.ws.secrets.text(_SECRET)
        if stored is not None:
            return stored
        config = self.config
        if not config:
            raise LakeError(
                "no lake is attached to this workspace; run `grace lake attach --catalog ... --data ...`"
            )
        return str(config["catalog"])

    def attach(
        self,
        catalog: str,
        data: str | os.PathLike[str],
        *,
        retention: str | float | timedelta = DEFAULT_RETENTION,
        actor: str = "system",
    ) -> dict[str, Any]:
        """Record the lake (creating it on first use) and publish ``lake.attached``; the password stays off it."""
        if self.ws.read_only:
            raise LakeError("a read-only snapshot cannot attach a lake")
        catalog = normalise_catalog(catalog)
        data_path = _normalise_data(data)
        seconds = parse_duration(retention)
        # Check the lake opens (and create it) before recording anything.
        probe = duckdb.connect()
        try:
            _extensions(probe, catalog)
            probe.execute(_attach_sql(catalog, data_path, "probe"))
        except duckdb.Error as exc:
            raise LakeError(f"cannot attach the lake at {redact(catalog)}: {exc}") from exc
        finally:
            probe.close()
        public = redact(catalog)
        # The password first: a lake recorded without it (a crash in between) would not open.
        if public != catalog:
            self.ws.secrets.put(_SECRET, catalog)
        else:
            self.ws.secrets.delete(_SECRET)
        cur = self.ws.con.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            for key, value in (("catalog", public), ("data", data_path), ("retention", repr(seconds))):
                cur.execute(
                    "INSERT INTO workspace_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [_META[key], value],
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._detach()
        self.ws.publish(
            "lake.attached", {"catalog": public, "data": data_path, "retention_s": seconds}, actor=actor
        )
        self._add_loop()
        return self.config

    def _add_loop(self) -> None:
        if "lake" not in self._loops.names:
            self._loops.add(LakeLoop(self))

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the workspace's DuckDB instance with the lake attached (attached once, kept)."""
        catalog = self._catalog()
        cur = self.ws.con.cursor()
        if self._attached_as != catalog:
            self._detach()
            _extensions(cur, catalog)
            try:
                _retrying(lambda: cur.execute(_attach_sql(catalog, self.config["data"], ALIAS)))
            except duckdb.Error as exc:
                raise LakeError(f"cannot attach the lake at {redact(catalog)}: {exc}") from exc
            self._attached_as = catalog
        return cur

    def _detach(self) -> None:
        if self._attached_as is not None:
            with contextlib.suppress(duckdb.Error):
                self.ws.con.cursor().execute(f"DETACH {ALIAS}")
            self._attached_as = None

    def close(self) -> None:
        with self._lock:
            self._detach()

    # -- sync --------------------------------------------------------------------------------------------------
    def sync(self) -> SyncReport:
        """Publish the events after the lake's highest seq and the projections they touched, in one snapshot."""
        if self.ws.read_only:
            raise LakeError("a read-only snapshot cannot sync: only the owning process writes the lake")
        with self._lock:
            cur = self._cursor()
            attempts = 0
            started = time.perf_counter()

            def once() -> SyncReport:
                nonlocal attempts
                attempts += 1
                return self._sync_once(cur)

            try:
                report = _retrying(once)
            except duckdb.Error as exc:
                raise LakeError(f"sync to {redact(self._catalog())} failed: {exc}") from exc
            report.seconds = time.perf_counter() - started
            report.attempts = attempts
            return report

    def _sync_once(self, cur: duckdb.DuckDBPyConnection) -> SyncReport:
        db_row = cur.execute("SELECT current_database()").fetchone()
        assert db_row is not None
        db = f'"{db_row[0]}"'
        head, head_hash = self.ws.ledger.head
        origin = self.ws.origin
        cur.execute("BEGIN TRANSACTION")
        try:
            existing = {
                str(r[0])
                for r in cur.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'",
                    [ALIAS],
                ).fetchall()
            }
            if "events" not in existing:
                cur.execute(f"CREATE TABLE {ALIAS}.events AS SELECT * FROM {db}.main.events LIMIT 0")
                cur.execute(
                    f"CREATE TABLE {ALIAS}.{SYNC_TABLE} (origin VARCHAR, seq_from BIGINT, seq_to BIGINT, "
                    "head_hash BLOB, tables VARCHAR[], synced_at TIMESTAMPTZ)"
                )
            else:
                row = cur.execute(
                    f"SELECT origin FROM {ALIAS}.{SYNC_TABLE} WHERE origin <> ? LIMIT 1", [origin]
                ).fetchone()
                if row is not None:
                    raise LakeError(f"this lake holds another workspace ({row[0]}); this one is {origin}")
            row = cur.execute(f"SELECT coalesce(max(seq), 0) FROM {ALIAS}.events").fetchone()
            lake_seq = int(row[0]) if row else 0
            if lake_seq > head:
                raise LakeError(f"the lake holds {lake_seq} events but this ledger only {head}")
            if lake_seq == head and "events" in existing:
                cur.execute("ROLLBACK")
                return SyncReport(lake_seq, head)
            cur.execute(
                f"INSERT INTO {ALIAS}.events SELECT * FROM {db}.main.events "
                "WHERE seq > ? AND seq <= ? ORDER BY seq",
                [lake_seq, head],
            )
            topics = [
                str(r[0])
                for r in cur.execute(
                    f"SELECT DISTINCT topic FROM {db}.main.events WHERE seq > ? AND seq <= ?",
                    [lake_seq, head],
                ).fetchall()
            ]
            tables = self._touched(topics, existing)
            for table in tables:
                # Replace, not merge: projections are small next to the ledger and may change any row.
                cur.execute(f'CREATE OR REPLACE TABLE {ALIAS}."{table}" AS SELECT * FROM {db}.main."{table}"')
            cur.execute(
                f"INSERT INTO {ALIAS}.{SYNC_TABLE} VALUES (?, ?, ?, ?, ?, now())",
                [origin, lake_seq, head, head_hash, tables],
            )
            cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            raise
        return SyncReport(lake_seq, head, tables)

    def _touched(self, topics: Sequence[str], existing: Iterable[str]) -> list[str]:
        """Projection tables whose topics occur among ``topics``, plus any not in the lake yet."""
        present = set(existing)
        tables: list[str] = []
        for projection in self.ws.projections:
            if any(projection.matches(t) for t in topics) or not set(projection.tables) <= present:
                tables.extend(projection.tables)
        return [t for t in dict.fromkeys(tables) if t not in _SECRET_TABLES]  # in order, once each

    # -- maintenance -------------------------------------------------------------------------------------------
    def compact(self) -> dict[str, int]:
        """Flush rows DuckLake inlined in the catalog to Parquet, then merge small adjacent files.

        Only the tables a sync appends to (the ledger and the sync log) accumulate small files; projection
        tables are rewritten whole each time they change, and their old versions go with ``expire``.
        """
        with self._lock:
            cur = self._cursor()

            def run() -> dict[str, int]:
                before = self._files(cur)
                for table in _APPENDED:
                    cur.execute(f"CALL ducklake_flush_inlined_data('{ALIAS}', table_name => '{table}')")
                    cur.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}', '{table}')")
                return {"files_before": before, "files_after": self._files(cur)}

            return _retrying(run)

    @staticmethod
    def _files(cur: duckdb.DuckDBPyConnection) -> int:
        """Parquet files of the appended tables (what compaction reduces)."""
        total = 0
        for table in _APPENDED:
            row = cur.execute(f"SELECT count(*) FROM ducklake_list_files('{ALIAS}', ?)", [table]).fetchone()
            total += int(row[0]) if row else 0
        return total

    def expire(self, older_than: str | float | timedelta | None = None) -> dict[str, int]:
        """Expire snapshots older than ``older_than`` (default: the retention setting) and delete their files.

        Snapshot times are the catalog's wall clock (DuckLake's own), not the workspace clock.
        """
        seconds = parse_duration(older_than) if older_than is not None else float(self.config["retention"])
        with self._lock:
            cur = self._cursor()
            interval = f"INTERVAL '{seconds} seconds'"

            def run() -> dict[str, int]:
                expired = cur.execute(
                    f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => now() - {interval})"
                ).fetchall()
                # Files of expired snapshots are deleted once as old as the snapshots were: a reader still
                # scanning a snapshot younger than the retention keeps its files.
                removed = cur.execute(
                    f"CALL ducklake_cleanup_old_files('{ALIAS}', older_than => now() - {interval})"
                ).fetchall()
                return {"snapshots_expired": len(expired), "files_deleted": len(removed)}

            return _retrying(run)

    def maintain(self) -> dict[str, int]:
        """Compact, then expire by the retention setting (what the ``lake`` loop does on its schedule)."""
        return {**self.compact(), **self.expire()}

    def status(self) -> dict[str, Any]:
        """Config, the lake's highest seq and snapshot, and how far behind the ledger it is."""
        config = self.config
        if not config:
            return {"attached": False}
        with self._lock:
            cur = self._cursor()
            has_events = cur.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = 'events'",
                [ALIAS],
            ).fetchone()
            lake_seq = 0
            if has_events and has_events[0]:
                row = cur.execute(f"SELECT coalesce(max(seq), 0) FROM {ALIAS}.events").fetchone()
                lake_seq = int(row[0]) if row else 0
            snap = cur.execute(f"SELECT max(snapshot_id) FROM ducklake_snapshots('{ALIAS}')").fetchone()
        head = self.ws.ledger.head[0]
        return {
            "attached": True,
            **config,
            "lake_seq": lake_seq,
            "ledger_seq": head,
            "behind": head - lake_seq,
            "snapshot": int(snap[0]) if snap and snap[0] is not None else None,
        }

    def reader(self, *, snapshot: int | datetime | None = None) -> LakeReader:
        """A read-only reader of this workspace's lake (its own DuckDB instance, as any other host would)."""
        return open_lake(self._catalog(), self.config["data"], snapshot=snapshot)


class LakeLoop(Loop):
    """Syncs the lake each ``interval`` seconds when the ledger grew; compacts and expires every ``maintain_every``."""

    name: ClassVar[str] = "lake"
    topics: ClassVar[tuple[str, ...]] = ("*",)
    params: ClassVar[Mapping[str, Any]] = {"interval": 30.0, "batch_size": 100_000, "maintain_every": 3600.0}

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._maintained: float | None = None

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        report = self.lake.sync()
        summary: dict[str, Any] = {"synced": report.events, "lake_seq": report.seq_to}
        now = scheduler.clock.time()
        every = float(scheduler.param(self.name, "maintain_every"))
        if self._maintained is None:
            self._maintained = now
        elif now - self._maintained >= every:
            self._maintained = now
            summary.update(self.lake.maintain())
        return summary if report.events else None


# -- the readers' side -----------------------------------------------------------------------------------------
class LakeReader:
    """A read-only view of a lake, live or as of one snapshot; plain table names work in ``sql``.

    The lake is attached in a private in-memory DuckDB under the name ``lake``, and each of its tables gets a
    view of the same name, so ``reader.sql("SELECT count(*) FROM events")`` and
    ``SELECT ... FROM lake.events AT (VERSION => 3)`` both work.
    """

    def __init__(self, catalog: str, data: str | None, *, snapshot: int | datetime | None = None) -> None:
        self.catalog = normalise_catalog(catalog)
        self.data = _normalise_data(data) if data is not None else None
        self.snapshot = snapshot
        self.con = duckdb.connect()
        try:
            self.con.execute("SET TimeZone = 'UTC'")
            self.con.execute("SET enable_progress_bar = false")
            _extensions(self.con, self.catalog)
            sql = _attach_sql(self.catalog, self.data, "lake", read_only=True, snapshot=snapshot)
            _retrying(lambda: self.con.execute(sql))
            self.tables = [
                str(r[0])
                for r in self.con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'main' "
                    "ORDER BY table_name"
                ).fetchall()
            ]
            for table in self.tables:
                # rowid rides along as a column: the ledger's verification orders by (seq, rowid).
                extra = ", rowid AS rowid" if table == "events" else ""
                self.con.execute(f'CREATE VIEW "{table}" AS SELECT *{extra} FROM lake.main."{table}"')
        except duckdb.Error as exc:
            self.con.close()
            raise LakeError(f"cannot open the lake at {redact(self.catalog)}: {exc}") from exc
        except BaseException:
            self.con.close()
            raise

    def sql(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a read query (retried while the catalog is busy with the owner's commit)."""
        return _retrying(lambda: self.con.cursor().execute(query, params).df())

    def events(self, *, since: int = 0, topic: str | None = None) -> pd.DataFrame:
        sql = "SELECT seq, id, ts, topic, actor, resource, payload, parent_id, correlation_id FROM events WHERE seq > ?"
        params: list[Any] = [since]
        if topic is not None:
            sql += " AND topic GLOB ?"
            params.append(topic)
        if "events" not in self.tables:
            return pd.DataFrame()
        return self.sql(sql + " ORDER BY seq", params)

    def snapshots(self) -> pd.DataFrame:
        """The lake's snapshots (id, time, changes): the versions ``open_lake(..., snapshot=id)`` can open."""
        return self.sql(
            "SELECT snapshot_id, snapshot_time, changes FROM ducklake_snapshots('lake') ORDER BY 1"
        )

    @property
    def head(self) -> tuple[int, bytes | None]:
        """(seq, hash) of the last event in this view of the lake."""
        if "events" not in self.tables:
            return 0, None
        rows = self.sql("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        if rows.empty:
            return 0, None
        return int(rows["seq"].iloc[0]), bytes(rows["hash"].iloc[0])

    def verify(self, *, progress: bool = False) -> VerifyReport:
        """The ledger's own verification, run on the lake's events (links, hashes, the signed checkpoint events)."""
        if "events" not in self.tables:
            raise LakeError("the lake holds no ledger yet; sync the workspace first")
        ledger = Ledger(self.con, Projections(), read_only=True)
        report = _retrying(lambda: ledger.verify(progress=progress))
        if report.ok and SYNC_TABLE in self.tables:
            row = self.sql(f"SELECT coalesce(max(seq_to), 0) AS n FROM {SYNC_TABLE}")
            synced = int(row["n"].iloc[0])
            if synced > report.size:
                return VerifyReport(
                    False,
                    report.size,
                    report.size + 1,
                    f"lake truncated: syncs published {synced} events, only {report.size} remain",
                    seconds=report.seconds,
                )
        return report

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()

    def __enter__(self) -> LakeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        at = "latest" if self.snapshot is None else f"snapshot {self.snapshot}"
        return f"<LakeReader {redact(self.catalog)} {at} tables={len(self.tables)}>"


def open_lake(
    catalog: str, data: str | os.PathLike[str] | None = None, *, snapshot: int | datetime | None = None
) -> LakeReader:
    """Open a lake read-only, as of ``snapshot`` (a snapshot id or a time) or live; works on any host."""
    return LakeReader(catalog, os.fspath(data) if data is not None else None, snapshot=snapshot)


def verify_lake(
    catalog: str, data: str | os.PathLike[str] | None = None, *, snapshot: int | datetime | None = None
) -> VerifyReport:
    """Verify the hash chain (and the signed checkpoints) from the lake alone."""
    with open_lake(catalog, data, snapshot=snapshot) as reader:
        return reader.verify()
