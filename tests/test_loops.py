"""Loops: scheduled durable subscribers, stepped on a ManualClock or run live in threads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from grace_core import Event, Loop, LoopError, ManualClock, Scheduler, Workspace, open_workspace


class CountingLoop(Loop):
    """Counts job events per topic and publishes a summary event whenever it saw any."""

    name: ClassVar[str] = "counting"
    topics: ClassVar[tuple[str, ...]] = ("job.*",)
    params: ClassVar[Mapping[str, Any]] = {"interval": 10.0, "batch_size": 1000}

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.batches: list[int] = []

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        self.seen += [e.id for e in events]
        self.batches.append(len(events))
        counts = Counter(e.topic for e in events)
        scheduler.mesh.publish("counting.summary", {"counts": dict(sorted(counts.items()))}, actor=self.name)
        return {"topics": len(counts)}


class BrokenLoop(Loop):
    name: ClassVar[str] = "broken"
    topics: ClassVar[tuple[str, ...]] = ("job.*",)
    params: ClassVar[Mapping[str, Any]] = {"interval": 10.0}

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        raise ValueError(f"cannot handle {len(events)} events")


def _det(path: str | Path = ":memory:", seed: int = 3) -> Workspace:
    return open_workspace(path, clock=ManualClock(), seed=seed)


@pytest.fixture
def ws() -> Iterator[Workspace]:
    w = _det()
    yield w
    w.close()


def _jobs(ws: Workspace, n: int, start: int = 0) -> list[Event]:
    topics = ["job.b", "job.a"]
    return [ws.publish(topics[i % 2], {"i": i}, actor="tester") for i in range(start, start + n)]


def test_one_simulated_minute_at_ten_seconds_is_seven_ticks_then_six(ws: Workspace) -> None:
    loop = ws.loops.add(CountingLoop())
    ws.loops.start("counting")
    t0 = ws.clock.time()
    # start() makes the loop due at once (t0), and run_for's end instant is inclusive, so the first
    # minute ticks at t0, t0+10, ..., t0+60: seven ticks. The next minute continues from t0+60 (already
    # ticked), so it ticks at t0+70 ... t0+120: six. Back-to-back runs never tick an instant twice.
    assert ws.loops.run_for(minutes=1) == 7
    assert ws.clock.time() == t0 + 60
    assert ws.loops.run_for(minutes=1) == 6
    assert ws.clock.time() == t0 + 120
    assert ws.loops.state("counting").ticks == 13
    assert loop.batches == []  # no job events: process is not called for an empty batch
    # Only the first tick (it passed the genesis events) is on the ledger: idle ticks record nothing.
    ticks = ws.ledger.events(topic="loop.ticked")
    assert [e.ts_us for e in ticks] == [round(t0 * 1_000_000)]
    row = ws.loops.status().set_index("loop").loc["counting"]
    assert row["last_tick"] == ws.clock.now()  # the idle ticks still count as ticks
    _jobs(ws, 1)
    ws.loops.run_for(seconds=10)
    assert len(ws.ledger.events(topic="loop.ticked")) == 2


def test_idle_ticks_still_move_the_cursor_past_piles_of_bookkeeping(ws: Workspace) -> None:
    class Small(CountingLoop):
        name: ClassVar[str] = "small"
        params: ClassVar[Mapping[str, Any]] = {"interval": 10.0, "batch_size": 5}

    ws.loops.add(Small())
    for _ in range(3):  # through the genesis events, five at a time
        ws.loops.step("small")
    start = ws.ledger.head[0]
    assert ws.loops.cursor("small") == start - 1  # everything but its own last tick event
    for i in range(11):
        ws.publish("loop.note", {"i": i}, actor="tester")  # bookkeeping only: nothing for the loop to do
    ws.loops.step("small")
    ws.loops.step("small")
    # a full batch of bookkeeping is passed (and recorded), or a small batch could fill with it for good
    assert ws.loops.cursor("small") == start - 1 + 10
    before = len(ws.ledger.events(topic="loop.ticked"))
    ws.loops.step("small")  # one note and the two tick events left, less than a batch: idle, not recorded
    assert len(ws.ledger.events(topic="loop.ticked")) == before


def test_each_event_is_processed_exactly_once_and_the_cursor_moves(ws: Workspace) -> None:
    loop = ws.loops.add(CountingLoop())
    ws.loops.start()
    published: list[Event] = []
    for _ in range(4):
        published += _jobs(ws, 3)
        ws.loops.run_for(seconds=25)
    published += _jobs(ws, 2)
    ws.loops.run_for(seconds=10)
    assert loop.seen == [e.id for e in published]  # all, once, in ledger order
    summaries = ws.ledger.events(topic="counting.summary")
    assert sum(sum(s.payload["counts"].values()) for s in summaries) == len(published)
    assert summaries[0].payload == {"counts": {"job.a": 1, "job.b": 2}}
    last_tick = ws.ledger.events(topic="loop.ticked")[-1]
    assert ws.loops.cursor("counting") == last_tick.payload["to_seq"]
    assert last_tick.payload["to_seq"] >= published[-1].seq


def test_tick_event_and_cursor_move_land_in_one_transaction(ws: Workspace) -> None:
    ws.loops.add(CountingLoop())
    ws.publish("other.thing", actor="tester")  # not for this loop: process() does not run, writes nothing
    before_tx, before_head = ws.ledger.transactions, ws.ledger.head[0]
    assert ws.loops.step("counting") == 0
    assert ws.ledger.transactions == before_tx + 1
    [tick] = ws.ledger.events(since=before_head)
    assert tick.topic == "loop.ticked"
    assert tick.payload == {
        "loop": "counting",
        "processed": 0,
        "from_seq": 0,
        "to_seq": before_head,
        "lag": 0,
    }
    assert ws.loops.cursor("counting") == before_head
    assert ws.sql("SELECT seq FROM cursors WHERE name = 'loop:counting'")["seq"].tolist() == [before_head]


def test_loop_output_is_caught_by_the_tick_and_loop_bookkeeping_is_skipped(ws: Workspace) -> None:
    class Everything(CountingLoop):
        name: ClassVar[str] = "everything"
        topics: ClassVar[tuple[str, ...]] = ("*",)

    loop = ws.loops.add(Everything())
    ws.loops.step("everything")
    ws.loops.step("everything")
    ws.loops.step("everything")
    topics = [ws.ledger.get(i).topic for i in loop.seen]
    # it saw the genesis events, then its own summary once, never loop.* events, and nothing twice
    genesis = ["workspace.created", "governance.pack_loaded", "hunter.pack_loaded", "mldl.model_installed"]
    assert topics == [*genesis, "counting.summary", "counting.summary"]
    assert len(set(loop.seen)) == len(loop.seen)
    assert not any(t.startswith("loop.") for t in topics)


def _scripted_run(seed: int) -> bytes:
    with _det(seed=seed) as ws:
        ws.loops.add(CountingLoop())
        ws.subscribe("job.a", lambda e: ws.publish("job.reaction", {"to": e.seq}, actor="reactor"), name="r")
        ws.loops.start()
        for round_ in range(5):
            _jobs(ws, 4, start=4 * round_)
            ws.metrics.record("queue_depth", float(round_))
            ws.loops.run_for(seconds=17)
        ws.loops.set_param("counting", "interval", 5, actor="system")
        ws.loops.run_for(seconds=30)
        return ws.ledger.head[1]


def test_same_seed_and_workload_give_the_same_ledger_head() -> None:
    first, second = _scripted_run(seed=42), _scripted_run(seed=42)
    assert first == second
    assert _scripted_run(seed=43) != first


def test_cursor_and_params_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "loops.duckdb"
    with _det(path) as ws:
        loop = ws.loops.add(CountingLoop())
        before = _jobs(ws, 3)
        assert ws.loops.step("counting") == 3
        ws.loops.set_param("counting", "interval", 2.5, actor="system", reason="faster")
        cursor = ws.loops.cursor("counting")
    assert loop.seen == [e.id for e in before]

    with _det(path) as ws:
        again = ws.loops.add(CountingLoop())
        assert ws.loops.cursor("counting") == cursor
        assert ws.loops.param("counting", "interval") == 2.5
        after = _jobs(ws, 2, start=3)
        assert ws.loops.step("counting") == 2
        assert again.seen == [e.id for e in after]  # nothing from the first session again
        assert ws.loops.step("counting") == 0


def test_set_param_is_an_event_and_changes_the_tick_rate(ws: Workspace) -> None:
    ws.loops.add(CountingLoop())
    assert ws.loops.param("counting", "interval") == 10.0
    ws.loops.start("counting")  # only this loop: the engines' own loops stay stopped
    assert ws.loops.run_for(minutes=1) == 7
    event = ws.loops.set_param("counting", "interval", 5, actor="meta", reason="more often")
    assert event.topic == "loop.param_changed"
    assert event.actor == "meta"
    assert event.resource == "loop:counting"
    assert event.payload == {
        "loop": "counting",
        "name": "interval",
        "old": 10.0,
        "new": 5,
        "reason": "more often",
    }
    assert ws.loops.param("counting", "interval") == 5
    assert ws.loops.params_of("counting") == {"interval": 5, "batch_size": 1000}
    assert ws.loops.status().set_index("loop").loc["counting", "param.interval"] == 5
    # the next tick is due 5 s after the last one (t0+60): t0+65 ... t0+120 is twelve ticks
    assert ws.loops.run_for(minutes=1) == 12


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interval", 0),
        ("interval", -1),
        ("interval", "fast"),
        ("interval", True),
        ("interval", None),
        ("interval", float("nan")),
        ("interval", float("inf")),
        ("batch_size", 0.5),
        ("nonexistent", 1),
    ],
)
def test_bad_parameter_values_raise_loop_error(ws: Workspace, key: str, value: object) -> None:
    ws.loops.add(CountingLoop())
    head = ws.ledger.head[0]
    with pytest.raises(LoopError):
        ws.loops.set_param("counting", key, value, actor="meta")
    assert ws.ledger.head[0] == head  # nothing recorded
    assert ws.loops.param("counting", "interval") == 10.0


def test_registry_errors_raise_loop_error(ws: Workspace) -> None:
    ws.loops.add(CountingLoop())
    with pytest.raises(LoopError, match="registered already"):
        ws.loops.add(CountingLoop())

    class NoInterval(Loop):
        name: ClassVar[str] = "no_interval"
        params: ClassVar[Mapping[str, Any]] = {"batch_size": 10}

    with pytest.raises(LoopError, match="interval"):
        ws.loops.add(NoInterval())
    with pytest.raises(LoopError, match="counting"):
        ws.loops.step("missing")  # the message lists the loops there are
    with pytest.raises(LoopError):
        ws.loops.param("missing", "interval")


def test_pause_resume_stop_are_events_and_a_paused_loop_does_not_tick(ws: Workspace) -> None:
    ws.auth.register("operator1", "a long passphrase 42", role="admin", by="system")
    loop = ws.loops.add(CountingLoop())
    ws.loops.start("counting", actor="operator1")
    assert ws.loops.run_for(seconds=10) == 2
    ws.loops.pause("counting", actor="operator1")
    _jobs(ws, 2)
    assert ws.loops.run_for(minutes=5) == 0
    assert loop.seen == []
    assert ws.loops.state("counting").state == "paused"
    ws.loops.resume("counting", actor="operator1")
    assert ws.loops.run_for(seconds=10) >= 1
    assert len(loop.seen) == 2
    ws.loops.stop("counting", actor="operator1")
    assert ws.loops.run_for(minutes=5) == 0
    ws.loops.stop("counting")  # stopping a stopped loop records nothing
    ws.loops.pause("counting")  # nor does pausing a stopped one

    control = [e for e in ws.ledger.events(topic="loop.*") if e.topic != "loop.ticked"]
    assert [(e.topic, e.payload["from"], e.actor) for e in control] == [
        ("loop.started", "stopped", "operator1"),
        ("loop.paused", "running", "operator1"),
        ("loop.started", "paused", "operator1"),
        ("loop.stopped", "running", "operator1"),
    ]
    assert all(e.resource == "loop:counting" for e in control)
    assert ws.loops.status().iloc[0]["state"] == "stopped"


def test_a_failing_loop_records_loop_failed_and_the_scheduler_goes_on(ws: Workspace) -> None:
    good = ws.loops.add(CountingLoop())
    ws.loops.add(BrokenLoop())
    ws.loops.start("counting")
    ws.loops.start("broken")
    jobs = _jobs(ws, 3)
    assert ws.loops.run_for(seconds=30) == 8  # both loops, at +0, +10, +20, +30
    assert good.seen == [e.id for e in jobs]
    failures = ws.ledger.events(topic="loop.failed")
    assert len(failures) == 4
    assert failures[0].payload == {
        "loop": "broken",
        "error": "ValueError: cannot handle 3 events",
        "cursor": 0,
    }
    broken = ws.loops.state("broken")
    assert (broken.errors, broken.ticks, broken.state) == (4, 0, "running")
    assert broken.last_error == "ValueError: cannot handle 3 events"
    assert ws.loops.cursor("broken") == 0  # its events wait for it to be fixed, not skipped
    with pytest.raises(ValueError, match="cannot handle"):
        ws.loops.step("broken")  # stepping by hand shows the error to the caller


def test_status_frame(ws: Workspace) -> None:
    ws.loops.add(CountingLoop())
    ws.loops.add(BrokenLoop())
    status = ws.loops.status()
    # The workspace's engines register loops of their own (with more parameters): look at these two.
    status = status[status["loop"].isin(["counting", "broken"])]
    assert list(status.columns)[:12] == [
        "loop",
        "state",
        "cursor",
        "lag",
        "ticks",
        "errors",
        "alive",
        "last_tick",
        "next_due",
        "last_error",
        "param.interval",
        "param.batch_size",
    ]
    assert status["loop"].tolist() == ["counting", "broken"]
    assert status["state"].tolist() == ["stopped", "stopped"]
    head = ws.ledger.head[0]
    ws.loops.step("counting")
    row = ws.loops.status().set_index("loop").loc["counting"]
    assert row["ticks"] == 1
    assert row["cursor"] == head
    assert ws.ledger.head[0] > head  # the tick event itself is newer than the cursor...
    assert row["lag"] == 0  # ...but it is bookkeeping, not work: the loop is caught up
    ws.publish("demo.more", {}, actor="alice")
    assert ws.loops.status().set_index("loop").loc["counting"]["lag"] == 1
    assert row["last_tick"] == ws.clock.now()


def test_live_loop_ticks_on_its_thread_and_stop_joins_it() -> None:
    class Fast(CountingLoop):
        name: ClassVar[str] = "fast"
        params: ClassVar[Mapping[str, Any]] = {"interval": 0.05, "batch_size": 100}

    with open_workspace(":memory:") as ws:
        ws.loops.add(Fast())
        with pytest.raises(LoopError, match="ManualClock"):
            ws.loops.run_for(seconds=1)
        ws.loops.start("fast")
        deadline = time.monotonic() + 1.5
        while ws.loops.state("fast").ticks < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ws.loops.state("fast").ticks >= 4
        assert bool(ws.loops.status().set_index("loop").loc["fast", "alive"])
        ws.loops.stop("fast")
        assert not [t for t in threading.enumerate() if t.name == "grace-loop-fast"]
        ticks = ws.loops.state("fast").ticks
        time.sleep(0.2)
        assert ws.loops.state("fast").ticks == ticks  # no tick after stop()
        assert ws.ledger.events(topic="loop.stopped")
        assert not bool(ws.loops.status().set_index("loop").loc["fast", "alive"])


def test_a_started_loop_is_never_seen_running_without_its_thread() -> None:
    # Health checks run on other threads while start() works: the moment a loop is marked running (its
    # loop.started event, delivered inline here), its thread must be alive, or /health reports it "gone"
    # until the next check, half a minute later.
    with open_workspace(":memory:", live=False) as ws:
        ws.loops.add(CountingLoop())
        seen: list[tuple[str, bool]] = []

        def check(event: Event) -> None:
            name = event.payload["loop"]
            seen.append((name, bool(ws.loops.status().set_index("loop").loc[name, "alive"])))

        ws.subscribe("loop.started", check, name="watcher")
        ws.loops.start()
        try:
            assert seen
            assert all(alive for _, alive in seen), seen
            assert not [
                c for c in ws.healing.checks() if c.component.startswith("loop:") and c.status != "ok"
            ]
        finally:
            ws.loops.stop()


def test_named_control_is_governed_and_the_schedule_is_not(ws: Workspace) -> None:
    from grace_core.errors import PermissionDenied

    ws.auth.register("root1", "a long passphrase 42", role="admin", by="system")
    ws.auth.register("rita", "another long phrase 7", role="researcher", by="root1")
    ws.loops.add(CountingLoop())
    with pytest.raises(PermissionDenied):
        ws.loops.start("counting", actor="rita")  # researchers may look and step, not start
    assert ws.loops.state("counting").state == "stopped"
    _jobs(ws, 2)
    assert ws.loops.step("counting", actor="rita") == 2  # allowed: researchers-loops
    with pytest.raises(PermissionDenied, match="approval"):
        ws.loops.set_param("counting", "interval", 30, actor="rita", reason="calmer")  # waits for an admin
    assert ws.loops.param("counting", "interval") == 10.0
    decisions = [e.payload for e in ws.ledger.events(topic="governance.decision") if e.actor == "rita"]
    assert [(d["action"], d["effect"]) for d in decisions] == [
        ("loop.start", "deny"),
        ("loop.step", "allow"),
        ("loop.set_param", "review"),
    ]
    ws.loops.start("counting", actor="root1")
    before = len(ws.ledger.events(topic="governance.decision"))
    ws.loops.run_for(minutes=2)  # the scheduler's own ticks are not decisions
    assert len(ws.ledger.events(topic="governance.decision")) == before


def test_cli_params_set_step_and_stop(tmp_path: Path) -> None:
    import json as _json

    from support import grace

    path = tmp_path / "w.duckdb"
    assert grace("init", "-w", path).returncode == 0
    params = grace("loops", "params", "reflection", "--json", "-w", path)
    assert _json.loads(params.stdout)["interval"] == {
        "param": "interval", "value": 10.0, "default": 10.0, "min": 2.0, "max": 120.0,
    }  # fmt: skip
    refused = grace(
        "loops", "set", "reflection", "interval", "500", "--reason", "x", "--by", "meta", "-w", path
    )
    assert refused.returncode == 2
    assert "loop-params-within-bounds" in refused.stderr
    ok = grace("loops", "set", "reflection", "interval", "30", "--reason", "calmer", "-w", path)
    assert ok.stdout.startswith("reflection.interval: 10.0 -> 30")
    step = grace("loops", "step", "reflection", "-w", path)
    assert step.stdout.startswith("reflection: processed")
    assert "nothing to stop" in grace("loops", "stop", "-w", path).stdout
    ran = grace("loops", "start", "meta", "--for", "0.5s", "-w", path)
    assert ran.returncode == 0, ran.stderr
    assert "meta        stopped" in ran.stdout
