"""Chat: Panel's chat interface over ``ws.chat``, with citations linking into memory and the ledger, and Hunter
flags on messages that tripped a rule.

Every message, the user's own and the replies (which quote memory notes other people wrote), is rendered by
``grace_core.views.render``: Markdown formatting is kept, but nothing in a message is fetched or linked. A
refusal is shown as a plain sentence (what the policy that refused it is for); governance's own wording stays
on the ledger, one click away.
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

__all__ = ["ChatView", "citation_link", "flags_html", "refusal_sentence", "reply_html"]

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


def _message_pane(value: Any) -> Any:
    # The chat's renderer: a typed message (a string) is Markdown someone wrote; our own panes pass through.
    return value if isinstance(value, pn.viewable.Viewable) else UserHTML(markdown_html(value))


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
            renderers=[_message_pane],
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
            return pn.chat.ChatMessage(UserHTML(text_html(self.message)), user="system", avatar="!")
        if reply.findings:
            # What the ledger holds is masked; show the user the same thing (and why).
            mine = instance.objects[-1] if instance.objects else None
            if mine is not None and mine.user == user:
                masked = mask_secrets(contents, list(reply.findings))
                mine.object = UserHTML(markdown_html(masked) + flags_html(reply.findings))
        avatar = "!" if reply.refused else "G"
        return pn.chat.ChatMessage(UserHTML(reply_html(self.ws, reply)), user=ASSISTANT, avatar=avatar)

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
                pane = UserHTML(markdown_html(row.text))
                self.interface.send(pane, user=row.author, avatar=row.author[:1].upper(), respond=False)
                continue
            if row.kind == "refused":
                body = f'<p class="grace-refusal">{text_html(refusal_sentence(self.ws, row.id))}</p>'
            else:
                body = markdown_html(row.text)
            cites = json.loads(row.citations) if isinstance(row.citations, str) and row.citations else []
            if cites:
                body += "<p><b>Sources:</b> " + " · ".join(citation_link(c) for c in cites) + "</p>"
            avatar = "!" if row.kind in ("refused", "failed") else "G"
            self.interface.send(UserHTML(body), user=ASSISTANT, avatar=avatar, respond=False)

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
