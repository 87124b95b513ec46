"""The governance engine of a workspace (``ws.governance``): one way to ask, policies that change by events.

**One way to ask.** ``check(actor, action, resource, context)`` is how every engine, the command line and the
views ask governance; its keyword options say what the caller does with the answer:

* ``record`` — which decisions become ``governance.decision`` events: ``"all"`` (the default), ``"refusals"``
  (an allow straight from the policies is not recorded, everything else is: for frequent reads, and for checks
  whose own event already records the allowed action), or ``"none"`` (a what-if: nothing is recorded, no
  approval is raised — views, ``grace policy check``, benchmarks);
* ``enforce`` — a denial raises ``PermissionDenied`` carrying the decision (the default), or is returned (the
  chat turns it into a recorded refusal);
* ``wait`` — on ``review``, wait that many seconds for an admin's answer (live workspaces only);
* ``approval_id`` — go on with an approval raised by an earlier check of the very same request;
* ``role`` — decide as if the actor had this role (what-ifs only);
* ``what`` — the action in words for the refusal message (``"switch degraded modes"``).

A ``review`` decision raises an approval request (or points at the pending one for the very same request); a
check that enforces proceeds once it is approved and raises while it is pending or when it is rejected.

**Break-glass.** The local operator, the service actor ``system`` (the ``grace`` command: whoever can open the
workspace file), may always change policy — add, update, remove, load a pack, reset to the default pack —
whatever the policies say: a policy cannot lock out the one who holds the file. Its decision is recorded like
any other, with the policies' own answer in the reasons. And no change of policy, by anyone, may leave no
active admin able to change policy: the proposed set is evaluated before it is published, and a change that
would do so is refused with a PolicyError and writes nothing. ``reset_policies`` (``grace policy reset``)
restores the default pack in one ``governance.policies_reset`` event.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from grace_core.errors import EventError, PermissionDenied, PolicyError
from grace_core.events import Event, canonical_json
from grace_core.mesh import Message
from grace_core.times import TS

from .approvals import Approval, ApprovalQueue
from .index import Decision, PolicyIndex
from .policy import DEFAULT_PACK, Policy, _check_action, _check_resource, _json, default_pack, load_policies

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = ["BREAK_GLASS_ACTIONS", "OPERATOR", "RECORDS", "Governance", "Record"]

Record = Literal["all", "refusals", "none"]
RECORDS: tuple[Record, ...] = ("all", "refusals", "none")
OPERATOR = "system"  # the local operator: the service actor the `grace` command acts as
# What the operator may always do (break-glass): everything that changes policy.
BREAK_GLASS_ACTIONS = frozenset(
    {
        "governance.policy.add",
        "governance.policy.update",
        "governance.policy.remove",
        "governance.policy.load",
        "governance.policy.reset",
    }
)
# An admin "can change policy" while all three are allowed on every policy (and on a new one).
_CHANGE_ACTIONS = ("governance.policy.add", "governance.policy.update", "governance.policy.remove")
_ANY_ADMIN = "(any admin)"  # who is judged when the workspace has no active admin yet
_BREAK_GLASS = (
    f"break-glass: the local operator ({OPERATOR}), who holds the workspace file, may always change policy"
)
_LOOKUP: Any = object()


class Governance:
    """Policies, decisions and approvals of one workspace (``ws.governance``)."""

    def __init__(
        self,
        ws: Workspace,
        *,
        role_of: Callable[[str], str | None],
        admins: Callable[[], list[str]],
    ) -> None:
        self._ws = ws
        # The users' roles and the enabled admins (auth's projection), read without the Auth engine.
        self._lookup_role = role_of
        self._admins = admins
        self._lock = threading.RLock()
        self._changes = threading.Lock()  # one policy change at a time: judged and published together
        self._generation = 1  # bumped whenever a policy event is applied or committed
        self._index = PolicyIndex((), generation=0)
        self._roles: dict[str, str | None] = {}
        self._roles_generation = 0
        ws.projections.register(
            "governance_policies", "governance.p*", self._apply_policies, tables=["policies"]
        )
        self._queue = ApprovalQueue(ws, self)
        # Runs in the committing thread after each durable batch, before the publisher returns: a policy
        # change is visible to the next decision.
        ws.ledger.add_commit_listener(self._on_commit)

    # -- projections and change tracking ---------------------------------------------------------------------
    def _apply_policies(self, con: Any, events: list[Event]) -> None:
        _apply_policies(con, events)
        # Replay applies events without commit listeners: mark the index stale here too.
        self._generation += 1

    def _on_commit(self, events: list[Event]) -> None:
        policies = roles = False
        for e in events:
            topic = e.topic
            if topic.startswith("auth."):
                roles = True
            elif topic.startswith("governance.p"):
                policies = True
        if policies:
            with self._lock:
                self._generation += 1
        if roles:
            with self._lock:
                self._roles_generation += 1
                self._roles = {}

    @property
    def index(self) -> PolicyIndex:
        """The current compiled policies (rebuilt from the ``policies`` table after any change)."""
        index = self._index
        if index.generation != self._generation:
            index = self._rebuild()
        return index

    def _rebuild(self) -> PolicyIndex:
        with self._lock:
            generation = self._generation
            if self._index.generation == generation:
                return self._index
            rows = (
                self._ws.ledger.reader()
                .execute(
                    "SELECT id, effect, actions, resources, roles, actors, conditions, priority, description "
                    "FROM policies ORDER BY id"
                )
                .fetchall()
            )
            policies = [
                Policy(
                    id=r[0],
                    effect=r[1],
                    actions=json.loads(r[2]),
                    resources=json.loads(r[3]),
                    roles=json.loads(r[4]),
                    actors=json.loads(r[5]),
                    conditions=json.loads(r[6]),
                    priority=int(r[7]),
                    description=r[8],
                )
                for r in rows
            ]
            self._index = PolicyIndex(policies, generation=generation)
            return self._index

    # -- roles -----------------------------------------------------------------------------------------------
    def role_of(self, actor: str) -> str | None:
        """The actor's role, as ``ws.auth`` has it (remembered until the next auth event commits)."""
        roles = self._roles
        try:
            return roles[actor]
        except (KeyError, TypeError):
            pass
        generation = self._roles_generation
        role = self._lookup_role(actor)
        with self._lock:
            # An auth event that committed during the lookup may have changed the answer: do not keep it.
            if generation == self._roles_generation and len(self._roles) < 10_000 and isinstance(actor, str):
                self._roles[actor] = role
        return role

    # -- deciding --------------------------------------------------------------------------------------------
    def check(
        self,
        actor: str,
        action: str,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        record: Record = "all",
        enforce: bool = True,
        wait: float | None = None,
        approval_id: str | None = None,
        role: str | None = _LOOKUP,
        what: str | None = None,
        cache: bool = True,
    ) -> Decision:
        """Decide whether ``actor`` may do ``action`` (on ``resource``, given ``context``): the one way to ask.

        Returns the decision; with ``enforce`` (the default) a denial raises PermissionDenied instead, and so
        does a ``review`` whose approval is still pending (the message names it: retry with ``approval_id=``)
        or was rejected. ``record``, ``wait``, ``approval_id``, ``role`` and ``what``: see the module
        docstring. ``action`` may carry the resource after a ``:`` (``memory.write:/notes/a.md``).
        """
        if type(action) is not str:
            raise PolicyError(f"an action is a string like 'memory.write', not {action!r}")
        if resource is None and ":" in action:
            action, resource = action.split(":", 1)
        if record == "none":  # the what-if: the hot path of views and benchmarks, kept short
            if wait is not None or approval_id is not None:
                raise PolicyError("a check that records nothing (record='none') cannot wait for an approval")
            if role is _LOOKUP:
                role = self.role_of(actor)
            index = self._index
            if index.generation != self._generation:
                index = self._rebuild()
            decision = index.evaluate(actor, role, action, resource, context, cache=cache)
            if decision.effect != "allow":
                decision = _break_glass(actor, action, decision)
            if enforce and decision.effect != "allow":
                raise PermissionDenied(_refused(actor, action, resource, decision, what), decision=decision)
            return decision
        if record not in RECORDS:
            raise PolicyError(f"record is one of {', '.join(RECORDS)}, not {record!r}")
        if role is not _LOOKUP:
            raise PolicyError(
                "role= decides as if the actor had another role: only in a what-if (record='none')"
            )
        role = self.role_of(actor)
        if record == "refusals" and approval_id is None:
            # Frequent reads: an allowed one costs no event and skips the checks a logged request needs.
            decision = self._evaluate(actor, role, action, resource, context, cache)
            if decision.effect == "allow":
                return decision
        action, resource, ctx = _request(action, resource, context)
        if approval_id is None:
            decision = self._log(
                actor, role, action, resource, ctx, self._evaluate(actor, role, action, resource, ctx)
            )
            if decision.effect == "allow":
                return decision
            if decision.effect == "deny":
                return _refuse(actor, action, resource, decision, what, enforce=enforce)
            approval_id = decision.approval_id
            assert approval_id is not None
        else:
            asked = self._queue.get(approval_id)
            _same_request(asked, actor, action, resource, ctx)
            decision = self._evaluate(actor, role, action, resource, ctx)
            if decision.effect != "review":  # the policies changed since: the new answer stands
                decision = self._log(actor, role, action, resource, ctx, decision)
                if decision.effect == "deny":
                    return _refuse(actor, action, resource, decision, what, enforce=enforce)
                return decision
        approval = self._queue.wait(approval_id, wait)
        if approval.state == "pending":
            pending = replace(decision, approval_id=approval_id)
            if not enforce:
                return pending
            waited = f" after waiting {wait:g} s" if wait and self._ws.live else ""
            raise PermissionDenied(
                f"{actor} may not {what or action + _on(resource)} yet: it needs an admin's approval, and "
                f"approval {approval_id} is still pending{waited}. Retry later with check(..., approval_id="
                f"{approval_id!r}) or governance.wait({approval_id!r}, timeout)",
                decision=pending,
            )
        note = f" ({approval.note})" if approval.note else ""
        if approval.state == "approved":
            granted = Decision(
                "allow",
                decision.policy_ids,
                (
                    *decision.reasons[:-1],
                    f"approval {approval_id} was granted by {approval.decided_by}{note}",
                ),
                approval_id,
                decision.matched,
            )
            return self._log(actor, role, action, resource, ctx, granted)
        rejected = Decision(
            "deny",
            decision.policy_ids,
            (*decision.reasons[:-1], f"approval {approval_id} was rejected by {approval.decided_by}{note}"),
            approval_id,
            decision.matched,
        )
        self._log(actor, role, action, resource, ctx, rejected)
        return _refuse(actor, action, resource, rejected, what, enforce=enforce)

    def _evaluate(
        self,
        actor: str,
        role: str | None,
        action: str,
        resource: str | None,
        context: Mapping[str, Any] | None,
        cache: bool = True,
    ) -> Decision:
        index = self._index
        if index.generation != self._generation:
            index = self._rebuild()
        decision = index.evaluate(actor, role, action, resource, context, cache=cache)
        return decision if decision.effect == "allow" else _break_glass(actor, action, decision)

    def _log(
        self,
        actor: str,
        role: str | None,
        action: str,
        resource: str | None,
        context: dict[str, Any],
        decision: Decision,
    ) -> Decision:
        """Record a decision (a ``governance.decision`` event); a ``review`` raises its approval request."""
        payload = {
            "action": action,
            "resource": resource,
            "context": context,
            "role": role,
            "effect": decision.effect,
            "policy_ids": list(decision.policy_ids),
            "reasons": list(decision.reasons),
            "matched": [list(m) for m in decision.matched],
            "approval_id": decision.approval_id,
        }
        if decision.effect == "review" and decision.approval_id is None:
            # The same request asked again while its approval is pending: point at that one, not a new one.
            pending = self._queue.pending_for(actor, action, resource, context)
            if pending is not None:
                decision = replace(decision, approval_id=pending)
                payload["approval_id"] = pending
        event = self._ws.publish("governance.decision", payload, actor=actor, resource=resource)
        if decision.effect != "review" or decision.approval_id is not None:
            return decision
        request = self._queue.request(
            event,
            actor=actor,
            role=role,
            action=action,
            resource=resource,
            context=context,
            policy_ids=decision.policy_ids,
            reasons=decision.reasons,
        )
        return replace(decision, approval_id=request.id)

    # -- approvals -------------------------------------------------------------------------------------------
    def approval(self, approval_id: str) -> Approval:
        """One approval request by id."""
        return self._queue.get(approval_id)

    def approvals(self, state: str | None = None) -> pd.DataFrame:
        """Approval requests, oldest first (``state``: pending, approved or rejected)."""
        return self._queue.frame(state)

    def approve(self, approval_id: str, *, by: str, note: str = "") -> Approval:
        """Approve a pending request (whoever may ``governance.approval.decide``; never the requester)."""
        return self._queue.answer(approval_id, "approved", by=by, note=note)

    def reject(self, approval_id: str, *, by: str, note: str = "") -> Approval:
        """Reject a pending request (whoever may ``governance.approval.decide``; never the requester)."""
        return self._queue.answer(approval_id, "rejected", by=by, note=note)

    def wait(self, approval_id: str, timeout: float | None = None) -> Approval:
        """The approval once decided, or as it stands after ``timeout`` seconds (live workspaces only)."""
        return self._queue.wait(approval_id, timeout)

    # -- policies --------------------------------------------------------------------------------------------
    def policies(self) -> pd.DataFrame:
        """The policies as a DataFrame (list columns parsed), strongest effect and highest priority first."""
        df = self._ws.sql(
            "SELECT id, effect, priority, roles, actors, actions, resources, conditions, description, source, "
            "version, updated_by, updated_at FROM policies "
            "ORDER BY CASE effect WHEN 'deny' THEN 0 WHEN 'review' THEN 1 ELSE 2 END, priority DESC, id"
        )
        for column in ("roles", "actors", "actions", "resources", "conditions"):
            df[column] = df[column].map(json.loads)
        return df

    def policy(self, policy_id: str) -> Policy:
        for p in self.index.policies:
            if p.id == policy_id:
                return p
        raise PolicyError(f"no policy with id {policy_id!r}")

    def add_policy(self, policy: Policy | Mapping[str, Any], *, actor: str, reason: str = "") -> Policy:
        """Add a new policy (a ``governance.policy_added`` event); ``actor`` must be allowed to."""
        return self.add_policies([policy], actor=actor, reason=reason)[0]

    def update_policy(self, policy: Policy | Mapping[str, Any], *, actor: str, reason: str = "") -> Policy:
        """Replace an existing policy with the same id (a ``governance.policy_updated`` event)."""
        built = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
        self.policy(built.id)  # a clear error for an unknown id: updating is not adding
        return self.add_policies([built], actor=actor, reason=reason, replace=True)[0]

    def add_policies(
        self,
        policies: Iterable[Policy | Mapping[str, Any]],
        *,
        actor: str,
        reason: str = "",
        replace: bool = False,
    ) -> list[Policy]:
        """Add several policies in one transaction (all or none). With ``replace``, existing ids are updated
        (``policy_updated``) and new ones added; without it an existing id is an error."""
        built = load_policies([p if isinstance(p, Policy) else dict(p) for p in policies])
        with self._changes:
            current = {p.id: p for p in self.index.policies}
            if not replace:
                clash = [p.id for p in built if p.id in current]
                if clash:
                    raise PolicyError(
                        f"policy {', '.join(clash)} exists already; update it (update_policy, "
                        "`grace policy add --replace`) or remove it first"
                    )
            self._keep_admins_in_charge({**current, **{p.id: p for p in built}}.values())
            messages = []
            for p in built:
                verb = "update" if p.id in current else "add"
                self.check(actor, f"governance.policy.{verb}", f"policy:{p.id}")
                topic = "governance.policy_updated" if verb == "update" else "governance.policy_added"
                messages.append(Message(topic, {"policy": p.as_dict(), "reason": reason}, f"policy:{p.id}"))
            if messages:
                self._ws.publish_many(messages, actor=actor)
        return built

    def remove_policy(self, policy_id: str, *, actor: str, reason: str = "") -> None:
        """Remove a policy (a ``governance.policy_removed`` event); ``actor`` must be allowed to."""
        with self._changes:
            self.policy(policy_id)  # a clear error for an unknown id
            self._keep_admins_in_charge(p for p in self.index.policies if p.id != policy_id)
            self.check(actor, "governance.policy.remove", f"policy:{policy_id}")
            self._ws.publish(
                "governance.policy_removed",
                {"id": policy_id, "reason": reason},
                actor=actor,
                resource=f"policy:{policy_id}",
            )

    def load_pack(self, policies: Iterable[Policy], *, name: str, actor: str) -> Event:
        """Load a whole pack in one ``governance.pack_loaded`` event (its policies replace same-id ones);
        ``actor`` must be allowed ``governance.policy.load``."""
        built = load_policies(list(policies))
        with self._changes:
            current = {p.id: p for p in self.index.policies}
            self._keep_admins_in_charge({**current, **{p.id: p for p in built}}.values())
            self.check(actor, "governance.policy.load", f"policy-pack:{name}")
            return self._publish_pack(built, name=name, actor=actor)

    def reset_policies(self, *, actor: str = OPERATOR, reason: str = "") -> Event:
        """Replace every policy by the default pack (``grace policy reset``), in one
        ``governance.policies_reset`` event. The break-glass path: the local operator may always do it."""
        pack = default_pack()
        with self._changes:
            self._keep_admins_in_charge(pack)
            self.check(actor, "governance.policy.reset", f"policy-pack:{DEFAULT_PACK}")
            return self._ws.publish(
                "governance.policies_reset",
                {"name": DEFAULT_PACK, "policies": [p.as_dict() for p in pack], "reason": reason},
                actor=actor,
                resource=f"policy-pack:{DEFAULT_PACK}",
            )

    def seed_defaults(self) -> None:
        """Load the default pack into a new workspace: exactly one ``governance.pack_loaded`` event.

        Does nothing when the workspace has loaded a pack already (so calling it twice is harmless).
        """
        loaded = (
            self._ws.ledger.reader()
            .execute("SELECT count(*) FROM events WHERE topic = 'governance.pack_loaded'")
            .fetchone()
        )
        if loaded and loaded[0]:
            return
        # Genesis: no policy exists yet to decide it (every check would be a default deny).
        self._publish_pack(default_pack(), name=DEFAULT_PACK, actor="governance")

    def _publish_pack(self, policies: list[Policy], *, name: str, actor: str) -> Event:
        return self._ws.publish(
            "governance.pack_loaded",
            {"name": name, "policies": [p.as_dict() for p in policies]},
            actor=actor,
            resource=f"policy-pack:{name}",
        )

    def _keep_admins_in_charge(self, proposed: Iterable[Policy]) -> None:
        """Refuse (PolicyError) a policy set under which no active admin could change policy any more.

        "Could change policy" means: ``governance.policy.add``, ``.update`` and ``.remove`` are allowed (not
        merely reviewed) on every policy of the set and on a new one. Judged for each enabled admin user, or
        for any admin (the role alone) while the workspace has none, so the first admin is not locked out.
        """
        index = PolicyIndex(proposed)
        admins = self._admins()
        ids = {p.id for p in index.policies}
        new = next(f"new-policy-{i}" for i in range(len(ids) + 1) if f"new-policy-{i}" not in ids)
        resources = [f"policy:{i}" for i in sorted(ids)] + [f"policy:{new}"]
        blocked = ""
        for admin in admins or [_ANY_ADMIN]:
            blocked = ""
            for resource in resources:
                for action in _CHANGE_ACTIONS:
                    decision = index.evaluate(admin, "admin", action, resource, None, cache=False)
                    if decision.effect != "allow":
                        blocked = f"{admin} may not {action} on {resource}: {decision.explanation}"
                        break
                if blocked:
                    break
            if not blocked:
                return
        who = ", ".join(admins) if admins else "an admin"
        raise PolicyError(
            f"refused: after this change no active admin ({who}) could change policy any more ({blocked}); "
            "nothing was changed"
        )


