"""Hunter: threat detection over chat, code, memory, files and tasks, with rules as data."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["Hunter"]


class Hunter:
    """Placeholder wired into every workspace; filled in by the security core."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws

    def seed_defaults(self) -> None:
        """Seed the default rule pack into a new workspace (called once, at genesis)."""

    def screen(self, text: str, *, target: str, actor: str, resource: str | None = None) -> list[object]:
        """Scan text entering the workspace and raise alerts for findings (the wired-in scans call this)."""
        return []
