"""The Grace server: one Panel (Bokeh/Tornado) process that owns the workspace, runs its loops and serves every
view under one navigation, multi-user over websockets.

Routes: ``/<view>`` for each view in ``grace_core.views.VIEWS`` (``/`` opens the dashboard), ``/login`` and
``/logout`` (Grace's own users: ``ws.auth.login`` returns a JWT, kept in an HttpOnly cookie and checked on every
page, on the websocket's opening and again on every message it carries, so a token logged out in one tab stops
every other tab at its next action), ``/health`` (JSON; HTTP 503 when a component is failing: only the overall
status without credentials, each component's detail for a signed-in user or the monitoring token) and
``/metrics`` (Prometheus text, for a signed-in user or the monitoring token). A view reads the role from the
verified token and disables what the role may not do; the engines check again (governance), so the UI is never
the only guard.

Request bodies are capped (``MAX_BODY_BYTES``; the login form far lower), refused logins are aggregated on the
ledger by ``ws.auth``, the login page redirects only to a view of this server, and every page asset (scripts,
styles, fonts) is served by this server: a page never asks another site for anything.

``panel serve apps/<view>.py`` serves one view without the auth provider: the page then asks for a login
itself and keeps the token in the session.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import logging
import re
import threading
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import panel as pn
from bokeh.server.auth_provider import AuthProvider
from bokeh.server.views.ws import WSHandler
from panel.io.resources import CDN_DIST
from panel.layout.base import ListLike
from panel.template.base import BasicTemplate
from panel.theme.fast import Fast
from tornado.web import RedirectHandler, RequestHandler

from . import settings
from .auth import ROLES as USER_ROLES
from .auth import Claims
from .errors import GraceError, ThrottledError
from .views import VIEWS, view_spec
from .workspace import Workspace, open_workspace

__all__ = [
    "COOKIE", "MAX_BODY_BYTES", "MAX_LOGIN_BYTES", "MIN_MONITOR_TOKEN", "GraceAuth",
    "build_routes", "health", "notebook_view", "notebook_workspace", "page", "safe_next", "serve",
    "shared_workspace",
]  # fmt: skip

log = logging.getLogger(__name__)
COOKIE = "grace_token"
TITLE = "Grace Workbench"
ACCENT = "#0f6e6e"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
MAX_BODY_BYTES = 64 * 1024  # no route takes more; Tornado answers 400 before reading a larger body
MAX_LOGIN_BYTES = 4096  # a user name and a password (at most 1024 characters) fit many times over
# Per connection: a websocket message (say, a large file in the editor) fits; a 100 MB upload does not.
MAX_BUFFER_BYTES = 16 * 1024 * 1024
MIN_MONITOR_TOKEN = 32


def _served_here(resources: Any) -> Any:
    """Fast's resources without its Google Fonts stylesheet, its script named by its full bundled path (a
    relative one would be looked up under the subclass's name)."""
    kept = {
        kind: dict(res) if isinstance(res, dict) else res for kind, res in resources.items() if kind != "font"
    }
    kept["js_modules"]["fast-design"] = f"{CDN_DIST}bundled/fast/js/fast_design.js"
    return kept


class LocalFast(Fast):
    """Panel's Fast design without the stylesheet it fetches from Google Fonts: pages load nothing from
    another site (the template's font is the system's, ``FONT``)."""

    _resources = _served_here(Fast._resources)


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
    def get_user(  # type: ignore[override]  # bokeh takes a None user as "not logged in"; its stub says User
        self,
    ) -> Callable[[Any], str | None]:
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


_NEXT = re.compile(
    r"^/(?:(?:" + "|".join(re.escape(v.slug) for v in VIEWS) + r")(?:\?[A-Za-z0-9._~%=&+\-/:@,;]*)?)?$"
)


def safe_next(target: str | None) -> str:
    """Where the login page may send a signed-in user: ``/`` or a view of this server (with its query), else
    ``/``. An allow-list, not a blacklist: ``//host``, ``/\\host``, ``/%09/host``, ``https:host`` and their
    encodings all fall outside it, so the fresh cookie's user is never handed to another site."""
    if not target or len(target) > 2048 or not _NEXT.match(target):
        return "/"
    decoded = unquote(target)
    if any(ord(c) < 0x21 or c == "\\" for c in decoded):  # no control, space or backslash once decoded
        return "/"
    return target


