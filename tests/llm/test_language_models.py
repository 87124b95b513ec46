"""ws.llm: what a call records on the ledger, its causes, and how bad input and bad answers are handled."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from grace_core import Workspace, open_workspace
from grace_core.errors import LanguageModelError, ModelOutputError, PromptError, ReadOnlyError
from grace_core.llm import HttpBackend, OfflineBackend, prompt_hash
from grace_core.reflection import importance

OBS = {"observations": [{"id": "e1", "text": "task x failed"}]}
QUESTION = {
    "question": "When is the alpha deadline?",
    "passages": [{"id": "memory:/a.md", "text": "Friday."}],
}


def test_a_call_records_the_full_prompt_params_seed_and_response(ws: Workspace) -> None:
    c = ws.llm.complete(
        "chat.answer",
        {**QUESTION, "history": [{"role": "user", "text": "hi"}], "lessons": ["Be brief."]},
        purpose="chat:c1",
        params={"max_tokens": 64},
        actor="ada",
    )
    event = ws.ledger.get(c.event_id)
    p = event.payload
    assert (event.topic, event.actor) == ("llm.completed", "ada")
    assert (p["prompt"], p["version"], p["purpose"], p["backend"]) == ("chat.answer", 2, "chat:c1", "offline")
    assert [m["role"] for m in p["messages"]] == ["system", "user", "user"]
    assert "- Be brief." in p["messages"][0]["content"]
    assert "[memory:/a.md] Friday." in p["messages"][-1]["content"]
    assert p["params"] == {"temperature": 0.0, "max_tokens": 64, "seed": 1234}  # the workspace seed
    assert p["response"] == c.text
    assert p["finish_reason"] == "stop"
    assert p["schema"] is None
    assert (
        p["prompt_hash"]
        == c.prompt_hash
        == prompt_hash(
            backend="offline", model=p["model"], messages=p["messages"], params=p["params"], schema=None
        )
    )
    assert ws.llm.call(c.event_id)["response"] == c.text


def test_a_call_is_caused_by_the_event_being_handled(ws: Workspace) -> None:
    seen: list[str] = []

    def on_question(event: Any) -> None:
        seen.append(ws.llm.complete("chat.answer", QUESTION, purpose="chat").event_id)

    ws.subscribe("test.question", on_question, name="asker")
    question = ws.publish("test.question", {"text": "alpha?"}, actor="ada")
    assert len(seen) == 1
    lineage = ws.causal.lineage(seen[0])["id"].tolist()
    assert lineage == [seen[0], question.id]


def test_bad_input_raises_before_anything_is_recorded(ws: Workspace) -> None:
    head = ws.ledger.head
    with pytest.raises(PromptError, match="input 'passages' is missing"):
        ws.llm.complete("chat.answer", {"question": "q"}, purpose="t")
    with pytest.raises(PromptError, match=r"unknown prompt 'chat\.anwser'; known: chat\.answer"):
        ws.llm.complete("chat.anwser", QUESTION, purpose="t")
    with pytest.raises(PromptError, match="needs a purpose"):
        ws.llm.complete("chat.answer", QUESTION, purpose=" ")
    with pytest.raises(PromptError, match="unknown parameter 'temprature'"):
        ws.llm.complete("chat.answer", QUESTION, purpose="t", params={"temprature": 1})
    with pytest.raises(PromptError, match="answers text, not JSON; use complete"):
        ws.llm.complete_json("chat.answer", QUESTION, purpose="t")
    with pytest.raises(LanguageModelError, match="unknown model backend 'gpt'; use one of offline, http"):
        ws.llm.complete("chat.answer", QUESTION, purpose="t", backend="gpt")
    assert ws.ledger.head == head


def answers(text: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda _inputs: text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Here are my questions: why? how?", "the answer is not JSON"),
        ('{"questions": "why?"}', "$.questions: expected array, got string"),
        ('{"qs": ["why?"]}', "$: missing key 'questions'"),
        ('```json\n{"questions": []}\n```', "$.questions: expected at least 1 items, got 0"),
    ],
)
def test_malformed_output_is_recorded_as_rejected_and_raises(ws: Workspace, text: str, reason: str) -> None:
    ws.llm.register_offline("reflection.questions", answers(text))
    with pytest.raises(ModelOutputError, match=r"reflection\.questions v1 answer from offline") as caught:
        ws.llm.complete_json("reflection.questions", OBS, purpose="reflection")
    calls = ws.llm.calls()
    assert calls["topic"].tolist() == ["llm.completed", "llm.output_rejected"]
    completed, rejected = (ws.ledger.get(i) for i in calls["id"])
    assert rejected.parent_id == completed.id  # the rejection is caused by the answer it rejects
    assert rejected.payload["completion"] == completed.id
    assert completed.payload["response"] == text
    assert reason in rejected.payload["reason"]
    assert caught.value.completion is not None


def test_json_in_a_fence_or_prose_is_accepted(ws: Workspace) -> None:
    ws.llm.register_offline("reflection.questions", answers('Sure:\n```json\n{"questions": ["Why?"]}\n```'))
    c = ws.llm.complete_json("reflection.questions", OBS, purpose="reflection")
    assert c.data == {"questions": ["Why?"]}


def test_a_read_only_snapshot_refuses_model_calls(file_ws: Callable[..., Workspace], tmp_path: Any) -> None:
    ws = file_ws()
    ws.close()
    snap = open_workspace(tmp_path / "w.duckdb", snapshot=True)
    try:
        with pytest.raises(ReadOnlyError, match="cannot record model calls"):
            snap.llm.complete("chat.answer", QUESTION, purpose="t")
    finally:
        snap.close()


def test_the_read_only_mode_refuses_before_calling(ws: Workspace) -> None:
    called: list[int] = []

    def counting(inputs: Mapping[str, Any]) -> str:
        called.append(1)
        return "x"

    ws.llm.register_offline("chat.answer", counting)
    ws.modes.enter("read_only", reason="test", actor="system")
    with pytest.raises(ReadOnlyError):
        ws.llm.complete("chat.answer", QUESTION, purpose="t")
    assert called == []


def test_the_default_backend_comes_from_env_then_workspace(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ws.llm.default_backend == "offline"
    assert isinstance(ws.llm.backend(), OfflineBackend)
    ws.con.execute("INSERT INTO workspace_meta VALUES ('llm.backend', 'http'), ('llm.model', 'ws-model')")
    backend = ws.llm.backend()
    assert isinstance(backend, HttpBackend)
    assert backend.model == "ws-model"
    monkeypatch.setenv("GRACE_LLM_BACKEND", "llamacpp")
    assert ws.llm.backend().name == "llamacpp"


def test_llm_events_are_not_reflected_on(ws: Workspace) -> None:
    ws.llm.complete("chat.answer", QUESTION, purpose="t")
    with pytest.raises(LanguageModelError):
        ws.llm.complete("chat.answer", QUESTION, purpose="t", backend="http")  # no server: llm.failed
    for row in ws.llm.calls().itertuples():
        assert importance(ws.ledger.get(row.id)) == 0.0


def test_calls_frame_lists_every_recorded_call(ws: Workspace) -> None:
    ws.llm.complete("chat.answer", QUESTION, purpose="one")
    ws.llm.complete_json("reflection.questions", OBS, purpose="two")
    frame = ws.llm.calls()
    assert frame["prompt"].tolist() == ["chat.answer", "reflection.questions"]
    assert frame["purpose"].tolist() == ["one", "two"]
    assert ws.llm.calls(prompt="chat.answer")["purpose"].tolist() == ["one"]
    assert ws.llm.calls(limit=1)["purpose"].tolist() == ["two"]
    with pytest.raises(LanguageModelError, match="not a model call"):
        ws.llm.call(ws.ledger.at(1).id)


def test_a_backend_instance_can_be_registered_or_passed(ws: Workspace, model_server: Any) -> None:
    fast = HttpBackend(base_url=model_server.url, model="tiny", timeout=5, retries=0)
    c = ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=fast)
    assert (c.backend, c.model) == ("http", "tiny")
    ws.llm.register_backend(HttpBackend(base_url=model_server.url, model="other"))
    assert ws.llm.complete("chat.answer", QUESTION, purpose="t", backend="http").model == "other"
    with pytest.raises(LanguageModelError, match="is not a backend"):
        ws.llm.register_backend(object())  # type: ignore[arg-type]
