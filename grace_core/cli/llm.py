"""Commands of the model interface: ``grace llm prompts|render|complete|calls|show|cassette``.

``prompts`` and ``render`` need no workspace; ``calls`` and ``show`` only read (they work on a ``--snapshot``);
``complete`` records the call on the ledger like any ``ws.llm`` call, and ``cassette`` writes the workspace's
recorded calls to a JSONL file that ``complete --cassette FILE`` (or ``ws.llm.use_cassette``) replays.
"""

from __future__ import annotations

from pathlib import Path

import click

from grace_core.cli import _echo_json, _records, _show, _workspace, cli, json_pairs, workspace_options
from grace_core.errors import ModelOutputError
from grace_core.llm import BACKENDS, Cassette, default_prompts
from grace_core.llm.cassette import MODES

_JSON = click.option("--json", "as_json", is_flag=True, help="JSON output instead of text.")
_INPUT = click.option(
    "--input",
    "-i",
    "inputs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A prompt input; VALUE is parsed as JSON when it can be (lists of {id, text}), else taken as text.",
)
_PARAM = click.option(
    "--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A generation parameter (JSON value)."
)
_VERSION = click.option("--prompt-version", "version", type=int, help="Prompt version (default: the newest).")


@cli.group()
@workspace_options
def llm() -> None:
    """Language models: prompts as data, backends (offline, http, llamacpp), recorded calls, cassettes."""


@llm.command("prompts")
@_JSON
def prompts(as_json: bool) -> None:
    """Every prompt version that ships with the package: inputs (? = optional), output, defaults."""
    rows = _records(default_prompts().frame())
    _show(rows, ["name", "version", "latest", "output", "inputs", "params", "description"], as_json)


@llm.command("render")
@click.argument("prompt")
@_INPUT
@_VERSION
@_JSON
def render(prompt: str, inputs: tuple[str, ...], version: int | None, as_json: bool) -> None:
    """Print the messages PROMPT renders to for the given inputs (nothing is called or recorded)."""
    messages = default_prompts().get(prompt, version).render(json_pairs(inputs, "--input"))
    if as_json:
        _echo_json({"messages": messages})
        return
    for message in messages:
        click.echo(f"--- {message['role']}")
        click.echo(message["content"])


@llm.command("complete")
@click.argument("prompt")
@_INPUT
@_PARAM
@_VERSION
@click.option("--backend", "-b", type=click.Choice(BACKENDS), help="Default: $GRACE_LLM_BACKEND or offline.")
@click.option("--purpose", default="cli", show_default=True, help="Why the call is made (recorded).")
@click.option("--cassette", type=click.Path(dir_okay=False, path_type=Path), help="Replay/record via FILE.")
@click.option("--mode", type=click.Choice(MODES), default="replay", show_default=True, help="Cassette mode.")
@_JSON
@workspace_options
@click.pass_context
def complete(
    ctx: click.Context,
    prompt: str,
    inputs: tuple[str, ...],
    params: tuple[str, ...],
    version: int | None,
    backend: str | None,
    purpose: str,
    cassette: Path | None,
    mode: str,
    as_json: bool,
) -> None:
    """Call a model with PROMPT and print its answer (JSON prompts are parsed and checked)."""
    values, options = json_pairs(inputs, "--input"), json_pairs(params, "--param")
    with _workspace(ctx, writes=True) as ws:
        if cassette is not None:
            ws.llm.use_cassette(cassette, mode=mode)
        json_prompt = ws.llm.prompts.get(prompt, version).output == "json"
        call = ws.llm.complete_json if json_prompt else ws.llm.complete
        try:
            result = call(prompt, values, purpose=purpose, backend=backend, params=options, version=version)
        except ModelOutputError as exc:
            # The answer is on the ledger (and rejected there too); show it before the one-line error.
            if exc.completion is not None:
                click.echo(getattr(exc.completion, "text", ""), err=True)
            raise
    if as_json:
        _echo_json(
            {
                "event_id": result.event_id,
                "prompt": result.prompt,
                "version": result.version,
                "backend": result.backend,
                "model": result.model,
                "prompt_hash": result.prompt_hash,
                "replayed": result.replayed,
                "finish_reason": result.finish_reason,
                "usage": dict(result.usage),
                "latency_ms": result.latency_ms,
                "text": result.text,
                "data": result.data,
            }
        )
    elif json_prompt:
        _echo_json(result.data)
    else:
        click.echo(result.text)


@llm.command("calls")
@click.option("--prompt", help="Only calls of this prompt.")
@click.option("--limit", "-n", type=int, default=50, show_default=True, help="The newest N (0: all).")
@_JSON
@workspace_options
@click.pass_context
def calls(ctx: click.Context, prompt: str | None, limit: int, as_json: bool) -> None:
    """Recorded model calls, oldest first: completed, failed and rejected ones."""
    with _workspace(ctx) as ws:
        rows = _records(ws.llm.calls(prompt=prompt, limit=limit or None))
    for row in rows:
        row["topic"] = str(row["topic"]).removeprefix("llm.")
    columns = ["seq", "id", "ts", "topic", "prompt", "version", "purpose", "backend", "model"]
    columns += ["completion_tokens", "latency_ms", "error"]
    _show(rows, columns, as_json)


@llm.command("show")
@click.argument("event_id")
@workspace_options
@click.pass_context
def show(ctx: click.Context, event_id: str) -> None:
    """One recorded call as JSON: its messages, parameters, response, usage and latency."""
    with _workspace(ctx) as ws:
        _echo_json(ws.llm.call(event_id))


@llm.command("cassette")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--since", type=int, default=0, show_default=True, help="Only calls after this ledger seq.")
@workspace_options
@click.pass_context
def cassette(ctx: click.Context, target: Path, since: int) -> None:
    """Write the workspace's recorded calls to TARGET (JSON Lines) for replaying the study."""
    with _workspace(ctx) as ws:
        recorded: Cassette = ws.llm.cassette_from_ledger(since=since)
    recorded.save(target)
    click.echo(f"{len(recorded)} recorded call(s) -> {target}")
