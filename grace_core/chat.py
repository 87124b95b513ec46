"""Chat: conversations per user, every message an event on the ledger.

``send`` records the question (``chat.message.received``, secrets masked), then, caused by it: Hunter's alerts
(target ``chat``), governance's decision (action ``chat.send``), and either a refusal
(``chat.message.refused``) or an answer. The answer comes from the one model interface, ``ws.llm``: prompt
``chat.answer`` with the question, the retrieved passages (``grace_core.retrieval``, each with its id), the
conversation so far and the active lessons about chat (ExpeL: lessons in the responder's context). The call is an
``llm.completed`` event caused by the question, and the reply (``chat.message.responded``) names the backend
(``responder``), model, parameters (``settings``), the call (``llm_call``), the passage ids the answer cites, the
lessons it had in context and those held out of it (``lessons``), and whether it answered (``answered``: it did not
say it does not know), from which learning votes on the lessons by outcome.
A model that cannot answer leaves ``llm.failed`` and ``chat.message.failed`` (the question stays on record) and
raises ``ModelCallError`` with one line; an empty answer is rejected (``llm.output_rejected``, then
``chat.message.failed``) and raises ``ModelOutputError``. ``resolve`` closes a conversation with a summary of
what resolved it (``chat.conversation.resolved``): reflection turns it into knowledge that memory, and so chat,
can find.
Tables ``conversations`` and ``chat_messages`` are projections of those events, so replay rebuilds them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from .bm25 import BM25, tokenize
from .causal import handling
from .errors import ChatError, ModelCallError, ModelOutputError
from .events import Event
from .hunter import Finding, severity_rank
from .hunter.scanner import redact
from .learning import is_chat_lesson
from .retrieval import RETRIEVAL, retrieve
from .times import TS

if TYPE_CHECKING:
    from .auth import Auth
    from .governance import Governance
    from .hunter import Hunter
    from .learning import Learning
    from .llm import LanguageModels
    from .modes import Modes
    from .workspace import Workspace

__all__ = ["Chat", "Reply", "cited", "mask_secrets"]

ASSISTANT = "chat"  # the actor of replies and refusals
MAX_TEXT = 20_000
TOP_K = 3  # passages retrieved for an answer
MAX_HISTORY = 8  # earlier turns of the conversation given to the model
MAX_LESSONS = 5  # lessons in an answer's context, strongest first
_CITATION = re.compile(r"\[([a-z]+:[^\]\s]+)\]")
_THREATS = ("injection", "secret")


@dataclass(frozen=True)
class Reply:
    """The outcome of one ``send``: a reply, or a refusal (``refused``)."""

    id: str  # the reply's (or refusal's) event id
    conversation: str
    message_id: str  # the question's event id
    parent_id: str | None
    text: str
    refused: bool
    responder: str | None  # the model backend that answered (offline, http, llamacpp)
    model: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    citations: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    llm_call: str | None = None  # the ``llm.completed`` event of the answer


def cited(text: str, passages: list[dict[str, str]]) -> tuple[str, ...]:
    """The ids of ``passages`` that ``text`` cites in square brackets, in the order it cites them."""
    known = {p["id"] for p in passages}
    return tuple(dict.fromkeys(c for c in _CITATION.findall(text) if c in known))


def mask_secrets(text: str, findings: list[Finding]) -> str:
    """``text`` with every secret Hunter found replaced by ``[redacted:<rule>]`` (injections stay readable)."""
    return redact(text, [f for f in findings if f.category == "secret"], label="redacted")


class Chat:
    """Conversations of the workspace's users (``ws.chat``)."""

    def __init__(
        self,
        ws: Workspace,
        *,
        auth: Auth,
        governance: Governance,
        hunter: Hunter,
        modes: Modes,
        llm: LanguageModels,
        learning: Learning,
    ) -> None:
        self._ws = ws
        self._auth = auth
        self._governance = governance
        self._hunter = hunter
        self._modes = modes
        self._llm = llm
        self._learning = learning
        ws.projections.register("chat", "chat.*", _apply, tables=["conversations", "chat_messages"])

    # -- writing -----------------------------------------------------------------------------------------------
    def start(self, user: str, title: str | None = None) -> str:
        """Open a new conversation for ``user``; returns its id."""
        _check_user(user)
        title = (title or "New conversation").strip()[:200] or "New conversation"
        return self._open(user, mask_secrets(title, self._hunter.scan(title, target="chat")))

    def _open(self, user: str, masked_title: str) -> str:
        event = self._ws.publish(
            "chat.conversation.started", {"user": user, "title": masked_title}, actor=user
        )
        return event.id

    def send(
        self,
        user: str,
        text: str,
        *,
        conversation: str | None = None,
        backend: str | None = None,
    ) -> Reply:
        """Record ``text`` from ``user``, screen and govern it, and answer it through ``ws.llm`` (or refuse).

        ``backend``: the model backend (``offline``, ``http``, ``llamacpp``; default ``ws.llm.default_backend``).
        Refused outright (nothing recorded) while the workspace is in the ``chat_paused`` degraded mode.
        """
        self._modes.guard("chat_paused")
        _check_user(user)
        if not isinstance(text, str) or not text.strip():
            raise ChatError("a chat message is non-empty text")
        if len(text) > MAX_TEXT:
            raise ChatError(f"a chat message has at most {MAX_TEXT} characters, not {len(text)}")
        model = self._llm.backend(backend)  # an unknown backend fails before anything is written
        if conversation is not None:
            self._owned(conversation, user)
        ws = self._ws
        # One scan: it masks the question (and the title of a new conversation) and raises the alerts.
        findings = self._hunter.scan(text, target="chat")
        if conversation is None:
            conversation = self._open(user, _title(text, findings))
        resource = f"conversation:{conversation}"
        recorded = mask_secrets(text, findings)
        question = ws.publish(
            "chat.message.received",
            {"conversation": conversation, "text": recorded, "user": user, "masked": recorded != text},
            actor=user,
            resource=resource,
        )
        # Alerts, the decision and the answer are all caused by the question.
        with handling(question):
            self._hunter.screen(text, target="chat", actor=user, resource=resource, findings=findings)
            decision = self._governance.check(
                user, "chat.send", resource, _context(self._auth.role_of(user), findings), enforce=False
            )
            if not decision.allowed:
                reason = decision.explanation or "governance did not allow this message"
                refusal = f"I cannot answer this message: {reason}"
                event = ws.publish(
                    "chat.message.refused",
                    {
                        "conversation": conversation,
                        "text": refusal,
                        "reason": reason,
                        "effect": decision.effect,
                        "policy_ids": list(decision.policy_ids),
                        "findings": len(findings),
                        "rules": sorted({f.rule for f in findings}),
                    },
                    actor=ASSISTANT,
                    resource=resource,
                )
                return Reply(
                    event.id, conversation, question.id, event.parent_id, refusal, True, None, None,
                    findings=tuple(findings),
                )  # fmt: skip
            history = self._turns(conversation, before=question.id)
            passages = [
                {"id": p.source, "text": p.text} for p in retrieve(ws, recorded, top_k=TOP_K, user=user)
            ]
            # Each lesson is held out of a seeded share of the questions: the answers without it are the baseline
            # its outcome votes compare against (``ws.learning``).
            subject = f"{user}:{question.ts_us}:{recorded}"
            lessons = self.lessons()
            held = [x for x in lessons if self._learning.holds_out(x["key"], subject=subject)]
            applied = [x for x in lessons if x not in held]
            inputs = {
                "question": recorded,
                "passages": passages,
                "history": history,
                "lessons": [x["text"] for x in applied],
            }
            try:
                answer = self._llm.complete(
                    "chat.answer", inputs, purpose=f"chat:{conversation}", backend=model, actor=ASSISTANT
                )
            except (ModelCallError, ModelOutputError) as exc:
                ws.publish(
                    "chat.message.failed",
                    {
                        "conversation": conversation,
                        "text": str(exc),
                        "responder": model.name,
                        "model": model.model,
                    },
                    actor=ASSISTANT,
                    resource=resource,
                )
                raise
            citations = cited(answer.text, passages)
            event = ws.publish(
                "chat.message.responded",
                {
                    "conversation": conversation,
                    "text": answer.text,
                    "responder": answer.backend,
                    "model": answer.model,
                    "settings": dict(answer.params),
                    "citations": list(citations),
                    "llm_call": answer.event_id,
                    "lessons": {"applied": [x["id"] for x in applied], "held_out": [x["id"] for x in held]},
                    "answered": not answer.text.lstrip().startswith("I do not know"),
                },
                actor=ASSISTANT,
                resource=resource,
            )
        return Reply(
            event.id,
            conversation,
            question.id,
            event.parent_id,
            answer.text,
            False,
            answer.backend,
            answer.model,
            dict(answer.params),
            citations,
            tuple(findings),
            answer.event_id,
        )

    def resolve(self, conversation: str, *, user: str, summary: str) -> str:
        """Close ``conversation`` with ``summary``, what resolved it (``chat.conversation.resolved``); its id.

        Only the conversation's owner resolves it; the summary is screened and masked like a message. The
        summary is knowledge for later questions: reflection picks it up, and learning writes it to memory.
        """
        _check_user(user)
        if not isinstance(summary, str) or not summary.strip():
            raise ChatError("a resolution needs a summary of what resolved the conversation")
        if len(summary) > MAX_TEXT:
            raise ChatError(f"a resolution has at most {MAX_TEXT} characters, not {len(summary)}")
        self._owned(conversation, user)
        title = self._get(conversation)[2]
        resource = f"conversation:{conversation}"
        findings = self._hunter.scan(summary, target="chat")
        self._governance.check(user, "chat.send", resource, _context(self._auth.role_of(user), findings))
        event = self._ws.publish(
            "chat.conversation.resolved",
            {
                "conversation": conversation,
                "user": user,
                "title": title,
                "summary": mask_secrets(summary, findings),
            },
            actor=user,
            resource=resource,
        )
        with handling(event):
            self._hunter.screen(summary, target="chat", actor=user, resource=resource, findings=findings)
        return event.id

    def lessons(self) -> list[dict[str, Any]]:
        """The active lessons about chat (id, key, text, votes), strongest first: what answers get in context."""
        rows = [x for x in self._learning.lessons() if x["effect"] is None and is_chat_lesson(x["key"])]
        rows.sort(key=lambda x: (-int(x["votes"]), str(x["key"])))
        return rows[:MAX_LESSONS]

    # -- reading -----------------------------------------------------------------------------------------------
    def history(self, conversation: str, *, actor: str | None = None) -> pd.DataFrame:
        """The messages of a conversation in order (questions, replies, refusals, failures).

        With ``actor``, the read is governed (``chat.read``): users read their own conversations, admins all.
        """
        owner = self._get(conversation)[1]
        self._may_read(actor, f"conversation:{conversation}", own=owner == actor)
        return self._ws.sql(
            "SELECT * FROM chat_messages WHERE conversation = ? ORDER BY position", [conversation]
        )

    def conversations(self, user: str | None = None, *, actor: str | None = None) -> pd.DataFrame:
        """Conversations (of one user, or all), most recently active first (``actor``: governed read)."""
        self._may_read(actor, f"conversations:{user or '*'}", own=user is not None and user == actor)
        sql, params = "SELECT * FROM conversations", []
        if user is not None:
            sql += ' WHERE "user" = ?'
            params.append(user)
        return self._ws.sql(sql + " ORDER BY updated_at DESC, id", params)

    def search(
        self, query: str, user: str | None = None, *, limit: int = 20, actor: str | None = None
    ) -> pd.DataFrame:
        """Messages ranked by BM25 against ``query`` (of one user's conversations, or all; ``actor``: governed
        read, so a non-admin searches ``user=actor``)."""
        self._may_read(actor, f"conversations:{user or '*'}", own=user is not None and user == actor)
        sql = (
            'SELECT m.*, c."user" AS owner FROM chat_messages m JOIN conversations c ON c.id = m.conversation'
        )
        params: list[Any] = []
        if user is not None:
            sql += ' WHERE c."user" = ?'
            params.append(user)
        frame = self._ws.sql(sql + " ORDER BY m.ts, m.id", params)
        terms = tokenize(query)
        if frame.empty or not terms:
            return frame.assign(score=pd.Series(dtype=float)).iloc[0:0]
        index = BM25([tokenize(t) for t in frame["text"]], params=RETRIEVAL)
        hits = index.top(terms, limit)
        out = frame.iloc[[i for i, _ in hits]].copy()
        out["score"] = [s for _, s in hits]
        return out.reset_index(drop=True)

    # -- helpers -----------------------------------------------------------------------------------------------
    def _may_read(self, actor: str | None, resource: str, *, own: bool) -> None:
        """Govern a read of conversations by ``actor`` (None: the workspace's own code, not checked).

        Reads are frequent: an allowed one records no decision event; a refused one is recorded and raises
        PermissionDenied with the policy's reason.
        """
        if actor is None:
            return
        self._governance.check(actor, "chat.read", resource, {"own": own}, record="refusals")

    def _get(self, conversation: str) -> tuple[Any, ...]:
        row = (
            self._ws.ledger.reader()
            .execute('SELECT id, "user", title FROM conversations WHERE id = ?', [conversation])
            .fetchone()
        )
        if row is None:
            raise ChatError(f"no conversation {conversation!r}")
        return tuple(row)

    def _owned(self, conversation: str, user: str) -> None:
        owner = self._get(conversation)[1]
        if owner != user:
            raise ChatError(f"conversation {conversation} belongs to {owner}, not {user}")

    def _turns(self, conversation: str, *, before: str) -> list[dict[str, str]]:
        rows = (
            self._ws.ledger.reader()
            .execute(
                "SELECT kind, text FROM chat_messages WHERE conversation = ? AND id <> ? "
                "AND kind IN ('received', 'responded') ORDER BY position",
                [conversation, before],
            )
            .fetchall()
        )
        turns = [{"role": "user" if k == "received" else "assistant", "text": t} for k, t in rows]
        return turns[-MAX_HISTORY:]


