"""Approvals: the requests ``review`` decisions raise, and the queue admins answer.

A ``review`` decision raises an approval request (``governance.approval_requested`` → the ``approvals`` table,
state ``pending``). Whoever governance allows ``governance.approval.decide`` (admins and the system in the
default pack) approves or rejects it (``governance.approval_decided``), never the requester themself. A
checking call waits for the answer in a live workspace; in a deterministic one (ManualClock, delivery in the
publishing thread) a waiting call could only be answered by another thread on a clock that does not move, so
there it checks once and the caller retries with ``check(..., approval_id=...)`` once the approval is decided.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from grace_core.causal import handling
from grace_core.errors import PermissionDenied, PolicyError
from grace_core.events import Event, canonical_json
from grace_core.times import TS

from .policy import _json

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

    from .engine import Governance

__all__ = ["APPROVAL_STATES", "Approval", "ApprovalQueue"]

APPROVAL_STATES = ("pending", "approved", "rejected")


@dataclass(frozen=True)
class Approval:
    """An approval request raised by a ``review`` decision, and its answer."""

    id: str
    state: str  # pending | approved | rejected
    requester: str
    role: str | None
    action: str
    resource: str | None
    context: dict[str, Any]
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    decision_id: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    note: str | None

    @property
    def pending(self) -> bool:
        return self.state == "pending"


_APPROVAL_COLUMNS = (
    "id, state, requester, role, action, resource, context, policy_ids, reasons, decision_id, requested_at, "
    "decided_by, decided_at, note"
)


def _approval(row: Sequence[Any]) -> Approval:
    (
        id_,
        state,
        requester,
        role,
        action,
        resource,
        context,
        policy_ids,
        reasons,
        decision_id,
        requested_at,
        decided_by,
        decided_at,
        note,
    ) = row
    return Approval(
        str(id_),
        str(state),
        str(requester),
        role,
        str(action),
        resource,
        json.loads(context),
        tuple(json.loads(policy_ids)),
        tuple(json.loads(reasons)),
        str(decision_id),
        requested_at,
        decided_by,
        decided_at,
        note,
    )


class ApprovalQueue:
    """The approval requests of one workspace: raise, look up, answer and wait for them.

    Part of ``ws.governance``, which offers its operations (``approval``, ``approvals``, ``approve``,
    ``reject``, ``wait``); who may answer is decided by governance like any other request.
    """

    def __init__(self, ws: Workspace, governance: Governance) -> None:
        self._ws = ws
        self._governance = governance
        self._answered = threading.Condition()
        self._generation = 0  # bumped by every committed answer: a waiting call wakes up and looks again
        ws.projections.register(
            "governance_approvals", "governance.approval_*", _apply_approvals, tables=["approvals"]
        )
        # Runs in the committing thread after each durable batch: a waiting check wakes when its answer lands.
        ws.ledger.add_commit_listener(self._on_commit)

    def _on_commit(self, events: list[Event]) -> None:
        if any(e.topic == "governance.approval_decided" for e in events):
            with self._answered:
                self._generation += 1
                self._answered.notify_all()

    # -- raising ---------------------------------------------------------------------------------------------
    def request(
        self,
        decision_event: Event,
        *,
        actor: str,
        role: str | None,
        action: str,
        resource: str | None,
        context: dict[str, Any],
        policy_ids: Sequence[str],
        reasons: Sequence[str],
    ) -> Event:
        """Raise the approval request of a logged ``review`` decision (caused by that decision's event)."""
        with handling(decision_event):
            return self._ws.publish(
                "governance.approval_requested",
                {
                    "decision_id": decision_event.id,
                    "role": role,
                    "action": action,
                    "resource": resource,
                    "context": context,
                    "policy_ids": list(policy_ids),
                    "reasons": list(reasons),
                },
                actor=actor,
                resource=resource,
            )

    def pending_for(
        self, actor: str, action: str, resource: str | None, context: dict[str, Any]
    ) -> str | None:
        """The id of the pending request for this very request, if there is one."""
        row = (
            self._ws.ledger.reader()
            .execute(
                "SELECT id FROM approvals WHERE state = 'pending' AND requester = ? AND action = ? "
                "AND resource IS NOT DISTINCT FROM ? AND context = ? ORDER BY requested_at LIMIT 1",
                [actor, action, resource, canonical_json(context)],
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    # -- looking up ------------------------------------------------------------------------------------------
    def get(self, approval_id: str) -> Approval:
        row = (
            self._ws.ledger.reader()
            .execute(f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id = ?", [approval_id])
            .fetchone()
        )
        if row is None:
            raise PolicyError(f"no approval with id {approval_id!r}")
        return _approval(row)

    def frame(self, state: str | None = None) -> pd.DataFrame:
        """Approval requests, oldest first (``state``: pending, approved or rejected)."""
        sql, params = f"SELECT {_APPROVAL_COLUMNS} FROM approvals", []
        if state is not None:
            if state not in APPROVAL_STATES:
                raise PolicyError(f"unknown approval state {state!r}; states: {', '.join(APPROVAL_STATES)}")
            sql += " WHERE state = ?"
            params.append(state)
        return self._ws.sql(sql + " ORDER BY requested_at, id", params)

    # -- answering -------------------------------------------------------------------------------------------
    def answer(self, approval_id: str, state: str, *, by: str, note: str) -> Approval:
        """Approve or reject (``state``) a pending request: ``by`` must be allowed
        ``governance.approval.decide`` and must not be the requester."""
        if state not in ("approved", "rejected"):
            raise PolicyError(f"an answer is approved or rejected, not {state!r}")
        if not isinstance(note, str) or len(note) > 2000:
            raise PolicyError("a note is text of at most 2000 characters")
        # Only a refusal is recorded: an answer's own event already says who decided.
        self._governance.check(
            by,
            "governance.approval.decide",
            f"approval:{approval_id}",
            record="refusals",
            what="decide approvals",
        )
        approval = self.get(approval_id)
        if approval.requester == by:
            raise PermissionDenied(f"{by!r} asked for approval {approval_id}; someone else must decide it")
        if approval.state != "pending":
            raise PolicyError(
                f"approval {approval_id} is {approval.state} already (by {approval.decided_by})"
            )
        self._ws.publish(
            "governance.approval_decided",
            {"approval_id": approval_id, "state": state, "note": note},
            actor=by,
            resource=f"approval:{approval_id}",
        )
        return self.get(approval_id)

    def wait(self, approval_id: str, timeout: float | None = None) -> Approval:
        """The approval once decided, or as it stands after ``timeout`` seconds.

        Waits only in a live workspace; in a deterministic one (and with ``timeout`` None or 0) it checks once.
        """
        approval = self.get(approval_id)
        if not approval.pending or not timeout or not self._ws.live:
            return approval
        deadline = time.monotonic() + timeout
        while True:
            with self._answered:
                seen = self._generation
            approval = self.get(approval_id)
            remaining = deadline - time.monotonic()
            if not approval.pending or remaining <= 0:
                return approval
            with self._answered:
                if self._generation == seen:
                    # Woken by the commit of any approval_decided event; the cap is only a safety net.
                    self._answered.wait(min(remaining, 1.0))


def _apply_approvals(con: Any, events: list[Event]) -> None:
    """Projection: ``approvals`` from requests and answers (only the first answer to a request counts)."""
    for e in events:
        p = e.payload
        if e.topic == "governance.approval_requested":
            con.execute(
                f"INSERT INTO approvals VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, {TS}, NULL, NULL, NULL)",
                [
                    e.id,
                    e.actor,
                    p["role"],
                    p["action"],
                    p["resource"],
                    canonical_json(p["context"]),
                    _json(p["policy_ids"]),
                    _json(p["reasons"]),
                    p["decision_id"],
                    e.ts_us,
                ],
            )
        elif e.topic == "governance.approval_decided":
            con.execute(
                f"UPDATE approvals SET state = ?, decided_by = ?, decided_at = {TS}, note = ? "
                "WHERE id = ? AND state = 'pending'",
                [p["state"], e.actor, e.ts_us, p["note"], p["approval_id"]],
            )
