"""Commands of the governance engine: ``grace policy ...`` and ``grace approvals ...``.

Like the other engines' commands, the command line acts as the local operator, the service actor ``system``,
when it changes policies (``--by`` records someone else, who must be allowed to). ``grace policy check`` is a
what-if: it prints the decision with its reasons and logs nothing. ``grace policy reset`` restores the default
pack: the break-glass path of the local operator, whom no policy can lock out of changing policy.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from grace_core.cli import _echo_json, _records, _show, _workspace, by_option, cli, workspace_options
from grace_core.errors import PolicyError
from grace_core.governance import ROLES, Decision, load_policies


def _context(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; a value that reads as JSON (``true``, ``900``, ``["a"]``) is taken as JSON."""
    context: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, not {pair!r}", param_hint="'--context'")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        context[key] = value
    return context


def _print_decision(decision: Decision) -> None:
    click.echo(decision.effect.upper())
    for reason in decision.reasons:
        click.echo(f"  - {reason}")
    if decision.approval_id:
        click.echo(f"approval  {decision.approval_id}")


# -- policies ------------------------------------------------------------------------------------------------
@cli.group()
@workspace_options
def policy() -> None:
    """Governance policies: list, show, add, remove, reset, and check a request against them."""


@policy.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per policy.")
@workspace_options
@click.pass_context
def policy_list(ctx: click.Context, as_json: bool) -> None:
    """Every policy: deny first, then review, then allow; highest priority first within each."""
    with _workspace(ctx) as ws:
        rows = _records(ws.governance.policies())

    def tidy(row: dict[str, Any]) -> None:
        row["who"] = ",".join([*row["roles"], *(f"@{a}" for a in row["actors"])])
        actions = ",".join(row["actions"])
        row["actions"] = actions if len(actions) <= 60 else actions[:59] + "…"  # `policy show` has them all
        row["conditions"] = len(row["conditions"]) or None

    columns = ["id", "effect", "priority", "who", "actions", "conditions", "version"]
    _show(rows, columns, as_json, json_fields="all", empty="no policies: every request is denied", tidy=tidy)


@policy.command("show")
@click.argument("policy_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the policy as one JSON object.")
@workspace_options
@click.pass_context
def policy_show(ctx: click.Context, policy_id: str, as_json: bool) -> None:
    """One policy in full, as YAML (ready to edit and add back with --replace)."""
    import yaml

    with _workspace(ctx) as ws:
        found = ws.governance.policy(policy_id)
    if as_json:
        _echo_json(found.as_dict())
        return
    click.echo(yaml.safe_dump(found.as_dict(), sort_keys=False, allow_unicode=True, width=100), nl=False)
    click.echo(f"# {found.summary()}")


@policy.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Update policies whose id exists already instead of failing.")
@by_option("Who adds them (must be allowed to).")
@click.option("--reason", default="", help="Why (kept in the events).")
@workspace_options
@click.pass_context
def policy_add(ctx: click.Context, file: Path, replace: bool, by: str, reason: str) -> None:
    """Add the policies in FILE (YAML: one policy, a list, or a mapping with a 'policies' list), all or none."""
    try:
        policies = load_policies(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"{file} is not UTF-8 text (byte {exc.start})") from exc
    except PolicyError as exc:
        raise PolicyError(f"{file}: {exc}") from exc
    with _workspace(ctx, writes=True) as ws:
        existing = {p.id for p in ws.governance.index.policies}
        ws.governance.add_policies(policies, actor=by, reason=reason, replace=replace)
    for p in policies:
        click.echo(f"{'updated' if p.id in existing else 'added'}  {p.id}  ({p.effect})")


@policy.command("remove")
@click.argument("policy_id", metavar="ID")
@by_option("Who removes it (must be allowed to).")
@click.option("--reason", default="", help="Why (kept in the event).")
@workspace_options
@click.pass_context
def policy_remove(ctx: click.Context, policy_id: str, by: str, reason: str) -> None:
    """Remove policy ID."""
    with _workspace(ctx, writes=True) as ws:
        ws.governance.remove_policy(policy_id, actor=by, reason=reason)
    click.echo(f"removed  {policy_id}")


