"""Commands of the task executor: ``grace tasks ls|show|run|cancel``.

The command line acts as the local operator (the service actor ``system``) unless ``--by`` names someone else.
"""

from __future__ import annotations

from typing import Any

import click

from grace_core.cli import _echo_json, _records, _show, _workspace, by_option, cli, workspace_options
from grace_core.tasks import STATES

_JSON = click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
_COLUMNS = ["id", "kind", "state", "priority", "attempts", "title", "note"]


def _task_dict(task: Any) -> dict[str, Any]:
    return {
        "id": task.id,
        "kind": task.kind,
        "title": task.title,
        "state": task.state,
        "priority": task.priority,
        "key": task.key,
        "attempts": task.attempts,
        "last_error": task.last_error,
        "next_attempt_at": task.next_attempt_at,
        "note": task.note,
        "created_by": task.created_by,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "details": task.details,
        "result": task.result,
    }


@cli.group()
@workspace_options
def tasks() -> None:
    """Tasks and the executor that runs them."""


@tasks.command("ls")
@click.option("--state", type=click.Choice(STATES), help="Only tasks in this state.")
@click.option("--kind", help="Only tasks of this kind.")
@_JSON
@workspace_options
@click.pass_context
def ls(ctx: click.Context, state: str | None, kind: str | None, as_json: bool) -> None:
    """Tasks, highest priority first, then oldest."""
    with _workspace(ctx) as ws:
        rows = _records(ws.tasks.list(state=state, kind=kind))

    def tidy(row: dict[str, Any]) -> None:
        row["title"] = str(row["title"])[:50]
        row["note"] = str(row["note"])[:40] if row.get("note") else ""

    _show(rows, _COLUMNS, as_json, json_fields=[*_COLUMNS, "created_at", "updated_at"], tidy=tidy)


@tasks.command()
@click.argument("task_id")
@_JSON
@workspace_options
@click.pass_context
def show(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """One task with its details and result."""
    with _workspace(ctx) as ws:
        task = _task_dict(ws.tasks.get(task_id))
    if as_json:
        _echo_json(task)
        return
    for key, value in task.items():
        if value not in (None, {}, ""):
            click.echo(f"{key:<16}{value}")


@tasks.command()
@click.argument("task_id")
@workspace_options
@click.pass_context
def run(ctx: click.Context, task_id: str) -> None:
    """Run a pending task now with its kind's handler (governance and degraded modes apply)."""
    with _workspace(ctx, writes=True) as ws:
        task = ws.executor.run(task_id)
    click.echo(f"{task.id}  {task.state}  attempt {task.attempts}")
    if task.last_error and task.state != "done":
        click.echo(f"error: {task.last_error}")


@tasks.command()
@click.argument("task_id")
@click.option("--reason", default="", help="Why.")
@by_option("Who cancels it (must be allowed to).")
@workspace_options
@click.pass_context
def cancel(ctx: click.Context, task_id: str, reason: str, by: str) -> None:
    """Cancel an open task."""
    with _workspace(ctx, writes=True) as ws:
        task = ws.tasks.cancel(task_id, actor=by, reason=reason)
    click.echo(f"{task.id}  {task.state}")