def _title(text: str, findings: list[Finding]) -> str:
    """A new conversation's title: the message's first line (80 characters at most), masked like the message."""
    offset = len(text) - len(text.lstrip())
    title = text.strip().splitlines()[0][:80].strip()
    end = offset + len(title)
    inside = [
        replace(f, start=max(f.start, offset) - offset, end=min(f.end, end) - offset)
        for f in findings
        if f.start < end and f.end > offset
    ]
    return mask_secrets(title, inside)


def _check_user(user: str) -> None:
    if not isinstance(user, str) or not user:
        raise ChatError("a chat message needs the user who sends it")


def _context(role: str | None, findings: list[Finding]) -> dict[str, Any]:
    worst = max((f.severity for f in findings), key=severity_rank, default="none")
    threats = [f.severity for f in findings if f.category in _THREATS]
    return {
        "role": role,
        "findings": len(findings),
        "max_severity": worst,
        # The worst injection or secret: the default pack refuses a message whose threat is high or critical.
        "threat_severity": max(threats, key=severity_rank, default="none"),
    }


def _apply(con: Any, events: list[Event]) -> None:
    # Only events shaped by Chat are projected: a bare ``chat.message.received`` published by other code (an
    # example, a test, a bridge) that names no known conversation stays on the ledger and is skipped here.
    for e in events:
        p = e.payload
        if e.topic == "chat.conversation.started":
            if not (isinstance(p.get("user"), str) and isinstance(p.get("title"), str)):
                continue
            con.execute(
                f"INSERT INTO conversations VALUES (?, ?, ?, {TS}, {TS}, 0)",
                [e.id, p["user"], p["title"], e.ts_us, e.ts_us],
            )
            continue
        kind = e.topic.removeprefix("chat.message.")
        if kind not in ("received", "responded", "refused", "failed"):
            continue
        conv = p.get("conversation")
        if not isinstance(conv, str) or not isinstance(p.get("text"), str):
            continue
        row = con.execute("SELECT messages FROM conversations WHERE id = ?", [conv]).fetchone()
        if row is None or (kind == "received" and not isinstance(p.get("user"), str)):
            continue
        author = p["user"] if kind == "received" else (p.get("responder") or e.actor)
        settings = json.dumps(p["settings"], sort_keys=True) if "settings" in p else None
        citations = json.dumps(p["citations"]) if "citations" in p else None
        con.execute(
            f"INSERT INTO chat_messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {TS})",
            [
                e.id,
                conv,
                int(row[0]) + 1,
                kind,
                author,
                p["text"],
                e.parent_id,
                p.get("responder"),
                p.get("model"),
                settings,
                citations,
                e.ts_us,
            ],
        )
        con.execute(
            f"UPDATE conversations SET messages = messages + 1, updated_at = {TS} WHERE id = ?",
            [e.ts_us, conv],
        )
