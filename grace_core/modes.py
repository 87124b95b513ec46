"""Degraded modes: switches the engines really enforce while something is wrong.

A mode is entered and left by events (``healing.mode_entered`` / ``healing.mode_left``), by a remediation rule
or an admin, so replay and audits see exactly when the workspace was degraded and why. Enforcement:

- ``read_only``: the mesh refuses every new event except the workspace's own health bookkeeping
  (``healing.*``, ``loop.*``, ``metrics.*``, ``ledger.*``), so nothing changes state but the healing that can lift it.
- ``sandbox_disabled``: ``ws.sandbox.run`` refuses to start code.
- ``chat_paused``: ``ws.chat.send`` refuses new messages.

Who may enter or leave a mode is decided by governance (``healing.mode.enter`` / ``healing.mode.leave`` on
``mode:<name>``; the default pack allows admins and the service actors).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import DegradedModeError, ModeError, ReadOnlyError
from .events import Event
from .times import TS

if TYPE_CHECKING:
    from .governance import Governance
    from .workspace import Workspace

__all__ = ["MODES", "ActiveMode", "Modes"]

MODES: dict[str, str] = {
    "read_only": "no writes but the workspace's own health events",
    "sandbox_disabled": "no sandboxed code runs",
    "chat_paused": "no new chat messages",
}
# Topics a read-only workspace still records: the bookkeeping that lets healing observe and lift the mode.
READ_ONLY_ALLOWED = ("healing.", "loop.", "metrics.", "ledger.")


@dataclass(frozen=True)
class ActiveMode:
    mode: str
    entered_by: str
    reason: str
    since: datetime
    event_id: str


class Modes:
    """``ws.modes``: enter, leave and guard the degraded modes."""

    def __init__(self, ws: Workspace, *, governance: Governance) -> None:
        self.ws = ws
        self._governance = governance
        self._lock = threading.Lock()
        self._active: dict[str, ActiveMode] = {}
        self._seen = 0  # the ledger head the in-memory view reflects
        ws.projections.register("degraded_modes", "healing.mode_*", _apply, tables=["degraded_modes"])
        # The in-memory view follows commits (a listener runs right after each durable batch), so guards cost
        # a dict lookup, not a query; it starts from the table, which replay and reopening fill.
        self._load()
        ws.ledger.add_commit_listener(self._on_commit)

    # -- state -----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        rows = (
            self.ws.ledger.reader()
            .execute("SELECT mode, entered_by, reason, since, event_id FROM degraded_modes ORDER BY mode")
            .fetchall()
        )
        with self._lock:
            self._seen = self.ws.ledger.head[0]
            self._active = {r[0]: ActiveMode(*r) for r in rows}
            self._sync_gate()

    def _fresh(self) -> None:
        # Commits reach the view through the listener; a replay imports events without listeners, so a head
        # the view has not seen means: reload from the table (which the import's projections filled).
        if self.ws.ledger._head_seq != self._seen:
            self._load()

    def _on_commit(self, events: list[Event]) -> None:
        changed = False
        for e in events:
            if e.topic == "healing.mode_entered":
                p = e.payload
                with self._lock:
                    self._active[p["mode"]] = ActiveMode(p["mode"], e.actor, p["reason"], e.ts, e.id)
                changed = True
            elif e.topic == "healing.mode_left":
                with self._lock:
                    self._active.pop(e.payload["mode"], None)
                changed = True
        with self._lock:
            self._seen = max(self._seen, events[-1].seq) if events else self._seen
            if changed:
                self._sync_gate()

    def _sync_gate(self) -> None:
        # Installed while read_only is active, or while the view may be stale (it then checks itself first).
        self.ws.mesh.gate = self._read_only_gate if "read_only" in self._active else self._stale_gate

    def _stale_gate(self, topics: Sequence[str]) -> None:
        if self.ws.ledger._head_seq != self._seen:
            self._load()
            if "read_only" in self._active:
                self._read_only_gate(topics)

    def _read_only_gate(self, topics: Sequence[str]) -> None:
        for topic in topics:
            if not topic.startswith(READ_ONLY_ALLOWED):
                raise ReadOnlyError(f"cannot record {topic!r}: {self._describe('read_only')}")

    def _describe(self, mode: str) -> str:
        active = self._active.get(mode)
        if active is None:
            return f"mode {mode} is not active"
        since = active.since.strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"the workspace is in degraded mode {mode} ({MODES[mode]}), entered by {active.entered_by} "
            f"at {since} UTC: {active.reason}"
        )

    # -- queries ---------------------------------------------------------------------------------------------
    def active(self) -> dict[str, ActiveMode]:
        """The active modes by name."""
        self._fresh()
        with self._lock:
            return dict(self._active)

    def is_active(self, mode: str) -> bool:
        _check(mode)
        self._fresh()
        return mode in self._active

    def guard(self, mode: str) -> None:
        """Raise ``DegradedModeError`` naming who entered ``mode`` and why, if it is active."""
        _check(mode)
        self._fresh()
        if mode in self._active:
            raise DegradedModeError(f"refused: {self._describe(mode)}", mode=mode)

    # -- switching -------------------------------------------------------------------------------------------
    def enter(
        self, mode: str, *, actor: str, reason: str, details: dict[str, Any] | None = None
    ) -> Event | None:
        """Enter ``mode`` (a no-op returning None when it is active already)."""
        self._may_switch(actor, mode, "enter")
        if not reason.strip():
            raise ModeError("entering a degraded mode needs a reason")
        if self.is_active(mode):
            return None
        return self.ws.publish(
            "healing.mode_entered",
            {"mode": mode, "reason": reason, "details": details or {}},
            actor=actor,
            resource=f"mode:{mode}",
        )

    def leave(self, mode: str, *, actor: str, reason: str) -> Event | None:
        """Leave ``mode`` (a no-op returning None when it is not active)."""
        self._may_switch(actor, mode, "leave")
        if not self.is_active(mode):
            return None
        return self.ws.publish(
            "healing.mode_left", {"mode": mode, "reason": reason}, actor=actor, resource=f"mode:{mode}"
        )

    def _may_switch(self, actor: str, mode: str, verb: str) -> None:
        _check(mode)
        # Policy decides who switches modes (the default pack: admins and the service actors, e.g. healing's
        # remediation rules). An allowed switch is recorded by its own event, so only a refusal is recorded.
        self._governance.check(
            actor, f"healing.mode.{verb}", f"mode:{mode}", record="refusals", what="switch degraded modes"
        )


def _check(mode: str) -> None:
    if mode not in MODES:
        raise ModeError(f"unknown degraded mode {mode!r}; modes: {', '.join(MODES)}")


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "healing.mode_entered":
            con.execute(
                f"INSERT OR REPLACE INTO degraded_modes VALUES (?, ?, ?, {TS}, ?)",
                [p["mode"], e.actor, p["reason"], e.ts_us, e.id],
            )
        elif e.topic == "healing.mode_left":
            con.execute("DELETE FROM degraded_modes WHERE mode = ?", [p["mode"]])
