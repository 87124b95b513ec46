"""What every backend is given and gives back, and the prompt hash that keys recorded completions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from grace_core.events import canonical_json

__all__ = ["Backend", "Request", "Result", "prompt_hash"]


@dataclass(frozen=True)
class Request:
    """One rendered prompt, ready for a backend."""

    prompt: str  # the prompt's name, e.g. "chat.answer"
    version: int
    messages: Sequence[Mapping[str, str]]  # [{role, content}], system first
    params: Mapping[str, Any]  # temperature, max_tokens, seed, ... (see prompts.PARAMS)
    inputs: Mapping[
        str, Any
    ]  # the structured inputs the messages were rendered from (the offline policy reads them)
    schema: Mapping[str, Any] | None = None  # the JSON schema to constrain the answer to, when asked
    sleep: Callable[[float], None] = field(default=lambda _s: None, repr=False)  # waits between retries


@dataclass(frozen=True)
class Result:
    """A backend's answer, with what is known about how it was produced."""

    text: str
    finish_reason: str | None = None  # "stop", "length", ...
    usage: Mapping[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens, total_tokens
    latency_ms: float | None = None  # wall time of the answering request; None when not measured
    attempts: int = 1
    waited_s: float = 0.0  # backoff waited on the workspace clock before the answering attempt
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. the server and the model it reported


@runtime_checkable
class Backend(Protocol):
    """Turns a rendered request into text: offline policy, an HTTP server, an embedded model.

    ``name`` and ``model`` identify what answered (both go into the prompt hash). ``complete`` raises
    ``ModelCallError`` (with ``kind``, ``attempts``, ``waited_s``) when it cannot answer; the engine records it.
    """

    name: str

    @property
    def model(self) -> str: ...

    def complete(self, request: Request) -> Result: ...


def prompt_hash(
    *,
    backend: str,
    model: str,
    messages: Sequence[Mapping[str, str]],
    params: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
) -> str:
    """sha256 of the canonical JSON of everything that decides a completion (the cassette key)."""
    material = {
        "backend": backend,
        "model": model,
        "messages": [dict(m) for m in messages],
        "params": dict(params),
        "schema": schema,
    }
    return hashlib.sha256(canonical_json(material, limit=1 << 30).encode()).hexdigest()
