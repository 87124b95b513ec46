"""Commands of reflection and learning: ``grace insights ls|show|reflect`` and ``grace lessons ls|history``.

``ls`` and ``show`` only read (they work on a ``--snapshot`` too). ``grace insights reflect`` runs one tick of
the reflection loop and then one of the learning loop now, whatever their schedule (the same as
``ws.loops.step``), and prints what they wrote.
"""

from __future__ import annotations

import click

from grace_core.cli import _echo_json, _records, _show, _workspace, cli, workspace_options
from grace_core.errors import GraceError

_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
_KINDS = ("chat_topic", "failure_rate", "alert_rate", "unanswered", "anomaly", "failure_cause")


@cli.group()
@workspace_options
def insights() -> None:
    """Insights the reflection loop wrote about the workspace."""


@insights.command("ls")
@click.option("--kind", type=click.Choice(_KINDS), help="Only insights of this kind.")
@click.option("--limit", "-n", type=int, default=50, show_default=True, help="The newest N (0: all).")
@_JSON
@workspace_options
@click.pass_context
def insights_ls(ctx: click.Context, kind: str | None, limit: int, as_json: bool) -> None:
    """Insights, oldest first (the newest --limit of them)."""
    with _workspace(ctx) as ws:
        frame = ws.reflection.insights(kind=kind)
    if limit > 0:
        frame = frame.tail(limit)
    columns = ["id", "created_at", "reflection", "trigger", "kind", "key", "score", "evidence_count", "text"]
    _show(_records(frame), columns, as_json)


@insights.command("show")
@click.argument("insight_id")
@click.option("--evidence", "with_evidence", is_flag=True, help="Also list the events it rests on.")
@workspace_options
@click.pass_context
def insights_show(ctx: click.Context, insight_id: str, with_evidence: bool) -> None:
    """One insight as JSON: text, score, window, evidence ids, and its causal lineage."""
    with _workspace(ctx) as ws:
        try:
            insight = ws.reflection.insight(insight_id)
        except GraceError as exc:
            raise click.UsageError(str(exc)) from exc
        lineage = ws.causal.lineage(insight_id)
        insight["lineage"] = [
            {"depth": int(r["depth"]), "id": r["id"], "topic": r["topic"], "actor": r["actor"]}
            for r in _records(lineage)
        ]
        evidence = _records(ws.reflection.evidence(insight_id)) if with_evidence else None
    _echo_json(insight)
    if evidence is not None:
        for row in evidence:
            _echo_json({k: row[k] for k in ("seq", "id", "ts", "topic", "actor", "payload")})


@insights.command("reflect")
@workspace_options
@click.pass_context
def insights_reflect(ctx: click.Context) -> None:
    """Run one reflection tick and one learning tick now; print the counts."""
    with _workspace(ctx, writes=True) as ws:
        before = len(ws.reflection.insights())
        rules_before = len(ws.learning.history())
        tasks_before = len(ws.learning.tasks())
        processed = ws.loops.step("reflection")
        ws.loops.step("learning")
        _echo_json(
            {
                "processed": processed,
                "insights": len(ws.reflection.insights()) - before,
                "rule_ops": len(ws.learning.history()) - rules_before,
                "tasks": len(ws.learning.tasks()) - tasks_before,
            }
        )


@cli.group()
@workspace_options
def lessons() -> None:
    """Lessons (learned rules with votes) the learning loop keeps."""


@lessons.command("ls")
@click.option("--all", "include_dropped", is_flag=True, help="Include lessons dropped at zero votes.")
@_JSON
@workspace_options
@click.pass_context
def lessons_ls(ctx: click.Context, include_dropped: bool, as_json: bool) -> None:
    """Lessons, strongest first."""
    with _workspace(ctx) as ws:
        rows = _records(ws.learning.rules(include_dropped=include_dropped))
    _show(rows, ["id", "votes", "state", "support", "key", "text"], as_json)


@lessons.command("history")
@click.argument("rule_id", required=False)
@_JSON
@workspace_options
@click.pass_context
def lessons_history(ctx: click.Context, rule_id: str | None, as_json: bool) -> None:
    """Every vote on a lesson (or on all of them), oldest first."""
    with _workspace(ctx) as ws:
        rows = _records(ws.learning.history(rule_id))
    if rule_id is not None and not rows:
        raise click.UsageError(f"no lesson with id {rule_id!r}; see `grace lessons ls --all`")
    _show(rows, ["ts", "rule_id", "op", "delta", "votes", "reflection", "text"], as_json)
