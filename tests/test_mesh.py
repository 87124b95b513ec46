"""The trigger mesh: glob routing, delivery after commit in ledger order, retries, dead letters, cursors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_core import Event, EventError, ManualClock, Message, Workspace, open_workspace
from grace_core.errors import SubscriptionError
from grace_core.projections import topic_matcher

MODES = ["deterministic", "live"]


def _open(mode: str, path: str | Path = ":memory:") -> Workspace:
    if mode == "deterministic":
        return open_workspace(path, clock=ManualClock(), seed=11)
    return open_workspace(path)  # SystemClock: delivery on the dispatcher thread


def _settle(ws: Workspace) -> None:
    assert ws.mesh.drain(timeout=10), "the mesh did not become idle"


def _run_out_retries(ws: Workspace) -> None:
    """Step simulated time far enough for every pending retry to run (each waits from its own failure)."""
    for _ in range(2 * ws.mesh.max_attempts):
        ws.clock.advance(2)  # type: ignore[attr-defined]
        ws.mesh.pump()


@pytest.fixture(params=MODES)
def any_ws(request: pytest.FixtureRequest) -> Iterator[Workspace]:
    ws = _open(request.param)
    assert ws.live == (request.param == "live")
    yield ws
    ws.close()


@pytest.fixture
def det_ws() -> Iterator[Workspace]:
    ws = _open("deterministic")
    yield ws
    ws.close()


# -- routing -------------------------------------------------------------------------------------------------
TOPICS = [
    "notes.item.created",
    "notes.items",
    "notes.item",
    "job.failed",
    "a.b.failed",
    "job.failed.twice",
    "job.done",
    "job.done.x",
    "job.don",
    "notes.item.version.added",
    "mesh_failed",
]
EXPECTED = {
    "notes.item.*": ["notes.item.created", "notes.item.version.added"],
    "*.failed": ["job.failed", "a.b.failed"],
    "job.done": ["job.done"],
    "job.???e": ["job.done"],
}


def test_glob_patterns_deliver_exactly_the_matching_events_in_ledger_order(any_ws: Workspace) -> None:
    ws = any_ws
    got: dict[str, list[Event]] = {p: [] for p in EXPECTED}
    readback: list[bool] = []

    def handler_for(pattern: str):
        def handle(event: Event) -> None:
            # Delivery happens after commit: the event is already readable from the ledger, as stored.
            readback.append(ws.ledger.get(event.id) == event and event.seq <= ws.ledger.head[0])
            got[pattern].append(event)

        return handle

    for pattern in EXPECTED:
        ws.subscribe(pattern, handler_for(pattern), name=f"sub:{pattern}")
    published = [ws.publish(t, {"n": i}, actor="tester") for i, t in enumerate(TOPICS)]
    _settle(ws)

    for pattern, topics in EXPECTED.items():
        assert [e.topic for e in got[pattern]] == topics, pattern
        seqs = [e.seq for e in got[pattern]]
        assert seqs == sorted(seqs)
        assert {e.id for e in got[pattern]} <= {e.id for e in published}
    assert len(readback) == sum(len(v) for v in EXPECTED.values())
    assert all(readback)
    subs = {s.name: s for s in ws.mesh.subscriptions}
    assert subs["sub:*.failed"].delivered == 2


def test_a_batch_is_delivered_only_after_the_whole_transaction_commits(any_ws: Workspace) -> None:
    ws = any_ws
    heads: list[int] = []
    ws.subscribe("batch.*", lambda e: heads.append(ws.ledger.head[0]), name="watcher")
    events = ws.publish_many([Message(f"batch.m{i}", {"i": i}) for i in range(5)], actor="tester")
    _settle(ws)
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 5))
    # Even the handler of the first event sees the last one on the ledger: nothing is delivered mid-batch.
    assert len(heads) == 5
    assert min(heads) >= events[-1].seq


def test_publisher_gets_events_in_ledger_order_from_concurrent_publishers() -> None:
    ws = _open("live")
    try:
        seen: list[int] = []
        ws.subscribe("load.*", lambda e: seen.append(e.seq), name="orderly")

        def publish_some(worker: int) -> None:
            for i in range(40):
                ws.publish(f"load.w{worker}", {"i": i}, actor=f"worker{worker}")

        threads = [threading.Thread(target=publish_some, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _settle(ws)
        expected = [e.seq for e in ws.ledger.events(topic="load.*")]
        assert len(expected) == 160
        assert seen == expected  # every event, once, in ledger order
    finally:
        ws.close()


def test_unsubscribed_handler_receives_nothing_more(any_ws: Workspace) -> None:
    ws = any_ws
    got: list[str] = []
    sub = ws.subscribe("x.*", lambda e: got.append(e.topic), name="leaver")
    ws.publish("x.one", actor="tester")
    _settle(ws)
    ws.mesh.unsubscribe(sub)
    ws.publish("x.two", actor="tester")
    _settle(ws)
    assert got == ["x.one"]
    ws.subscribe("x.*", lambda e: got.append(e.topic), name="leaver")  # the name is free again


# -- the glob dialect: Python (live subscribers) and DuckDB GLOB (durable subscribers) must agree ------------
_GLOB_CON = duckdb.connect()
_GLOB_LOCK = threading.Lock()


def _duckdb_glob(topic: str, pattern: str) -> bool:
    with _GLOB_LOCK:
        row = _GLOB_CON.execute("SELECT ? GLOB ?", [topic, pattern]).fetchone()
    assert row is not None
    return bool(row[0])


@settings(max_examples=400, deadline=None)
@given(
    pattern=st.text(alphabet="ab._*?", max_size=7),
    topic=st.text(alphabet="ab._", max_size=7),
)
def test_topic_matcher_agrees_with_duckdb_glob(pattern: str, topic: str) -> None:
    assert topic_matcher(pattern)(topic) == _duckdb_glob(topic, pattern)


@settings(max_examples=100, deadline=None)
@given(
    pattern=st.text(alphabet="xyz._*?", min_size=1, max_size=6),
    topic=st.from_regex(r"[xyz][xyz_]{0,2}(\.[xyz_]{1,2}){0,2}", fullmatch=True),
)
def test_topic_matcher_agrees_with_duckdb_glob_on_valid_topics(pattern: str, topic: str) -> None:
    assert topic_matcher(pattern)(topic) == _duckdb_glob(topic, pattern)


@pytest.mark.parametrize("pattern", ["a.[bc]", "a.[!b]", "a\\.b", "[a-]"])
def test_patterns_the_two_dialects_read_differently_are_refused(det_ws: Workspace, pattern: str) -> None:
    with pytest.raises(EventError, match="pattern"):
        det_ws.subscribe(pattern, lambda e: None, name="odd")
    assert "odd" not in {s.name for s in det_ws.mesh.subscriptions}  # (engines subscribe their own at init)


@pytest.mark.parametrize("pattern", ["*", "job.*", "*.done", "job.?", "j*.*e", "job.done"])
def test_live_and_durable_subscribers_see_the_same_events(det_ws: Workspace, pattern: str) -> None:
    ws = det_ws
    live: list[int] = []
    durable: list[int] = []
    ws.subscribe(pattern, lambda e: live.append(e.seq), name="live")
    ws.subscribe(pattern, lambda e: durable.append(e.seq), name="durable", durable=True)
    for topic in ["job.done", "job.a", "job.ab", "jobs.x.e", "other.done", "job.done.later", "j.e"]:
        ws.publish(topic, actor="tester")
    assert durable == [e.seq for e in ws.ledger.events(topic=pattern)]
    # the durable one also caught up on the genesis event if it matches; the live one saw only later events
    start = ws.ledger.head[0] - 7
    assert live == [s for s in durable if s > start]


# -- failures, retries, dead letters -------------------------------------------------------------------------
class Flaky:
    """A handler that fails its first ``failures`` calls (or always), recording when it was called."""

    def __init__(self, ws: Workspace, failures: int | None) -> None:
        self.ws = ws
        self.failures = failures
        self.calls: list[float] = []
        self.handled: list[str] = []

    def __call__(self, event: Event) -> None:
        self.calls.append(self.ws.clock.time())
        if self.failures is None or len(self.calls) <= self.failures:
            raise RuntimeError(f"flaky failure #{len(self.calls)}")
        self.handled.append(event.id)


def test_handler_failure_never_reaches_the_publisher_and_retries_on_the_clock(det_ws: Workspace) -> None:
    ws = det_ws
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    flaky = Flaky(ws, failures=None)
    ws.subscribe("job.*", flaky, name="flaky")
    event = ws.publish("job.run", {"x": 1}, actor="tester")  # must not raise
    assert len(flaky.calls) == 1
    ws.mesh.pump()
    assert len(flaky.calls) == 1  # nothing happens until simulated time moves

    for attempt in range(1, ws.mesh.max_attempts):
        due = flaky.calls[-1] + ws.mesh.backoff * 2 ** (attempt - 1)
        clock.set(due - 0.001)
        ws.mesh.pump()
        assert len(flaky.calls) == attempt, f"retried too early before attempt {attempt + 1}"
        clock.set(due)
        ws.mesh.pump()
        assert len(flaky.calls) == attempt + 1, f"not retried when attempt {attempt + 1} was due"
    gaps = [round(b - a, 6) for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert gaps == [0.1, 0.2, 0.4, 0.8]

    letters = ws.mesh.dead_letters()
    assert len(letters) == 1
    row = letters.iloc[0]
    assert (row["failed_event_id"], row["failed_seq"], row["topic"], row["subscriber"], row["attempts"]) == (
        event.id,
        event.seq,
        "job.run",
        "flaky",
        5,
    )
    assert "RuntimeError: flaky failure #5" in row["error"]
    failed = ws.ledger.get(row["event_id"])
    assert failed.topic == "mesh.delivery_failed"
    assert failed.parent_id == event.id
    assert failed.correlation_id == event.correlation_id
    assert failed.payload["subscriber"] == "flaky"

    # Time passing after the dead letter brings no more attempts.
    clock.advance(60)
    ws.mesh.pump()
    assert len(flaky.calls) == 5


def test_a_handler_that_recovers_is_not_dead_lettered(det_ws: Workspace) -> None:
    ws = det_ws
    flaky = Flaky(ws, failures=2)
    ws.subscribe("job.*", flaky, name="recovers")
    event = ws.publish("job.run", actor="tester")
    _run_out_retries(ws)
    assert len(flaky.calls) == 3
    assert flaky.handled == [event.id]
    assert ws.mesh.dead_letters().empty
    assert ws.ledger.events(topic="mesh.delivery_failed") == []


def test_a_failing_subscriber_does_not_hold_up_others(det_ws: Workspace) -> None:
    ws = det_ws
    ws.subscribe("job.*", Flaky(ws, failures=None), name="broken")
    healthy: list[str] = []
    ws.subscribe("job.*", lambda e: healthy.append(e.topic), name="healthy")
    ws.publish("job.a", actor="tester")
    ws.publish("job.b", actor="tester")
    assert healthy == ["job.a", "job.b"]  # at once, while the broken one waits for its retry


def test_after_a_dead_letter_the_subscriber_goes_on_with_later_events(det_ws: Workspace) -> None:
    ws = det_ws
    got: list[str] = []

    def picky(event: Event) -> None:
        if event.payload.get("poison"):
            raise ValueError("cannot digest this")
        got.append(event.topic)

    ws.subscribe("job.*", picky, name="picky")
    ws.publish("job.poison", {"poison": True}, actor="tester")
    ws.publish("job.fine", actor="tester")
    assert got == []  # in order: the later event waits behind the retries of the earlier one
    _run_out_retries(ws)
    assert got == ["job.fine"]
    assert ws.mesh.dead_letters()["topic"].tolist() == ["job.poison"]


def test_replay_dead_letters_after_fixing_the_handler(det_ws: Workspace) -> None:
    ws = det_ws
    flaky = Flaky(ws, failures=None)
    ws.subscribe("job.*", flaky, name="fixable")
    event = ws.publish("job.run", actor="tester")
    _run_out_retries(ws)
    letter = ws.mesh.dead_letters().iloc[0]

    assert ws.mesh.replay_dead_letters() == 0  # still broken: it stays a dead letter
    assert len(ws.mesh.dead_letters()) == 1
    assert ws.ledger.events(topic="mesh.dead_letter_replayed") == []

    flaky.failures = len(flaky.calls)  # the fix: no more failures from here on
    assert ws.mesh.replay_dead_letters() == 1
    assert flaky.handled == [event.id]
    replayed = ws.ledger.events(topic="mesh.dead_letter_replayed")
    assert len(replayed) == 1
    assert replayed[0].payload == {"dead_letter": letter["event_id"], "subscriber": "fixable"}
    assert replayed[0].parent_id == event.id
    assert ws.mesh.dead_letters().empty
    history = ws.mesh.dead_letters(include_replayed=True)
    assert len(history) == 1
    assert history.iloc[0]["replayed_at"] is not None
    assert ws.mesh.replay_dead_letters() == 0  # nothing left to replay


def test_replay_dead_letters_by_id_only_replays_those(det_ws: Workspace) -> None:
    ws = det_ws
    flaky = Flaky(ws, failures=None)
    ws.subscribe("job.*", flaky, name="fixable")
    ws.publish("job.one", actor="tester")
    _run_out_retries(ws)
    ws.publish("job.two", actor="tester")
    _run_out_retries(ws)
    letters = ws.mesh.dead_letters()
    assert letters["topic"].tolist() == ["job.one", "job.two"]
    flaky.failures = len(flaky.calls)
    assert ws.mesh.replay_dead_letters(ids=[letters.iloc[1]["event_id"]]) == 1
    assert ws.mesh.dead_letters()["topic"].tolist() == ["job.one"]


def test_retries_and_dead_letters_in_live_mode() -> None:
    ws = _open("live")
    try:
        ws.mesh.backoff = 0.01
        always = Flaky(ws, failures=None)
        recovers = Flaky(ws, failures=2)
        ws.subscribe("job.*", always, name="always")
        ws.subscribe("job.*", recovers, name="recovers")
        event = ws.publish("job.run", actor="tester")
        _settle(ws)
        assert len(always.calls) == 5
        assert len(recovers.calls) == 3
        assert recovers.handled == [event.id]
        # the retries waited for their backoff on the (wall) clock: 10, 20, 40, 80 ms
        assert always.calls[-1] - always.calls[0] >= 0.15 - 0.005
        letters = ws.mesh.dead_letters()
        assert letters["subscriber"].tolist() == ["always"]
        failed = ws.ledger.events(topic="mesh.delivery_failed")
        assert [e.parent_id for e in failed] == [event.id]

        always.failures = len(always.calls)
        assert ws.mesh.replay_dead_letters() == 1
        _settle(ws)
        assert always.handled == [event.id]
        assert ws.mesh.dead_letters().empty
        assert len(ws.ledger.events(topic="mesh.dead_letter_replayed")) == 1
    finally:
        ws.close()


# -- durable subscribers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_durable_subscriber_resumes_after_reopen(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ws.duckdb"
    first: list[int] = []
    with _open(mode, path) as ws:
        early = [ws.publish(f"job.e{i}", actor="tester").seq for i in range(3)]
        ws.subscribe("job.*", lambda e: first.append(e.seq), name="archiver", durable=True)
        _settle(ws)
        assert first == early  # a new durable name catches up from the start
        first_late = ws.publish("job.e3", actor="tester").seq
        _settle(ws)
        assert first == [*early, first_late]

    second: list[int] = []
    with _open(mode, path) as ws:
        assert ws.ledger.cursor("mesh:archiver") == first_late
        new = [ws.publish(f"job.n{i}", actor="tester").seq for i in range(2)]
        ws.subscribe("job.*", lambda e: second.append(e.seq), name="archiver", durable=True)
        _settle(ws)
        assert second == new  # only what it had not handled: none lost, none twice
        assert ws.ledger.cursor("mesh:archiver") == new[-1]

        everything: list[int] = []
        ws.subscribe("job.*", lambda e: everything.append(e.seq), name="newcomer", durable=True)
        _settle(ws)
        assert everything == [*first, *second]


def test_durable_subscription_needs_a_name(det_ws: Workspace) -> None:
    with pytest.raises(SubscriptionError, match="name"):
        det_ws.subscribe("job.*", lambda e: None, durable=True)
    with pytest.raises(SubscriptionError, match="name"):
        det_ws.subscribe("job.*", lambda e: None, name="", durable=True)


def test_duplicate_subscriber_names_are_refused(any_ws: Workspace) -> None:
    ws = any_ws
    got: list[str] = []
    ws.subscribe("job.*", lambda e: got.append("first"), name="dup")
    with pytest.raises(SubscriptionError, match="dup"):
        ws.subscribe("other.*", lambda e: got.append("second"), name="dup")
    ws.publish("job.x", actor="tester")
    ws.publish("other.x", actor="tester")
    _settle(ws)
    assert got == ["first"]  # the refused subscription was not half-added


@pytest.mark.parametrize("mode", MODES)
def test_durable_catch_up_spans_many_pages(mode: str) -> None:
    ws = _open(mode)
    try:
        events = ws.publish_many([Message("bulk.item", {"i": i}) for i in range(1234)], actor="tester")
        got: list[int] = []
        ws.subscribe("bulk.*", lambda e: got.append(e.seq), name="bulk", durable=True)
        _settle(ws)
        assert got == [e.seq for e in events]
        assert ws.ledger.cursor("mesh:bulk") == events[-1].seq
    finally:
        ws.close()
