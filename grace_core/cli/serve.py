"""``grace serve``: the web app (every view, login, /health, /metrics) over one workspace this process owns.

On a workspace that does not exist yet (or with ``--demo``, when it has no users) it first seeds the demo
(``grace_core.demo``: the same seeder as ``grace init --demo``), and at every start it prints the demo users'
logins. Panel is imported only when the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from grace_core import settings
from grace_core.cli import _path, _workspace, cli, workspace_options
from grace_core.demo import demo_logins, seed_demo
from grace_core.errors import GraceError
from grace_core.workspace import MEMORY


@cli.command()
@click.option("--port", default=5006, show_default=True, type=int, help="TCP port.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--no-loops", is_flag=True, help="Do not start the loops (reflection, healing, ...).")
@click.option("--demo", is_flag=True, help="Seed the demo (and demo users) if the workspace has no users.")
@click.option("--show", is_flag=True, help="Open a browser.")
@workspace_options
@click.pass_context
def serve(ctx: click.Context, port: int, address: str, no_loops: bool, demo: bool, show: bool) -> None:
    """Serve the web app: dashboard, chat, Hunter, memory, audit, IDE and tasks views, with login, /health
    and /metrics ($GRACE_MONITOR_TOKEN, 32+ characters: the Bearer token a monitor reads them with)."""
    path = _path(ctx)
    fresh = path != MEMORY and not Path(path).expanduser().exists()
    with _workspace(ctx, writes=True, create=True) as ws:
        if (fresh or demo) and ws.auth.users().empty:
            seed_demo(ws)
        for login in demo_logins(ws):
            click.echo(f"demo user {login.name} ({login.role}): password {login.password}")
        if ws.auth.users().empty:
            raise GraceError("no users can sign in: create an admin with `grace user add NAME --role admin`")
        from grace_core.server import serve as run  # Panel costs ~1 s to import: only when serving

        def ready(actual: int) -> None:
            click.echo(f"Grace Workbench on http://{address}:{actual}/ (workspace {ws.path})")
            sys.stdout.flush()

        run(
            ws,
            port=port,
            address=address,
            loops=not no_loops,
            show=show,
            ready=ready,
            monitor_token=settings.resolve(settings.MONITOR_TOKEN),
        )
