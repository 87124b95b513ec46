"""Chat: a conversation over ``ws.chat``, with citations linking into memory and the ledger, and Hunter flags
on messages that tripped a rule.

Every message, the user's own and the replies (which quote memory notes other people wrote), is rendered by
``grace_core.views.render`` into a plain feed (Panel's ChatInterface would load an icon font from a CDN):
Markdown formatting is kept, but nothing in a message is fetched or linked. A refusal is shown as a plain
sentence (what the policy that refused it is for); governance's own wording stays on the ledger, one click
away.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd
import panel as pn
import param

from grace_core.chat import Reply, mask_secrets

from .base import GraceView
from .render import UserHTML, markdown_html, text_html, view_link

__all__ = ["ChatView", "citation_link", "flags_html", "message_html", "refusal_sentence", "reply_html"]

ASSISTANT = "Grace"


def citation_link(citation: str) -> str:
    """A link for a citation: ``memory:/path`` opens the memory explorer, anything else its event."""
    kind, _, ref = citation.partition(":")
    if kind == "memory" and ref:
        return view_link(citation, "memory", path=ref)
    if ref:
        return view_link(citation, "audit", event=ref)
    return text_html(citation)


def flags_html(findings: Any) -> str:
    """One line naming the Hunter rules a message tripped (empty when it tripped none)."""
    rules = sorted({(f.rule, f.severity) for f in findings})
    if not rules:
        return ""
    names = ", ".join(f"<code>{text_html(rule)}</code> ({text_html(severity)})" for rule, severity in rules)
    return f"<p>⚑ <b>Hunter:</b> {names}</p>"


def refusal_sentence(ws: Any, event_id: str) -> str:
    """Why a message was refused, in plain words: what the refusing policies are for (their description),
    not the decision's policy syntax, which stays on the ledger."""
    try:
        payload = ws.ledger.get(event_id).payload
    except Exception:  # noqa: BLE001 - an unknown event: say the least
        payload = {}
    sentences = ["Grace did not answer this message."]
    if payload.get("effect") == "review":
        sentences.append("It needs an admin's approval first.")
    for policy_id in payload.get("policy_ids") or []:
        try:
            description = str(ws.governance.policy(policy_id).description or "")
        except Exception:  # noqa: BLE001 - the policy was removed since
            description = ""
        first = re.split(r"(?<=[.!?])\s|:\s", description.strip(), maxsplit=1)[0].rstrip(".")
        if first:
            sentences.append(first[0].upper() + first[1:] + ".")
        else:
            sentences.append(
                f"A rule of this workspace does not allow it (ask an admin about “{policy_id}”)."
            )
    if len(sentences) == 1:
        sentences.append("A rule of this workspace does not allow it.")
    return " ".join(sentences)


def reply_html(ws: Any, reply: Reply) -> str:
    """A reply (or refusal) as the conversation shows it: text, sources, Hunter flags, a link to its event."""
    if reply.refused:
        parts = [f'<p class="grace-refusal">{text_html(refusal_sentence(ws, reply.id))}</p>']
    else:
        parts = [markdown_html(reply.text)]
    if reply.citations:
        parts.append("<p><b>Sources:</b> " + " · ".join(citation_link(c) for c in reply.citations) + "</p>")
    parts.append(flags_html(reply.findings))
    parts.append(f"<p><small>{view_link(f'event {reply.id[:12]}', 'audit', event=reply.id)}</small></p>")
    return "".join(parts)


def message_html(author: str, body: str, kind: str = "user") -> str:
    """One message of the conversation: who wrote it, then its body (already rendered HTML)."""
    return f'<div class="grace-msg grace-msg-{kind}"><div class="grace-who">{text_html(author)}</div>{body}</div>'


