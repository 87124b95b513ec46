"""Chat: conversations per user, every message an event on the ledger.

``send`` records the question (``chat.message.received``, secrets masked), then, caused by it: Hunter's alerts
(target ``chat``), governance's decision (action ``chat.send``), and either a refusal
(``chat.message.refused``) or the responder's reply (``chat.message.responded``) naming the responder, model,
settings and citations that produced it. A responder that fails leaves ``chat.message.failed`` and raises.
Tables ``conversations`` and ``chat_messages`` are projections of those events, so replay rebuilds them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from .bm25 import BM25, tokenize
from .causal import handling
from .errors import ChatError, ResponderError
from .events import Event
from .hunter import Finding, severity_rank
from .hunter.scanner import redact
from .responders import RETRIEVAL, Responder, Turn, responder_for
from .times import TS

if TYPE_CHECKING:
    from .auth import Auth
    from .governance import Governance
    from .hunter import Hunter
    from .modes import Modes
    from .workspace import Workspace

__all__ = ["Chat", "Reply", "mask_secrets"]

ASSISTANT = "chat"  # the actor of replies and refusals
MAX_TEXT = 20_000
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
    responder: str | None
    model: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    citations: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()


def mask_secrets(text: str, findings: list[Finding]) -> str:
    """``text`` with every secret Hunter found replaced by ``[redacted:<rule>]`` (injections stay readable)."""
    return redact(text, [f for f in findings if f.category == "secret"], label="redacted")


class Chat:
    """Conversations of the workspace's users (``ws.chat``)."""

    def __init__(
        self, ws: Workspace, *, auth: Auth, governance: Governance, hunter: Hunter, modes: Modes
    ) -> None:
        self._ws = ws
        self._auth = auth
        self._governance = governance
        self._hunter = hunter
        self._modes = modes
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
        responder: Responder | str | None = None,
    ) -> Reply:
        """Record ``text`` from ``user``, screen and govern it, and answer it (or refuse).

        Refused outright (nothing recorded) while the workspace is in the ``chat_paused`` degraded mode.
        """
        self._modes.guard("chat_paused")
        _check_user(user)
        if not isinstance(text, str) or not text.strip():
            raise ChatError("a chat message is non-empty text")
        if len(text) > MAX_TEXT:
            raise ChatError(f"a chat message has at most {MAX_TEXT} characters, not {len(text)}")
        engine = responder_for(responder, self._ws)  # a bad responder fails before anything is written
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
            try:
                answer = engine.respond(ws, user=user, text=recorded, history=history)
            except ResponderError as exc:
                ws.publish(
                    "chat.message.failed",
                    {
                        "conversation": conversation,
                        "text": str(exc),
                        "responder": engine.name,
                        "model": getattr(engine, "model", None),
                    },
                    actor=ASSISTANT,
                    resource=resource,
                )
                raise
            event = ws.publish(
                "chat.message.responded",
                {
                    "conversation": conversation,
                    "text": answer.text,
                    "responder": engine.name,
                    "model": answer.model,
                    "settings": answer.settings,
                    "citations": list(answer.citations),
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
            engine.name,
            answer.model,
            dict(answer.settings),
            tuple(answer.citations),
            tuple(findings),
        )

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
            .execute('SELECT id, "user" FROM conversations WHERE id = ?', [conversation])
            .fetchone()
        )
        if row is None:
            raise ChatError(f"no conversation {conversation!r}")
        return tuple(row)

    def _owned(self, conversation: str, user: str) -> None:
        owner = self._get(conversation)[1]
        if owner != user:
            raise ChatError(f"conversation {conversation} belongs to {owner}, not {user}")

    def _turns(self, conversation: str, *, before: str) -> list[Turn]:
        rows = (
            self._ws.ledger.reader()
            .execute(
                "SELECT kind, text FROM chat_messages WHERE conversation = ? AND id <> ? "
                "AND kind IN ('received', 'responded') ORDER BY position",
                [conversation, before],
            )
            .fetchall()
        )
        return [Turn("user" if k == "received" else "assistant", t) for k, t in rows]


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
