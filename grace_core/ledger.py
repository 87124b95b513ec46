"""The ledger: one append-only, hash-chained events table with group commit, verification and proofs."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow as pa

from . import merkle
from .errors import EventError, LedgerError, ReadOnlyError, SignatureError
from .events import GENESIS_HASH, NULL, RECORD_SQL, Draft, Event
from .projections import Projections

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["InclusionProof", "Ledger", "VerifyReport"]

_EVENT_COLUMNS = (
    "seq, id, epoch_us(ts) AS ts_us, topic, actor, resource, payload, parent_id, correlation_id, "
    "prev_hash, hash"
)
# The events table as Arrow sees it (the ledger's inserts, and the benchmark's raw-insert peer).
EVENTS_ARROW_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("topic", pa.string()),
        ("actor", pa.string()),
        ("resource", pa.string()),
        ("payload", pa.string()),
        ("parent_id", pa.string()),
        ("correlation_id", pa.string()),
        ("prev_hash", pa.binary()),
        ("hash", pa.binary()),
    ]
)
_SMALL_BATCH = 32
_ROW_SQL = "(?, ?, make_timestamptz(?::BIGINT), ?, ?, ?, ?, ?, ?, ?, ?)"
CommitListener = Callable[[list[Event]], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyReport:
    """The result of ``Ledger.verify``: ``ok``, or the first bad seq and why."""

    ok: bool
    size: int
    first_bad_seq: int | None = None
    reason: str | None = None
    checkpoints_checked: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.ok:
            n = self.checkpoints_checked
            checked = f"{n} signed checkpoint matches" if n == 1 else f"{n} signed checkpoints match"
            return f"ledger intact: {self.size} events, {checked}"
        return f"ledger broken at seq {self.first_bad_seq}: {self.reason}"


@dataclass(frozen=True)
class InclusionProof:
    """Everything a third party needs to check that one event is in a signed checkpoint."""

    seq: int
    leaf: bytes = field(repr=False)
    index: int
    size: int
    path: tuple[bytes, ...] = field(repr=False)
    checkpoint: str = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "index": self.index,
            "size": self.size,
            "leaf": self.leaf.decode("utf-8"),
            "path": [h.hex() for h in self.path],
            "checkpoint": self.checkpoint,
        }


class _Ticket:
    __slots__ = ("cursors", "done", "drafts", "error", "events")

    def __init__(self, drafts: Sequence[Draft], cursors: Mapping[str, int] | None) -> None:
        self.drafts = drafts
        self.cursors = cursors
        self.done = False
        self.events: list[Event] = []
        self.error: BaseException | None = None


class Ledger:
    """Append, read and verify events. Every write in a workspace goes through ``commit``."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, projections: Projections, *, read_only: bool = False
    ) -> None:
        self._con = con
        self._write = con.cursor()  # used only by the current commit leader
        self._local = threading.local()
        self.projections = projections
        self.read_only = read_only
        self._cv = threading.Condition()
        self._queue: list[_Ticket] = []
        self._leader = False
        self._listeners: list[CommitListener] = []
        self.transactions = 0  # how many DuckDB write transactions commit() has run (group commit shows here)
        # Seconds each recent write transaction took (host time, for health checks; never on the ledger).
        self.write_latencies: deque[float] = deque(maxlen=256)
        row = con.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        self._head_seq, self._head_hash = (int(row[0]), bytes(row[1])) if row else (0, GENESIS_HASH)
        self._tree = merkle.MerkleTree()
        self._tree_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------------------
    def reader(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB cursor for the calling thread (DuckDB connections must not be shared across threads)."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    @property
    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last durable event; (0, 32 zero bytes) for an empty ledger."""
        with self._cv:
            return self._head_seq, self._head_hash

    def __len__(self) -> int:
        return self.head[0]

    def events(
        self, *, since: int = 0, until: int | None = None, topic: str | None = None, limit: int | None = None
    ) -> list[Event]:
        """Events with ``since < seq <= until`` (and a topic glob), in ledger order."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ?"
        params: list[Any] = [since]
        if until is not None:
            sql += " AND seq <= ?"
            params.append(until)
        if topic is not None:
            sql += " AND topic GLOB ?"
            params.append(topic)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_row_event(r) for r in self.reader().execute(sql, params).fetchall()]

    def get(self, event_id: str) -> Event:
        row = (
            self.reader().execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", [event_id]).fetchone()
        )
        if row is None:
            raise LedgerError(f"no event with id {event_id!r}")
        return _row_event(row)

    def at(self, seq: int) -> Event:
        row = self.reader().execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq = ?", [seq]).fetchone()
        if row is None:
            raise LedgerError(f"no event at seq {seq} (the ledger holds 1..{self.head[0]})")
        return _row_event(row)

    def frame(self, *, since: int = 0, topic: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """The ledger as a DataFrame (payload parsed into a dict column), newest last."""
        sql = (
            "SELECT seq, id, ts, topic, actor, resource, payload, parent_id, correlation_id, hex(hash) AS hash "
            "FROM events WHERE seq > ?"
        )
        params: list[Any] = [since]
        if topic is not None:
            sql += " AND topic GLOB ?"
            params.append(topic)
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT {int(limit)})"
        df = self.reader().execute(sql + " ORDER BY seq", params).df()
        df["payload"] = df["payload"].map(_json_loads)
        return df

    def counts_per_bucket(
        self, series: Mapping[str, str], *, since: datetime, bucket_s: int = 60
    ) -> pd.DataFrame:
        """Events per ``bucket_s`` seconds from ``since`` on: column ``t`` (the bucket's start), then one count
        column per ``series`` entry (column name -> topic glob), oldest bucket first; buckets with no event
        are left out. One scan of the window, however many series."""
        cases = ", ".join(f"count(*) FILTER (WHERE topic GLOB ?) AS {_quoted(name)}" for name in series)
        return (
            self.reader()
            .execute(
                f"SELECT time_bucket(INTERVAL '{int(bucket_s)} seconds', ts) AS t, {cases} FROM events "
                "WHERE ts >= ? GROUP BY t ORDER BY t",
                [*series.values(), since],
            )
            .df()
        )

    # -- writing ---------------------------------------------------------------------------------------------
    def add_commit_listener(self, listener: CommitListener) -> None:
        """Called by the committing thread right after each durable batch, in ledger order."""
        self._listeners.append(listener)

    def commit(self, drafts: Sequence[Draft], *, cursors: Mapping[str, int] | None = None) -> list[Event]:
        """Append drafts (and move cursors) durably; returns when their batch is committed.

        Group commit without a writer thread: the first caller to find no commit in progress becomes the
        leader and writes every ticket queued so far in one transaction; the others wait for it. A single
        caller therefore commits at once, and concurrent callers share transactions.
        """
        if self.read_only:
            raise ReadOnlyError("this workspace is a read-only snapshot; nothing can be written")
        ticket = _Ticket(drafts, cursors)
        with self._cv:
            self._queue.append(ticket)
            while not ticket.done and self._leader:
                self._cv.wait()
            if ticket.done:
                return self._result(ticket)
            self._leader = True
            batch, self._queue = self._queue, []
        try:
            self._write_batch(batch)
        finally:
            with self._cv:
                self._leader = False
                self._cv.notify_all()
        return self._result(ticket)

    @staticmethod
    def _result(ticket: _Ticket) -> list[Event]:
        if ticket.error is not None:
            if isinstance(ticket.error, LedgerError | EventError):
                raise ticket.error
            raise LedgerError(f"the write failed and nothing was written: {ticket.error}") from ticket.error
        return ticket.events

    def _write_batch(self, batch: list[_Ticket]) -> None:
        try:
            events, cursors, seq, prev = self._chain(batch)
            started = time.perf_counter()
            self._transaction(events, cursors)
            self.write_latencies.append(time.perf_counter() - started)
        except BaseException as exc:
            # Every ticket in the batch gets the error (nothing was written); none may be left waiting.
            for ticket in batch:
                ticket.events = []
                ticket.error = exc
                ticket.done = True
            if not isinstance(exc, Exception):
                raise
            return
        with self._cv:
            self._head_seq, self._head_hash = seq, prev
            for ticket in batch:
                ticket.done = True
        if events:
            for listener in self._listeners:
                try:
                    listener(events)
                except Exception:  # the events are durable: a listener's bug must not fail their publisher
                    log.exception("commit listener %r failed", listener)

    def _chain(self, batch: list[_Ticket]) -> tuple[list[Event], dict[str, int], int, bytes]:
        seq, prev = self._head_seq, self._head_hash
        events: list[Event] = []
        cursors: dict[str, int] = {}
        sha = hashlib.sha256
        for ticket in batch:
            out = ticket.events
            for d in ticket.drafts:
                seq += 1
                # record_bytes() inlined: this loop is the append hot path.
                digest = sha(
                    prev
                    + (
                        f"grace.event.v1\x1f{seq}\x1f{d.id}\x1f{d.ts_us}\x1f{d.topic}\x1f{d.actor}\x1f"
                        f"{NULL if d.resource is None else d.resource}\x1f"
                        f"{NULL if d.parent_id is None else d.parent_id}\x1f{d.correlation_id}\x1f{d.payload_json}"
                    ).encode()
                ).digest()
                out.append(
                    Event(
                        seq,
                        d.id,
                        d.ts_us,
                        d.topic,
                        d.actor,
                        d.resource,
                        d.payload_json,
                        d.parent_id,
                        d.correlation_id,
                        prev,
                        digest,
                    )
                )
                prev = digest
            events.extend(out)
            if ticket.cursors:
                cursors.update(ticket.cursors)
        return events, cursors, seq, prev

    def _transaction(self, events: list[Event], cursors: Mapping[str, int]) -> None:
        con = self._write
        con.execute("BEGIN TRANSACTION")
        try:
            if len(events) <= _SMALL_BATCH:
                # A few rows: one parameterised VALUES insert costs about half an Arrow register + scan.
                if events:
                    values = ", ".join([_ROW_SQL] * len(events))
                    con.execute(f"INSERT INTO events VALUES {values}", [v for e in events for v in e])
            else:
                con.register("_grace_batch", _arrow(events))
                try:
                    con.execute("INSERT INTO events SELECT * FROM _grace_batch")
                finally:
                    con.unregister("_grace_batch")
            if events:
                self.projections.apply(con, events)
            for name, seq in cursors.items():
                # UPDATE first: DuckDB's ON CONFLICT upsert costs about three times a plain update, and a loop
                # moves its cursor on every tick; only a new cursor needs the insert.
                updated = con.execute("UPDATE cursors SET seq = ? WHERE name = ?", [seq, name]).fetchone()
                if not updated or not updated[0]:
                    con.execute("INSERT INTO cursors VALUES (?, ?)", [name, seq])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.transactions += 1

    def import_from(self, source: Ledger, *, progress: bool = False, chunk: int = 50_000) -> int:
        """Copy another ledger's events verbatim into this empty one, checking the chain on the way and
        rebuilding every projection batch by batch (replay). Returns the number of events copied."""
        if self.head[0] != 0:
            raise LedgerError("replay needs an empty ledger")
        seq, prev = 0, GENESIS_HASH
        total = source.head[0]
        bar = _progress(total=total, desc="replay", enabled=progress)
        try:
            while seq < total:
                batch = source.events(since=seq, until=total, limit=chunk)
                for ev in batch:
                    if (
                        ev.seq != seq + 1
                        or ev.prev_hash != prev
                        or hashlib.sha256(prev + ev.record()).digest() != ev.hash
                    ):
                        raise LedgerError(f"the source ledger is broken at seq {seq + 1}; verify it first")
                    seq, prev = ev.seq, ev.hash
                with self._cv:
                    self._transaction(batch, {})
                    self._head_seq, self._head_hash = seq, prev
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        return seq

    def cursor(self, name: str) -> int:
        row = self.reader().execute("SELECT seq FROM cursors WHERE name = ?", [name]).fetchone()
        return int(row[0]) if row else 0

    # -- verification ----------------------------------------------------------------------------------------
    def records(
        self, *, since: int = 0, until: int | None = None, chunk: int = 100_000
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of (seq, record, prev_hash, hash) in ledger order, the record rebuilt from the columns."""
        sql = f"SELECT seq, {RECORD_SQL} AS record, prev_hash, hash FROM events WHERE seq > ?"
        params: list[Any] = [since]
        if until is not None:
            sql += " AND seq <= ?"
            params.append(until)
        reader = self.reader().execute(sql + " ORDER BY seq, rowid", params).to_arrow_reader(chunk)
        yield from reader

    def verify(self, *, progress: bool = False) -> VerifyReport:
        """Recompute every hash from the stored columns; report the first seq that does not match.

        Stored hashes are never trusted. Each link is checked on its own: row i's hash must equal
        sha256(prev_hash_i || record_i), with the record rebuilt by DuckDB from the columns, and prev_hash_i
        must equal row i-1's hash (the genesis hash for row 1), for seqs 1..n without gaps or repeats. By
        induction that is exactly the sequential recomputation of the chain, but DuckDB checks all links
        at once on every core. Signed checkpoints then pin the chain: a checkpoint's chain hash must equal
        the (verified) hash at its size, so a rewritten or truncated tail is caught too.
        """
        started = time.perf_counter()
        committed = self.head[0]  # read before the scan: every event counted here is visible to it
        bar = _progress(total=committed, desc="verify", enabled=progress)
        try:
            size, bad_at, why = self._check_links()
        finally:
            if bar is not None:
                bar.update(self.head[0])
                bar.close()
        if bad_at is not None:
            return self._report(False, bad_at - 1, bad_at, why, started)
        if size < committed:
            # A deleted tail leaves a consistent chain; this process still knows how long it was.
            why = f"ledger truncated: {committed} events were committed, only {size} remain"
            return self._report(False, size, size + 1, why, started)
        try:
            checkpoints = self._signed_checkpoints()
        except SignatureError as exc:
            return self._report(False, size, size + 1, str(exc), started)
        for cp_size, chain_hash in checkpoints:
            if cp_size > size:
                return self._report(
                    False,
                    size,
                    size + 1,
                    f"ledger truncated: a signed checkpoint covers {cp_size} events, only {size} remain",
                    started,
                )
            if self.chain_hash(cp_size) != chain_hash:
                why = f"the chain differs from the checkpoint of size {cp_size} (signed)"
                return self._report(False, size, cp_size, why, started)
        return VerifyReport(
            True, size, checkpoints_checked=len(checkpoints), seconds=time.perf_counter() - started
        )

    def _signed_checkpoints(self) -> list[tuple[int, bytes]]:
        """(size, chain hash) of every recorded checkpoint, read from its signed note, never from columns."""
        cur = self.reader()
        keys = [str(r[0]) for r in cur.execute("SELECT verifier_key FROM signing_keys").fetchall()]
        out = []
        for (note,) in cur.execute("SELECT note FROM checkpoints ORDER BY size").fetchall():
            cp = None
            for key in keys:
                try:
                    cp = merkle.open_checkpoint(str(note), verifier_key=key)
                    break
                except SignatureError:
                    continue
            if cp is None:
                raise SignatureError("a recorded checkpoint is not signed by any key on the ledger")
            chain = [e.split(" ", 1)[1] for e in cp.extensions if e.startswith("chain ")]
            if len(chain) != 1:
                raise SignatureError(f"the signed checkpoint of size {cp.size} has no chain line")
            out.append((cp.size, bytes.fromhex(chain[0])))
        return out

    def _check_links(self) -> tuple[int, int | None, str]:
        """(events, first bad seq or None, why). A fast parallel pass; a precise ordered pass only if broken."""
        cur = self.reader()
        row = cur.execute(
            f"""
            SELECT count(*), coalesce(min(seq), 1), coalesce(max(seq), 0),
                   min(seq) FILTER (WHERE sha256(prev_hash || {RECORD_SQL}) IS DISTINCT FROM lower(hex(hash))
                                    OR resource = chr(30) OR parent_id = chr(30)),
                   (SELECT min(a.seq) FROM events a LEFT JOIN events b ON b.seq = a.seq - 1
                    WHERE a.prev_hash IS DISTINCT FROM (CASE WHEN a.seq = 1 THEN ?::BLOB ELSE b.hash END))
            FROM events""",
            [GENESIS_HASH],
        ).fetchone()
        assert row is not None
        count, bottom, top, altered, unlinked = row
        # n rows numbered 1..n with every row linked to the row numbered one less: no gap (the join would
        # find no predecessor), no repeat (n rows could not reach n), no reordering (the hashes cover seq).
        if count == top and bottom == 1 and altered is None and unlinked is None:
            return int(count), None, ""
        # Something is wrong: find the first bad row in ledger order, and say what is wrong with it.
        bad = cur.execute(
            f"""
            SELECT pos, seq, prev_hash IS DISTINCT FROM link,
                   sha256(prev_hash || {RECORD_SQL}) IS DISTINCT FROM lower(hex(hash))
            FROM (SELECT *, row_number() OVER w AS pos, lag(hash, 1, ?::BLOB) OVER w AS link
                  FROM events WINDOW w AS (ORDER BY seq, rowid))
            WHERE seq IS DISTINCT FROM pos OR prev_hash IS DISTINCT FROM link
               OR resource = chr(30) OR parent_id = chr(30)
               OR sha256(prev_hash || {RECORD_SQL}) IS DISTINCT FROM lower(hex(hash))
            ORDER BY pos LIMIT 1""",
            [GENESIS_HASH],
        ).fetchone()
        if bad is None:
            return int(count), int(count) + 1, "the ledger ends early"
        pos, seq, unlinked_row, altered_row = int(bad[0]), bad[1], bool(bad[2]), bool(bad[3])
        if seq is None or seq > pos:
            why = f"event {pos} is missing"
        elif seq < pos:
            # Ordered by seq, a seq below its position is a repeat: name the repeated seq, not the row after.
            return int(count), int(seq), f"event {seq} appears twice"
        elif altered_row:
            why = "contents do not match the hash"
        elif unlinked_row:
            why = "prev_hash does not link to the event before"
        else:
            why = "a field holds the reserved NULL marker"
        return int(count), pos, why

    @staticmethod
    def _report(ok: bool, size: int, seq: int, reason: str, started: float) -> VerifyReport:
        return VerifyReport(ok, size, seq, reason, seconds=time.perf_counter() - started)

    # -- Merkle tree, checkpoints, proofs ----------------------------------------------------------------------
    def merkle_tree(self, size: int | None = None) -> merkle.MerkleTree:
        """The RFC 6962 tree over event records, grown incrementally from the table (cached in memory)."""
        head = self.head[0]
        size = head if size is None else size
        if not 0 <= size <= head:
            raise LedgerError(f"the ledger has {head} events; no tree of size {size}")
        with self._tree_lock:
            if self._tree.size < size:
                for batch in self.records(since=self._tree.size, until=head):
                    self._tree.extend(batch.column(1).to_pylist())
            return self._tree

    def chain_hash(self, seq: int) -> bytes:
        if seq == 0:
            return GENESIS_HASH
        row = self.reader().execute("SELECT hash FROM events WHERE seq = ?", [seq]).fetchone()
        if row is None:
            raise LedgerError(f"no event at seq {seq}")
        return bytes(row[0])

    def make_checkpoint(self, *, origin: str, size: int | None = None) -> merkle.Checkpoint:
        """The (unsigned) checkpoint of the first ``size`` events; the chain hash rides as an extension line."""
        size = self.head[0] if size is None else size
        tree = self.merkle_tree(size)
        return merkle.Checkpoint(
            origin=origin,
            size=size,
            root=tree.root(size),
            extensions=(f"chain {self.chain_hash(size).hex()}",),
        )

    def inclusion_proof(self, seq: int, *, checkpoint: str, size: int) -> InclusionProof:
        if not 1 <= seq <= size:
            raise LedgerError(f"seq {seq} is not covered by a checkpoint of size {size}")
        tree = self.merkle_tree(size)
        leaf = self.at(seq).record()
        return InclusionProof(
            seq, leaf, seq - 1, size, tuple(tree.inclusion_proof(seq - 1, size)), checkpoint
        )

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.merkle_tree(new_size).consistency_proof(old_size, new_size)


def _row_event(row: tuple[Any, ...]) -> Event:
    seq, id_, ts_us, topic, actor, resource, payload, parent, corr, prev, h = row
    return Event(
        int(seq), id_, int(ts_us), topic, actor, resource, payload, parent, corr, bytes(prev), bytes(h)
    )


def _arrow(events: list[Event]) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array([e.seq for e in events], pa.int64()),
            pa.array([e.id for e in events], pa.string()),
            pa.array([e.ts_us for e in events], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            pa.array([e.topic for e in events], pa.string()),
            pa.array([e.actor for e in events], pa.string()),
            pa.array([e.resource for e in events], pa.string()),
            pa.array([e.payload_json for e in events], pa.string()),
            pa.array([e.parent_id for e in events], pa.string()),
            pa.array([e.correlation_id for e in events], pa.string()),
            pa.array([e.prev_hash for e in events], pa.binary()),
            pa.array([e.hash for e in events], pa.binary()),
        ],
        schema=EVENTS_ARROW_SCHEMA,
    )


def _quoted(name: str) -> str:
    """``name`` as a quoted SQL identifier (a column name chosen by the caller)."""
    return '"' + name.replace('"', '""') + '"'


def _json_loads(text: str) -> Any:
    import json

    return json.loads(text)


def _progress(*, total: int, desc: str, enabled: bool) -> tqdm[Any] | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ev", unit_scale=True)
