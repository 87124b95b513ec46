"""What every view shares: the workspace, who is looking (name and role), and live updates from the mesh.

A view is a ``pn.viewable.Viewer`` whose state is declared with ``param``, so a test (or a notebook) drives it by
setting parameters, and the server shows it by rendering ``__panel__``. Live updates: ``self.live(pattern, fn)``
subscribes to the mesh (non-durable); the mesh calls back on its dispatcher thread, and the view hands the work
to its own Bokeh document with ``add_next_tick_callback`` (the one document method that is safe to call from
another thread), so every open browser tab updates over its websocket without polling the database. Outside a
server session (a test, a notebook) the callback runs directly. Several events arriving before the document got
round to the first are folded into one refresh.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import panel as pn
import param

from grace_core.events import Event
from grace_core.governance import ROLES
from grace_core.mesh import Subscription

from .render import UserHTML, note_html

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = ["GraceView", "frame_for_table", "short", "side_by_side"]

log = logging.getLogger(__name__)
_ids = itertools.count(1)


def short(text: Any, width: int = 80) -> str:
    line = "" if text is None else str(text).replace("\n", " ")
    return line if len(line) <= width else line[: width - 1] + "…"


def side_by_side(*panes: Any, min_width: int = 380, grow: Sequence[int] = ()) -> pn.FlexBox:
    """Panes next to each other while the page is wide enough for each to have ``min_width`` pixels, one
    under the other on a narrower page (a laptop split screen, a phone): never squeezed or overlapping.
    ``grow`` weighs how the spare width is shared (default: evenly)."""
    for i, pane in enumerate(panes):
        weight = grow[i] if i < len(grow) else 1
        pane.sizing_mode = "stretch_width"
        pane.styles = {**pane.styles, "flex": f"{weight} 1 {min_width}px", "min-width": "0"}
    return pn.FlexBox(*panes, flex_wrap="wrap", gap="16px", sizing_mode="stretch_width")


def frame_for_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame Tabulator can show: timestamps without zones as text, bytes as hex, lists as text."""
    out = frame.copy()
    for col in out.columns:
        series = out[col]
        if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series):
            out[col] = series.dt.strftime("%Y-%m-%d %H:%M:%S")
        elif series.dtype == object:
            out[col] = series.map(_cell)
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, list | tuple | dict):
        return str(value)
    if hasattr(value, "tolist"):
        return str(value.tolist())
    return value


