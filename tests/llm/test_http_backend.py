"""The HTTP backend against a real OpenAI-compatible server on 127.0.0.1: answers, retries, failures."""

from __future__ import annotations

import time
from typing import Any

import pytest
from model_server import ModelServer
from support import free_port

from grace_core import Workspace
from grace_core.errors import LanguageModelError, ModelCallError, ModelOutputError
from grace_core.llm import HttpBackend

QUESTION = {
    "question": "When is the alpha deadline?",
    "passages": [{"id": "memory:/a.md", "text": "Friday."}],
}
OBS = {"observations": [{"id": "e1", "text": "task x failed"}]}


def backend(url: str, **kwargs: Any) -> HttpBackend:
    return HttpBackend(base_url=url, **{"model": "tiny", "api_key": "sk-test", "timeout": 5.0, **kwargs})


def only_call(ws: Workspace) -> dict[str, Any]:
    calls = ws.llm.calls()
    assert len(calls) == 1
    return ws.llm.call(calls["id"].iloc[0])


def test_an_answer_is_recorded_with_usage_model_and_finish_reason(
    ws: Workspace, model_server: ModelServer
) -> None:
    model_server.script = ["The alpha deadline is Friday. [memory:/a.md]"]
    c = ws.llm.complete("chat.answer", QUESTION, purpose="chat", backend=backend(model_server.url))
    assert c.text == "The alpha deadline is Friday. [memory:/a.md]"
    assert (c.backend, c.model, c.finish_reason) == ("http", "tiny", "stop")
    assert c.usage == {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    assert c.latency_ms is not None
    assert c.latency_ms > 0
    p = only_call(ws)
    assert p["details"] == {
        "server": model_server.url,
        "served_model": "tiny-served",
        "system_fingerprint": "fp_test",
    }
    assert (p["attempts"], p["waited_s"]) == (1, 0.0)
    sent = model_server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert (sent["model"], sent["temperature"], sent["max_tokens"], sent["seed"]) == ("tiny", 0.0, 256, 1234)
    assert sent["messages"] == p["messages"]  # exactly what was recorded was sent
    assert "response_format" not in sent
    assert model_server.headers[0]["Authorization"] == "Bearer sk-test"
    assert "sk-test" not in str(p)


def test_json_prompts_ask_for_the_schema_and_params_pass_through(
    ws: Workspace, model_server: ModelServer
) -> None:
    model_server.script = ['{"questions": ["Why does x fail?"]}']
    c = ws.llm.complete_json(
        "reflection.questions",
        OBS,
        purpose="reflection",
        backend=backend(model_server.url),
        params={"temperature": 0.7, "seed": 99, "top_p": 0.9, "stop": ["\n\n"]},
    )
    assert c.data == {"questions": ["Why does x fail?"]}
    sent = model_server.requests[0]
    assert (sent["temperature"], sent["seed"], sent["top_p"], sent["stop"]) == (0.7, 99, 0.9, ["\n\n"])
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "reflection_questions"
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["questions"]
    model_server.script = ['{"questions": ["Again?"]}']
    params = {"structured": False}
    ws.llm.complete_json(
        "reflection.questions", OBS, purpose="r", backend=backend(model_server.url), params=params
    )
    assert "response_format" not in model_server.requests[1]


def test_a_500_then_200_is_retried_with_backoff_on_the_workspace_clock(
    ws: Workspace, model_server: ModelServer
) -> None:
    model_server.script = [500, 503, "fine"]
    before, started = ws.clock.time(), time.perf_counter()
    c = ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=backend(model_server.url, backoff=30.0))
    assert c.text == "fine"
    assert len(model_server.requests) == 3
    assert ws.clock.time() - before == 90.0  # 30 s then 60 s, on the ManualClock
    assert time.perf_counter() - started < 10  # not slept in real time
    p = only_call(ws)
    assert (p["attempts"], p["waited_s"]) == (3, 90.0)


def test_a_429_waits_as_long_as_the_server_asks(ws: Workspace, model_server: ModelServer) -> None:
    model_server.script = [("status", 429, {"Retry-After": "7"}), "ok"]
    before = ws.clock.time()
    c = ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=backend(model_server.url, backoff=0.5))
    assert c.text == "ok"
    assert ws.clock.time() - before == 7.0


