"""Chat: Panel's chat interface over ``ws.chat``, with citations linking into memory and the ledger, and Hunter
flags on messages that tripped a rule."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

import pandas as pd
import panel as pn
import param

from grace_core.chat import Reply, mask_secrets

from .base import GraceView

__all__ = ["ChatView", "citation_link", "flags_markdown"]

ASSISTANT = "Grace"


def citation_link(citation: str) -> str:
    """A Markdown link for a citation: ``memory:/path`` opens the memory explorer, anything else its event."""
    kind, _, ref = citation.partition(":")
    if kind == "memory" and ref:
        return f"[{citation}](memory?path={quote(ref)})"
    if ref:
        return f"[{citation}](audit?event={quote(ref)})"
    return citation


def flags_markdown(findings: Any) -> str:
    """One line naming the Hunter rules a message tripped (empty when it tripped none)."""
    rules = sorted({(f.rule, f.severity) for f in findings})
    if not rules:
        return ""
    return "⚑ **Hunter:** " + ", ".join(f"`{rule}` ({severity})" for rule, severity in rules)


def safe(text: str) -> str:
    """Message text for the Markdown pane: HTML in it (from memory or another user) is shown, not run."""
    return html.escape(text, quote=False)


def reply_markdown(reply: Reply) -> str:
    parts = [safe(reply.text)]
    if reply.citations:
        parts.append("**Sources:** " + " · ".join(citation_link(c) for c in reply.citations))
    flags = flags_markdown(reply.findings)
    if flags:
        parts.append(flags)
    parts.append(f"<small>[event {reply.id[:12]}](audit?event={quote(reply.id)})</small>")
    return "\n\n".join(parts)


class ChatView(GraceView):
    """A conversation of the logged-in user; each send goes through ``ws.chat.send`` (screened and governed)."""

    title = "Chat"

    conversation = param.String(default="", doc="The open conversation ('' starts a new one on first send).")
    last_reply = param.Parameter(default=None, doc="The Reply of the last send.", allow_refs=False)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.interface = pn.chat.ChatInterface(
            callback=self._respond,
            callback_user=ASSISTANT,
            user=self.user or "you",
            avatar=(self.user or "?")[:1].upper(),
            show_rerun=False,
            show_undo=False,
            show_clear=False,
            sizing_mode="stretch_width",
            height=560,
            placeholder_text="Grace is thinking…",
        )
        self.conversations = pn.widgets.Select(label="Conversation", options=self._options(), width=320)
        self.conversations.param.watch(lambda e: setattr(self, "conversation", e.new or ""), "value")
        self.new_button = pn.widgets.Button(label="New conversation", color="light")
        self.new_button.on_click(lambda _e: self.new_conversation())
        if not self.may("chat.send"):
            self.interface.disabled = True
            self.message = f"A {self.role} can read conversations but not send messages."
        if self.conversation:
            self._load()

    # -- sending -------------------------------------------------------------------------------------------
    def send(self, text: str) -> Reply | None:
        """Send ``text`` as the user (what the input box does); returns the Reply, or None when refused."""
        if not self.may("chat.send"):
            self.message = f"refused: a {self.role} cannot send chat messages"
            return None
        reply = self.ws.chat.send(self.actor, text, conversation=self.conversation or None)
        self.last_reply = reply  # first: a new conversation id must not reload what the feed shows already
        if self.conversation != reply.conversation:
            self.conversation = reply.conversation
            self.conversations.options = self._options()
            self.conversations.value = reply.conversation
        return reply

    def _respond(self, contents: str, user: str, instance: pn.chat.ChatInterface) -> Any:
        try:
            reply = self.send(contents)
        except Exception as exc:  # noqa: BLE001 - shown in the conversation instead of breaking it
            return pn.chat.ChatMessage(f"error: {exc}", user="system", avatar="!")
        if reply is None:
            return pn.chat.ChatMessage(self.message, user="system", avatar="!")
        if reply.findings:
            # What the ledger holds is masked; show the user the same thing (and why).
            mine = instance.objects[-1] if instance.objects else None
            if mine is not None and mine.user == user:
                masked = mask_secrets(contents, list(reply.findings))
                mine.object = safe(masked) + "\n\n" + flags_markdown(reply.findings)
        avatar = "!" if reply.refused else "G"
        return pn.chat.ChatMessage(reply_markdown(reply), user=ASSISTANT, avatar=avatar)

    def new_conversation(self) -> None:
        self.conversation = ""
        self.interface.clear()

    # -- history -------------------------------------------------------------------------------------------
    def _options(self) -> dict[str, str]:
        frame = self.ws.chat.conversations(self.actor)
        options = {"(new)": ""}
        for row in frame.itertuples():
            options[f"{row.title[:50]} ({row.messages})"] = row.id
        return options

    @param.depends("conversation", watch=True)
    def _conversation_changed(self) -> None:
        if self.conversation and (
            self.last_reply is None or self.last_reply.conversation != self.conversation
        ):
            self._load()

    def _load(self) -> None:
        self.interface.clear()
        for row in self.history().itertuples():
            if row.kind == "received":
                self.interface.send(
                    safe(row.text), user=row.author, avatar=row.author[:1].upper(), respond=False
                )
            else:
                cites = json.loads(row.citations) if isinstance(row.citations, str) and row.citations else []
                text = safe(row.text)
                if cites:
                    text += "\n\n**Sources:** " + " · ".join(citation_link(c) for c in cites)
                self.interface.send(text, user=ASSISTANT, avatar="G", respond=False)

    def history(self) -> pd.DataFrame:
        if not self.conversation:
            return pd.DataFrame(columns=["kind", "author", "text", "citations"])
        return self.ws.chat.history(self.conversation)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self._status,
            pn.Row(self.conversations, self.new_button),
            self.interface,
            sizing_mode="stretch_width",
        )
