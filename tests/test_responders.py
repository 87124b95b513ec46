"""Responders: offline BM25 over the workspace, and an OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from grace_core import Workspace
from grace_core.errors import ResponderError
from grace_core.responders import HttpResponder, OfflineResponder, Turn


# -- offline -------------------------------------------------------------------------------------------------
def readers(ws: Workspace) -> None:
    ws.auth.register("ada", "correct horse battery staple 42", role="admin", by="system")
    ws.auth.register("rita", "correct horse battery staple 42", role="researcher", by="ada")


def test_offline_answers_from_memory_tasks_and_alerts_with_citations(ws: Workspace) -> None:
    readers(ws)
    ws.memory.write(
        "/projects/alpha/notes.md", "Intro.\n\nAlpha measurements live in DuckDB.", actor="system"
    )
    task = ws.tasks.create("Calibrate the spectrometer", kind="lab", actor="system")
    ws.hunter.screen("AKIAIOSFODNN7EXAMPLE", target="chat", actor="someone")
    alert_id = ws.sql("SELECT id FROM hunter_alerts")["id"].iloc[0]
    responder = OfflineResponder()
    a = responder.respond(ws, user="rita", text="where do alpha measurements live", history=[])
    assert a.citations[0] == "memory:/projects/alpha/notes.md"
    assert "Alpha measurements live in DuckDB." in a.text
    assert "Intro." not in a.text
    b = responder.respond(ws, user="rita", text="spectrometer calibration", history=[])
    assert b.citations == (f"task:{task.id}",)
    c = responder.respond(ws, user="rita", text="security alert someone", history=[])
    assert f"alert:{alert_id}" in c.citations
    assert responder.respond(ws, user="rita", text="where do alpha measurements live", history=[]) == a
    none = responder.respond(ws, user="rita", text="xylophone", history=[])
    assert none.citations == ()
    assert "nothing" in none.text


def test_offline_reads_insights_when_the_table_exists(ws: Workspace) -> None:
    # the reflection engine's table (a projection): a row as it would write it
    ws.con.execute(
        "INSERT INTO insights (id, kind, key, text, score, evidence, evidence_count, reflection, trigger, "
        "window_start, window_end, created_at) VALUES ('ev-1', 'anomaly', 'loop:x', "
        "'Loop latency doubles after midnight', 1.0, [], 0, 1, 'interval', now(), now(), now())"
    )
    answer = OfflineResponder().respond(ws, user="rita", text="latency after midnight", history=[])
    assert answer.citations == ("insight:ev-1",)


def test_offline_quotes_only_what_the_asker_may_read(ws: Workspace) -> None:
    readers(ws)
    ws.governance.add_policy(
        {"id": "private", "effect": "deny", "roles": ["researcher"], "actions": ["memory.read:/private/**"]},
        actor="ada",
    )
    ws.memory.write("/private/salaries.md", "The salaries spreadsheet is in the vault.", actor="ada")
    ws.memory.write("/shared/vault.md", "The vault opens on Mondays.", actor="ada")
    asked = "where is the salaries spreadsheet vault"
    assert OfflineResponder().respond(ws, user="ada", text=asked, history=[]).citations[0] == (
        "memory:/private/salaries.md"
    )
    rita = OfflineResponder().respond(ws, user="rita", text=asked, history=[])
    assert rita.citations == ("memory:/shared/vault.md",)
    assert "salaries" not in rita.text


# -- a real OpenAI-compatible server -------------------------------------------------------------------------
class Server:
    """A real HTTP server on 127.0.0.1; ``script`` says what each request gets (status, or 'slow')."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, **body})
                outer.headers.append(dict(self.headers))
                step = outer.script.pop(0) if outer.script else 200
                if step == "slow":
                    time.sleep(1.0)
                    step = 200
                if step != 200:
                    self.send_response(step)
                    self.end_headers()
                    self.wfile.write(b'{"error": "boom"}')
                    return
                last = body["messages"][-1]["content"]
                data = json.dumps(
                    {
                        "model": body["model"] + "-served",
                        "choices": [{"message": {"content": f"echo {last}"}}],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def fast(url: str, **kwargs: Any) -> HttpResponder:
    kwargs = {"model": "tiny", "api_key": "sk-test", "timeout": 5.0, "backoff": 0.01, **kwargs}
    return HttpResponder(base_url=url, **kwargs)


def test_http_reply(ws: Workspace, server: Server) -> None:
    answer = fast(server.url).respond(
        ws, user="rita", text="hello", history=[Turn("user", "hi"), Turn("assistant", "hey")]
    )
    assert answer.text == "echo hello"
    assert answer.model == "tiny-served"
    assert answer.settings["base_url"] == server.url
    assert "sk-test" not in json.dumps(answer.settings)
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["model"] == "tiny"
    assert [m["role"] for m in req["messages"]] == ["system", "user", "assistant", "user"]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_http_retries_a_500_then_succeeds(ws: Workspace, server: Server) -> None:
    server.script = [500, 503]
    answer = fast(server.url).respond(ws, user="rita", text="again", history=[])
    assert answer.text == "echo again"
    assert len(server.requests) == 3


def test_http_gives_up_with_a_clear_error(ws: Workspace, server: Server) -> None:
    server.script = [500] * 10
    with pytest.raises(ResponderError, match="after 3 attempt"):
        fast(server.url, retries=2).respond(ws, user="rita", text="x", history=[])
    server.script = [400]
    with pytest.raises(ResponderError, match="HTTP 400"):
        fast(server.url).respond(ws, user="rita", text="x", history=[])
    assert len(server.requests) == 4  # a 4xx is not retried


def test_http_unreachable_port(ws: Workspace) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ResponderError, match=rf"127\.0\.0\.1:{port}.*cannot connect"):
        fast(f"http://127.0.0.1:{port}/v1", retries=1).respond(ws, user="rita", text="x", history=[])


def test_http_timeout_then_retry(ws: Workspace, server: Server) -> None:
    server.script = ["slow", "slow"]
    with pytest.raises(ResponderError, match=r"no answer within 0\.2 s"):
        fast(server.url, timeout=0.2, retries=1).respond(ws, user="rita", text="x", history=[])
    server.script = ["slow"]
    answer = fast(server.url, timeout=0.5, retries=1).respond(ws, user="rita", text="y", history=[])
    assert answer.text == "echo y"


def test_http_config_from_environment_and_workspace(
    ws: Workspace, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GRACE_LLM_BASE_URL", "GRACE_LLM_MODEL", "GRACE_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ResponderError, match="GRACE_LLM_BASE_URL"):
        HttpResponder(ws=ws)
    ws.con.execute(
        "INSERT INTO workspace_meta VALUES ('llm.base_url', ?), ('llm.model', 'ws-model')", [server.url]
    )
    assert (HttpResponder(ws=ws).base_url, HttpResponder(ws=ws).model) == (server.url, "ws-model")
    monkeypatch.setenv("GRACE_LLM_MODEL", "env-model")
    monkeypatch.setenv("GRACE_LLM_API_KEY", "sk-env")
    HttpResponder(ws=ws).respond(ws, user="rita", text="x", history=[])
    assert server.requests[-1]["model"] == "env-model"
    assert server.headers[-1]["Authorization"] == "Bearer sk-env"


def test_chat_through_http_records_model_and_settings(
    ws: Workspace, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.auth.register("ada", "correct horse battery staple 42", role="admin", by="system")
    monkeypatch.setenv("GRACE_LLM_BASE_URL", server.url)
    monkeypatch.setenv("GRACE_LLM_MODEL", "tiny")
    reply = ws.chat.send("ada", "what is grace?", responder="http")
    payload = ws.ledger.get(reply.id).payload
    assert payload["text"] == "echo what is grace?"
    assert (payload["responder"], payload["model"]) == ("http", "tiny-served")
    assert payload["settings"]["base_url"] == server.url
    assert payload["settings"]["temperature"] == 0.0
    ws.chat.send("ada", "and then?", conversation=reply.conversation, responder="http")
    assert [m["content"] for m in server.requests[-1]["messages"][1:]] == [
        "what is grace?",
        "echo what is grace?",
        "and then?",
    ]


def test_http_backoff_waits_on_the_workspace_clock(ws: Workspace, server: Server) -> None:
    server.script = [500, 503]
    before = ws.clock.time()
    started = time.perf_counter()
    answer = fast(server.url, backoff=30.0, retries=2).respond(ws, user="rita", text="patience", history=[])
    assert answer.text == "echo patience"
    assert ws.clock.time() - before == 90.0  # 30 s then 60 s, on the ManualClock
    assert time.perf_counter() - started < 10  # not slept in real time


def test_http_prompt_carries_workspace_context_and_the_reply_cites_it(
    ws: Workspace, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers(ws)
    ws.memory.write("/projects/alpha/notes.md", "The alpha deadline is Friday the 13th.", actor="rita")
    ws.memory.write("/projects/beta/plan.md", "Beta trains a classifier.", actor="rita")
    monkeypatch.setenv("GRACE_LLM_BASE_URL", server.url)
    reply = ws.chat.send("rita", "When is the alpha deadline?", responder="http")
    system = [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "system"]
    assert len(system) == 2
    assert "[memory:/projects/alpha/notes.md] The alpha deadline is Friday the 13th." in system[1]
    assert "plan.md" not in system[1]  # only passages that match the question
    assert reply.citations == ("memory:/projects/alpha/notes.md",)
    assert ws.ledger.get(reply.id).payload["citations"] == ["memory:/projects/alpha/notes.md"]
    # the causal chain: reply -> question, and the cited artifact's creation event is on the ledger
    assert ws.causal.lineage(reply.id)["topic"].tolist()[:2] == [
        "chat.message.responded",
        "chat.message.received",
    ]
    nothing = fast(server.url, context_k=0).respond(ws, user="rita", text="alpha deadline", history=[])
    assert nothing.citations == ()
    assert [m["role"] for m in server.requests[-1]["messages"]] == ["system", "user"]