class GraceView(pn.viewable.Viewer):
    """Base of every view: ``ws`` (the workspace), ``user`` and ``role`` (from the login), live updates."""

    title: ClassVar[str] = "View"
    live_patterns: ClassVar[tuple[str, ...]] = ()  # topics that make the view refresh (see ``on_event``)

    ws: param.Parameter[Workspace] = param.Parameter(doc="The open Workspace.", allow_refs=False)
    user = param.String(default="", doc="Who is looking (the login name).")
    role: param.Selector[str] = param.Selector(
        default="viewer", objects=list(ROLES), doc="The role governance judges the user by."
    )
    message = param.String(default="", doc="The last status or error line shown to the user.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)  # type: ignore[no-untyped-call]  # param's Parameterized.__init__ is untyped
        self._subs: list[Subscription] = []
        self._doc = (
            pn.state.curdoc if pn.state.curdoc is not None and pn.state.curdoc.session_context else None
        )
        self._pending = threading.Lock()
        self._dirty: list[Event] = []
        # Messages often quote what people wrote (a task title, a path): shown as text, never as Markdown.
        self._status = UserHTML("", visible=False, margin=(0, 10))
        self.param.watch(self._show_message, "message")
        for pattern in self.live_patterns:
            self.live(pattern)
        if self._doc is not None:
            self._doc.on_session_destroyed(lambda _ctx: self.close())

    # -- permissions ---------------------------------------------------------------------------------------
    def may(
        self,
        action: str,
        resource: str | None = None,
        context: dict[str, Any] | None = None,
        *,
        review: bool = False,
    ) -> bool:
        """Whether governance would allow ``action`` for this user (a what-if: nothing is recorded); with
        ``review``, also when it would ask an admin's approval first.

        Views ask governance rather than hard-code roles, so a policy change shows in the UI at once; the
        engines still decide (and record) for real when the action runs.
        """
        decision = self.ws.governance.check(
            self.actor, action, resource, context, record="none", enforce=False, role=self.role
        )
        return bool(decision.effect == "allow" or (review and decision.effect == "review"))

    def cannot(self, what: str, *, needs: str = "a researcher or an admin") -> str:
        """Why this user may not do ``what``, in one sentence (for a disabled button's tooltip and notes)."""
        return f"Signed in as a {self.role}, you cannot {what}: that needs {needs}."

    def allow(self, button: pn.widgets.Button, allowed: bool, why: str) -> None:
        """Enable ``button`` when ``allowed``; else disable it, with ``why`` as its tooltip (a role's reason
        from ``cannot``, or what to do first, e.g. "Select a failed task to retry it")."""
        button.disabled = not allowed
        button.description = None if allowed else why

    def read_only_note(
        self, what: str, *, allowed: bool, needs: str = "a researcher or an admin"
    ) -> pn.viewable.Viewable:
        """A note above (part of) a view for a user who may only look there: what they cannot do and why.
        Hidden when ``allowed`` (what the view's ``may`` says of the actions it offers)."""
        text = f"You are signed in as a {self.role}: you can look around but not {what}; that needs {needs}."
        return UserHTML(note_html(text, "warning"), visible=not allowed, margin=(0, 10))

    @property
    def actor(self) -> str:
        return self.user or "anonymous"

    # -- live updates --------------------------------------------------------------------------------------
    def live(self, pattern: str) -> Subscription:
        """Refresh this view (``on_event``) when an event matching ``pattern`` is published."""
        name = f"view:{type(self).__name__}:{next(_ids)}:{pattern}"
        sub = self.ws.subscribe(pattern, self._arrived, name=name)
        self._subs.append(sub)
        return sub

    def _arrived(self, event: Event) -> None:
        # On the mesh's dispatcher thread: never raise (a failing handler would be retried), never touch widgets.
        with self._pending:
            first = not self._dirty
            self._dirty.append(event)
        if not first:
            return  # a refresh is scheduled already; it will see this event too
        if self._doc is None:
            self._flush()
            return
        try:
            self._doc.add_next_tick_callback(self._flush)
        except Exception:  # noqa: BLE001 - the session is gone: stop listening
            self.close()

    def _flush(self) -> None:
        with self._pending:
            events, self._dirty = self._dirty, []
        if not events:
            return
        try:
            self.on_event(events)
        except Exception as exc:
            log.exception("refreshing %s failed", type(self).__name__)
            self.message = f"refresh failed: {exc}"

    def on_event(self, events: list[Event]) -> None:
        """Called on the view's document with the events that arrived since the last call; default: refresh."""
        self.refresh()

    def refresh(self) -> None:
        """Re-read what the view shows from the workspace."""

    def close(self) -> None:
        """Stop listening to the mesh (the session was closed)."""
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):  # the workspace is closing anyway
                self.ws.mesh.unsubscribe(sub)

    # -- messages ------------------------------------------------------------------------------------------
    def _show_message(self, *_: Any) -> None:
        text = self.message
        kind = "danger" if text.startswith(("refused", "error", "refresh failed")) else "info"
        self._status.object = note_html(text, kind) if text else ""
        self._status.visible = bool(text)

    def act(
        self,
        what: str,
        fn: Callable[[], Any],
        *,
        action: str,
        resource: str | None = None,
        context: dict[str, Any] | None = None,
        review: bool = False,
    ) -> Any:
        """Run an action the user asked for, if governance would allow ``action`` (see ``may``); a refusal or
        an error becomes the view's message instead of a broken session."""
        if not self.may(action, resource, context, review=review):
            self.message = f"refused: a {self.role} cannot {what}"
            return None
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - shown to the user, who can correct the input
            self.message = f"error: {what}: {exc}"
            return None
