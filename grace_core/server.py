"""The Grace server: one Panel (Bokeh/Tornado) process that owns the workspace, runs its loops and serves every
view under one navigation, multi-user over websockets.

Routes: ``/<view>`` for each view in ``grace_core.views.VIEWS`` (``/`` opens the dashboard), ``/login`` and
``/logout`` (Grace's own users: ``ws.auth.login`` returns a JWT, kept in an HttpOnly cookie and checked on every
page and websocket by a Bokeh auth provider), ``/health`` (JSON, each component's status; HTTP 503 when one is
failing) and ``/metrics`` (Prometheus text). A view reads the role from the verified token and disables what
the role may not do; the engines check again (governance), so the UI is never the only guard.

``panel serve apps/<view>.py`` serves one view without the auth provider: the page then asks for a login
itself and keeps the token in the session.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import panel as pn
from bokeh.server.auth_provider import AuthProvider
from tornado.web import RedirectHandler, RequestHandler

from .auth import ROLES as USER_ROLES
from .auth import Claims
from .errors import GraceError, ThrottledError
from .views import VIEWS, view_spec
from .workspace import Workspace, open_workspace

__all__ = [
    "COOKIE", "GraceAuth", "build_routes", "health", "notebook_view", "notebook_workspace", "page", "serve",
    "shared_workspace",
]  # fmt: skip

log = logging.getLogger(__name__)
COOKIE = "grace_token"
TITLE = "Grace Workbench"
ACCENT = "#0f6e6e"


def quiet_warnings() -> None:
    # Bokeh 3.9 under pandas 3 warns on every DataFrame it serialises; nothing of ours to change.
    try:
        from pandas.errors import Pandas4Warning

        warnings.filterwarnings("ignore", category=Pandas4Warning)
    except ImportError:  # pandas 2 has no such warning
        pass


# -- who is looking -------------------------------------------------------------------------------------------
def claims_for(ws: Workspace, token: str | None) -> Claims | None:
    """The verified claims of a token, or None when there is none or it is not (or no longer) valid."""
    if not token:
        return None
    try:
        return ws.auth.verify_token(token)
    except GraceError:
        return None


class GraceAuth(AuthProvider):
    """Bokeh auth provider: pages and websockets need a valid Grace token in the ``grace_token`` cookie."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._login = type("GraceLogin", (LoginHandler,), {"ws": ws})
        self._logout = type("GraceLogout", (LogoutHandler,), {"ws": ws})
        super().__init__()

    @property
    def get_user(self) -> Callable[[Any], str | None]:
        def user(handler: Any) -> str | None:
            claims = claims_for(self.ws, handler.get_cookie(COOKIE))
            return None if claims is None else claims.sub

        return user

    @property
    def login_url(self) -> str:
        return "/login"

    @property
    def login_handler(self) -> type[RequestHandler]:
        return self._login

    @property
    def logout_url(self) -> str:
        return "/logout"

    @property
    def logout_handler(self) -> type[RequestHandler]:
        return self._logout


_LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · Grace Workbench</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;background:#eef3f3;display:flex;align-items:center;justify-content:center;
height:100vh;margin:0}}
form{{background:#fff;padding:2.2rem 2.4rem;border-radius:10px;box-shadow:0 4px 24px #0002;width:320px}}
h1{{font-size:1.3rem;margin:0 0 .3rem;color:{accent}}} p{{color:#555;margin:.2rem 0 1.2rem;font-size:.9rem}}
label{{display:block;font-size:.85rem;margin:.8rem 0 .3rem;color:#333}}
input{{width:100%;box-sizing:border-box;padding:.55rem;border:1px solid #bbb;border-radius:6px;font-size:1rem}}
button{{margin-top:1.3rem;width:100%;padding:.65rem;border:0;border-radius:6px;background:{accent};color:#fff;
font-size:1rem;cursor:pointer}}
.error{{color:#b00020;font-size:.9rem;margin-top:1rem}}
</style></head><body>
<form method="post" action="/login">
<h1>Grace Workbench</h1><p>Sign in with your workspace account.</p>
<input type="hidden" name="next" value="{next}">
<label for="name">User name</label><input id="name" name="name" autocomplete="username" autofocus value="{name}">
<label for="password">Password</label><input id="password" name="password" type="password"
 autocomplete="current-password">
<button type="submit" id="signin">Sign in</button>
<div class="error" id="error">{error}</div>
</form></body></html>"""


def _safe_next(target: str | None) -> str:
    # Only paths on this server: an open redirect would hand the fresh cookie's user to another site.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class LoginHandler(RequestHandler):
    ws: Workspace

    def get(self) -> None:
        self._page(next_=self.get_argument("next", "/"))

    def _page(self, *, next_: str, name: str = "", error: str = "", status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(
            _LOGIN_PAGE.format(
                accent=ACCENT,
                next=html.escape(_safe_next(next_)),
                name=html.escape(name),
                error=html.escape(error),
            )
        )

    def post(self) -> None:
        name = self.get_argument("name", "")
        password = self.get_argument("password", "")
        next_ = _safe_next(self.get_argument("next", "/"))
        try:
            session = self.ws.auth.login(name, password, source=f"web:{self.request.remote_ip}")
        except ThrottledError as exc:
            self._page(next_=next_, name=name, error=str(exc), status=429)
            return
        except GraceError as exc:
            self._page(next_=next_, name=name, error=str(exc), status=401)
            return
        ttl = max(1, int(session.claims.exp - session.claims.iat))
        self.set_cookie(
            COOKIE, session.token, httponly=True, samesite="Strict", path="/", expires_days=ttl / 86400
        )
        self.redirect(next_)


class LogoutHandler(RequestHandler):
    ws: Workspace

    def get(self) -> None:
        token = self.get_cookie(COOKIE)
        if token:
            with contextlib.suppress(GraceError):  # expired or revoked already: the cookie goes either way
                self.ws.auth.logout(token)
        self.clear_cookie(COOKIE, path="/")
        self.redirect("/login")


# -- monitoring -------------------------------------------------------------------------------------------------
def health(ws: Workspace) -> tuple[bool, dict[str, Any]]:
    """(ok, report): self-healing's status per component when it exists, plus the server's own checks."""
    components: dict[str, dict[str, Any]] = {}
    healing = getattr(ws, "healing", None)
    if healing is not None and hasattr(healing, "status"):
        try:
            for name, status in healing.status().items():
                components[str(name)] = {k: _plain(v) for k, v in dict(status).items()}
        except Exception as exc:  # noqa: BLE001 - the report itself must always answer
            components["healing"] = {"status": "failing", "detail": f"status() failed: {exc}"}
    now = ws.clock.now().isoformat()
    if "ledger" not in components:
        seq, digest = ws.ledger.head
        components["ledger"] = {
            "status": "ok",
            "detail": f"head {seq} {digest.hex()[:16]}",
            "checked_at": now,
        }
    if "loops" not in components:
        status = ws.loops.status()
        dead = [r["loop"] for r in status.to_dict("records") if r["state"] == "running" and not r["alive"]]
        components["loops"] = {
            "status": "failing" if dead else "ok",
            "detail": f"stopped unexpectedly: {', '.join(dead)}" if dead else f"{len(status)} loop(s)",
            "checked_at": now,
        }
    ok = all(c.get("status") in ("ok", "degraded", "recovering") for c in components.values())
    report = {
        "status": "ok" if ok else "failing",
        "workspace": ws.origin,
        "events": ws.ledger.head[0],
        "healing": healing is not None,
        "components": components,
    }
    return ok, report


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class HealthHandler(RequestHandler):
    def initialize(self, ws: Workspace) -> None:
        self.ws = ws

    def get(self) -> None:
        ok, report = health(self.ws)
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(report))


class MetricsHandler(RequestHandler):
    def initialize(self, ws: Workspace) -> None:
        self.ws = ws

    def get(self) -> None:
        text = self.ws.metrics.prometheus()
        views = sum(1 for sub in self.ws.mesh.subscriptions if sub.name.startswith("view:"))
        extra = (
            "# HELP grace_ledger_events Events on the ledger.\n# TYPE grace_ledger_events gauge\n"
            f"grace_ledger_events {self.ws.ledger.head[0]}\n"
            "# HELP grace_ui_live_views Views subscribed to the mesh (open browser tabs).\n"
            "# TYPE grace_ui_live_views gauge\n"
            f"grace_ui_live_views {views}\n"
        )
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.write(text.rstrip("\n") + "\n" + extra if text.strip() else extra)


# -- pages ------------------------------------------------------------------------------------------------------
def _nav(current: str, claims: Claims | None, *, logout: bool) -> pn.pane.HTML:
    links = []
    for spec in VIEWS:
        style = "font-weight:700;background:#0f6e6e22;" if spec.slug == current else ""
        links.append(
            f'<a href="{spec.slug}" class="grace-nav" id="nav-{spec.slug}" style="display:block;padding:.5rem .8rem;'
            f'border-radius:6px;color:inherit;text-decoration:none;{style}">{spec.icon}&nbsp; {spec.title}</a>'
        )
    who = ""
    if claims is not None:
        who = (
            f'<hr><div id="whoami" style="font-size:.9rem">Signed in as <b>{html.escape(claims.sub)}</b>'
            f"<br>role: <b>{html.escape(claims.role)}</b></div>"
        )
        if logout:
            who += '<div style="margin-top:.6rem"><a href="logout" id="logout">Sign out</a></div>'
    return pn.pane.HTML("".join(links) + who, sizing_mode="stretch_width")


def page(
    ws: Workspace, slug: str, *, token: str | None = None, auth_provider: bool = True
) -> pn.template.BaseTemplate:
    """One view in the shared template. ``token`` (default: the session's cookie) decides user and role."""
    spec = view_spec(slug)
    template = pn.template.FastListTemplate(
        title=TITLE,
        header_background=ACCENT,
        accent_base_color=ACCENT,
        sidebar_width=220,
        main_max_width="1600px",
    )
    if token is None and pn.state.curdoc is not None:
        token = pn.state.cookies.get(COOKIE)
    claims = claims_for(ws, token)
    if claims is None:
        # Served without the auth provider (``panel serve apps/x.py``): a login form kept in this session.
        template.sidebar.append(_nav(slug, None, logout=False))
        template.main.append(_login_form(ws, slug, template))
        return template
    template.sidebar.append(_nav(slug, claims, logout=auth_provider))
    view = spec.load()(ws=ws, user=claims.sub, role=claims.role)
    template.main.append(pn.Column(pn.pane.Markdown(f"## {spec.title}"), view, sizing_mode="stretch_width"))
    template.grace_view = (
        view  # the layout holds only the view's rendering; tests and notebooks want the view
    )
    return template


def _login_form(ws: Workspace, slug: str, template: pn.template.BaseTemplate) -> pn.viewable.Viewable:
    name = pn.widgets.TextInput(label="User name", width=280)
    password = pn.widgets.PasswordInput(label="Password", width=280)
    button = pn.widgets.Button(label="Sign in", color="primary", width=280)
    error = pn.pane.Markdown("", styles={"color": "#b00020"})
    box = pn.Column(pn.pane.Markdown("## Sign in"), name, password, button, error)

    def sign_in(_event: Any) -> None:
        try:
            session = ws.auth.login(name.value, password.value, source="panel")
        except GraceError as exc:
            error.object = str(exc)
            return
        spec = view_spec(slug)
        view = spec.load()(ws=ws, user=session.name, role=session.role)
        template.sidebar[:] = [_nav(slug, session.claims, logout=False)]
        template.main[0][:] = [pn.pane.Markdown(f"## {spec.title}"), view]
        template.grace_view = view

    button.on_click(sign_in)
    return pn.Column(box)


def build_routes(ws: Workspace) -> dict[str, Callable[[], Any]]:
    def make(slug: str) -> Callable[[], Any]:
        return lambda: page(ws, slug)

    return {spec.slug: make(spec.slug) for spec in VIEWS}


_SHARED: dict[str, Workspace] = {}
_SHARED_LOCK = threading.Lock()


def shared_workspace(path: str | None = None) -> Workspace:
    """The one workspace of this process (for ``panel serve apps/*.py``): opened on first use, then reused;
    its loops start unless ``$GRACE_NO_LOOPS`` is set."""
    path = path or os.environ.get("GRACE_WORKSPACE") or "grace.duckdb"
    with _SHARED_LOCK:
        if path not in _SHARED:
            ws = open_workspace(path)
            if not os.environ.get("GRACE_NO_LOOPS"):
                ws.loops.start()  # this process owns the workspace: it runs the loops, as `grace serve` does
            _SHARED[path] = ws
        return _SHARED[path]


def app_page(slug: str) -> pn.template.BaseTemplate:
    """The page of one view for ``panel serve apps/<slug>.py`` (the process-wide workspace)."""
    quiet_warnings()
    pn.extension("tabulator", "codeeditor", design="material")
    return page(shared_workspace(), slug, auth_provider=False)


# -- notebooks and Voila -----------------------------------------------------------------------------------------
_NOTEBOOK: dict[str, tuple[Workspace, bool]] = {}


def notebook_workspace(path: str | None = None) -> tuple[Workspace, bool]:
    """(workspace, is_snapshot) for a notebook or Voila kernel: ``$GRACE_WORKSPACE`` owned when no other
    process holds it, else a read-only snapshot (one writer per workspace). Opened once per kernel."""
    from .errors import WorkspaceLockedError

    path = path or os.environ.get("GRACE_WORKSPACE") or "grace.duckdb"
    with _SHARED_LOCK:
        if path not in _NOTEBOOK:
            try:
                _NOTEBOOK[path] = (open_workspace(path), False)
            except WorkspaceLockedError:
                _NOTEBOOK[path] = (open_workspace(path, snapshot=True), True)
        return _NOTEBOOK[path]


def notebook_view(slug: str, *, path: str | None = None, user: str | None = None) -> pn.viewable.Viewable:
    """A view for a notebook or ``voila apps/<slug>.ipynb``, above a line saying who it acts as.

    There is no login page in Voila: the view acts as ``user`` (default ``$GRACE_USER``) with that user's role
    in the workspace; without a known user, or on a read-only snapshot, it is read-only (the viewer role), and
    says so.
    """
    quiet_warnings()
    ws, snapshot = notebook_workspace(path)
    user = user if user is not None else os.environ.get("GRACE_USER", "")
    role = None
    if user:
        with contextlib.suppress(GraceError):
            role = ws.auth.role_of(user)
    if snapshot:
        note = (
            f"**Read-only snapshot** of `{ws.snapshot_of or ws.path}`: another process owns the workspace "
            "(one writer per workspace), so every action is disabled. Stop that process, or use `grace serve`."
        )
        role = "viewer"
    elif role not in USER_ROLES:  # no user's role (an unknown name, a service actor): read-only
        note = (
            f"Workspace `{ws.path}`, **read-only**: set `GRACE_USER` to a workspace user to act "
            "(the view then has that user's role)."
        )
        role = "viewer"
    else:
        note = f"Workspace `{ws.path}` (owned by this kernel), acting as **{user}** ({role})."
    view = view_spec(slug).load()(ws=ws, user=user or "voila", role=role)
    alert = pn.pane.Alert(
        note, alert_type="warning" if role == "viewer" else "info", sizing_mode="stretch_width"
    )
    layout = pn.Column(alert, view, sizing_mode="stretch_width")
    layout.grace_view = view  # the layout holds only the view's rendering; callers want the view
    return layout


# -- serving ----------------------------------------------------------------------------------------------------
def serve(
    ws: Workspace,
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    loops: bool = True,
    show: bool = False,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve every view of ``ws`` until interrupted; starts the loops first (``loops=False`` leaves them)."""
    quiet_warnings()
    pn.extension("tabulator", "codeeditor", design="material", notifications=False)
    if loops:
        ws.loops.start()
    patterns = [
        (r"/", RedirectHandler, {"url": "/dashboard"}),
        (r"/health", HealthHandler, {"ws": ws}),
        (r"/metrics", MetricsHandler, {"ws": ws}),
    ]
    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    server = pn.serve(
        build_routes(ws),
        port=port,
        address=address,
        show=show,
        start=False,
        title={spec.slug: f"{spec.title} · {TITLE}" for spec in VIEWS},
        websocket_origin=origins,
        extra_patterns=patterns,
        auth_provider=GraceAuth(ws),
    )
    if ready is not None:
        server.io_loop.add_callback(ready, server.port)
    try:
        server.start()
        server.io_loop.start()
    finally:
        if loops:
            ws.loops.stop()