# -- helpers -------------------------------------------------------------------------------------------------
def _break_glass(actor: str, action: str, decision: Decision) -> Decision:
    """The decision, or for the local operator changing policy an allow that keeps the policies' answer."""
    if actor != OPERATOR or action not in BREAK_GLASS_ACTIONS:
        return decision
    return Decision(
        "allow",
        (),
        (_BREAK_GLASS, f"the policies alone would {decision.effect} it: {decision.explanation}"),
        None,
        decision.matched,
    )


def _on(resource: str | None) -> str:
    return "" if resource is None else f" on {resource}"


def _refused(actor: str, action: str, resource: str | None, decision: Decision, what: str | None) -> str:
    return f"{actor} may not {what or action + _on(resource)}: {decision.explanation}"


def _refuse(
    actor: str, action: str, resource: str | None, decision: Decision, what: str | None, *, enforce: bool
) -> Decision:
    if enforce:
        raise PermissionDenied(_refused(actor, action, resource, decision, what), decision=decision)
    return decision


def _request(
    action: str, resource: str | None, context: Mapping[str, Any] | None
) -> tuple[str, str | None, dict[str, Any]]:
    """Normalise and check a request that is going to be logged."""
    if not isinstance(action, str):
        raise PolicyError(f"an action is a string like 'memory.write', not {action!r}")
    if resource is None and ":" in action:
        action, resource = action.split(":", 1)
    _check_action(action)
    _check_resource(resource)
    if context is None:
        ctx: dict[str, Any] = {}
    elif isinstance(context, Mapping):
        ctx = dict(context)
    else:
        raise PolicyError(f"the context is a mapping of names to values, not {type(context).__name__}")
    try:
        canonical_json(ctx, limit=64 * 1024)
    except EventError as exc:
        raise PolicyError(f"the context cannot be logged: {exc}") from exc
    return action, resource, ctx


