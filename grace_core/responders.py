"""Chat responders: what answers a chat message.

* ``OfflineResponder`` (the default) needs no model: it answers from the workspace itself (memory artifacts,
  tasks, Hunter alerts, insights when that table exists) by BM25 retrieval over paragraphs, quotes the best
  passages and cites where each came from (``memory:/path``, ``task:<event id>``, ``alert:<event id>``).
  The same workspace and question always give the same answer.
* ``HttpResponder`` talks to any OpenAI-compatible server (``POST <base>/chat/completions``). Its base URL,
  model and key come from ``GRACE_LLM_BASE_URL``, ``GRACE_LLM_MODEL``, ``GRACE_LLM_API_KEY``, else from the
  workspace (settings ``llm.base_url``, ``llm.model`` and the secret ``llm_api_key``, never from the ledger;
  see ``grace_core.settings``). It retries connection errors, timeouts and 5xx answers with
  exponential backoff, and raises ``ResponderError`` naming the server when it cannot get an answer.

Every answer carries the responder's name, model and settings, which the chat records with the reply.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .bm25 import BM25, Params, tokenize
from .errors import ArtifactError, LanguageModelError, ResponderError

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = [
    "RETRIEVAL",
    "Answer",
    "HttpResponder",
    "OfflineResponder",
    "Passage",
    "Responder",
    "Turn",
    "responder_for",
    "retrieve",
]


@dataclass(frozen=True)
class Turn:
    """One earlier message of the conversation, as a responder sees it."""

    role: str  # "user" or "assistant"
    text: str


@dataclass(frozen=True)
class Answer:
    text: str
    citations: tuple[str, ...] = ()
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Responder(Protocol):
    """Anything with a ``name`` that turns a question (and the conversation so far) into an ``Answer``."""

    name: str

    def respond(self, ws: Workspace, *, user: str, text: str, history: Sequence[Turn]) -> Answer: ...


# -- retrieval -----------------------------------------------------------------------------------------------
# The ranking of passages (and of chat messages in ``chat.search``): k1=1.5 favours passages that repeat the
# question's words a little longer than the usual 1.2.
RETRIEVAL = Params(k1=1.5, b=0.75)


@dataclass(frozen=True)
class Passage:
    source: str  # the citation: memory:/path, task:<id>, alert:<id>, insight:<id>
    text: str


def _paragraphs(text: str, limit: int = 600) -> list[str]:
    parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [p if len(p) <= limit else p[: limit - 1] + "…" for p in parts]


def workspace_passages(ws: Workspace, user: str | None = None) -> list[Passage]:
    """Everything a responder can answer from, in a stable order (paragraph by paragraph).

    With ``user``, memory artifacts that governance does not let that user read (``memory.read``) are left out:
    an answer must not quote what its asker could not open.
    """
    out: list[Passage] = []
    # Plain rows, not DataFrames: this runs for every chat message and pandas would cost more than the queries.
    cur = ws.ledger.reader()
    versions = dict(cur.execute("SELECT path, version FROM memory_items WHERE NOT deleted").fetchall())
    check = ws.governance.check
    for path in sorted(versions):
        # A filter over every artifact, not a request to read each: a what-if, nothing recorded.
        if user is not None and not check(user, "memory.read", path, record="none", enforce=False).allowed:
            continue
        paragraphs = _memory_paragraphs(ws, path, versions.get(path))
        if paragraphs is None:  # deleted meanwhile: simply not a source
            continue
        out.extend(Passage(f"memory:{path}", p) for p in paragraphs)
    tasks = cur.execute(
        "SELECT id, title, state, kind, details FROM tasks ORDER BY created_at, id"
    ).fetchall()
    for task_id, title, state, kind, details in tasks:
        out.append(Passage(f"task:{task_id}", f"Task ({kind}, {state}): {title} {details}"))
    alerts = cur.execute(
        "SELECT id, rule, severity, target, actor, excerpts FROM hunter_alerts ORDER BY ts, id"
    ).fetchall()
    for alert_id, rule, severity, target, actor, excerpts in alerts:
        out.append(
            Passage(
                f"alert:{alert_id}",
                f"Security alert {rule} ({severity}) on {target} text from {actor}: {excerpts}",
            )
        )
    cols = _insight_columns(ws)
    if "id" in cols:
        # The reflection engine's table has a ``text`` column (its kind and key are labels, not prose).
        text_cols = ["text"] if "text" in cols else [c for c in cols if c != "id"]
        select = ", ".join(f'"{c}"' for c in ["id", *text_cols])
        for row in cur.execute(f"SELECT {select} FROM insights ORDER BY id").fetchall():
            body = " ".join(str(v) for v in row[1:] if v is not None)
            out.append(Passage(f"insight:{row[0]}", body))
    return out


# Per-workspace caches (a chat message rebuilds the passages, so these keep it from re-reading every note):
# the paragraphs of a memory version never change, and the insights table's columns are fixed by migrations.
_PARAGRAPHS: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], list[str]]] = weakref.WeakKeyDictionary()
_INSIGHT_COLUMNS: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def _memory_paragraphs(ws: Workspace, path: str, version: Any) -> list[str] | None:
    cache = _PARAGRAPHS.setdefault(ws, {})
    key = (path, int(version)) if version is not None else None
    if key is not None and key in cache:
        return cache[key]
    try:
        artifact = ws.memory.read(path)
    except ArtifactError:
        return None
    paragraphs = _paragraphs(artifact.content)
    cache[(path, int(artifact.version))] = paragraphs
    return paragraphs


def _insight_columns(ws: Workspace) -> list[str]:
    """The insights table's text columns ([] without the table); it belongs to another engine."""
    cols = _INSIGHT_COLUMNS.get(ws)
    if cols is None:
        cols = ws.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'insights' "
            "AND data_type = 'VARCHAR' ORDER BY ordinal_position"
        )["column_name"].tolist()
        _INSIGHT_COLUMNS[ws] = cols
    return cols