class LoginHandler(RequestHandler):
    ws: Workspace

    def get(self) -> None:
        self._page(next_=self.get_argument("next", "/"))

    def prepare(self) -> None:
        # The form is tiny: a larger body is refused before it is parsed or reaches the password check.
        if self.request.method == "POST" and len(self.request.body) > MAX_LOGIN_BYTES:
            self._page(next_="/", error="That request is too large to be a sign-in.", status=413)
            self.finish()

    def _page(self, *, next_: str, name: str = "", error: str = "", status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(
            _LOGIN_PAGE.format(
                accent=ACCENT,
                next=html.escape(safe_next(next_)),
                name=html.escape(name),
                error=html.escape(error),
            )
        )

    def post(self) -> None:
        name = self.get_argument("name", "")
        password = self.get_argument("password", "")
        next_ = safe_next(self.get_argument("next", "/"))
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


_LOGOUT_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign out · Grace Workbench</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;background:#eef3f3;display:flex;align-items:center;
justify-content:center;height:100vh;margin:0}} form{{background:#fff;padding:2rem 2.4rem;border-radius:10px;
box-shadow:0 4px 24px #0002}} button{{padding:.6rem 1.4rem;border:0;border-radius:6px;background:{accent};
color:#fff;font-size:1rem;cursor:pointer}}</style></head><body>
<form method="post" action="/logout"><p>Sign out of Grace Workbench?</p>
<button type="submit" id="signout">Sign out</button></form></body></html>"""


class LogoutHandler(RequestHandler):
    """Signing out is a POST (the sidebar's button): a GET only asks, so that a link or an image pointing at
    ``/logout`` (say, in a note someone wrote) cannot sign the reader out."""

    ws: Workspace

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.write(_LOGOUT_PAGE.format(accent=ACCENT))

    def post(self) -> None:
        token = self.get_cookie(COOKIE)
        if token:
            with contextlib.suppress(GraceError):  # expired or revoked already: the cookie goes either way
                self.ws.auth.logout(token)
        self.clear_cookie(COOKIE, path="/")
        self.redirect("/login")


class _SessionCheck:
    """Mixed into Bokeh's websocket handler: every message of a session whose token is no longer valid
    (logged out in another tab, user disabled, role or password changed, expired) is refused, and the page
    is reloaded, which brings it to the login page."""

    grace_ws: Workspace

    async def _handle(self, message: Any) -> Any:
        handler: Any = self
        try:
            claims = claims_for(self.grace_ws, handler.get_cookie(COOKIE))
        except Exception:  # cannot tell (the workspace is closing): refuse rather than allow
            log.exception("checking a session's token failed")
            claims = None
        if claims is None:
            self._to_login(handler)
            return handler.connection.error(message, "signed out: sign in again")
        return await super()._handle(message)  # type: ignore[misc]

    def _to_login(self, handler: Any) -> None:
        if getattr(self, "_grace_leaving", False):
            return
        self._grace_leaving = True
        doc = handler.connection.session.document

        def reload() -> None:
            from panel.io.state import set_curdoc

            with set_curdoc(doc):
                location = pn.state.location
            if location is not None:
                location.reload = True  # the browser reloads; the page's auth check sends it to /login

        doc.add_next_tick_callback(reload)


def _check_every_message(server: Any, ws: Workspace) -> int:
    """Put ``_SessionCheck`` in front of the websocket handler of every view; returns how many it wrapped.

    Bokeh checks the user only when a websocket opens, and routes are fixed once the server is built, so
    the handler class of each route is replaced in place (Panel itself reads ``server._tornado``)."""
    wrapped = 0
    for rule in server._tornado.wildcard_router.rules:
        target = rule.target
        if (
            isinstance(target, type)
            and issubclass(target, WSHandler)
            and not issubclass(target, _SessionCheck)
        ):
            rule.target = type(f"Checked{target.__name__}", (_SessionCheck, target), {"grace_ws": ws})
            wrapped += 1
    return wrapped


# -- monitoring -------------------------------------------------------------------------------------------------
def health(ws: Workspace) -> tuple[bool, dict[str, Any]]:
    """(ok, report): self-healing's status per component, plus the server's own checks."""
    components: dict[str, dict[str, Any]] = {}
    try:
        for name, status in ws.healing.status().items():
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
        loop_states = ws.loops.status()
        dead = [
            r["loop"] for r in loop_states.to_dict("records") if r["state"] == "running" and not r["alive"]
        ]
        components["loops"] = {
            "status": "failing" if dead else "ok",
            "detail": f"stopped unexpectedly: {', '.join(dead)}" if dead else f"{len(loop_states)} loop(s)",
            "checked_at": now,
        }
    ok = all(c.get("status") in ("ok", "degraded", "recovering") for c in components.values())
    report = {
        "status": "ok" if ok else "failing",
        "workspace": ws.origin,
        "events": ws.ledger.head[0],
        "healing": True,  # kept for readers of this report: every workspace has self-healing
        "components": components,
    }
    return ok, report


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class _MonitoringHandler(RequestHandler):
    """Who may read the details: a signed-in user (the cookie) or a monitor with ``Authorization: Bearer
    <the monitoring token>``."""

    def initialize(self, ws: Workspace, token: str | None) -> None:
        self.ws = ws
        self.token = token

    def trusted(self) -> bool:
        given = self.request.headers.get("Authorization", "")
        if self.token and given.startswith("Bearer "):
            return hmac.compare_digest(given[7:].strip().encode(), self.token.encode())
        return claims_for(self.ws, self.get_cookie(COOKIE)) is not None


class HealthHandler(_MonitoringHandler):
    """``{"status": "ok"|"failing"}`` for anyone (HTTP 200 or 503, for a load balancer); the report per
    component (workspace, events, details) only for a signed-in user or the monitoring token."""

    def get(self) -> None:
        ok, report = health(self.ws)
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(report if self.trusted() else {"status": report["status"]}))


class MetricsHandler(_MonitoringHandler):
    """Prometheus text, for a signed-in user or the monitoring token (HTTP 401 otherwise)."""

    def get(self) -> None:
        if not self.trusted():
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer realm="grace-metrics"')
            self.write("sign in, or send the monitoring token ($GRACE_MONITOR_TOKEN) as a Bearer token\n")
            return
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
            who += (
                '<form method="post" action="/logout" style="margin-top:.6rem">'
                '<button type="submit" id="logout">Sign out</button></form>'
            )
    return pn.pane.HTML("".join(links) + who, sizing_mode="stretch_width")


def page(
    ws: Workspace, slug: str, *, token: str | None = None, auth_provider: bool = True
) -> pn.template.FastListTemplate:
    """One view in the shared template. ``token`` (default: the session's cookie) decides user and role."""
    spec = view_spec(slug)
    template = pn.template.FastListTemplate(
        title=TITLE,
        header_background=ACCENT,
        accent_base_color=ACCENT,
        sidebar_width=200,
        main_max_width="1600px",
        design=LocalFast,
        font=FONT,
    )
    if token is None and pn.state.curdoc is not None:
        token = pn.state.cookies.get(COOKIE)
    claims = claims_for(ws, token)
    sidebar, main = _areas(template)
    if claims is None:
        # Served without the auth provider (``panel serve apps/x.py``): a login form kept in this session.
        sidebar.append(_nav(slug, None, logout=False))
        main.append(_login_form(ws, slug, template))
        return template
    sidebar.append(_nav(slug, claims, logout=auth_provider))
    view = spec.load()(ws=ws, user=claims.sub, role=claims.role)
    main.append(pn.Column(pn.pane.Markdown(f"## {spec.title}"), view, sizing_mode="stretch_width"))
    # the layout holds only the view's rendering; tests and notebooks want the view
    template.grace_view = view  # type: ignore[attr-defined]  # an attribute of ours on Panel's object
    return template


def _areas(template: BasicTemplate) -> tuple[ListLike, ListLike]:
    """A template's sidebar and main lists (Panel types them optional; a list template always has both)."""
    if template.sidebar is None or template.main is None:
        raise GraceError(f"{type(template).__name__} has no sidebar or main area")
    return template.sidebar, template.main


def _login_form(ws: Workspace, slug: str, template: BasicTemplate) -> pn.viewable.Viewable:
    name = pn.widgets.TextInput(label="User name", width=280)
    password = pn.widgets.PasswordInput(label="Password", width=280)
    button = pn.widgets.Button(label="Sign in", color="primary", width=280)
    error = pn.pane.Markdown("", styles={"color": "#b00020"})
    box = pn.Column(pn.pane.Markdown("## Sign in"), name, password, button, error)
    form = pn.Column(box)  # signing in replaces the form by the view

    def sign_in(_event: Any) -> None:
        context = pn.state.curdoc.session_context if pn.state.curdoc is not None else None
        request = getattr(context, "request", None)
        source = f"panel:{getattr(request, 'remote_ip', None) or 'local'}"
        try:
            session = ws.auth.login(name.value or "", password.value or "", source=source)
        except GraceError as exc:
            error.object = str(exc)
            return
        spec = view_spec(slug)
        view = spec.load()(ws=ws, user=session.name, role=session.role)
        sidebar, _ = _areas(template)
        sidebar[:] = [_nav(slug, session.claims, logout=False)]
        form[:] = [pn.pane.Markdown(f"## {spec.title}"), view]
        template.grace_view = view  # type: ignore[attr-defined]  # see page()

    button.on_click(sign_in)
    return form


def build_routes(ws: Workspace) -> dict[str, Callable[[], Any]]:
    def make(slug: str) -> Callable[[], Any]:
        return lambda: page(ws, slug)

    return {spec.slug: make(spec.slug) for spec in VIEWS}


_SHARED: dict[str, Workspace] = {}
_SHARED_LOCK = threading.Lock()


def shared_workspace(path: str | None = None, *, near: str | None = None) -> Workspace:
    """The one workspace of this process (for ``panel serve apps/*.py``): opened on first use, then reused;
    its loops start unless ``$GRACE_NO_LOOPS`` is set. ``near``: see ``settings.workspace_path``."""
    path = settings.workspace_path(path, near=near)
    with _SHARED_LOCK:
        if path not in _SHARED:
            ws = open_workspace(path)
            if settings.from_env(settings.NO_LOOPS) is None:
                ws.loops.start()  # this process owns the workspace: it runs the loops, as `grace serve` does
            _SHARED[path] = ws
        return _SHARED[path]


def app_page(slug: str, *, near: str | None = None) -> pn.template.BaseTemplate:
    """The page of one view for ``panel serve apps/<slug>.py`` (the process-wide workspace). ``near`` is the
    app's own file: started outside the project, the app still opens the project's default workspace."""
    quiet_warnings()
    pn.extension("tabulator", "codeeditor")
    return page(shared_workspace(near=near), slug, auth_provider=False)


# -- notebooks and Voila -----------------------------------------------------------------------------------------
_NOTEBOOK: dict[str, tuple[Workspace, bool]] = {}


def notebook_workspace(path: str | None = None) -> tuple[Workspace, bool]:
    """(workspace, is_snapshot) for a notebook or Voila kernel: ``$GRACE_WORKSPACE`` owned when no other
    process holds it, else a read-only snapshot (one writer per workspace). Opened once per kernel."""
    from .errors import WorkspaceLockedError

    path = settings.workspace_path(path)
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
    user = user if user is not None else settings.from_env(settings.USER) or ""
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
    # the layout holds only the view's rendering; callers want the view
    layout.grace_view = view  # type: ignore[attr-defined]  # an attribute of ours on Panel's object
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
    monitor_token: str | None = None,
) -> None:
    """Serve every view of ``ws`` until interrupted; starts the loops first (``loops=False`` leaves them).

    ``monitor_token`` (at least ``MIN_MONITOR_TOKEN`` characters) lets a monitor read ``/metrics`` and the
    detailed ``/health`` with ``Authorization: Bearer <token>``; without it only signed-in users can."""
    if monitor_token is not None and len(monitor_token) < MIN_MONITOR_TOKEN:
        raise GraceError(
            f"the monitoring token needs at least {MIN_MONITOR_TOKEN} characters, not {len(monitor_token)} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    quiet_warnings()
    pn.extension("tabulator", "codeeditor", notifications=False)
    if loops:
        ws.loops.start()
    patterns = [
        (r"/", RedirectHandler, {"url": "/dashboard"}),
        (r"/health", HealthHandler, {"ws": ws, "token": monitor_token}),
        (r"/metrics", MetricsHandler, {"ws": ws, "token": monitor_token}),
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
        http_server_kwargs={"max_body_size": MAX_BODY_BYTES, "max_buffer_size": MAX_BUFFER_BYTES},
        websocket_max_message_size=MAX_BUFFER_BYTES,
    )
    if not _check_every_message(server, ws):
        raise GraceError(
            "no websocket route to guard: this Panel/Bokeh version lays out its routes otherwise"
        )
    if ready is not None:
        server.io_loop.add_callback(ready, server.port)
    try:
        server.start()
        server.io_loop.start()
    finally:
        if loops:
            ws.loops.stop()