def _same_request(
    approval: Approval, actor: str, action: str, resource: str | None, context: dict[str, Any]
) -> None:
    asked = (approval.requester, approval.action, approval.resource, canonical_json(approval.context))
    now = (actor, action, resource, canonical_json(context))
    if asked != now:
        raise PermissionDenied(
            f"approval {approval.id} was given for {approval.requester} to {approval.action}"
            f"{_on(approval.resource)} with context {canonical_json(approval.context)}, not for this request"
        )


def _policy_row(con: Any, policy: Mapping[str, Any], e: Event, source: str, version: int) -> None:
    con.execute(
        f"INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {TS}, ?)",
        [
            policy["id"],
            policy["effect"],
            policy["priority"],
            _json(policy["actions"]),
            _json(policy["resources"]),
            _json(policy["roles"]),
            _json(policy["actors"]),
            _json(policy["conditions"]),
            policy["description"],
            source,
            version,
            e.actor,
            e.ts_us,
            e.id,
        ],
    )


def _apply_policies(con: Any, events: list[Event]) -> None:
    """Projection: ``policies`` from pack, add, update, remove and reset events (ids kept unique by hand)."""
    for e in events:
        p = e.payload
        if e.topic in ("governance.pack_loaded", "governance.policies_reset"):
            versions = dict(con.execute("SELECT id, version FROM policies").fetchall())
            if e.topic == "governance.policies_reset":
                con.execute("DELETE FROM policies")
            for policy in p["policies"]:
                old = versions.get(policy["id"])
                con.execute("DELETE FROM policies WHERE id = ?", [policy["id"]])
                _policy_row(con, policy, e, f"pack:{p['name']}", 1 if old is None else int(old) + 1)
        elif e.topic in ("governance.policy_added", "governance.policy_updated"):
            policy = p["policy"]
            old = con.execute("SELECT version, source FROM policies WHERE id = ?", [policy["id"]]).fetchone()
            con.execute("DELETE FROM policies WHERE id = ?", [policy["id"]])
            version, source = (1, "user") if old is None else (int(old[0]) + 1, str(old[1]))
            _policy_row(con, policy, e, source, version)
        elif e.topic == "governance.policy_removed":
            con.execute("DELETE FROM policies WHERE id = ?", [p["id"]])