@policy.command("reset")
@by_option("Who resets (the local operator by default).")
@click.option("--reason", default="", help="Why (kept in the event).")
@workspace_options
@click.pass_context
def policy_reset(ctx: click.Context, by: str, reason: str) -> None:
    """Replace every policy by the default pack (break-glass: the local operator may always do it).

    For a workspace whose policies lock its admins out: whoever can open the workspace file acts as the local
    operator (system), whom no policy can stop from changing policy. The reset is one recorded event.
    """
    with _workspace(ctx, writes=True) as ws:
        before = {p.id for p in ws.governance.index.policies}
        ws.governance.reset_policies(actor=by, reason=reason)
        after = {p.id for p in ws.governance.index.policies}
    for policy_id in sorted(before - after):
        click.echo(f"removed  {policy_id}")
    click.echo(f"reset    {len(after)} policies of the default pack")


@policy.command("check")
@click.argument("actor")
@click.argument("action")
@click.argument("resource", required=False)
@click.option(
    "--context", "-c", "pairs", multiple=True, metavar="KEY=VALUE", help="Request context (repeatable)."
)
@click.option(
    "--as-role",
    type=click.Choice([*ROLES, "none"]),
    help="Decide as if ACTOR had this role (a what-if for policy authors).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as one JSON object.")
@workspace_options
@click.pass_context
def policy_check(
    ctx: click.Context,
    actor: str,
    action: str,
    resource: str | None,
    pairs: tuple[str, ...],
    as_role: str | None,
    as_json: bool,
) -> None:
    """Explain what governance would decide for ACTOR doing ACTION (on RESOURCE); nothing is logged.

    ACTION may carry the resource after a colon (memory.write:/system/x). Exits 0 when allowed, 1 when the
    request would be denied or need an approval.
    """
    context = _context(pairs)
    with _workspace(ctx) as ws:
        what_if = functools.partial(ws.governance.check, actor, action, resource, context, record="none")
        if as_role is None:
            decision = what_if(enforce=False)
        else:
            decision = what_if(enforce=False, role=None if as_role == "none" else as_role)
    if as_json:
        _echo_json(decision.as_dict())
    else:
        _print_decision(decision)
    if not decision.allowed:
        ctx.exit(1)


# -- approvals -----------------------------------------------------------------------------------------------
@cli.group()
@workspace_options
def approvals() -> None:
    """Approval requests raised by 'review' decisions: list them, approve or reject them."""


@approvals.command("list")
@click.option("--state", type=click.Choice(["pending", "approved", "rejected"]), help="Only this state.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per approval.")
@workspace_options
@click.pass_context
def approvals_list(ctx: click.Context, state: str | None, as_json: bool) -> None:
    """Approval requests, oldest first."""
    with _workspace(ctx) as ws:
        rows = _records(ws.governance.approvals(state))

    def tidy(row: dict[str, Any]) -> None:
        row["policies"] = ",".join(json.loads(row["policy_ids"]))

    columns = ["id", "state", "requester", "action", "resource", "policies", "requested_at", "decided_by"]
    empty = f"no {state} approvals" if state else "no approvals"
    _show(rows, columns, as_json, json_fields="all", empty=empty, tidy=tidy)


def _answer_options(*, by: str, note: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The arguments of ``approve`` and ``reject``: the request's ID, --by and --note (with these help texts),
    the workspace."""

    def apply(f: Callable[..., None]) -> Callable[..., None]:
        f = click.pass_context(f)
        f = workspace_options(f)
        f = click.option("--note", default="", help=note)(f)
        f = click.option("--by", required=True, help=by)(f)
        return click.argument("approval_id", metavar="ID")(f)

    return apply


def _answer(ctx: click.Context, approval_id: str, state: str, by: str, note: str) -> None:
    with _workspace(ctx, writes=True) as ws:
        answer = ws.governance.approve if state == "approved" else ws.governance.reject
        approval = answer(approval_id, by=by, note=note)
    click.echo(
        f"{approval.state}  {approval.id}  ({approval.requester}: {approval.action}"
        f"{'' if approval.resource is None else ' on ' + approval.resource})"
    )


@approvals.command("approve")
@_answer_options(
    by="The admin who approves (not the requester).", note="A note for the requester and the record."
)
def approvals_approve(ctx: click.Context, approval_id: str, by: str, note: str) -> None:
    """Approve pending request ID (admins only; the waiting action then proceeds)."""
    _answer(ctx, approval_id, "approved", by, note)


@approvals.command("reject")
@_answer_options(
    by="The admin who rejects (not the requester).", note="Why (for the requester and the record)."
)
def approvals_reject(ctx: click.Context, approval_id: str, by: str, note: str) -> None:
    """Reject pending request ID (admins only; the waiting action then fails)."""
    _answer(ctx, approval_id, "rejected", by, note)