class ChatView(GraceView):
    """A conversation of the logged-in user; each send goes through ``ws.chat.send`` (screened and governed)."""

    title = "Chat"

    conversation = param.String(default="", doc="The open conversation ('' starts a new one on first send).")
    last_reply = param.Parameter(default=None, doc="The Reply of the last send.", allow_refs=False)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # A plain feed of rendered messages rather than Panel's ChatInterface, whose icons load a web font
        # from a CDN: every message is one UserHTML pane (see grace_core.views.render).
        self.feed = pn.Column(
            sizing_mode="stretch_width",
            height=520,
            scroll=True,
            auto_scroll_limit=200,
            css_classes=["grace-feed"],
        )
        self.input = pn.chat.ChatAreaInput(
            placeholder="Ask Grace about this workspace (Enter sends, Shift+Enter for a new line)",
            sizing_mode="stretch_width",
            max_length=20_000,
        )
        self.input.param.watch(lambda e: self._submit(e.new), "value")
        self.send_button = pn.widgets.Button(label="Send", color="primary", width=90)
        self.send_button.on_click(lambda _e: self._submit(self.input.value_input))
        self.conversations = pn.widgets.Select(label="Conversation", options=self._options(), width=320)
        self.conversations.param.watch(lambda e: setattr(self, "conversation", e.new or ""), "value")
        self.new_button = pn.widgets.Button(label="New conversation", color="light")
        self.new_button.on_click(lambda _e: self.new_conversation())
        if not self.may("chat.send"):
            why = self.cannot("send chat messages", needs="a role that a workspace policy lets chat")
            self.input.disabled = True
            self.input.placeholder = why
            self.allow(self.send_button, False, why)
            self.message = f"A {self.role} can read conversations here but not send messages."
        if self.conversation:
            self._load()
        else:
            self._empty()

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

    def _submit(self, text: str | None) -> None:
        """What pressing Enter or Send does: show the message, send it, show the answer (or why not)."""
        if not text or not text.strip():
            return
        self.input.value_input = ""
        if not self.conversation:
            self.feed.clear()
        mine = UserHTML(message_html(self.actor, markdown_html(text)))
        self.feed.append(mine)
        try:
            reply = self.send(text)
        except Exception as exc:  # noqa: BLE001 - shown in the conversation instead of breaking it
            self.feed.append(UserHTML(message_html("system", text_html(f"error: {exc}"), "failed")))
            return
        if reply is None:
            self.feed.append(UserHTML(message_html("system", text_html(self.message), "failed")))
            return
        if reply.findings:
            # What the ledger holds is masked; show the user the same thing (and why).
            masked = mask_secrets(text, list(reply.findings))
            mine.object = message_html(self.actor, markdown_html(masked) + flags_html(reply.findings))
        kind = "refused" if reply.refused else "reply"
        self.feed.append(UserHTML(message_html(ASSISTANT, reply_html(self.ws, reply), kind)))

    def new_conversation(self) -> None:
        self.conversation = ""
        self.last_reply = None
        self.conversations.value = ""
        self._empty()

    def _empty(self) -> None:
        hint = "No messages yet: ask Grace about the notes, alerts and tasks of this workspace."
        self.feed[:] = [UserHTML(f'<div class="grace-muted">{text_html(hint)}</div>')]

    # -- history -------------------------------------------------------------------------------------------
    def _options(self) -> dict[str, str]:
        frame = self.ws.chat.conversations(self.actor)
        options = {"(new)": ""}
        for row in frame.to_dict("records"):
            options[f"{row['title'][:50]} ({row['messages']})"] = row["id"]
        return options

    @param.depends("conversation", watch=True)
    def _conversation_changed(self) -> None:
        if self.conversation and (
            self.last_reply is None or self.last_reply.conversation != self.conversation
        ):
            self._load()

    def _load(self) -> None:
        panes = []
        for row in self.history().to_dict("records"):
            if row["kind"] == "received":
                panes.append(UserHTML(message_html(row["author"], markdown_html(row["text"]))))
                continue
            if row["kind"] == "refused":
                body = f'<p class="grace-refusal">{text_html(refusal_sentence(self.ws, row["id"]))}</p>'
            else:
                body = markdown_html(row["text"])
            cites = (
                json.loads(row["citations"]) if isinstance(row["citations"], str) and row["citations"] else []
            )
            if cites:
                body += "<p><b>Sources:</b> " + " · ".join(citation_link(c) for c in cites) + "</p>"
            kind = {"refused": "refused", "failed": "failed"}.get(row["kind"], "reply")
            panes.append(UserHTML(message_html(ASSISTANT, body, kind)))
        self.feed[:] = panes

    def history(self) -> pd.DataFrame:
        if not self.conversation:
            return pd.DataFrame(columns=["kind", "author", "text", "citations"])
        return self.ws.chat.history(self.conversation)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self._status,
            pn.FlexBox(self.conversations, self.new_button, align_items="flex-end"),
            self.feed,
            pn.Row(self.input, self.send_button, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