def test_giving_up_records_llm_failed_and_raises_one_line(ws: Workspace, model_server: ModelServer) -> None:
    model_server.script = [500] * 5
    with pytest.raises(ModelCallError) as caught:
        ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=backend(model_server.url, retries=2))
    message = str(caught.value)
    assert message.startswith(
        f"model server {model_server.url}/chat/completions failing after 3 attempt(s): HTTP 500"
    )
    assert "\n" not in message
    assert caught.value.kind == "http_status"
    p = only_call(ws)
    assert p["topic"] == "llm.failed"
    assert (p["error"], p["error_kind"], p["attempts"]) == (message, "http_status", 3)
    assert p["messages"][-1]["content"].endswith("When is the alpha deadline?")  # the prompt is kept too


def test_a_4xx_is_not_retried(ws: Workspace, model_server: ModelServer) -> None:
    model_server.script = [400, "never"]
    with pytest.raises(ModelCallError, match=r"refused the request: HTTP 400: .*scripted failure"):
        ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=backend(model_server.url))
    assert len(model_server.requests) == 1
    assert only_call(ws)["error_kind"] == "http_status"


def test_a_timeout_is_retried_then_recorded(ws: Workspace, model_server: ModelServer) -> None:
    model_server.script = ["slow", "slow"]
    with pytest.raises(ModelCallError, match=r"not answering after 2 attempt\(s\): no answer within 0.2 s"):
        ws.llm.complete(
            "chat.answer", QUESTION, purpose="t", backend=backend(model_server.url, timeout=0.2, retries=1)
        )
    assert only_call(ws)["error_kind"] == "timeout"


def test_an_unreachable_server_is_one_clear_line_and_an_event(ws: Workspace) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelCallError) as caught:
        ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=backend(url, retries=1, backoff=0.01))
    assert str(caught.value).startswith(
        f"model server {url}/chat/completions unreachable after 2 attempt(s): cannot connect:"
    )
    assert "refused" in str(caught.value).lower()
    p = only_call(ws)
    assert (p["topic"], p["error_kind"], p["attempts"]) == ("llm.failed", "unreachable", 2)


def test_an_answer_that_is_not_json_at_all_is_a_failed_call(ws: Workspace, model_server: ModelServer) -> None:
    model_server.script = ["garbage"]
    with pytest.raises(ModelCallError, match="answered something that is not a JSON object"):
        ws.llm.complete("chat.answer", QUESTION, purpose="t", backend=backend(model_server.url))
    assert only_call(ws)["error_kind"] == "bad_response"


def test_malformed_model_output_is_rejected(ws: Workspace, model_server: ModelServer) -> None:
    model_server.script = ["Sure! The questions are: why and how."]
    with pytest.raises(ModelOutputError, match="rejected: the answer is not JSON"):
        ws.llm.complete_json("reflection.questions", OBS, purpose="t", backend=backend(model_server.url))
    topics = ws.llm.calls()["topic"].tolist()
    assert topics == ["llm.completed", "llm.output_rejected"]


def test_settings_come_from_env_then_workspace(
    ws: Workspace, model_server: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelCallError, match="no model server is configured: set GRACE_LLM_BASE_URL"):
        ws.llm.complete("chat.answer", QUESTION, purpose="t", backend="http")
    ws.settings.set("llm.base_url", model_server.url)
    ws.settings.set("llm.model", "ws-model")
    ws.settings.set("llm.api_key", "sk-ws")
    assert ws.llm.complete("chat.answer", QUESTION, purpose="t", backend="http").model == "ws-model"
    assert model_server.headers[-1]["Authorization"] == "Bearer sk-ws"
    monkeypatch.setenv("GRACE_LLM_MODEL", "env-model")
    monkeypatch.setenv("GRACE_LLM_API_KEY", "sk-env")
    assert ws.llm.complete("chat.answer", QUESTION, purpose="t", backend="http").model == "env-model"
    assert model_server.headers[-1]["Authorization"] == "Bearer sk-env"
    assert "sk-" not in ws.events(topic="llm.*")["payload"].astype(str).str.cat()
    with pytest.raises(LanguageModelError, match="must start with http:// or https://"):
        HttpBackend(base_url="ftp://example")
