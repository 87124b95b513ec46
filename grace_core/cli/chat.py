"""``grace chat``: a terminal chat for one user.

Each line read from standard input is one message; the reply (or the refusal) is printed after it. With a
terminal it prompts; piped input works the same without prompts. ``/quit`` or end of input ends the chat.
``--json`` prints each reply as one JSON line (id, conversation, text, refused, responder, model, citations).
"""

from __future__ import annotations

import sys

import click

from grace_core.cli import _echo_json, _workspace, cli, workspace_options
from grace_core.errors import ResponderError


@cli.command("chat")
@workspace_options
@click.option("--user", "-u", required=True, help="Who is chatting (a registered user).")
@click.option("--conversation", "-c", metavar="ID", help="Continue this conversation (default: a new one).")
@click.option(
    "--responder",
    type=click.Choice(["offline", "http"]),
    default="offline",
    show_default=True,
    help="offline answers from the workspace; http asks the model server at $GRACE_LLM_BASE_URL.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each reply as a JSON line.")
@click.pass_context
def chat_command(
    ctx: click.Context, user: str, conversation: str | None, responder: str, as_json: bool
) -> None:
    """Chat with the workspace's assistant, one message per line."""
    interactive = sys.stdin.isatty()
    failures = 0
    with _workspace(ctx, writes=True) as ws:
        if conversation is not None:
            ws.chat.history(conversation)  # an unknown conversation fails before the first message
        while True:
            if interactive:
                click.echo(f"{user}> ", nl=False)
            line = sys.stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            try:
                reply = ws.chat.send(user, text, conversation=conversation, responder=responder)
            except ResponderError as exc:
                failures += 1
                click.echo(f"grace: error: {exc}", err=True)
                continue
            conversation = reply.conversation
            if as_json:
                _echo_json(
                    {
                        "id": reply.id,
                        "conversation": reply.conversation,
                        "text": reply.text,
                        "refused": reply.refused,
                        "responder": reply.responder,
                        "model": reply.model,
                        "citations": list(reply.citations),
                    }
                )
            else:
                click.echo(("refused: " if reply.refused else "grace: ") + reply.text)
        if conversation is not None and not as_json:
            click.echo(f"conversation {conversation}", err=True)
    if failures:
        ctx.exit(1)
