"""``ws.llm``: render a prompt, call a backend, record the call on the ledger, hand back the completion.

Every call is an event, caused by the event being handled when it is made (the mesh's causal context):

* ``llm.completed``: prompt name and version, purpose, backend, model, the full rendered messages (system,
  retrieved passages, history, question), parameters with the seed, the JSON schema asked for (or null), the
  prompt hash, and the outcome: raw ``response``, ``finish_reason``, token ``usage``, ``latency_ms`` (null when
  not measured, as offline), ``attempts``, ``waited_s`` (backoff on the workspace clock) and ``details``.
* ``llm.failed``: the same call fields with ``error`` (one line) and ``error_kind``; the call raises
  ``ModelCallError`` with that line. Nothing is swallowed: the caller decides on a fallback.
* ``llm.output_rejected``: a JSON prompt's answer that is not JSON or does not fit the schema, or a text
  prompt's empty answer (``reason``), caused by the ``llm.completed`` event it rejects; the call raises
  ``ModelOutputError``.

With a cassette (``use_cassette``), a call whose prompt hash was recorded replays the recorded outcome and
publishes the very payload the original call published, so a rerun reproduces the ledger to its head hash.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import pandas as pd

from grace_core import settings
from grace_core.causal import handling
from grace_core.clock import ManualClock
from grace_core.errors import (
    CassetteError,
    LanguageModelError,
    ModelCallError,
    ModelOutputError,
    PromptError,
    ReadOnlyError,
)
from grace_core.events import Event

from .base import Backend, Request, Result, prompt_hash
from .cassette import Cassette, Recording
from .http import HttpBackend
from .llamacpp import LlamaCppBackend
from .offline import OfflineBackend, OfflineHandler
from .prompts import Prompt, check_params, default_prompts
from .schema import extract_json, schema_errors

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.12+; only the type checker reads it

    from grace_core.workspace import Workspace

__all__ = ["BACKENDS", "CallOptions", "Completion", "LanguageModels"]


class CallOptions(TypedDict, total=False):
    """The options of ``complete`` and ``complete_json``: ``backend`` (a name or a Backend; default: the
    workspace's ``default_backend``), ``params`` (override the prompt's defaults), ``version`` (of the prompt;
    default: the newest), ``actor`` (who calls; default ``system``)."""

    backend: str | Backend | None
    params: Mapping[str, Any] | None
    version: int | None
    actor: str


BACKENDS = ("offline", "http", "llamacpp")


@dataclass(frozen=True)
class Completion:
    """A model's answer to one rendered prompt, and where it is recorded (``event_id``)."""

    text: str
    prompt: str
    version: int
    purpose: str
    backend: str
    model: str
    prompt_hash: str
    messages: tuple[Mapping[str, str], ...]
    params: Mapping[str, Any]
    finish_reason: str | None
    usage: Mapping[str, int]
    latency_ms: float | None
    event_id: str
    replayed: bool = False  # the outcome came from a cassette, not from the backend
    data: Any = field(default=None)  # complete_json: the parsed, schema-checked JSON


