"""Any OpenAI-compatible server (Ollama, vLLM, llama.cpp server, hosted APIs): ``POST <base>/chat/completions``.

Configuration (``grace_core.settings``), first found wins: the constructor's arguments, then ``GRACE_LLM_BASE_URL``,
``GRACE_LLM_MODEL``, ``GRACE_LLM_API_KEY``, then the workspace (settings ``llm.base_url`` and ``llm.model``; the key
among the workspace's secrets, never on the ledger). Connection errors, timeouts, 429 and 5xx
answers are retried with exponential backoff waited on the workspace clock (a ManualClock advances instead of
sleeping); a 4xx other than 429 is not retried. Every failure raises ``ModelCallError`` naming the server.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grace_core import settings
from grace_core.errors import LanguageModelError, ModelCallError

from .base import Request, Result

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = ["HttpBackend", "HttpResponse"]

MAX_RETRY_AFTER = 60.0  # seconds: a server's Retry-After is honoured up to this


@dataclass(frozen=True)
class HttpResponse:
    """A decoded JSON answer and what it took to get it."""

    data: dict[str, Any]
    attempts: int
    waited_s: float
    latency_ms: float


class HttpBackend:
    """An OpenAI-compatible chat completions endpoint, with timeouts and retries."""

    name = "http"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        ws: Workspace | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        base = settings.resolve(settings.LLM_BASE_URL, given=base_url, ws=ws)
        if base and not base.startswith(("http://", "https://")):
            raise LanguageModelError(
                f"the model server URL must start with http:// or https://, not {base!r}"
            )
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise LanguageModelError("timeout must be positive; retries and backoff not negative")
        # No server is not an error yet: replaying recorded completions needs only the model's name.
        self.base_url = base.rstrip("/") if base else ""
        self._model = settings.resolve(settings.LLM_MODEL, given=model, ws=ws) or "default"
        self._api_key = settings.resolve(settings.LLM_API_KEY, given=api_key, ws=ws)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    @property
    def model(self) -> str:
        return self._model

    @property
    def url(self) -> str:
        # OpenAI clients take a base URL that already ends in /v1; accept a bare server address too.
        return self.base_url + (
            "/chat/completions" if self.base_url.endswith("/v1") else "/v1/chat/completions"
        )

    def __repr__(self) -> str:
        return f"HttpBackend({self.base_url or 'no server'!r}, model={self.model!r})"

    # -- one completion ----------------------------------------------------------------------------------------
    def complete(self, request: Request) -> Result:
        p = request.params
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in request.messages]}
        for key in ("temperature", "max_tokens", "seed", "top_p", "stop"):
            if key in p:
                body[key] = p[key]
        if request.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.prompt.replace(".", "_"), "schema": dict(request.schema)},
            }
        response = self.post(body, sleep=request.sleep)
        data = response.data
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelCallError(
                f"model server {self.url} answered without choices[0].message.content: {json.dumps(data)[:200]}",
                kind="bad_response",
                attempts=response.attempts,
                waited_s=response.waited_s,
            ) from exc
        if not isinstance(content, str):
            raise ModelCallError(
                f"model server {self.url} answered a message content that is not text: {content!r:.100}",
                kind="bad_response",
                attempts=response.attempts,
                waited_s=response.waited_s,
            )
        raw_usage = data.get("usage")
        if not isinstance(raw_usage, dict):
            raw_usage = {}
        usage = {
            k: int(v)
            for k, v in raw_usage.items()
            if k in ("prompt_tokens", "completion_tokens", "total_tokens") and isinstance(v, int)
        }
        details: dict[str, Any] = {"server": self.base_url}
        if isinstance(data.get("model"), str):
            details["served_model"] = data["model"]
        if isinstance(data.get("system_fingerprint"), str):
            details["system_fingerprint"] = data["system_fingerprint"]
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        return Result(
            text=content,
            finish_reason=finish if isinstance(finish, str) else None,
            usage=usage,
            latency_ms=round(response.latency_ms, 3),
            attempts=response.attempts,
            waited_s=response.waited_s,
            details=details,
        )

    # -- transport ---------------------------------------------------------------------------------------------
    def post(self, body: Mapping[str, Any], *, sleep: Callable[[float], None]) -> HttpResponse:
        """POST ``body`` as JSON, retrying what a retry can fix; the decoded JSON object or ModelCallError."""
        if not self.base_url:
            raise ModelCallError(
                "no model server is configured: set GRACE_LLM_BASE_URL (e.g. http://127.0.0.1:11434/v1) "
                "or the workspace setting llm.base_url",
                kind="not_configured",
                attempts=0,
            )
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempts = self.retries + 1
        waited = 0.0
        last, kind, retry_after = "", "unreachable", 0.0
        for attempt in range(attempts):
            if attempt:
                delay = max(self.backoff * 2 ** (attempt - 1), retry_after)
                sleep(delay)
                waited += delay
            retry_after = 0.0
            request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")  # noqa: S310
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - checked http(s)
                    raw = answer.read()
            except urllib.error.HTTPError as exc:
                detail = " ".join(exc.read()[:200].decode(errors="replace").split())
                if exc.code >= 500 or exc.code == 429:
                    last, kind = f"HTTP {exc.code}: {detail}", "http_status"
                    retry_after = _retry_after(exc.headers.get("Retry-After"))
                    continue
                raise ModelCallError(
                    f"model server {self.url} refused the request: HTTP {exc.code}: {detail}",
                    kind="http_status",
                    attempts=attempt + 1,
                    waited_s=waited,
                ) from exc
            except TimeoutError:
                last, kind = f"no answer within {self.timeout:g} s", "timeout"
                continue
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError):
                    last, kind = f"no answer within {self.timeout:g} s", "timeout"
                else:
                    last, kind = f"cannot connect: {exc.reason}", "unreachable"
                continue
            except OSError as exc:
                last, kind = f"connection failed: {exc}", "unreachable"
                continue
            latency_ms = (time.perf_counter() - started) * 1000.0
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise ModelCallError(
                    f"model server {self.url} answered something that is not a JSON object: {raw[:200]!r}",
                    kind="bad_response",
                    attempts=attempt + 1,
                    waited_s=waited,
                )
            return HttpResponse(data, attempt + 1, waited, latency_ms)
        state = {"http_status": "failing", "timeout": "not answering"}.get(kind, "unreachable")
        raise ModelCallError(
            f"model server {self.url} {state} after {attempts} attempt(s): {last}",
            kind=kind,
            attempts=attempts,
            waited_s=waited,
        )


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (a number of seconds; an HTTP date is not worth parsing here)."""
    if not value:
        return 0.0
    with contextlib.suppress(ValueError):
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    return 0.0
