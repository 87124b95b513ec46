"""``grace serve``: the web app (every view, login, /health, /metrics) over one workspace this process owns.

On a workspace that does not exist yet (or with ``--demo``) it first seeds the demo, plus demo users and a
little content for each view, and prints the demo logins. Panel is imported only when the command runs.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from grace_core.cli import _path, _workspace, cli, workspace_options
from grace_core.demo import seed_demo
from grace_core.errors import GraceError

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

DEMO_PASSWORD_ENV = "GRACE_DEMO_PASSWORD"  # noqa: S105 - the variable's name
_DEMO_SECRET = "demo_password"  # noqa: S105 - the row's name in workspace_secrets
DEMO_USERS = (("ada", "admin"), ("bob", "researcher"), ("vic", "viewer"))


def demo_password(ws: Workspace) -> str:
    """The demo users' password: ``$GRACE_DEMO_PASSWORD``, else one generated for this workspace.

    A generated password is kept in the workspace's secrets (never on the ledger, never in the repository) so
    that every start of the server can print it again.
    """
    given = os.environ.get(DEMO_PASSWORD_ENV)
    if given:
        return given
    stored = _stored_demo_password(ws)
    if stored is not None:
        return stored
    password = secrets.token_urlsafe(12)
    ws.con.execute("INSERT INTO workspace_secrets VALUES (?, ?)", [_DEMO_SECRET, password.encode()])
    return password


def _stored_demo_password(ws: Workspace) -> str | None:
    row = ws.con.execute("SELECT value FROM workspace_secrets WHERE name = ?", [_DEMO_SECRET]).fetchone()
    return None if row is None else bytes(row[0]).decode()


def seed_app_demo(ws: Workspace) -> list[tuple[str, str]]:
    """Demo users (one per role) and content for every view; returns the users it created (name, role).

    Nothing is added when the workspace has users already, so a real workspace is never touched.
    """
    if not ws.auth.users().empty:
        return []
    seed_demo(ws)
    password = demo_password(ws)
    made = []
    for name, role in DEMO_USERS:
        ws.auth.register(name, password, role=role, by="system")
        made.append((name, role))
    ws.memory.write(
        "/notes/weekly-review.md",
        "# Weekly review\n\nThe weekly review is on Thursdays at 10:00.\n",
        actor="ada",
        tags=("meetings",),
        reason="first notes",
    )
    ws.memory.write(
        "/notes/weekly-review.md",
        "# Weekly review\n\nThe weekly review is on Fridays at 10:00, in the small room.\n",
        actor="ada",
        tags=("meetings",),
        reason="moved to Fridays",
    )
    ws.memory.write(
        "/projects/grace/plan.md",
        "# Plan\n\n1. Ledger and mesh\n2. Security core\n3. Chat and memory\n4. The apps\n",
        actor="bob",
        tags=("plan",),
        reason="project plan",
    )
    ws.chat.send("ada", "When is the weekly review?")
    # A leaked credential in a note: Hunter masks it, raises an alert and opens a task.
    ws.memory.write(
        "/projects/grace/deploy.md",
        "Deploy with AWS key AKIAQ7Z3EXAMPLE4KEYZ and region eu-west-1.\n",
        actor="bob",
        reason="deployment notes",
    )
    ws.mesh.drain()
    ws.checkpoint(actor="system")
    return made


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
    fresh = path != ":memory:" and not Path(path).expanduser().exists()
    with _workspace(ctx, writes=True, create=True) as ws:
        if fresh or demo:
            made = seed_app_demo(ws)
            if made:
                names = ", ".join(f"{n} ({r})" for n, r in made)
                click.echo(f"demo users: {names}; password: {demo_password(ws)}")
        elif (stored := _stored_demo_password(ws)) is not None:
            click.echo(f"demo users: {', '.join(n for n, _ in DEMO_USERS)}; password: {stored}")
        if ws.auth.users().empty:
            raise GraceError("no users can sign in: create an admin with `grace user add NAME --role admin`")
        from grace_core.server import MONITOR_TOKEN_ENV  # Panel costs ~1 s to import: only when serving
        from grace_core.server import serve as run

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
            monitor_token=os.environ.get(MONITOR_TOKEN_ENV) or None,
        )
