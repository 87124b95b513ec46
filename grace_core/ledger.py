"""The ledger: one append-only, hash-chained events table with group commit, verification and proofs."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from .times import TS

if TYPE_CHECKING:
    from tqdm import tqdm

    from .witness import Witnessed, WitnessLog

__all__ = [
    "ALTERED",
    "REWRITTEN",
    "SHORTENED",
    "SIGNATURE",
    "WITNESS",
    "InclusionProof",
    "Ledger",
    "VerifyReport",
    "checkpoint_chain_hash",
    "open_signed_checkpoint",
]

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
_POINT_LOOKUPS = 16  # up to this many rows are fetched by seq one by one (in one statement), more by one scan
_ROW_SQL = f"(?, ?, {TS}, ?, ?, ?, ?, ?, ?, ?, ?)"
CommitListener = Callable[[list[Event]], None]
_Hashes = Callable[[Iterable[int]], dict[int, bytes]]  # chain hashes at the given seqs
log = logging.getLogger(__name__)


# What a failed verification found (``VerifyReport.problem``).
ALTERED = "altered"  # a row does not match its hash or its neighbours: the chain itself is broken
SHORTENED = "shortened"  # events that this process committed, or a witness saw, are gone
REWRITTEN = "rewritten"  # the chain links, but differs from a signed or witnessed checkpoint
SIGNATURE = (
    "signature"  # a checkpoint event is not signed by a key published before it, or not what it signed
)
WITNESS = "witness"  # a witness cannot be read, or belongs to another workspace
CHECKPOINT_TOPIC = "ledger.checkpoint"
KEY_TOPIC = "ledger.key_published"


@dataclass(frozen=True)
class VerifyReport:
    """The result of ``Ledger.verify``: ``ok``, or the first bad seq, why, and which ``problem`` it is."""

    ok: bool
    size: int
    first_bad_seq: int | None = None
    reason: str | None = None
    checkpoints_checked: int = 0
    seconds: float = 0.0
    problem: str | None = None
    witnessed: int = 0  # witnessed checkpoints (distinct sizes) the chain matches
    witnesses: tuple[str, ...] = ()  # the witness files found and consulted

    def __str__(self) -> str:
        if self.ok:
            n = self.checkpoints_checked
            text = f"ledger intact: {self.size} events, " + (
                f"{n} signed checkpoint matches" if n == 1 else f"{n} signed checkpoints match"
            )
            if self.witnesses:
                w = self.witnessed
                text += (
                    f", {w} witnessed checkpoint matches" if w == 1 else f", {w} witnessed checkpoints match"
                )
            return text
        if self.first_bad_seq is None:
            return f"ledger not verified: {self.reason}"
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
        if not cursors and 0 < len(events) <= _SMALL_BATCH and not self.projections.touch(events):
            # One statement (a governance decision, a model call, a notification): atomic on its own, and
            # BEGIN + COMMIT would cost about as much again as the insert.
            values = ", ".join([_ROW_SQL] * len(events))
            con.execute(f"INSERT INTO events VALUES {values}", [v for e in events for v in e])
            self.transactions += 1
            return
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

    def verify(
        self,
        *,
        progress: bool = False,
        witnesses: Sequence[WitnessLog] = (),
        origin: str | None = None,
        may_be_behind: bool = False,
    ) -> VerifyReport:
        """Recompute every hash from the stored columns; report the first seq that does not match.

        Stored hashes are never trusted. Each link is checked on its own: row i's hash must equal
        sha256(prev_hash_i || record_i), with the record rebuilt by DuckDB from the columns, and prev_hash_i
        must equal row i-1's hash (the genesis hash for row 1), for seqs 1..n without gaps or repeats. By
        induction that is exactly the sequential recomputation of the chain, but DuckDB checks all links
        at once on every core.

        Then the chain is held against checkpoints: the ``witnesses`` (copies kept outside the workspace; a
        witnessed checkpoint must match the chain at its size, and the ledger must not be shorter than the
        largest, unless ``may_be_behind``: a snapshot copy), then the ``ledger.checkpoint`` events on the chain
        itself (each signed by a key published on the chain before it). The ``checkpoints`` and
        ``signing_keys`` tables are projections and are never read here.
        """
        started = time.perf_counter()
        committed = self.head[0]  # read before the scan: every event counted here is visible to it
        bar = _progress(total=committed, desc="verify", enabled=progress)
        try:
            size, bad_at, why, marked = self._check_links()
        finally:
            if bar is not None:
                bar.update(self.head[0])
                bar.close()
        paths = tuple(log.path for log in witnesses if log.exists)

        def fail(problem: str, seq: int | None, reason: str) -> VerifyReport:
            seconds = time.perf_counter() - started
            intact = size if problem != ALTERED or seq is None else seq - 1  # the events known good
            return VerifyReport(False, intact, seq, reason, seconds=seconds, problem=problem, witnesses=paths)

        if bad_at is not None:
            return fail(ALTERED, bad_at, why)
        if size < committed:
            # A deleted tail leaves a consistent chain; this process still knows how long it was.
            why = f"ledger truncated: {committed} events were committed, only {size} remain"
            return fail(SHORTENED, size + 1, why)
        for log in witnesses:
            if log.problem:
                return fail(WITNESS, None, log.problem)
            if origin is not None and log.origin is not None and log.origin != origin:
                why = f"the witness {log.path} belongs to workspace {log.origin}, not to this one ({origin})"
                return fail(WITNESS, None, why)
        # The checkpoint and key events, with prev_hash: a verified link, so the chain hash at seq - 1, which is
        # the size a checkpoint event usually covers.
        rows = self._rows_at(marked, "seq, topic, payload, prev_hash")
        known = {int(r[0]) - 1: bytes(r[3]) for r in rows}

        def hashes_at(seqs: Iterable[int]) -> dict[int, bytes]:
            wanted = set(seqs)
            missing = wanted - known.keys()
            found = self.chain_hashes(missing) if missing else {}
            return {s: known[s] for s in wanted & known.keys()} | found

        witnessed = [(log.path, w) for log in witnesses for w in log.checkpoints]
        problem = self._against_witnesses(size, witnessed, hashes_at, may_be_behind=may_be_behind)
        if problem is not None:
            return fail(*problem)
        checked, problem = self._against_checkpoint_events(rows, hashes_at)
        if problem is not None:
            return fail(*problem)
        seen = {w.size for _, w in witnessed if w.size <= size}  # each once, however many witnesses hold it
        seconds = time.perf_counter() - started
        return VerifyReport(
            True, size, checkpoints_checked=checked, seconds=seconds, witnessed=len(seen), witnesses=paths
        )

    def _against_witnesses(
        self, size: int, witnessed: list[tuple[str, Witnessed]], hashes_at: _Hashes, *, may_be_behind: bool
    ) -> tuple[str, int, str] | None:
        """(problem, first bad seq, why) if the chain of ``size`` events is not what the witnesses saw."""
        if not witnessed:
            return None
        inside = [(path, w) for path, w in witnessed if w.size <= size]
        stored = hashes_at(w.size for _, w in inside)
        differs = sorted(
            ((w.size, path, w) for path, w in inside if stored[w.size] != w.chain_hash), key=_first
        )
        beyond = max(((w.size, path, w) for path, w in witnessed if w.size > size), key=_first, default=None)
        if not differs and (beyond is None or may_be_behind):
            return None
        # Known to differ: the smallest differing checkpoint's size, or else the first missing event. Known to
        # match: the largest witnessed size below it. Marks (witnessed chain-hash prefixes) narrow the gap; a
        # chain hash pins every event before it, so the first mark that differs is the first changed event.
        hi = differs[0][0] if differs else size + 1
        lo = max((w.size for _, w in inside if w.size < hi and stored[w.size] == w.chain_hash), default=0)
        marks = sorted({m for _, w in witnessed for m in w.marks() if lo < m[0] < hi and m[0] <= size})
        # Binary search: a mark matches exactly when no event up to it changed, so matches come first.
        first, last = 0, len(marks)
        while first < last:
            mid = (first + last) // 2
            seq, prefix = marks[mid]
            if self.chain_hash(seq)[: len(prefix)] == prefix:
                first = mid + 1
            else:
                last = mid
        if first:
            lo = marks[first - 1][0]
        changed = bool(differs) or first < len(marks)
        if first < len(marks):
            hi = marks[first][0]
        span = f"seq {hi}" if hi == lo + 1 else f"a seq in {lo + 1}..{hi}"
        if differs:
            _, path, w = differs[0]
            why = f"the chain was rewritten from {span}: it differs from the checkpoint of size {w.size}"
            return REWRITTEN, hi, f"{why} witnessed on {w.when} ({path})"
        assert beyond is not None
        _, path, w = beyond
        why = f"ledger has {size} events but a checkpoint of size {w.size} was witnessed on {w.when} ({path})"
        if changed:
            return REWRITTEN, hi, f"{why}, and it differs from the witness from {span}"
        if lo < size:
            why += f"; the witness confirms the events up to seq {lo}"
        return SHORTENED, size + 1, why

    def _against_checkpoint_events(
        self, rows: list[tuple[Any, ...]], hashes_at: _Hashes
    ) -> tuple[int, tuple[str, int, str] | None]:
        """(checkpoints checked, problem) for the ``ledger.checkpoint`` events (``rows``: seq, topic, payload, ...
        of them and of the key events, from the verified chain)."""
        keys: list[str] = []
        pins: list[tuple[int, int, bytes]] = []  # (size, seq of the checkpoint event, signed chain hash)
        unsigned: list[
            tuple[int, int, bytes | None]
        ] = []  # the same, as claimed by notes no published key signed
        for seq, topic, payload, *_ in rows:
            body = _json_loads(payload)
            if topic == KEY_TOPIC:
                if isinstance(body.get("verifier_key"), str):
                    keys.append(body["verifier_key"])
                continue
            cp = open_signed_checkpoint(body.get("note"), keys)
            if cp is None:
                unsigned.append(_claimed(body, seq))
                continue
            chain = checkpoint_chain_hash(cp)
            if chain is None or cp.size >= seq:
                return len(pins), (SIGNATURE, seq, f"the signed checkpoint at seq {seq} is malformed")
            recorded = (body.get("size"), body.get("root"), body.get("chain_hash"))
            if recorded != (cp.size, cp.root.hex(), chain.hex()):  # the projection would show forged values
                return len(pins), (
                    SIGNATURE,
                    seq,
                    f"the checkpoint at seq {seq} records other values than it signed",
                )
            pins.append((cp.size, seq, chain))
        # A note no published key verifies may mean a rewritten key event under it: where its own claim differs
        # from the chain, report the rewrite (with the signed pins, it is located best); else the signature.
        claims = pins + [(size, seq, chain) for size, seq, chain in unsigned if chain is not None]
        stored = hashes_at(p[0] for p in claims)
        bad = min((p for p in claims if stored[p[0]] != p[2]), default=None)
        if bad is None:
            if unsigned:
                seq = unsigned[0][1]
                why = f"the checkpoint at seq {seq} is not signed by a key published on the ledger before it"
                return len(pins), (SIGNATURE, seq, why)
            return len(pins), None
        lo = max((p[0] for p in claims if p[0] < bad[0] and stored[p[0]] == p[2]), default=0)
        span = f"seq {bad[0]}" if bad[0] == lo + 1 else f"a seq in {lo + 1}..{bad[0]}"
        why = f"the chain differs from the checkpoint of size {bad[0]} signed at seq {bad[1]}: rewritten from {span}"
        return len(pins), (REWRITTEN, bad[0], why)

    def _check_links(self) -> tuple[int, int | None, str, list[int]]:
        """(events, first bad seq or None, why, seqs of the checkpoint and key events). A fast parallel pass
        (which also collects those seqs, saving a scan); a precise ordered pass only if broken."""
        cur = self.reader()
        row = cur.execute(
            f"""
            SELECT count(*), coalesce(min(seq), 1), coalesce(max(seq), 0),
                   min(seq) FILTER (WHERE sha256(prev_hash || {RECORD_SQL}) IS DISTINCT FROM lower(hex(hash))
                                    OR resource = chr(30) OR parent_id = chr(30)),
                   (SELECT min(a.seq) FROM events a LEFT JOIN events b ON b.seq = a.seq - 1
                    WHERE a.prev_hash IS DISTINCT FROM (CASE WHEN a.seq = 1 THEN ?::BLOB ELSE b.hash END)),
                   list(seq) FILTER (WHERE topic IN (?, ?))
            FROM events""",
            [GENESIS_HASH, KEY_TOPIC, CHECKPOINT_TOPIC],
        ).fetchone()
        assert row is not None
        count, bottom, top, altered, unlinked, marked = row
        # n rows numbered 1..n with every row linked to the row numbered one less: no gap (the join would
        # find no predecessor), no repeat (n rows could not reach n), no reordering (the hashes cover seq).
        if count == top and bottom == 1 and altered is None and unlinked is None:
            return int(count), None, "", sorted(int(s) for s in marked or ())
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
            return int(count), int(count) + 1, "the ledger ends early", []
        pos, seq, unlinked_row, altered_row = int(bad[0]), bad[1], bool(bad[2]), bool(bad[3])
        if seq is None or seq > pos:
            why = f"event {pos} is missing"
        elif seq < pos:
            # Ordered by seq, a seq below its position is a repeat: name the repeated seq, not the row after.
            return int(count), int(seq), f"event {seq} appears twice", []
        elif altered_row:
            why = "contents do not match the hash"
        elif unlinked_row:
            why = "prev_hash does not link to the event before"
        else:
            why = "a field holds the reserved NULL marker"
        return int(count), pos, why, []

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

    def chain_hashes(self, seqs: Iterable[int]) -> dict[int, bytes]:
        """The stored hash of each of ``seqs`` that the ledger holds (seq 0: the genesis hash).

        A ``range`` of positive seqs is read in one scan of its span, however many it holds."""
        if isinstance(seqs, range) and seqs.step > 0 and seqs.start > 0:
            if not seqs:
                return {}
            rows = self.reader().execute(
                "SELECT seq, hash FROM events WHERE seq BETWEEN ? AND ? AND (seq - ?) % ? = 0",
                [seqs.start, seqs[-1], seqs.start, seqs.step],
            )
            return {int(seq): bytes(h) for seq, h in rows.fetchall()}
        wanted = sorted({int(s) for s in seqs})
        out = {0: GENESIS_HASH} if wanted and wanted[0] == 0 else {}
        out.update((int(r[0]), bytes(r[1])) for r in self._rows_at([s for s in wanted if s > 0], "seq, hash"))
        return out

    def _rows_at(self, seqs: Sequence[int], columns: str) -> list[tuple[Any, ...]]:
        """``columns`` of the rows with these seqs, in seq order."""
        if not seqs:
            return []
        if len(seqs) <= _POINT_LOOKUPS:
            # Each point select skips every row group but one by its zone map: far cheaper than any scan.
            sql = " UNION ALL ".join([f"SELECT {columns} FROM events WHERE seq = ?"] * len(seqs))
            params: list[Any] = list(seqs)
        else:
            sql = f"SELECT {columns} FROM events WHERE seq BETWEEN ? AND ? AND seq IN (SELECT unnest(?::BIGINT[]))"
            params = [min(seqs), max(seqs), list(seqs)]
        return sorted(self.reader().execute(sql, params).fetchall(), key=lambda r: int(r[0]))

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


def _claimed(body: Mapping[str, Any], seq: int) -> tuple[int, int, bytes | None]:
    """(size, seq, chain hash) as a checkpoint event's payload states them (None when they cannot hold)."""
    size, chain = body.get("size"), body.get("chain_hash")
    if not isinstance(size, int) or not 0 <= size < seq or not isinstance(chain, str):
        return 0, seq, None
    try:
        value = bytes.fromhex(chain)
    except ValueError:
        return 0, seq, None
    return size, seq, value if len(value) == len(GENESIS_HASH) else None


def _first(item: tuple[int, Any, Any]) -> int:
    return item[0]


def open_signed_checkpoint(note: object, keys: Iterable[str]) -> merkle.Checkpoint | None:
    """The checkpoint in a signed note if one of ``keys`` (note verifier keys) signed it, else None."""
    if not isinstance(note, str):
        return None
    for key in keys:
        try:
            return merkle.open_checkpoint(note, verifier_key=key)
        except SignatureError:
            continue
    return None


def checkpoint_chain_hash(cp: merkle.Checkpoint) -> bytes | None:
    """The chain hash a checkpoint carries in its one ``chain <hex>`` extension line."""
    chain = [e.split(" ", 1)[1] for e in cp.extensions if e.startswith("chain ")]
    if len(chain) != 1:
        return None
    try:
        value = bytes.fromhex(chain[0])
    except ValueError:
        return None
    return value if len(value) == len(GENESIS_HASH) else None


def _json_loads(text: str) -> Any:
    import json

    return json.loads(text)


def _progress(*, total: int, desc: str, enabled: bool) -> tqdm[Any] | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ev", unit_scale=True)
