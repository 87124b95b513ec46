"""``grace chat``: a terminal chat for one user, and its history and search.

``grace chat --user NAME`` reads one message per line from standard input and prints the reply (or the
refusal) after it. With a terminal it prompts; piped input works the same without prompts. ``/quit`` or end of
input ends the chat. Answers come from ``ws.llm`` (``--backend``: offline, http or llamacpp; default the
workspace's). ``--json`` prints each reply as one JSON line (id, conversation, text, refused, responder (the
backend), model, citations). A model that cannot answer prints one line on stderr; the message stays on record.

``grace chat ls``, ``grace chat history CONVERSATION`` and ``grace chat search QUERY`` read the record. With
``--user NAME`` the read is NAME's and governed (``chat.read``: users read their own conversations, admins all);
without it the command line reads as the local operator (the service actor ``system``), like the other
engines' commands.
"""

from __future__ import annotations

import json
import sys

import click

from grace_core.cli import OPERATOR, _echo_json, _records, _show, _workspace, cli, workspace_options
from grace_core.errors import ModelCallError, ModelOutputError
from grace_core.llm import BACKENDS

_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
_READER = click.option(
    "--user",
    "-u",
    help="Read as this user (governed: their own conversations; admins all). Default: operator.",
)


@cli.group("chat", invoke_without_command=True)
@workspace_options
@click.option("--user", "-u", help="Who is chatting (a registered user); required to chat.")
@click.option("--conversation", "-c", metavar="ID", help="Continue this conversation (default: a new one).")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="The model that answers: offline (extractive, no model), http (the server at $GRACE_LLM_BASE_URL) "
    "or llamacpp. Default: $GRACE_LLM_BACKEND, else the workspace setting llm.backend, else offline.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each reply as a JSON line.")
@click.pass_context
def chat_command(
    ctx: click.Context, user: str | None, conversation: str | None, backend: str | None, as_json: bool
) -> None:
    """Chat with the workspace's assistant, one message per line (or: ls, history, search)."""
    if ctx.invoked_subcommand is not None:
        return
    if not user:
        raise click.UsageError("who is chatting? give --user NAME")
    interactive = sys.stdin.isatty()
    failures = 0
    with _workspace(ctx, writes=True) as ws:
        if conversation is not None:
            # An unknown conversation, or someone else's, fails before the first message.
            ws.chat.history(conversation, actor=user)
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
                reply = ws.chat.send(user, text, conversation=conversation, backend=backend)
            except (ModelCallError, ModelOutputError) as exc:
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


@chat_command.command("ls")
@_READER
@click.option(
    "--all", "everyone", is_flag=True, help="Everyone's conversations (admins), not only the user's."
)
@_JSON
@workspace_options
@click.pass_context
def ls(ctx: click.Context, user: str | None, everyone: bool, as_json: bool) -> None:
    """Conversations, most recently active first."""
    with _workspace(ctx) as ws:
        whose = None if everyone or user is None else user
        rows = _records(ws.chat.conversations(whose, actor=user or OPERATOR))
    _show(rows, ["id", "user", "title", "messages", "updated_at"], as_json)


@chat_command.command()
@click.argument("conversation")
@_READER
@_JSON
@workspace_options
@click.pass_context
def history(ctx: click.Context, conversation: str, user: str | None, as_json: bool) -> None:
    """The messages of CONVERSATION in order, with what answered each and what it cited."""
    with _workspace(ctx) as ws:
        rows = _records(ws.chat.history(conversation, actor=user or OPERATOR))
    for row in rows:
        cited = row.get("citations")
        row["citations"] = json.loads(cited) if isinstance(cited, str) else []
    if as_json:
        _show(
            rows, ["id", "position", "kind", "author", "text", "parent_id", "model", "citations", "ts"], True
        )
        return
    for row in rows:
        click.echo(f"[{row['position']}] {row['author']} ({row['kind']}): {row['text']}")
        if row["citations"]:
            click.echo("    cites: " + ", ".join(row["citations"]))


@chat_command.command()
@click.argument("query")
@_READER
@click.option("--all", "everyone", is_flag=True, help="Search everyone's conversations (admins).")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 1000))
@_JSON
@workspace_options
@click.pass_context
def search(
    ctx: click.Context, query: str, user: str | None, everyone: bool, limit: int, as_json: bool
) -> None:
    """Messages that match QUERY, best first (BM25)."""
    with _workspace(ctx) as ws:
        whose = None if everyone or user is None else user
        rows = _records(ws.chat.search(query, whose, limit=limit, actor=user or OPERATOR))
    for row in rows:
        row["score"] = round(float(row["score"]), 4)
    _show(rows, ["conversation", "id", "owner", "kind", "score", "text"], as_json)
