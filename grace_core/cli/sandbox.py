"""Commands of the sandbox and remedy engines: ``grace sandbox run|ls|layers|remedies|apply``.

``run`` prints the program's stdout and stderr as they were captured, then one status line on stderr, and
exits with the program's exit status (1 when a limit stopped it or a signal ended it). The command line acts
as the local operator (``system``) unless ``--as`` names a user; every run passes Hunter and governance.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from grace_core.cli import (
    _echo_json,
    _escape_controls,
    _records,
    _show,
    _workspace,
    by_option,
    cli,
    workspace_options,
)
from grace_core.sandbox import LANGUAGES, limits_from

_AS = by_option("Who runs it (must be allowed to).", flag="--as", dest="actor")
_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")


@cli.group()
@workspace_options
def sandbox() -> None:
    """Run code in the governed, isolated sandbox; see and apply remedies for failed runs."""


@sandbox.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--language", type=click.Choice(LANGUAGES), default=None, help="Default: from the file suffix.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Wall-clock limit in seconds.")
@click.option("--cpu", type=click.IntRange(min=1), help="CPU-time limit in seconds.")
@click.option("--memory", type=click.IntRange(min=1), help="Memory limit in MiB.")
@click.option("--stdin", "stdin_file", type=click.File("rb"), help="A file fed to the program's stdin.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    help="Seconds to wait for an admin's approval if the run needs one.",
)
@_AS
@_JSON
@workspace_options
@click.pass_context
def run(
    ctx: click.Context,
    file: str,
    language: str | None,
    timeout: float | None,
    cpu: int | None,
    memory: int | None,
    stdin_file: Any,
    wait: float | None,
    actor: str,
    as_json: bool,
) -> None:
    """Run FILE (or - for stdin) in the sandbox and print its output and exit status."""
    raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    try:
        code = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.UsageError(
            f"{file} is not UTF-8 text (byte {exc.start}); the sandbox runs source code"
        ) from exc
    if language is None:
        language = "sh" if file.endswith(".sh") else "python"
    given = {"timeout_s": timeout, "cpu_s": cpu, "memory_mb": memory}
    overrides = {k: v for k, v in given.items() if v is not None}
    limits = limits_from(overrides)
    data = stdin_file.read() if stdin_file is not None else None
    with _workspace(ctx, writes=True) as ws:
        ex = ws.sandbox.run(code, actor=actor, language=language, limits=limits, stdin=data, wait=wait)
        proposals = []
        if not ex.ok:
            ws.mesh.drain(10)  # the remedy subscriber runs on the mesh's thread in a live workspace
            proposals = _records(ws.remedy.proposals(execution=ex.id))
    if as_json:
        _echo_json(
            {
                "id": ex.id,
                "status": ex.status,
                "exit_code": ex.exit_code,
                "signal": ex.signal,
                "limit_hit": ex.limit_hit,
                "duration_ms": round(ex.duration_s * 1e3, 3),
                "peak_memory_kb": ex.peak_memory_kb,
                "stdout": ex.stdout,
                "stderr": ex.stderr,
                "isolation": list(ex.isolation),
                "remedies": [p["id"] for p in proposals],
            }
        )
    else:
        click.echo(_escape_controls(ex.stdout), nl=False)
        click.echo(_escape_controls(ex.stderr), nl=False, err=True)
        how = f"exit status {ex.exit_code}" if ex.signal is None else f"killed by signal {ex.signal}"
        hit = f", stopped by the {ex.limit_hit} limit" if ex.limit_hit else ""
        click.echo(
            f"[sandbox {ex.id}: {how}{hit}, {ex.duration_s * 1e3:.0f} ms, layers: {', '.join(ex.isolation)}]",
            err=True,
        )
        for p in proposals:
            click.echo(f"[remedy {p['id']} ({p['kind']}): {p['summary']}]", err=True)
    code_out = ex.exit_code if ex.exit_code is not None and ex.limit_hit is None else 1
    ctx.exit(code_out)


@sandbox.command("ls")
@click.option("--limit", "-n", default=20, show_default=True)
@_JSON
@workspace_options
@click.pass_context
def ls(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recent sandbox runs, newest first."""
    with _workspace(ctx) as ws:
        rows = _records(ws.sandbox.executions(limit=limit))
    cols = ["id", "actor", "status", "exit_code", "limit_hit", "duration_ms", "requested_at"]
    _show(rows, cols, as_json)


@sandbox.command("layers")
@workspace_options
@click.pass_context
def layers(ctx: click.Context) -> None:
    """The isolation layers a run gets on this machine, and the missing ones with why."""
    with _workspace(ctx) as ws:
        _echo_json(ws.sandbox.layers())


@sandbox.command("remedies")
@click.option("--execution", "-e", help="Only the proposals for this run.")
@click.option("--state", type=click.Choice(["proposed", "worked", "failed", "advice"]))
@click.option("--diff", "show_diff", is_flag=True, help="Print each proposal's diff.")
@_JSON
@workspace_options
@click.pass_context
def remedies(
    ctx: click.Context, execution: str | None, state: str | None, show_diff: bool, as_json: bool
) -> None:
    """Remedy proposals for failed runs (diagnoses, fixes as diffs, advice)."""
    with _workspace(ctx) as ws:
        rows = _records(ws.remedy.proposals(execution=execution, state=state))
    fields = ["id", "execution", "kind", "summary", "line", "state", "diff"]
    _show(rows, ["id", "execution", "kind", "state", "summary"], as_json, json_fields=fields)
    if as_json:
        return
    if show_diff:
        for r in rows:
            if r.get("diff"):
                click.echo(f"\n# {r['id']} ({r['kind']})\n{r['diff']}", nl=False)


@sandbox.command("apply")
@click.argument("proposal_id")
@click.option("--wait", type=float, help="Seconds to wait for an admin's approval if the run needs one.")
@_AS
@workspace_options
@click.pass_context
def apply(ctx: click.Context, proposal_id: str, wait: float | None, actor: str) -> None:
    """Apply a proposal: re-run the patched code in the sandbox and record whether it worked."""
    with _workspace(ctx, writes=True) as ws:
        result = ws.remedy.apply(proposal_id, actor=actor, wait=wait)
    ex = result.execution
    click.echo(_escape_controls(ex.stdout), nl=False)
    click.echo(_escape_controls(ex.stderr), nl=False, err=True)
    verdict = "worked" if result.worked else "did not work"
    click.echo(f"[remedy {proposal_id} {verdict}: run {ex.id}, exit status {ex.exit_code}]", err=True)
    ctx.exit(0 if result.worked else 1)
