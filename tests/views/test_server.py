"""The server's pieces without a browser: who a cookie names, the pages, /health."""

from __future__ import annotations

from grace_core.server import GraceAuth, claims_for, health, page, safe_next
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
    assert safe_next("/chat?x=1") == "/chat?x=1"
    assert safe_next("/memory?path=%2Fnotes%2Fa.md") == "/memory?path=%2Fnotes%2Fa.md"
    assert safe_next("/") == "/"
    # Every way to name another host (as the login handler receives them, query-decoded once), and their
    # encodings: none leaves this server.
    bypasses = [
        "https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example", "/\t/evil.example",
        "/%09/evil.example", "/%2F%2Fevil.example", "/%5Cevil.example", "https:evil.example", "http:/evil.example",
        "javascript:alert(1)", "/ /evil.example", "/\n/evil.example", "//%09evil.example", "/.//evil.example",
        "/dashboard/..//evil.example", "/chat@evil.example", "/chat\x00", "evil.example", "/%2e%2e//evil.example",
        "/chat?x=%0d%0aSet-Cookie:a=b", "/" + "a" * 3000,
    ]  # fmt: skip
    for target in bypasses:
        assert safe_next(target) == "/", target
    assert safe_next(None) == "/"


def test_demo_passwords_are_generated_per_user_and_workspace_and_kept_off_the_ledger(tmp_path, monkeypatch):
    from grace_core import open_workspace
    from grace_core.demo import demo_logins, seed_demo

    monkeypatch.delenv("GRACE_DEMO_PASSWORD", raising=False)
    passwords = []
    for name in ("a", "b"):
        with open_workspace(tmp_path / f"{name}.duckdb") as ws:
            assert seed_demo(ws) > 0
            logins = demo_logins(ws)
            assert [(d.name, d.role) for d in logins] == [
                ("ada", "admin"),
                ("bob", "researcher"),
                ("vic", "viewer"),
            ]
            assert len({d.password for d in logins}) == 3  # each demo user has a password of its own
            for d in logins:
                ws.auth.login(d.name, d.password)  # the demo users really have them
                assert not ws.sql(
                    "SELECT count(*) AS n FROM events WHERE payload LIKE '%' || ? || '%'", [d.password]
                ).n[0]
            passwords.append([d.password for d in logins])
    assert not set(passwords[0]) & set(passwords[1])  # nothing fixed in the code
    with open_workspace(tmp_path / "a.duckdb") as ws:
        assert [d.password for d in demo_logins(ws)] == passwords[0]  # printed again at the next start
        assert seed_demo(ws) == 0  # a workspace with the demo and users is never seeded again


def test_one_demo_password_from_the_environment(tmp_path, monkeypatch):
    from grace_core import open_workspace
    from grace_core.demo import demo_logins, seed_demo

    monkeypatch.setenv("GRACE_DEMO_PASSWORD", "a shared demo passphrase")
    with open_workspace(tmp_path / "w.duckdb") as ws:
        seed_demo(ws)
        assert {d.password for d in demo_logins(ws)} == {"a shared demo passphrase"}
        ws.auth.login("bob", "a shared demo passphrase")
        assert not [n for n in ws.secrets.names() if n.startswith("demo_password")]  # nothing generated