@functools.lru_cache(maxsize=65_536)
def _passage_tokens(text: str) -> tuple[str, ...]:
    # Passages repeat from one message to the next: tokenise each text once.
    return tuple(tokenize(text))


def retrieve(ws: Workspace, text: str, *, top_k: int = 3, user: str | None = None) -> list[Passage]:
    """The ``top_k`` passages of the workspace that best match ``text`` (BM25 with ``RETRIEVAL``), best first."""
    query = tokenize(text)
    if not query:
        return []
    passages = workspace_passages(ws, user)
    index = BM25([_passage_tokens(p.text) for p in passages], params=RETRIEVAL)
    return [passages[i] for i, _ in index.top(query, top_k)]


def _cited(passages: Sequence[Passage]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.source for p in passages))


class OfflineResponder:
    """Answers from the workspace by BM25 retrieval; deterministic, needs no model."""

    name = "offline"

    def __init__(self, *, top_k: int = 3) -> None:
        self.top_k = top_k

    @property
    def settings(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "k1": RETRIEVAL.k1, "b": RETRIEVAL.b, "unit": "paragraph"}

    def respond(self, ws: Workspace, *, user: str, text: str, history: Sequence[Turn]) -> Answer:
        hits = retrieve(ws, text, top_k=self.top_k, user=user)
        model = "bm25"
        if not hits:
            return Answer(
                "I found nothing in this workspace about that (memory, tasks, alerts). "
                "Write notes to memory, or ask with other words.",
                (),
                model,
                self.settings,
            )
        lines = ["From this workspace:"]
        lines += [f"{n}. [{p.source}] {p.text}" for n, p in enumerate(hits, 1)]
        return Answer("\n".join(lines), _cited(hits), model, self.settings)


# -- OpenAI-compatible HTTP backend --------------------------------------------------------------------------
SYSTEM_PROMPT = "You are Grace, a research assistant. Answer briefly and say when you do not know."
CONTEXT_PROMPT = (
    "Passages from this workspace that may help (each starts with its source in brackets). Use them when they "
    "answer the question and cite the sources you used, like [memory:/projects/alpha/notes.md]:"
)


class HttpResponder:
    """An OpenAI-compatible ``/v1/chat/completions`` backend, with timeouts and retries."""

    name = "http"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        ws: Workspace | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        temperature: float = 0.0,
        max_tokens: int = 512,
        context_k: int = 3,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        # Imported here: the llm package's offline policy uses this module's tokenizer.
        from .llm.http import HttpBackend

        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ResponderError("timeout must be positive; retries and backoff not negative")
        try:
            # One HTTP client and one place that reads the model settings (env, then workspace): ws.llm's.
            self._http = HttpBackend(
                base_url=base_url,
                model=model,
                api_key=api_key,
                ws=ws,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
            )
        except LanguageModelError as exc:
            raise ResponderError(str(exc)) from exc
        if not self._http.base_url:
            raise ResponderError(
                "the http responder needs a server: set GRACE_LLM_BASE_URL (e.g. http://127.0.0.1:8000/v1) "
                "or the workspace setting llm.base_url"
            )
        self.base_url = self._http.base_url
        self.model = self._http.model
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.temperature, self.max_tokens = temperature, max_tokens
        self.context_k = context_k
        # Backoff waits on the workspace clock (a ManualClock advances instead of sleeping), unless given.
        self._sleep = sleep

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def settings(self) -> dict[str, Any]:
        # The key is deliberately absent: settings go on the ledger.
        return {
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout": self.timeout,
            "retries": self.retries,
            "context_k": self.context_k,
        }

    def respond(self, ws: Workspace, *, user: str, text: str, history: Sequence[Turn]) -> Answer:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        # The same retrieved passages the offline responder would quote, as a second system message; the
        # reply cites them (the model's text may cite a subset, but these are what it was shown).
        context = retrieve(ws, text, top_k=self.context_k, user=user) if self.context_k > 0 else []
        if context:
            lines = [CONTEXT_PROMPT, *(f"[{p.source}] {p.text}" for p in context)]
            messages.append({"role": "system", "content": "\n".join(lines)})
        messages += [{"role": t.role, "content": t.text} for t in history]
        messages.append({"role": "user", "content": text})
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "user": user,
        }
        try:
            data = self._http.post(body, sleep=self._sleep or ws.clock.sleep).data
        except LanguageModelError as exc:
            raise ResponderError(f"{exc}; check GRACE_LLM_BASE_URL, or use the offline responder") from exc
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ResponderError(
                f"{self.url} answered without choices[0].message.content: {data!r:.300}"
            ) from exc
        if not isinstance(content, str):
            raise ResponderError(f"{self.url} answered a non-text message content: {content!r:.200}")
        model = data.get("model") if isinstance(data.get("model"), str) else self.model
        return Answer(content, _cited(context), model or self.model, self.settings)


def responder_for(name: str | Responder | None, ws: Workspace | None = None) -> Responder:
    """A responder by name (``offline``, ``http``), or the one given; None means offline."""
    if name is None or name == "offline":
        return OfflineResponder()
    if name == "http":
        return HttpResponder(ws=ws)
    if isinstance(name, str):
        raise ResponderError(f"unknown responder {name!r}; use offline or http")
    if not isinstance(name, Responder):
        raise ResponderError(f"{name!r} is not a responder (it needs a name and respond())")
    return name
