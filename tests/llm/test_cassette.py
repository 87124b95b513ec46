"""Cassettes: a study recorded against a live model replays to the same ledger head hash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from model_server import ModelServer
from support import free_port

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.causal import handling
from grace_core.errors import CassetteError, ModelCallError, ModelOutputError
from grace_core.llm import Cassette, HttpBackend

SEED = 42
QUESTION = {
    "question": "When is the alpha deadline?",
    "passages": [{"id": "memory:/a.md", "text": "Friday."}],
}
OBS = {"observations": [{"id": "e1", "text": "task x failed"}]}


def study(ws: Workspace, url: str) -> list[str]:
    """A small study: answers (one after a retry), the same question twice, a JSON prompt, a failure, a rejection."""
    http = HttpBackend(base_url=url, model="tiny", timeout=5.0, retries=2, backoff=5.0)
    outcomes = []
    asked = ws.publish("test.asked", {"text": "alpha?"}, actor="ada")
    with handling(asked):
        outcomes.append(ws.llm.complete("chat.answer", QUESTION, purpose="chat", backend=http).text)
    outcomes.append(ws.llm.complete("chat.answer", QUESTION, purpose="chat", backend=http).text)
    outcomes.append(str(ws.llm.complete_json("reflection.questions", OBS, purpose="r", backend=http).data))
    for call in (
        lambda: ws.llm.complete("chat.answer", {**QUESTION, "question": "x?"}, purpose="chat", backend=http),
        lambda: ws.llm.complete_json("reflection.questions", {**OBS, "count": 2}, purpose="r", backend=http),
    ):
        try:
            call()
        except (ModelCallError, ModelOutputError) as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def live_script(server: ModelServer) -> None:
    # Each answer differs from the last: a model that is not deterministic.
    server.script = [
        503,
        "Friday, first time. [memory:/a.md]",
        "Friday, second time. [memory:/a.md]",
        '{"questions": ["Why does x fail?"]}',
        400,
        "no JSON here",
    ]


def head(ws: Workspace) -> str:
    return ws.ledger.head[1].hex()


def test_record_then_replay_reproduces_the_ledger_head_hash(
    model_server: ModelServer, tmp_path: Path
) -> None:
    tape = tmp_path / "study.jsonl"
    live_script(model_server)
    recording = open_workspace(":memory:", clock=ManualClock(), seed=SEED)
    recording.llm.use_cassette(tape, mode="record")
    recorded = study(recording, model_server.url)
    assert recorded == [
        "Friday, first time. [memory:/a.md]",
        "Friday, second time. [memory:/a.md]",
        "{'questions': ['Why does x fail?']}",
        "ModelCallError",
        "ModelOutputError",
    ]
    assert len(model_server.requests) == 6
    assert recording.clock.time() - ManualClock().time() == 5.0  # the retry's backoff
    recorded_head = head(recording)
    recording.close()

    lines = tape.read_text().splitlines()
    assert len(lines) == 5  # every call (the rejected one is a completed call), one JSON object per line

    # The replay runs where no server listens: every answer comes from the tape.
    replaying = open_workspace(":memory:", clock=ManualClock(), seed=SEED)
    try:
        replaying.llm.use_cassette(tape, mode="replay")
        assert study(replaying, f"http://127.0.0.1:{free_port()}/v1") == recorded
        assert head(replaying) == recorded_head
        assert replaying.llm.calls()["topic"].tolist() == [
            "llm.completed",
            "llm.completed",
            "llm.completed",
            "llm.failed",
            "llm.completed",
            "llm.output_rejected",
        ]
    finally:
        replaying.close()
    assert len(model_server.requests) == 6  # nothing was asked again


def test_a_workspace_becomes_a_cassette_of_its_calls(model_server: ModelServer, tmp_path: Path) -> None:
    live_script(model_server)
    original = open_workspace(":memory:", clock=ManualClock(), seed=SEED)
    recorded = study(original, model_server.url)
    cassette = original.llm.cassette_from_ledger()
    assert len(cassette) == 5
    saved = cassette.save(tmp_path / "from-ledger.jsonl")
    original_head = head(original)
    original.close()
    again = open_workspace(":memory:", clock=ManualClock(), seed=SEED)
    try:
        again.llm.use_cassette(Cassette.open(saved))
        assert study(again, model_server.url) == recorded
        assert head(again) == original_head
    finally:
        again.close()


def test_a_replay_miss_names_the_prompt_and_hash_and_records_nothing(ws: Workspace, tmp_path: Path) -> None:
    ws.llm.use_cassette(Cassette(mode="replay"))
    before = ws.ledger.head
    with pytest.raises(CassetteError) as caught:
        ws.llm.complete("chat.answer", QUESTION, purpose="t")
    message = str(caught.value)
    assert message.startswith("the cassette holds no chat.answer v2 call by offline/")
    assert re.search(r"with prompt hash [0-9a-f]{64}; record it first", message)  # the full hash, to look up
    assert ws.ledger.head == before
    with pytest.raises(CassetteError, match="no cassette at"):
        ws.llm.use_cassette(tmp_path / "missing.jsonl", mode="replay")


def test_auto_records_misses_and_replays_hits(
    ws: Workspace, model_server: ModelServer, tmp_path: Path
) -> None:
    tape = tmp_path / "auto.jsonl"
    http = HttpBackend(base_url=model_server.url, model="tiny")
    model_server.script = ["first answer", "second answer"]
    ws.llm.use_cassette(tape, mode="auto")
    a = ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=http)
    b = ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=http)
    assert (a.text, a.replayed, b.text, b.replayed) == ("first answer", False, "first answer", True)
    assert len(model_server.requests) == 1
    assert len(tape.read_text().splitlines()) == 1
    ws.llm.use_cassette(None)
    assert ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=http).text == "second answer"


def test_replay_gives_back_the_recorded_payload_verbatim(ws: Workspace, model_server: ModelServer) -> None:
    http = HttpBackend(base_url=model_server.url, model="tiny")
    model_server.script = ["an answer"]
    live = ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=http)
    ws.llm.use_cassette(ws.llm.cassette_from_ledger())
    replayed = ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=http)
    assert replayed.replayed
    first, second = (ws.ledger.get(c.event_id).payload for c in (live, replayed))
    assert first == second  # the measured latency and the usage too
    assert first["latency_ms"] > 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2 is not a recorded call"),
        ('{"prompt_hash": "x", "topic": "llm.other", "call": {}, "result": {}}', "topic 'llm.other'"),
        ('{"topic": "llm.completed", "call": {}, "result": {}}', "prompt_hash"),
    ],
)
def test_a_malformed_cassette_file_is_refused(tmp_path: Path, line: str, message: str) -> None:
    good = '{"prompt_hash": "h", "topic": "llm.completed", "call": {}, "result": {"response": "x"}}'
    tape = tmp_path / "bad.jsonl"
    tape.write_text(good + "\n" + line + "\n")
    with pytest.raises(CassetteError, match=message):
        Cassette.open(tape)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(CassetteError, match="unknown cassette mode 'play'"):
        Cassette(mode="play")
