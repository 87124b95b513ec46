"""Policies as data, explained decisions, approvals."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["Governance"]


class Governance:
    """Placeholder wired into every workspace; filled in by the security core."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws

    def seed_defaults(self) -> None:
        """Seed the default pack into a new workspace (called once, at genesis)."""
