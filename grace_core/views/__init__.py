"""Panel views of a workspace, shared by ``grace serve``, ``panel serve apps/*.py``, notebooks and Voila.

Importing this package does not import Panel (it costs about a second); ``view_class(slug)`` imports a view's
module when it is first needed. Adding a view is one Viewer subclass of ``GraceView`` in its own module plus
one line in ``VIEWS`` below: the server routes it at ``/<slug>`` and lists it in the sidebar.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from grace_core.errors import ViewError

__all__ = ["VIEWS", "ViewSpec", "view_class", "view_spec"]


@dataclass(frozen=True)
class ViewSpec:
    slug: str  # the URL path and the name of the screenshot
    title: str
    icon: str  # a short symbol shown in the sidebar
    target: str  # "module:Class"

    def load(self) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec("dashboard", "Dashboard", "◉", "grace_core.views.dashboard:DashboardView"),
    ViewSpec("chat", "Chat", "✉", "grace_core.views.chat:ChatView"),
    ViewSpec("hunter", "Hunter", "⚑", "grace_core.views.hunter:HunterView"),
    ViewSpec("memory", "Memory", "▤", "grace_core.views.memory:MemoryView"),
    ViewSpec("audit", "Audit", "✓", "grace_core.views.audit:AuditView"),
    ViewSpec("ide", "IDE", "⌨", "grace_core.views.ide:IDEView"),
    ViewSpec("tasks", "Tasks", "☰", "grace_core.views.tasks:TasksView"),
)


def view_spec(slug: str) -> ViewSpec:
    for spec in VIEWS:
        if spec.slug == slug:
            return spec
    raise ViewError(f"no view {slug!r}; views: {', '.join(s.slug for s in VIEWS)}")


def view_class(slug: str) -> Any:
    """The Viewer class registered under ``slug`` (imports Panel on first use)."""
    return view_spec(slug).load()
