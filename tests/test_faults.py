"""Faults: a writer killed with SIGKILL, a second process, malformed input, a failing projection."""

from __future__ import annotations

import math
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from grace_core import (
    EventError,
    LedgerError,
    ManualClock,
    Message,
    PayloadError,
    ReadOnlyError,
    Workspace,
    WorkspaceLockedError,
    open_workspace,
)

# -- real child processes ------------------------------------------------------------------------------------
PUBLISHER = textwrap.dedent("""
    import sys
    from grace_core import Message, open_workspace

    path, mode = sys.argv[1], sys.argv[2]
    ws = open_workspace(path, live=True)
    i = 0
    while True:
        if mode == "one":
            events = [ws.publish("crash.tick", {"i": i}, actor="child")]
        else:
            events = ws.publish_many([Message("crash.tick", {"i": i + j}) for j in range(37)], actor="child")
        # Printed only after publish returned: every line is a promise that the event is durable.
        sys.stdout.write("".join(f"{e.seq} {e.id}\\n" for e in events))
        sys.stdout.flush()
        i += len(events)
""")

OWNER = textwrap.dedent("""
    import os, sys, time
    from grace_core import Message, open_workspace

    ws = open_workspace(sys.argv[1])
    ws.publish_many([Message("owner.item", {"i": i}) for i in range(15)], actor="owner")
    print("ready", os.getpid(), ws.ledger.head[0], flush=True)
    time.sleep(30)
""")


class Child:
    """A Python child process whose stdout lines can be read with a timeout."""

    def __init__(self, script: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=script.parent,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def readline(self, timeout: float = 30) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"child printed nothing for {timeout} s") from None
        if line is None:
            self.proc.wait(5)
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"child exited with {self.proc.returncode}: {stderr[-2000:]}")
        return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def child(tmp_path: Path, source: str, *args: str) -> Iterator[Child]:
    script = tmp_path / "child.py"
    script.write_text(source)
    proc = Child(script, *args)
    try:
        yield proc
    finally:
        proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["one", "many"])
