"""Users, passwords (argon2id), logins with throttling, JWT access tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["Auth"]


class Auth:
    """Placeholder wired into every workspace; filled in by the security core."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws

    def seed_defaults(self) -> None:
        """Seed the default pack into a new workspace (called once, at genesis)."""
