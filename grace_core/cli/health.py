"""Commands of self-healing: ``grace health`` and ``grace modes ls|enter|leave``."""

from __future__ import annotations

import click

from grace_core.cli import _echo_json, _records, _show, _workspace, by_option, cli, workspace_options
from grace_core.modes import MODES


@cli.command()
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: component -> status, detail, checked_at."
)
@click.option("--incidents", "show_incidents", is_flag=True, help="Also list the incidents.")
@workspace_options
@click.pass_context
def health(ctx: click.Context, as_json: bool, show_incidents: bool) -> None:
    """Check every component now and print its health (exit 1 when any is critical)."""
    with _workspace(ctx) as ws:
        status = ws.healing.status(refresh=True)
        incidents = _records(ws.healing.incidents()) if show_incidents else []
        modes = {m: a.reason for m, a in ws.modes.active().items()}
    if as_json:
        _echo_json({**status, **({"incidents": incidents} if show_incidents else {}), "modes": modes})
    else:
        rows = [{"component": c, **v} for c, v in status.items()]
        _show(rows, ["component", "status", "detail"], as_json=False)
        for mode, reason in modes.items():
            click.echo(f"degraded mode {mode}: {reason}")
        if show_incidents:
            click.echo("")
            cols = ["id", "component", "status", "reason", "detected_at", "resolved_at", "mttr_s"]
            _show(incidents, cols, as_json=False)
    if status["overall"]["status"] == "critical":
        ctx.exit(1)


@cli.group()
@workspace_options
def modes() -> None:
    """Degraded modes: read_only, sandbox_disabled, chat_paused."""


@modes.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per mode.")
@workspace_options
@click.pass_context
def modes_ls(ctx: click.Context, as_json: bool) -> None:
    """Every mode, whether it is active, who entered it and why."""
    with _workspace(ctx) as ws:
        active = ws.modes.active()
    rows = []
    for mode, meaning in MODES.items():
        a = active.get(mode)
        rows.append(
            {
                "mode": mode,
                "active": a is not None,
                "entered_by": a.entered_by if a else None,
                "since": a.since if a else None,
                "reason": a.reason if a else None,
                "meaning": meaning,
            }
        )
    _show(rows, ["mode", "active", "entered_by", "since", "reason"], as_json, json_fields="all")


@modes.command()
@click.argument("mode", type=click.Choice(list(MODES)))
@click.option("--reason", required=True, help="Why (shown to everyone the mode refuses).")
@by_option("Who (an admin or a service actor).")
@workspace_options
@click.pass_context
def enter(ctx: click.Context, mode: str, reason: str, by: str) -> None:
    """Enter a degraded mode."""
    with _workspace(ctx, writes=True) as ws:
        event = ws.modes.enter(mode, actor=by, reason=reason)
    click.echo(f"{mode}: {'entered' if event else 'active already'}")


@modes.command()
@click.argument("mode", type=click.Choice(list(MODES)))
@click.option("--reason", default="", help="Why.")
@by_option("Who (an admin or a service actor).")
@workspace_options
@click.pass_context
def leave(ctx: click.Context, mode: str, reason: str, by: str) -> None:
    """Leave a degraded mode."""
    with _workspace(ctx, writes=True) as ws:
        event = ws.modes.leave(mode, actor=by, reason=reason or "left by an operator")
    click.echo(f"{mode}: {'left' if event else 'not active'}")