def test_sigkill_while_publishing_loses_no_acknowledged_event(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "crash.duckdb"
    acknowledged: dict[int, str] = {}
    with child(tmp_path, PUBLISHER, str(path), mode) as proc:
        while len(acknowledged) < 300:
            seq, event_id = proc.readline().split()
            acknowledged[int(seq)] = event_id
        proc.kill()  # SIGKILL mid-stream: no atexit, no close, no flush
        assert proc.proc.returncode == -signal.SIGKILL

    with open_workspace(path) as ws:
        report = ws.verify()
        assert report.ok, report
        assert ws.ledger.head[0] >= max(acknowledged)
        stored = dict(ws.con.execute("SELECT seq, id FROM events WHERE topic = 'crash.tick'").fetchall())
        missing = {s: i for s, i in acknowledged.items() if stored.get(s) != i}
        assert not missing, f"{len(missing)} acknowledged events lost or changed"
        # The recovered ledger takes new events on the same chain.
        head = ws.ledger.head
        event = ws.publish("crash.recovered", {"after": head[0]}, actor="parent")
        assert (event.seq, event.prev_hash) == (head[0] + 1, head[1])
        assert ws.verify().ok


@pytest.mark.slow
def test_second_process_gets_a_clear_lock_error_and_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "owned.duckdb"
    with child(tmp_path, OWNER, str(path)) as proc:
        word, pid, head = proc.readline().split()
        assert (word, int(pid)) == ("ready", proc.proc.pid)

        with pytest.raises(WorkspaceLockedError) as info:
            open_workspace(path)
        assert info.value.owner_pid == proc.proc.pid
        assert f"process {proc.proc.pid}" in str(info.value)
        assert "snapshot=True" in str(info.value)  # it says what to do instead

        with open_workspace(path, snapshot=True) as snap:  # served by the owner while it runs
            assert snap.read_only
            assert snap.ledger.head[0] == int(head)
            assert [e.payload["i"] for e in snap.ledger.events(topic="owner.*")] == list(range(15))
            assert snap.verify().ok
            with pytest.raises(ReadOnlyError):
                snap.publish("intruder.write", {}, actor="parent")
        assert proc.proc.poll() is None  # the owner is unaffected


# -- malformed input -----------------------------------------------------------------------------------------
def _circular() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


class _Opaque:
    pass


BAD_PAYLOADS = [
    pytest.param({"tags": {"a", "b"}}, "not JSON-serialisable", id="set"),
    pytest.param({"thing": _Opaque()}, "not JSON-serialisable", id="object"),
    pytest.param({"raw": b"bytes"}, "not JSON-serialisable", id="bytes"),
    pytest.param({(1, 2): "tuple key"}, "not JSON-serialisable", id="tuple-key"),
    pytest.param({"x": math.nan}, "not JSON-serialisable", id="nan"),
    pytest.param({"x": [1.0, math.inf]}, "not JSON-serialisable", id="inf"),
    pytest.param({"x": {"deep": -math.inf}}, "not JSON-serialisable", id="-inf"),
    pytest.param([1, 2, 3], "must be a JSON object", id="list"),
    pytest.param("text", "must be a JSON object", id="str"),
    pytest.param(42, "must be a JSON object", id="int"),
    pytest.param({"blob": "x" * (1 << 20)}, "the limit is 1048576 bytes", id="over-1MiB"),
    pytest.param(_circular(), "circular", id="circular"),
    pytest.param({"s": "ok \ud800 not ok"}, "not valid Unicode", id="lone-surrogate"),
    pytest.param({"\udc00": 1}, "not valid Unicode", id="surrogate-key"),
]
BAD_TOPICS = ["", "Bad.Topic", "a..b", "x" * 300, "has space", ".a", "a.", "1abc", "a\nb", None, ["a"]]
BAD_ACTORS = ["", "a\x00b", "line\nbreak", "tab\tbed", "\x7f", "x" * 1001, None, 5, {"a": 1}]


@contextmanager
def unchanged(ws: Workspace) -> Iterator[None]:
    head = ws.ledger.head
    rows = ws.sql("SELECT count(*) AS n FROM events")["n"][0]
    yield
    assert ws.ledger.head == head
    assert ws.sql("SELECT count(*) AS n FROM events")["n"][0] == rows
    assert ws.verify().ok


def _readable(exc: BaseException) -> None:
    message = str(exc)
    assert 20 < len(message) < 400, message  # says what is wrong, without echoing megabytes of input


@pytest.mark.parametrize(("payload", "why"), BAD_PAYLOADS)
def test_bad_payload_is_refused_and_nothing_is_written(ws: Workspace, payload: Any, why: str) -> None:
    with unchanged(ws), pytest.raises(PayloadError, match=why) as info:
        ws.publish("demo.item", payload, actor="tester")
    _readable(info.value)


def test_payload_at_the_limit_is_accepted(ws: Workspace) -> None:
    # {"blob":"..."} is 11 bytes of JSON around the string.
    event = ws.publish("demo.item", {"blob": "x" * ((1 << 20) - 11)}, actor="tester")
    assert len(event.payload_json.encode()) == 1 << 20
    assert ws.verify().ok


@pytest.mark.parametrize("topic", BAD_TOPICS, ids=repr)
def test_bad_topic_is_refused(ws: Workspace, topic: Any) -> None:
    with unchanged(ws), pytest.raises(EventError, match="bad topic") as info:
        ws.publish(topic, {"x": 1}, actor="tester")
    assert type(info.value) is EventError
    _readable(info.value)


@pytest.mark.parametrize("actor", BAD_ACTORS, ids=repr)
def test_bad_actor_is_refused(ws: Workspace, actor: Any) -> None:
    with unchanged(ws), pytest.raises(EventError, match="actor") as info:
        ws.publish("demo.item", {"x": 1}, actor=actor)
    assert type(info.value) is EventError
    _readable(info.value)


@pytest.mark.parametrize("resource", ["", "a\x1eb", "x\ny", "x" * 1001, ["r"]], ids=repr)
def test_bad_resource_is_refused(ws: Workspace, resource: Any) -> None:
    with unchanged(ws), pytest.raises(EventError, match="bad resource"):
        ws.publish("demo.item", {"x": 1}, actor="tester", resource=resource)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(Message("demo.item", {"x": math.nan}), id="payload"),
        pytest.param(Message("Demo.Item", {}), id="topic"),
        pytest.param(Message("demo.item", {}, resource=""), id="resource"),
    ],
)
def test_publish_many_with_one_bad_message_writes_nothing(ws: Workspace, bad: Message) -> None:
    good = [Message("demo.item", {"i": i}) for i in range(50)]
    with unchanged(ws), pytest.raises(EventError):
        ws.publish_many([*good[:25], bad, *good[25:]], actor="tester")
    assert ws.publish_many(good, actor="tester")[-1].seq == ws.ledger.head[0]


# -- a failing projection ------------------------------------------------------------------------------------
def test_failing_projection_rolls_back_the_whole_transaction(ws: Workspace) -> None:
    ws.con.execute("CREATE TABLE fault_log (event_id VARCHAR)")

    def explode(con: Any, events: list[Any]) -> None:
        # Writes first, then fails: the rollback must take its write away along with the events.
        con.executemany("INSERT INTO fault_log VALUES (?)", [[e.id] for e in events])
        raise RuntimeError("projection exploded")

    ws.projections.register("faulty", "fault.*", explode, tables=["fault_log"])
    delivered: list[str] = []
    ws.subscribe("*", lambda e: delivered.append(e.topic), name="watcher")
    transactions = ws.ledger.transactions

    with unchanged(ws), pytest.raises(LedgerError, match="projection exploded") as info:
        ws.publish("fault.boom", {"x": 1}, actor="tester")
    assert "nothing was written" in str(info.value)
    with unchanged(ws), pytest.raises(LedgerError):
        ws.publish_many(
            [Message("demo.ok", {}), Message("fault.boom", {}), Message("demo.ok", {})], actor="tester"
        )
    assert ws.sql("SELECT count(*) AS n FROM fault_log")["n"][0] == 0
    assert delivered == []  # nobody heard of events that do not exist
    assert ws.ledger.transactions == transactions

    head = ws.ledger.head
    event = ws.publish("demo.ok", {"after": "failure"}, actor="tester")
    assert (event.seq, event.prev_hash) == (head[0] + 1, head[1])
    assert delivered == ["demo.ok"]
    assert ws.verify().ok


def test_an_engine_topic_with_a_payload_its_projection_cannot_use_is_refused_clearly() -> None:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=5)
    try:
        head = ws.ledger.head
        with pytest.raises(EventError, match="projection 'tasks' cannot apply"):
            ws.publish("task.created", {"title": "no kind"}, actor="someone")
        assert ws.ledger.head == head
        assert ws.verify().ok
    finally:
        ws.close()
