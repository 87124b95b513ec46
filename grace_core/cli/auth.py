"""Commands of the auth engine: ``grace user ...``, ``grace login``, ``grace logout``, ``grace whoami``.

The command line is the workspace's local operator: it acts as the service actor ``system``, which may manage
users (whoever can run it can open the workspace file anyway). Passwords are read from an interactive prompt,
or from standard input with ``--password-stdin`` (one per line), never from the command line, where other
users of the machine could see them.
"""

from __future__ import annotations

import sys

import click

from grace_core.auth import ROLES, Claims
from grace_core.cli import OPERATOR, _echo_json, _records, _show, _workspace, cli, workspace_options


def _stdin_lines(n: int) -> list[str]:
    lines = []
    for _ in range(n):
        line = sys.stdin.readline()
        if not line:
            raise click.UsageError(f"--password-stdin expects {n} line(s) on standard input")
        line = line.rstrip("\r\n")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise click.UsageError("--password-stdin: the password is not UTF-8 text") from None
        lines.append(line)
    return lines


def _ask(prompt: str, *, confirm: bool) -> str:
    if not sys.stdin.isatty():
        raise click.UsageError("standard input is not a terminal: pass the password with --password-stdin")
    value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value


def _new_password(from_stdin: bool) -> str:
    return _stdin_lines(1)[0] if from_stdin else _ask("Password", confirm=True)


def _print_claims(claims: Claims, as_json: bool) -> None:
    if as_json:
        _echo_json({**claims.as_dict(), "expires_at": claims.expires_at.isoformat()})
        return
    click.echo(f"user     {claims.sub}")
    click.echo(f"role     {claims.role}")
    click.echo(f"issued   {claims.issued_at.isoformat()}")
    click.echo(f"expires  {claims.expires_at.isoformat()}")
    click.echo(f"issuer   {claims.iss}")
    click.echo(f"token id {claims.jti}")


def _token_argument(token: str) -> str:
    # "-" reads the token from standard input, which keeps it out of the process list and shell history.
    return sys.stdin.readline().strip() if token == "-" else token  # noqa: S105 - "-" is not a token


PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (one line) instead of a prompt.",
)


@cli.group()
@workspace_options
def user() -> None:
    """Users and roles (admin, researcher, viewer)."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="The user's role.")
@PASSWORD_STDIN
@workspace_options
@click.pass_context
def user_add(ctx: click.Context, name: str, role: str, password_stdin: bool) -> None:
    """Create user NAME (the first user of a workspace must be an admin)."""
    password = _new_password(password_stdin)
    with _workspace(ctx, writes=True) as ws:
        created = ws.auth.register(name, password, role=role, by=OPERATOR)
    click.echo(f"added {created.name} ({created.role})")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user.")
@workspace_options
@click.pass_context
def user_list(ctx: click.Context, as_json: bool) -> None:
    """Every user: name, role, whether disabled, who created it and when."""
    with _workspace(ctx) as ws:
        rows = _records(ws.auth.users())
    _show(
        rows,
        ["name", "role", "disabled", "has_password", "created_by", "created_at"],
        as_json,
        json_fields="all",
        empty="no users yet: create the first admin with `grace user add NAME --role admin`",
    )


@user.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@workspace_options
@click.pass_context
def user_role(ctx: click.Context, name: str, role: str) -> None:
    """Give user NAME the role ROLE (their current tokens stop working)."""
    with _workspace(ctx, writes=True) as ws:
        changed = ws.auth.set_role(name, role, by=OPERATOR)
    click.echo(f"{changed.name} is now {changed.role}")


@user.command("disable")
@click.argument("name")
@click.option("--reason", default="", help="Why (recorded in the event).")
@workspace_options
@click.pass_context
def user_disable(ctx: click.Context, name: str, reason: str) -> None:
    """Disable user NAME: no more logins, and their tokens are refused."""
    with _workspace(ctx, writes=True) as ws:
        ws.auth.disable(name, by=OPERATOR, reason=reason)
    click.echo(f"{name} is disabled")


@user.command("enable")
@click.argument("name")
@workspace_options
@click.pass_context
def user_enable(ctx: click.Context, name: str) -> None:
    """Enable a disabled user NAME again."""
    with _workspace(ctx, writes=True) as ws:
        ws.auth.enable(name, by=OPERATOR)
    click.echo(f"{name} is enabled")


@user.command("passwd")
@click.argument("name")
@click.option(
    "--reset",
    is_flag=True,
    help="Set a new password without the current one (the operator's reset; also after a replay).",
)
@PASSWORD_STDIN
@workspace_options
@click.pass_context
def user_passwd(ctx: click.Context, name: str, reset: bool, password_stdin: bool) -> None:
    """Change the password of NAME (asks for the current one unless --reset).

    With --password-stdin: the current password on the first line and the new one on the second
    (only the new one with --reset).
    """
    if password_stdin:
        lines = _stdin_lines(1 if reset else 2)
        old, new = (None, lines[0]) if reset else (lines[0], lines[1])
    else:
        old = None if reset else _ask("Current password", confirm=False)
        new = _ask("New password", confirm=True)
    with _workspace(ctx, writes=True) as ws:
        if old is None:
            ws.auth.set_password(name, new, by=OPERATOR)
        else:
            ws.auth.change_password(name, old, new, source="local")
    click.echo(f"password of {name} changed")


@cli.command()
@click.argument("name")
@click.option("--ttl", type=click.IntRange(1, 30 * 86400), help="Token lifetime in seconds (default 3600).")
@PASSWORD_STDIN
@workspace_options
@click.pass_context
def login(ctx: click.Context, name: str, ttl: int | None, password_stdin: bool) -> None:
    """Log in as NAME and print an access token (only the token goes to standard output)."""
    password = _stdin_lines(1)[0] if password_stdin else _ask("Password", confirm=False)
    with _workspace(ctx, writes=True) as ws:
        session = ws.auth.login(name, password, source="local", ttl=ttl)
    click.echo(session.token)
    click.echo(
        f"logged in as {session.name} ({session.role}) until {session.expires_at.isoformat()}", err=True
    )


@cli.command()
@click.argument("token")
@workspace_options
@click.pass_context
def logout(ctx: click.Context, token: str) -> None:
    """Revoke TOKEN ('-' reads it from standard input)."""
    with _workspace(ctx, writes=True) as ws:
        revoked = ws.auth.logout(_token_argument(token))
    click.echo("logged out" if revoked else "the token was already logged out or expired")


@cli.command()
@click.argument("token")
@click.option("--json", "as_json", is_flag=True, help="Print the claims as one JSON object.")
@workspace_options
@click.pass_context
def whoami(ctx: click.Context, token: str, as_json: bool) -> None:
    """Verify TOKEN ('-' reads it from standard input) and print its claims."""
    with _workspace(ctx) as ws:
        claims = ws.auth.verify_token(_token_argument(token))
    _print_claims(claims, as_json)
