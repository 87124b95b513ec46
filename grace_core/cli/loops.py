"""Commands of the loops: ``grace loops status|start|stop|step|params|set``.

A command-line process owns a workspace only while it runs (DuckDB lets one process write a file), so:

* ``start`` runs the loops live in the foreground until Ctrl-C or ``--for`` elapses, then stops them;
* ``step NAME`` runs one tick of a loop now and exits;
* ``stop`` asks the process running the loops (a ``grace loops start`` elsewhere) to stop them, by the protocol
  of ``grace_core.loops.request_stop``; with no such process nothing runs, and it says so.

Like the other engines' commands it acts as the local operator, the service actor ``system``, unless ``--by``
names someone else; governance decides every start, stop, step and parameter change.
"""

from __future__ import annotations

import contextlib
import json

import click

from grace_core.cli import _echo_json, _path, _records, _show, _workspace, by_option, cli, workspace_options
from grace_core.errors import WorkspaceLockedError
from grace_core.loops import request_stop, run_foreground
from grace_core.workspace import MEMORY

_BY = by_option()
_JSON = click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")


@cli.group()
@workspace_options
def loops() -> None:
    """The workspace's loops: look at them, run them, step them, tune them."""


@loops.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per loop.")
@workspace_options
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """State, cursor, lag, ticks and parameters of each registered loop (in this process: all stopped)."""
    with _workspace(ctx) as ws:
        frame = ws.loops.status()
    columns = ["loop", "state", "cursor", "lag", "ticks", "errors", "last_tick"]
    _show(_records(frame), columns, as_json, json_fields="all", empty="no loops registered")


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(
            f"{text!r} is not a duration like 30s, 5m or 1h", param_hint="'--for'"
        ) from None


@loops.command()
@click.argument("name", required=False)
@click.option(
    "--for", "for_", metavar="DURATION", help="Run this long (30s, 5m, 1h) instead of until Ctrl-C."
)
@_BY
@workspace_options
@click.pass_context
def start(ctx: click.Context, name: str | None, for_: str | None, by: str) -> None:
    """Run the loops (or loop NAME) live in the foreground until Ctrl-C or --for elapses, then stop them.

    While it runs, `grace loops stop` from another terminal stops them (see that command).
    """
    seconds = _duration(for_)
    with _workspace(ctx, writes=True) as ws:

        def started(names: list[str]) -> None:
            click.echo(f"running {', '.join(names)}; Ctrl-C stops", err=True)

        with contextlib.suppress(KeyboardInterrupt):
            run_foreground(ws, name, actor=by, seconds=seconds, started=started)
        rows = _records(ws.loops.status())
    _show(rows, ["loop", "state", "cursor", "lag", "ticks", "errors"], as_json=False)


@loops.command()
@click.argument("name", required=False)
@click.option("--wait", type=float, default=10.0, show_default=True, help="Seconds to wait for the owner.")
@_BY
@workspace_options
@click.pass_context
def stop(ctx: click.Context, name: str | None, wait: float, by: str) -> None:
    """Ask the process running the loops (`grace loops start`) to stop them (or loop NAME).

    The request is a file next to the workspace; the running process stops the loops (governed, as --by,
    recorded as loop.stopped events) and removes it. With no process running the loops there is nothing to stop.
    """
    path = _path(ctx)
    if path == MEMORY:
        raise click.UsageError("an in-memory workspace has no loops running in another process")
    try:
        with _workspace(ctx) as ws:
            if name is not None:
                ws.loops[name]  # a clear error for an unknown loop
        click.echo("no process is running the loops of this workspace; nothing to stop")
        return
    except WorkspaceLockedError:
        pass  # another process owns the workspace: it may be running the loops
    request_stop(path, loop=name, by=by, wait=wait)
    click.echo(f"stopped {name or 'the loops'}")


@loops.command()
@click.argument("name")
@_BY
@click.option("--json", "as_json", is_flag=True, help="The tick's record as one JSON object.")
@workspace_options
@click.pass_context
def step(ctx: click.Context, name: str, by: str, as_json: bool) -> None:
    """Run one tick of loop NAME now (whatever its schedule) and print what it did."""
    with _workspace(ctx, writes=True) as ws:
        processed = ws.loops.step(name, actor=by)
        row = _records(ws.loops.status().set_index("loop", drop=False).loc[[name]])[0]
    if as_json:
        _echo_json({"loop": name, "processed": processed, "cursor": row["cursor"], "lag": row["lag"]})
    else:
        click.echo(f"{name}: processed {processed} events; cursor {row['cursor']}, lag {row['lag']}")


@loops.command()
@click.argument("name")
@_JSON
@workspace_options
@click.pass_context
def params(ctx: click.Context, name: str, as_json: bool) -> None:
    """Parameters of loop NAME: value, default, and the bounds the meta-loop may tune it within."""
    with _workspace(ctx) as ws:
        loop = ws.loops[name]
        rows = []
        for key, default in loop.params.items():
            bounds = ws.loops.bounds(name, key)
            rows.append(
                {
                    "param": key,
                    "value": ws.loops.param(name, key),
                    "default": default,
                    "min": bounds[0] if bounds else None,
                    "max": bounds[1] if bounds else None,
                }
            )
    if as_json:
        _echo_json({r["param"]: r for r in rows})  # one object keyed by parameter, not a row per line
        return
    _show(rows, ["param", "value", "default", "min", "max"], as_json=False)


@loops.command("set")
@click.argument("name")
@click.argument("key")
@click.argument("value")
@click.option("--reason", required=True, help="Why (kept on the loop.param_changed event).")
@_BY
@_JSON
@workspace_options
@click.pass_context
def set_(ctx: click.Context, name: str, key: str, value: str, reason: str, by: str, as_json: bool) -> None:
    """Set parameter KEY of loop NAME to VALUE (a number or JSON), through governance."""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    with _workspace(ctx, writes=True) as ws:
        event = ws.loops.set_param(name, key, parsed, actor=by, reason=reason)
    if as_json:
        _echo_json(event.as_dict())
    else:
        click.echo(f"{name}.{key}: {event.payload['old']} -> {event.payload['new']} (event {event.seq})")
