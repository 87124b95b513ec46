"""The server's pieces without a browser: who a cookie names, the pages, /health."""

from __future__ import annotations

from grace_core.server import GraceAuth, _safe_next, claims_for, health, page
from grace_core.views.hunter import HunterView


class _Request:
    """Stands in for Tornado's request handler: only the cookie lookup the auth provider uses."""

    def __init__(self, cookies: dict[str, str]) -> None:
        self.cookies = cookies

    def get_cookie(self, name: str) -> str | None:
        return self.cookies.get(name)


def test_the_auth_provider_accepts_only_valid_unrevoked_tokens(vws, password):
    auth = GraceAuth(vws)
    token = vws.auth.login("bob", password).token
    assert auth.get_user(_Request({"grace_token": token})) == "bob"
    assert auth.get_user(_Request({})) is None
    assert auth.get_user(_Request({"grace_token": token[:-2] + "xx"})) is None
    vws.auth.logout(token)
    assert auth.get_user(_Request({"grace_token": token})) is None
    assert auth.login_url == "/login"
    assert auth.logout_url == "/logout"


def test_a_page_takes_user_and_role_from_the_token(vws, password):
    token = vws.auth.login("vic", password).token
    template = page(vws, "hunter", token=token)
    view = template.grace_view
    assert isinstance(view, HunterView)
    assert (view.user, view.role) == ("vic", "viewer")
    assert not view.may("hunter.rule.disable", "hunter:rule:jwt")  # a viewer, as governance sees it
    view.close()
    assert claims_for(vws, "garbage") is None


def test_without_a_token_the_page_asks_for_a_login(vws):
    template = page(vws, "chat", token=None, auth_provider=False)
    assert "Sign in" in repr(template.main)
    assert not hasattr(template, "grace_view")


def test_health_reports_every_component(vws):
    ok, report = health(vws)
    assert ok
    assert report["status"] == "ok"
    assert {"ledger", "loops"} <= set(report["components"])
    assert report["events"] == vws.ledger.head[0]


def test_login_redirects_stay_on_this_server():
    assert _safe_next("/chat?x=1") == "/chat?x=1"
    assert _safe_next("https://evil.example/") == "/"
    assert _safe_next("//evil.example/") == "/"
    assert _safe_next(None) == "/"


def test_demo_password_is_generated_per_workspace_and_kept_off_the_ledger(tmp_path, monkeypatch):
    from grace_core import open_workspace
    from grace_core.cli.serve import demo_password, seed_app_demo

    monkeypatch.delenv("GRACE_DEMO_PASSWORD", raising=False)
    passwords = []
    for name in ("a", "b"):
        with open_workspace(tmp_path / f"{name}.duckdb") as ws:
            assert [n for n, _ in seed_app_demo(ws)] == ["ada", "bob", "vic"]
            passwords.append(demo_password(ws))
            ws.auth.login("vic", passwords[-1])  # the demo users really have it
            assert not ws.sql(
                "SELECT count(*) AS n FROM events WHERE payload LIKE '%' || ? || '%'", [passwords[-1]]
            ).n[0]
    assert passwords[0] != passwords[1]  # nothing fixed in the code
    with open_workspace(tmp_path / "a.duckdb") as ws:
        assert demo_password(ws) == passwords[0]  # printed again at the next start
        assert seed_app_demo(ws) == []  # a workspace with users is never seeded again
