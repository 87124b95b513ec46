"""Commands of the hunter engine: ``grace hunter scan|rules|disable|enable|feedback``.

``disable`` and ``enable`` change the workspace's rules, so governance decides them first (actions
``hunter.rule.disable`` / ``hunter.rule.enable``, logged as ``governance.decision`` events): ``--by NAME`` must
be an admin or the local operator (``system``, the default); anyone else is refused with exit status 2.
``feedback ALERT VERDICT --by NAME`` records an analyst's verdict on an alert (``confirmed`` or
``false_positive``; action ``hunter.feedback``: admins, researchers and the operator).

``grace hunter scan`` works without any workspace (it uses the default rule pack) or, given ``--workspace``
(or ``--snapshot``), with that workspace's current rules; it only scans and never writes. It prints one JSON
line per finding and exits 1 when a finding reaches ``--fail-on`` (so it can gate a CI job or a commit hook).
Offsets and columns count characters of the file decoded as UTF-8; lines and columns start at 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from grace_core.cli import (
    _PATH_KEY,
    _SNAPSHOT_KEY,
    _echo_json,
    _records,
    _show,
    _workspace,
    by_option,
    cli,
    workspace_options,
)
from grace_core.hunter import SEVERITIES, TARGETS, default_pack, default_scanner, severity_rank

CODE_SUFFIXES = frozenset({".py", ".pyw", ".pyi", ".sh", ".bash", ".zsh", ".ksh"})


def infer_target(path: str) -> str:
    """``code`` for Python and shell files, ``file`` for anything else (and for standard input)."""
    return "code" if path != "-" and Path(path).suffix.lower() in CODE_SUFFIXES else "file"


def _read(path: str) -> str:
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise click.UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return data.decode("utf-8", errors="replace")


@cli.group()
@workspace_options
def hunter() -> None:
    """Threat detection: scan files for secrets, injections and dangerous code; list and switch rules."""


@hunter.command()
@click.argument("path", metavar="PATH|-")
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    help="Scan as this kind of text (default: code for .py/.sh files, file otherwise).",
)
@click.option(
    "--fail-on",
    type=click.Choice([*SEVERITIES, "never"]),
    default="high",
    show_default=True,
    help="Exit 1 when a finding has this severity or a higher one.",
)
@workspace_options
@click.pass_context
def scan(ctx: click.Context, path: str, target: str | None, fail_on: str) -> None:
    """Scan a file (or standard input, '-'): one JSON line per finding.

    Each line has the rule, severity, line, column, start and end offsets and a masked excerpt.
    """
    text = _read(path)
    target = target or infer_target(path)
    if ctx.meta.get(_PATH_KEY) or ctx.meta.get(_SNAPSHOT_KEY):
        with _workspace(ctx) as ws:
            findings = ws.hunter.scan(text, target=target)
    else:
        findings = default_scanner().scan(text, target=target)
    for f in findings:
        _echo_json(
            {
                "rule": f.rule,
                "severity": f.severity,
                "line": f.line,
                "column": f.column,
                "start": f.start,
                "end": f.end,
                "excerpt": f.excerpt,
            }
        )
    if fail_on != "never" and any(severity_rank(f.severity) >= severity_rank(fail_on) for f in findings):
        ctx.exit(1)


_COLUMNS = ["id", "severity", "category", "enabled", "targets", "source", "version", "description"]


@hunter.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule.")
@click.option("--pack", is_flag=True, help="The default pack that ships with Grace (no workspace needed).")
@workspace_options
@click.pass_context
def rules(ctx: click.Context, as_json: bool, pack: bool) -> None:
    """The workspace's rules in evaluation order (or, with --pack, the default pack)."""
    if pack:
        rows = [
            {
                "id": r.id,
                "severity": r.severity,
                "category": r.category,
                "enabled": r.enabled,
                "targets": ",".join(r.targets),
                "source": "pack:" + default_pack().name,
                "version": 1,
                "description": r.description,
            }
            for r in default_pack().rules
        ]
    else:
        with _workspace(ctx) as ws:
            rows = _records(ws.hunter.rules())
        for row in rows:
            row["targets"] = ",".join(json.loads(str(row["targets"])))
    _show(rows, _COLUMNS, as_json)


def _switch_options(f: Callable[..., None]) -> Callable[..., None]:
    """The arguments of ``disable`` and ``enable``: the rule's ID, --reason, --by, the workspace."""
    f = click.pass_context(f)
    f = workspace_options(f)
    f = by_option("Who is making the change: an admin, or the local operator (system); governance decides.")(
        f
    )
    f = click.option("--reason", default="", help="Why (recorded in the event).")(f)
    return click.argument("rule_id", metavar="ID")(f)


def _switch(ctx: click.Context, rule_id: str, enabled: bool, reason: str, by: str) -> None:
    with _workspace(ctx, writes=True) as ws:
        before = ws.hunter.rule(rule_id).enabled
        if enabled:
            ws.hunter.enable_rule(rule_id, actor=by, reason=reason)
        else:
            ws.hunter.disable_rule(rule_id, actor=by, reason=reason)
    state = "enabled" if enabled else "disabled"
    click.echo(f"{rule_id} {state}" if before != enabled else f"{rule_id} was {state} already")


@hunter.command()
@_switch_options
def disable(ctx: click.Context, rule_id: str, reason: str, by: str) -> None:
    """Stop a rule from running (a hunter.rule_disabled event)."""
    _switch(ctx, rule_id, False, reason, by)


@hunter.command()
@_switch_options
def enable(ctx: click.Context, rule_id: str, reason: str, by: str) -> None:
    """Run a disabled rule again (a hunter.rule_enabled event)."""
    _switch(ctx, rule_id, True, reason, by)


@hunter.command()
@click.argument("alert_id", metavar="ALERT")
@click.argument("verdict", metavar="VERDICT")
@click.option("--note", default="", help="Why (recorded in the event).")
@by_option(
    "Who judges the alert: an admin, a researcher, or the local operator (system); governance decides."
)
@workspace_options
@click.pass_context
def feedback(ctx: click.Context, alert_id: str, verdict: str, note: str, by: str) -> None:
    """Mark alert ALERT confirmed or false_positive (a hunter.feedback event)."""
    with _workspace(ctx, writes=True) as ws:
        event = ws.hunter.feedback(alert_id, verdict, actor=by, note=note)
    click.echo(f"{alert_id} {verdict} (event {event.id})")