class LanguageModels:
    """``ws.llm``: one model interface for chat, reflection and learning."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.prompts = default_prompts()
        self.offline = OfflineBackend()
        self.cassette: Cassette | None = None
        self._backends: dict[str, Backend] = {}

    # -- configuration ---------------------------------------------------------------------------------------
    def register_offline(self, name: str, handler: OfflineHandler) -> OfflineHandler | None:
        """Answer prompt ``name`` offline with ``handler(inputs) -> text``; returns the handler it replaces."""
        return self.offline.register(name, handler)

    def register_backend(self, backend: Backend) -> None:
        """Use this backend instance whenever its name is asked for (e.g. an ``HttpBackend`` with a short timeout)."""
        if not isinstance(backend, Backend):
            raise LanguageModelError(f"{backend!r} is not a backend (it needs name, model and complete())")
        self._backends[backend.name] = backend

    @property
    def default_backend(self) -> str:
        """``GRACE_LLM_BACKEND``, else the workspace setting ``llm.backend``, else ``offline``."""
        return settings.resolve(settings.LLM_BACKEND, ws=self.ws) or "offline"

    def backend(self, name: str | None = None) -> Backend:
        """The backend called ``name`` (default: ``default_backend``), configured from env and workspace."""
        name = name or self.default_backend
        if name in self._backends:
            return self._backends[name]
        if name == "offline":
            return self.offline
        if name == "http":
            return HttpBackend(ws=self.ws)
        if name == "llamacpp":
            return LlamaCppBackend(ws=self.ws)
        known = ", ".join(dict.fromkeys([*BACKENDS, *self._backends]))
        raise LanguageModelError(f"unknown model backend {name!r}; use one of {known}")

    def use_cassette(
        self, cassette: Cassette | str | os.PathLike[str] | None, *, mode: str = "replay"
    ) -> Cassette | None:
        """Replay and/or record calls through a cassette (a ``Cassette`` or a JSONL path); None stops using one."""
        if cassette is not None and not isinstance(cassette, Cassette):
            cassette = Cassette.open(cassette, mode=mode)
        self.cassette = cassette
        return cassette

    def cassette_from_ledger(self, *, mode: str = "replay", since: int = 0) -> Cassette:
        """A cassette of every call this workspace recorded (to replay a study, or ``.save()`` to a file)."""
        return Cassette.from_workspace(self.ws, mode=mode, since=since)

    # -- calls -------------------------------------------------------------------------------------------------
    def complete(
        self, name: str, inputs: Mapping[str, Any], *, purpose: str, **options: Unpack[CallOptions]
    ) -> Completion:
        """Render prompt ``name`` with ``inputs``, call the backend, record the call; the answer's text.

        ``purpose`` says why (e.g. ``"chat:<conversation id>"``, ``"reflection"``); ``params`` override the
        prompt's defaults (temperature, max_tokens, seed, top_p, stop, structured); the seed defaults to the
        workspace seed (0 without one). Raises PromptError for bad inputs (nothing recorded), ModelCallError
        when the backend fails (recorded as ``llm.failed``), CassetteError on a replay miss.
        """
        return self._call(name, inputs, purpose=purpose, parse=False, **options)

    def complete_json(
        self, name: str, inputs: Mapping[str, Any], *, purpose: str, **options: Unpack[CallOptions]
    ) -> Completion:
        """``complete`` for a JSON prompt, with the answer parsed and checked against the prompt's schema.

        The parsed value is ``completion.data``. An answer that is not JSON or does not fit the schema is
        recorded as ``llm.output_rejected`` and raises ModelOutputError (which carries the completion).
        """
        return self._call(name, inputs, purpose=purpose, parse=True, **options)

    def _call(
        self,
        name: str,
        inputs: Mapping[str, Any],
        *,
        purpose: str,
        parse: bool,
        backend: str | Backend | None = None,
        params: Mapping[str, Any] | None = None,
        version: int | None = None,
        actor: str = "system",
    ) -> Completion:
        if not isinstance(purpose, str) or not purpose.strip():
            raise PromptError("a model call needs a purpose: say why it is made (e.g. 'reflection')")
        prompt = self.prompts.get(name, version)
        if parse and prompt.output != "json":
            raise PromptError(f"{prompt.label} answers text, not JSON; use complete()")
        values = prompt.normalize(inputs)
        messages = prompt.messages(values)
        engine = self._resolve(backend, prompt)
        merged = {**prompt.params, **check_params(params or {}, prompt.label)}
        merged.setdefault("seed", self.ws.seed if self.ws.seed is not None else 0)
        schema = dict(prompt.schema) if prompt.schema is not None and merged.get("structured") else None
        call: dict[str, Any] = {
            "prompt": prompt.name,
            "version": prompt.version,
            "backend": engine.name,
            "model": engine.model,
            "messages": messages,
            "params": merged,
            "schema": schema,
        }
        key = prompt_hash(
            backend=engine.name, model=engine.model, messages=messages, params=merged, schema=schema
        )
        self._check_writable()
        topic, result, replayed = self._outcome(prompt, engine, call, key, values)
        payload = {**call, "purpose": purpose, "prompt_hash": key, **result}
        event = self.ws.publish(topic, payload, actor=actor)
        if topic == "llm.failed":
            raise ModelCallError(
                str(result.get("error")),
                kind=str(result.get("error_kind")),
                attempts=int(result.get("attempts") or 0),
                waited_s=float(result.get("waited_s") or 0.0),
            )
        completion = Completion(
            text=str(result["response"]),
            prompt=prompt.name,
            version=prompt.version,
            purpose=purpose,
            backend=engine.name,
            model=engine.model,
            prompt_hash=key,
            messages=tuple(messages),
            params=merged,
            finish_reason=result.get("finish_reason"),
            usage=dict(result.get("usage") or {}),
            latency_ms=result.get("latency_ms"),
            event_id=event.id,
            replayed=replayed,
        )
        if not parse:
            if not completion.text.strip():  # a text prompt asks for text: an empty answer is malformed
                raise self.reject(completion, "the answer is empty", actor=actor, completed=event)
            return completion
        return self._parsed(prompt, completion, event, actor)

    def _resolve(self, backend: str | Backend | None, prompt: Prompt) -> Backend:
        engine = backend if backend is not None and not isinstance(backend, str) else self.backend(backend)
        if not isinstance(engine, Backend):
            raise LanguageModelError(f"{engine!r} is not a backend (it needs name, model and complete())")
        # The offline policy records the handler that answered as its model.
        return engine.for_prompt(prompt.name) if isinstance(engine, OfflineBackend) else engine

    def _check_writable(self) -> None:
        # A call that cannot be recorded is not made: nothing happens off the ledger.
        if self.ws.read_only:
            raise ReadOnlyError("a read-only snapshot cannot record model calls; open the workspace itself")
        gate = self.ws.mesh.gate
        if gate is not None:
            gate(["llm.completed"])

    def _outcome(
        self, prompt: Prompt, engine: Backend, call: Mapping[str, Any], key: str, values: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any], bool]:
        cassette = self.cassette
        if cassette is not None and cassette.replays:
            recording = cassette.take(key)
            if recording is not None:
                waited = float(recording.result.get("waited_s") or 0.0)
                # The original call's backoff moved simulated time; the replay moves it the same (free) way.
                if waited > 0 and isinstance(self.ws.clock, ManualClock):
                    self.ws.clock.sleep(waited)
                return recording.topic, dict(recording.result), True
            if cassette.mode == "replay":
                raise CassetteError(
                    f"the cassette holds no {prompt.label} call by {engine.name}/{engine.model} with prompt hash "
                    f"{key}; record it first (cassette mode record or auto)"
                )
        request = Request(
            prompt=prompt.name,
            version=prompt.version,
            messages=call["messages"],
            params=call["params"],
            inputs=values,
            schema=call["schema"],
            sleep=self.ws.clock.sleep,
        )
        result: dict[str, Any]
        try:
            answer: Result = engine.complete(request)
        except ModelCallError as exc:
            topic = "llm.failed"
            result = {
                "error": " ".join(str(exc).split()),
                "error_kind": exc.kind,
                "attempts": exc.attempts,
                "waited_s": exc.waited_s,
            }
        else:
            topic = "llm.completed"
            result = {
                "response": answer.text,
                "finish_reason": answer.finish_reason,
                "usage": dict(answer.usage),
                "latency_ms": answer.latency_ms,
                "attempts": answer.attempts,
                "waited_s": answer.waited_s,
                "details": dict(answer.details),
            }
        if cassette is not None and cassette.records:
            cassette.add(Recording(key, topic, call, result))
        return topic, result, False

    def _parsed(self, prompt: Prompt, completion: Completion, completed: Event, actor: str) -> Completion:
        try:
            data = extract_json(completion.text)
        except ModelOutputError as exc:
            reason = str(exc)
        else:
            errors = schema_errors(data, prompt.schema or {})
            if not errors:
                return dataclasses.replace(completion, data=data)
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            reason = "; ".join(errors[:3]) + more
        raise self.reject(completion, reason, actor=actor, completed=completed)

    def reject(
        self, completion: Completion, reason: str, *, actor: str, completed: Event | None = None
    ) -> ModelOutputError:
        """Record that ``completion``'s answer is unusable (``llm.output_rejected``, caused by its
        ``llm.completed``) and return the error to raise. For answers that parse but fail the caller's own
        checks too (e.g. insights citing ids that were not retrieved), so every rejection is recorded one way."""
        reason = " ".join(str(reason).split())
        event = completed if completed is not None else self.ws.ledger.get(completion.event_id)
        with handling(event):
            self.ws.publish(
                "llm.output_rejected",
                {
                    "prompt": completion.prompt,
                    "version": completion.version,
                    "purpose": completion.purpose,
                    "backend": completion.backend,
                    "model": completion.model,
                    "completion": completion.event_id,
                    "reason": reason,
                },
                actor=actor,
            )
        return ModelOutputError(
            f"{completion.prompt} v{completion.version} answer from {completion.backend} ({completion.model}) "
            f"rejected: {reason}",
            completion=completion,
        )

    # -- what was recorded -------------------------------------------------------------------------------------
    def calls(self, *, prompt: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Recorded model calls (completed, failed, rejected), oldest first; ``limit`` keeps the newest."""
        sql = """
            SELECT seq, id, ts, topic, actor, parent_id,
                json_extract_string(payload, '$.prompt') AS prompt,
                TRY_CAST(json_extract(payload, '$.version') AS INTEGER) AS version,
                json_extract_string(payload, '$.purpose') AS purpose,
                json_extract_string(payload, '$.backend') AS backend,
                json_extract_string(payload, '$.model') AS model,
                TRY_CAST(json_extract(payload, '$.usage.prompt_tokens') AS BIGINT) AS prompt_tokens,
                TRY_CAST(json_extract(payload, '$.usage.completion_tokens') AS BIGINT) AS completion_tokens,
                TRY_CAST(json_extract(payload, '$.latency_ms') AS DOUBLE) AS latency_ms,
                json_extract_string(payload, '$.finish_reason') AS finish_reason,
                coalesce(json_extract_string(payload, '$.error'), json_extract_string(payload, '$.reason'))
                    AS error,
                json_extract_string(payload, '$.prompt_hash') AS prompt_hash
            FROM events
            WHERE topic IN ('llm.completed', 'llm.failed', 'llm.output_rejected')
        """
        args: list[Any] = []
        if prompt is not None:
            sql += " AND json_extract_string(payload, '$.prompt') = ?"
            args.append(prompt)
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT {int(limit)})"
        return self.ws.ledger.reader().execute(sql + " ORDER BY seq", args).df()

    def call(self, event_id: str) -> dict[str, Any]:
        """The full recorded payload of one call event (its messages, parameters, response, ...)."""
        event = self.ws.ledger.get(event_id)
        if not event.topic.startswith("llm."):
            raise LanguageModelError(f"event {event_id} is a {event.topic} event, not a model call")
        return {"id": event.id, "seq": event.seq, "topic": event.topic, **event.payload}
