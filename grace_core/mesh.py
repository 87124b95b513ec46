"""The trigger mesh: publish/subscribe over the ledger, with causal context, retries and dead letters.

Delivery is at-least-once. Live subscribers get events after they are durable, in ledger order, each
subscriber in turn; a failing handler is retried with exponential backoff and, after the last attempt, the
delivery becomes a dead letter (a ``mesh.delivery_failed`` event and a row in ``dead_letters``) that can be
replayed. Durable subscribers keep a cursor in the workspace and, after a restart, resume from it: an event
whose handling finished before the crash but whose cursor move did not is delivered again, so durable handlers
must be idempotent.

Two delivery modes share all of this. ``threaded`` (live runs) delivers on one dispatcher thread, so a slow
handler never holds up a publisher. Inline (deterministic runs on a ManualClock) delivers in the publishing
thread once the outermost publish has committed, breadth-first, so the same inputs give the same ledger.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .causal import current_event, handling
from .clock import Clock
from .errors import EventError, SubscriptionError
from .events import MAX_PAYLOAD_BYTES, Draft, Event, canonical_json, check_name, check_topic
from .ledger import Ledger
from .projections import topic_matcher
from .times import TS, to_us

__all__ = ["Handler", "Mesh", "Message", "Subscription"]

log = logging.getLogger(__name__)
Handler = Callable[[Event], Any]


@dataclass(frozen=True)
class Message:
    """One event to publish with ``publish_many``; its cause is the event being handled when it is made."""

    topic: str
    payload: Mapping[str, Any] | None = None
    resource: str | None = None
    cause: Event | None = field(default_factory=current_event, repr=False)


class Subscription:
    """A subscriber: a pattern, a handler, and where it is in the ledger."""

    def __init__(self, mesh: Mesh, name: str, pattern: str, handler: Handler, *, durable: bool) -> None:
        self.name = name
        self.pattern = pattern
        self.handler = handler
        self.durable = durable
        self.matches = topic_matcher(pattern)
        self.delivered = 0
        self.failures = 0
        self.active = True
        self._pending: deque[Event] = deque()  # live subscribers: matching events not yet handled
        self._attempt = 0
        self._retry_at: float | None = None
        self.cursor = mesh.ledger.cursor(self.cursor_name) if durable else 0  # durable: last seq handled
        self._scanned = self.cursor  # durable: the ledger has no matching event in (cursor, scanned]
        self._saved = self.cursor

    @property
    def cursor_name(self) -> str:
        return f"mesh:{self.name}"

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def __repr__(self) -> str:
        kind = "durable" if self.durable else "live"
        return f"<Subscription {self.name!r} {self.pattern!r} {kind} delivered={self.delivered}>"


class Mesh:
    """Publish events onto the ledger and deliver them to subscribers whose pattern matches."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        *,
        threaded: bool,
        seed: int | None = None,
        max_attempts: int = 5,
        backoff: float = 0.1,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.threaded = threaded
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_payload_bytes = max_payload_bytes
        # Ids come from a PRNG: ids must be unique, not unguessable, and uuid4() costs a system call each.
        # Seeded, they repeat run to run and continue from the ledger head, so reopening with the same seed
        # never reuses an id; unseeded, the generator starts from 256 random bits.
        head_seq, head_hash = ledger.head
        basis = f"{seed}:{head_seq}:{head_hash.hex()}" if seed is not None else os.urandom(32)
        self._rng = random.Random(basis)  # noqa: S311 - ids, not secrets
        # Set by ws.modes while the workspace is read-only: called with a batch's topics, raises to refuse it.
        self.gate: Callable[[Sequence[str]], None] | None = None
        self._subs: list[Subscription] = []
        self._by_topic: dict[str, list[Subscription]] = {}
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._busy = False  # a pump is running (inline: on some thread; threaded: on the dispatcher)
        self._closed = False
        self._thread: threading.Thread | None = None
        ledger.add_commit_listener(self._on_commit)
        if threaded:
            self._thread = threading.Thread(target=self._run, name="grace-mesh-dispatcher", daemon=True)
            self._thread.start()

    # -- publishing ------------------------------------------------------------------------------------------
    def new_id(self) -> str:
        """A fresh event id (RFC 4122 version 4 layout): random, or from the workspace seed."""
        bits = self._rng.getrandbits(128)  # one C call: atomic under the GIL
        # Formatted by hand: uuid.UUID() costs a microsecond per event.
        h = f"{(bits & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def drafts(self, messages: Iterable[Message], *, actor: str) -> list[Draft]:
        """Validate and serialise messages into drafts; raises before anything is written.

        The clock is read once: the events of one ``publish_many`` share their publication instant.
        """
        check_name("actor", actor, required=True)
        ts_us = to_us(self.clock.time())
        limit = self.max_payload_bytes
        new_id = self.new_id
        out = []
        for m in messages:  # the append hot path: keep the per-message work minimal
            check_topic(m.topic)
            if m.resource is not None:
                check_name("resource", m.resource, required=False)
            payload = canonical_json(m.payload, limit=limit)
            event_id = new_id()
            cause = m.cause
            if cause is None:
                out.append(Draft(event_id, ts_us, m.topic, actor, m.resource, payload, None, event_id))
            else:
                out.append(
                    Draft(
                        event_id, ts_us, m.topic, actor, m.resource, payload, cause.id, cause.correlation_id
                    )
                )
        return out

    def publish(
        self, topic: str, payload: Mapping[str, Any] | None = None, *, actor: str, resource: str | None = None
    ) -> Event:
        """Append one event; returns it once durable. Its parent is the event being handled, if any."""
        return self.publish_many([Message(topic, payload, resource)], actor=actor)[0]

    def publish_many(
        self, messages: Iterable[Message], *, actor: str, cursors: Mapping[str, int] | None = None
    ) -> list[Event]:
        """Append many events in one transaction (all or none); returns once they are durable.

        ``cursors`` moves named cursors in the same transaction, so a loop's output and its progress land
        together.
        """
        if self._closed:
            raise EventError("the mesh is closed")
        drafts = self.drafts(messages, actor=actor)
        if self.gate is not None:
            self.gate([d.topic for d in drafts])
        events = self.ledger.commit(drafts, cursors=cursors)
        if not self.threaded:
            self.pump()
        return events

    # -- subscribing -----------------------------------------------------------------------------------------
    def subscribe(
        self, pattern: str, handler: Handler, *, name: str | None = None, durable: bool = False
    ) -> Subscription:
        """Call ``handler(event)`` for every durable event whose topic matches the glob ``pattern``.

        A durable subscriber needs a stable ``name``: its cursor is kept in the workspace under it, and it
        first catches up on every matching event after that cursor (from the start for a new name).
        """
        if durable and not name:
            raise SubscriptionError("a durable subscription needs a name (its cursor is stored under it)")
        name = name or getattr(handler, "__qualname__", None) or repr(handler)
        with self._lock:
            if any(s.name == name and s.active for s in self._subs):
                raise SubscriptionError(f"a subscriber named {name!r} exists already; pick another name")
            sub = Subscription(self, name, pattern, handler, durable=durable)
            self._subs.append(sub)
            self._by_topic.clear()
        if durable:
            self._kick()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            sub.active = False
            self._subs = [s for s in self._subs if s is not sub]
            self._by_topic.clear()

    @property
    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self._subs)

    def _on_commit(self, events: list[Event]) -> None:
        # Runs in the committing thread, in ledger order: only queue, never call handlers here.
        with self._lock:
            for event in events:
                targets = self._by_topic.get(event.topic)
                if targets is None:
                    targets = self._by_topic[event.topic] = [
                        s for s in self._subs if not s.durable and s.matches(event.topic)
                    ]
                for sub in targets:
                    sub._pending.append(event)
            # A caught-up durable subscriber need not ask the ledger about a batch none of whose topics it
            # matches: without this every publish costs one query per durable subscriber.
            first, last = events[0].seq, events[-1].seq
            for sub in self._subs:
                if (
                    sub.durable
                    and sub._scanned == first - 1
                    and not any(sub.matches(e.topic) for e in events)
                ):
                    sub._scanned = last
            self._wake.notify_all()

    # -- delivery --------------------------------------------------------------------------------------------
    def pump(self) -> int:
        """Deliver everything that is due now; returns the number of handler calls. Re-entrant calls return 0.

        Inline mode calls this after each publish and the scheduler after each clock step; threaded mode runs
        it on the dispatcher thread.
        """
        with self._lock:
            if self._busy:
                return 0
            self._busy = True
        calls = 0
        try:
            while True:
                progress = 0
                for sub in self.subscriptions:
                    progress += self._serve(sub)
                self._save_cursors()
                calls += progress
                if not progress:
                    return calls
        finally:
            with self._lock:
                self._busy = False
                self._wake.notify_all()

    def _next(self, sub: Subscription) -> Event | None:
        if not sub.durable:
            with self._lock:
                return sub._pending[0] if sub._pending else None
        if not sub._pending:
            # Fetched events are served before asking whether the ledger has more: ``_scanned`` already
            # counts the fetched page, so checking it first would strand all but one event of a catch-up.
            head = self.ledger.head[0]
            if sub._scanned >= head:
                return None
            page = self.ledger.events(since=sub.cursor, topic=sub.pattern, until=head, limit=500)
            sub._pending.extend(page)
            sub._scanned = page[-1].seq if len(page) == 500 else head
        return sub._pending[0] if sub._pending else None

    def _serve(self, sub: Subscription) -> int:
        calls = 0
        while sub.active:
            if sub._retry_at is not None and self.clock.time() < sub._retry_at:
                break
            event = self._next(sub)
            if event is None:
                break
            calls += 1
            try:
                with handling(event):
                    sub.handler(event)
            except Exception as exc:  # noqa: BLE001 - a handler's failure must never reach the publisher
                sub.failures += 1
                sub._attempt += 1
                if sub._attempt < self.max_attempts:
                    sub._retry_at = self.clock.time() + self.backoff * 2 ** (sub._attempt - 1)
                    break
                self._dead_letter(sub, event, exc)
            else:
                sub.delivered += 1
            sub._attempt, sub._retry_at = 0, None
            with self._lock:
                if sub._pending and sub._pending[0] is event:
                    sub._pending.popleft()
            if sub.durable:
                sub.cursor = event.seq
        return calls

    def _dead_letter(self, sub: Subscription, event: Event, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if event.topic == "mesh.delivery_failed":
            # A subscriber failing on failure reports would feed itself forever; log it instead.
            log.error("subscriber %s failed on a dead-letter report %s: %s", sub.name, event.id, error)
            return
        with handling(event):
            self.publish_many(
                [
                    Message(
                        "mesh.delivery_failed",
                        {
                            "subscriber": sub.name,
                            "event_id": event.id,
                            "event_seq": event.seq,
                            "topic": event.topic,
                            "attempts": self.max_attempts,
                            "error": error[:2000],
                        },
                    )
                ],
                actor="mesh",
            )

    def _save_cursors(self) -> None:
        moved = {s.cursor_name: s.cursor for s in self.subscriptions if s.durable and s.cursor != s._saved}
        if moved:
            self.ledger.commit([], cursors=moved)
            for s in self.subscriptions:
                if s.durable:
                    s._saved = s.cursor

    def _next_retry(self) -> float | None:
        times = [s._retry_at for s in self.subscriptions if s._retry_at is not None]
        return min(times) if times else None

    def _idle(self) -> bool:
        head = self.ledger.head[0]
        for s in self.subscriptions:
            if s._pending or s._retry_at is not None or (s.durable and s._scanned < head):
                return False
        return not self._busy

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every subscriber has handled every event (retries included); True when idle."""
        if not self.threaded:
            self.pump()
            return self._idle()
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            with self._wake:
                while not self._idle() and not deadline.is_set():
                    self._wake.notify_all()
                    self._wake.wait(0.05)
                return self._idle()
        finally:
            timer.cancel()

    def _kick(self) -> None:
        if self.threaded:
            with self._wake:
                self._wake.notify_all()
        else:
            self.pump()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._closed:
                    return
                retry = self._next_retry()
                timeout = 0.5 if retry is None else max(0.0, min(0.5, retry - self.clock.time()))
                if not self._has_work():
                    self._wake.wait(timeout)
                if self._closed:
                    return
            try:
                self.pump()
            except Exception:  # the dispatcher must survive anything (e.g. a database error) and go on
                log.exception("mesh dispatcher cycle failed")

    def _has_work(self) -> bool:
        head = self.ledger.head[0]
        now = self.clock.time()
        for s in self._subs:
            if s._retry_at is not None:
                if now >= s._retry_at:
                    return True
                continue
            if s._pending or (s.durable and s._scanned < head):
                return True
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Finish deliveries that are due, then stop the dispatcher."""
        if self._closed:
            return
        if self.threaded:
            self.drain(timeout=timeout)
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._save_cursors()

    # -- dead letters ----------------------------------------------------------------------------------------
    def dead_letters(self, *, include_replayed: bool = False) -> pd.DataFrame:
        sql = "SELECT * FROM dead_letters"
        if not include_replayed:
            sql += " WHERE replayed_at IS NULL"
        return self.ledger.reader().execute(sql + " ORDER BY ts").df()

    def replay_dead_letters(self, ids: Iterable[str] | None = None) -> int:
        """Deliver dead letters again to their (currently subscribed) subscriber; returns how many succeeded.

        Each success is a ``mesh.dead_letter_replayed`` event; a failure stays a dead letter.
        """
        df = self.dead_letters()
        if ids is not None:
            df = df[df["event_id"].isin(list(ids))]
        by_name = {s.name: s for s in self.subscriptions}
        done = 0
        for row in df.to_dict("records"):
            sub = by_name.get(row["subscriber"])
            if sub is None:
                log.warning(
                    "dead letter %s: subscriber %s is not subscribed now", row["event_id"], row["subscriber"]
                )
                continue
            event = self.ledger.get(row["failed_event_id"])
            try:
                with handling(event):
                    sub.handler(event)
            except Exception as exc:  # noqa: BLE001 - still failing: it stays a dead letter
                log.warning("dead letter %s still fails: %s", row["event_id"], exc)
                continue
            with handling(event):
                self.publish(
                    "mesh.dead_letter_replayed",
                    {"dead_letter": row["event_id"], "subscriber": row["subscriber"]},
                    actor="mesh",
                )
            done += 1
        return done


def apply_dead_letters(con: Any, events: list[Event]) -> None:
    """Projection: ``dead_letters`` from ``mesh.delivery_failed`` / ``mesh.dead_letter_replayed``."""
    for e in events:
        p = e.payload
        if e.topic == "mesh.delivery_failed":
            con.execute(
                f"INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, {TS}, NULL)",
                [
                    e.id,
                    p["event_id"],
                    p["event_seq"],
                    p["topic"],
                    p["subscriber"],
                    p["attempts"],
                    p["error"],
                    e.ts_us,
                ],
            )
        elif e.topic == "mesh.dead_letter_replayed":
            con.execute(
                f"UPDATE dead_letters SET replayed_at = {TS} WHERE event_id = ?",
                [e.ts_us, p["dead_letter"]],
            )
