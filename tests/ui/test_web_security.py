"""The web app against a hostile user and a careless page: inert notes, sessions that end everywhere at logout,
redirects that stay home, bounded request bodies, what monitoring may read, assets only from this server, and a
layout that holds at 800 pixels."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from grace_core.views import VIEWS

pytestmark = pytest.mark.slow

# A note as a hostile colleague writes it: an image that signs the reader out, one that tells another site who
# reads what, and four backticks that close a three-backtick fence early to smuggle in a third.
HOSTILE = (
    "The standup moved to Tuesdays ![x](logout) ![p](http://beacon.invalid/p.png) at 9.\n\n"
    "````\n```\n![y](/logout)\n![z](http://beacon.invalid/z.png)\n````\n\n"
    '<img src="http://beacon.invalid/i.png"> <a href="/logout">help</a>\n'
)
LAYOUT_PROBLEMS = "(" + Path(__file__).with_name("layout_check.js").read_text() + ")()"  # an expression


PASSWORD = "ui-test-password-1"  # the users registered below (the test servers' password)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory, start_grace: Any) -> tuple[str, str]:
    """(base URL, the note's event id) of a `grace serve` whose memory holds HOSTILE, written by bob."""
    from grace_core import open_workspace

    workspace = tmp_path_factory.mktemp("hostile") / "ws.duckdb"
    with open_workspace(workspace) as ws:
        for name, role in (("ada", "admin"), ("bob", "researcher"), ("vic", "viewer")):
            ws.auth.register(name, PASSWORD, role=role, by="system")
        ws.memory.write("/notes/standup.md", HOSTILE, actor="bob", reason="![r](logout) the new day")
        ws.tasks.create('Read <img src="http://beacon.invalid/t.png"> ![t](logout)', kind="review", actor="bob",
                        details={"note": HOSTILE})  # fmt: skip
        event_id = str(ws.memory.versions("/notes/standup.md")["event_id"].iloc[0])
    return start_grace(workspace, "--no-loops"), event_id


@pytest.fixture
def hostile(hostile_server: tuple[str, str], browse: Any, password: str) -> tuple[Any, str]:
    assert password == PASSWORD
    return browse(hostile_server[0]), hostile_server[1]


def _still_signed_in(ui: Any, page: Any) -> None:
    page.goto(f"{ui.base}/dashboard")
    page.wait_for_selector("#whoami")
    assert "/login" not in page.url


# -- 13.5: what people wrote is shown, never fetched -------------------------------------------------------------
def test_a_hostile_note_neither_signs_the_reader_out_nor_beacons(hostile):
    ui, event_id = hostile
    page = ui.login("vic", "/memory")
    page.goto(f"{ui.base}/memory?path=/notes/standup.md")
    page.get_by_text("The standup moved to Tuesdays").first.wait_for()
    page.get_by_text("![y](/logout)").first.wait_for()  # the smuggled image is shown as the text it is
    page.get_by_placeholder("words to find").fill("standup")
    page.get_by_placeholder("words to find").press("Enter")
    page.get_by_text("match(es) for").first.wait_for()  # the snippet quotes the note's raw HTML, as text
    page.goto(f"{ui.base}/tasks")
    page.get_by_text("![t](logout)").first.wait_for()
    page.goto(f"{ui.base}/chat")
    box = page.locator("textarea").first
    box.fill("When is the standup?")
    box.press("Enter")
    page.get_by_text("[image: x]").last.wait_for()  # the reply quotes the note; its image is inert
    page.goto(f"{ui.base}/audit?event={event_id}")
    page.get_by_text("memory.item.").first.wait_for()
    page.wait_for_timeout(500)
    assert ui.off_site == []
    assert not [u for u in ui.requests if urllib.parse.urlsplit(u).path == "/logout"]
    _still_signed_in(ui, page)


def test_a_get_of_logout_only_asks(hostile):
    ui, _ = hostile
    page = ui.login("vic")
    page.goto(f"{ui.base}/logout")  # what an image or a link pointing there would do
    page.get_by_text("Sign out of Grace Workbench?").wait_for()
    _still_signed_in(ui, page)


# -- 13.7: logging out ends every tab; redirects stay home -------------------------------------------------------
def test_logging_out_in_one_tab_stops_the_other(hostile):
    ui, _ = hostile
    context = ui.context()
    chat = ui.login("bob", "/chat", context=context)
    other = context.new_page()
    other.goto(f"{ui.base}/dashboard")
    other.wait_for_selector("#whoami")
    other.click("#logout")
    other.wait_for_url("**/login**")

    chat.locator("textarea").first.click()  # the first tab was never reloaded: its websocket is still open
    chat.keyboard.type("sent after signing out elsewhere")
    chat.keyboard.press("Enter")
    chat.wait_for_url("**/login**")  # its first action was refused and the page went to the login

    again = ui.login("ada", "/audit")
    again.get_by_placeholder("e.g. chat.*").fill("chat.*")
    again.get_by_placeholder("e.g. chat.*").press("Enter")
    again.wait_for_timeout(800)
    assert "sent after signing out elsewhere" not in again.inner_text("body")


def _post_login(base: str, body: bytes, content_type: str = "application/x-www-form-urlencoded") -> Any:
    split = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=20)
    try:
        conn.request("POST", "/login", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "/\\evil.example", "/\t/evil.example", "/%09/evil.example", "https:evil.example",
     "https://evil.example", "/%2F%2Fevil.example", "/%5Cevil.example", "\\\\evil.example", "//%09evil.example",
     "/ /evil.example", "/chat@evil.example", "/.//evil.example"],
)  # fmt: skip
def test_the_login_redirects_only_to_this_server(hostile_server, target):
    base, _ = hostile_server
    body = urllib.parse.urlencode({"name": "vic", "password": PASSWORD, "next": target}).encode()
    response = _post_login(base, body)
    assert response.status == 302
    assert response.getheader("Location") == "/"


def test_the_login_keeps_a_next_view_of_this_server(hostile_server):
    base, _ = hostile_server
    body = urllib.parse.urlencode(
        {"name": "vic", "password": PASSWORD, "next": "/memory?path=/notes"}
    ).encode()
    assert _post_login(base, body).getheader("Location") == "/memory?path=/notes"


# -- 13.6: bounded bodies, what monitoring may read ----------------------------------------------------------------
def _announce_body(base: str, path: str, size: int) -> str:
    """The status line the server answers a POST announcing a ``size``-byte body with, before any of it is
    sent (a server that would read it waits instead, and this times out)."""
    split = urllib.parse.urlsplit(base)
    with socket.create_connection((split.hostname, split.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {split.netloc}\r\nContent-Length: {size}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        )
        return sock.recv(200).decode("latin-1").split("\r\n")[0]


def test_oversized_request_bodies_are_refused_unread(hostile_server):
    base, _ = hostile_server
    for path in ("/login", "/dashboard", "/health"):  # no route reads a large body, signed in or not
        assert _announce_body(base, path, 100 * 1024 * 1024).startswith("HTTP/1.1 400"), path
    assert _post_login(base, b"name=vic&password=" + b"x" * 8000).status == 413  # past the login form's cap
    body = urllib.parse.urlencode({"name": "vic", "password": PASSWORD}).encode()
    assert _post_login(base, body).status == 302  # and the server goes on


def test_health_says_only_up_or_down_and_metrics_need_credentials(hostile_server, monitor_token):
    base, _ = hostile_server
    with urllib.request.urlopen(base + "/health", timeout=5) as r:
        assert json.loads(r.read()) == {"status": "ok"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/metrics", timeout=5)
    assert refused.value.code == 401
    wrong = {"Authorization": "Bearer " + "0" * len(monitor_token)}
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=wrong), timeout=5)
    auth = {"Authorization": f"Bearer {monitor_token}"}
    with urllib.request.urlopen(urllib.request.Request(base + "/health", headers=auth), timeout=5) as r:
        assert "ledger" in json.loads(r.read())["components"]
    with urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=auth), timeout=5) as r:
        assert "grace_ledger_events" in r.read().decode()


def test_a_signed_in_user_reads_the_health_details(hostile):
    ui, _ = hostile
    page = ui.login("vic")
    report = json.loads(page.goto(f"{ui.base}/health").text())
    assert "components" in report


# -- 13 (UI): assets from this server only, a layout that holds at 800 px ------------------------------------------
def test_every_page_loads_only_from_this_server_and_holds_at_800_pixels(hostile):
    ui, _ = hostile
    page = ui.login("ada", context=ui.context(width=800, height=900))
    problems = {}
    for spec in VIEWS:
        page.goto(f"{ui.base}/{spec.slug}")
        page.wait_for_selector("#whoami")
        page.wait_for_timeout(1200)  # let Bokeh lay out
        found = page.evaluate(LAYOUT_PROBLEMS)
        if found:
            problems[spec.slug] = found
    assert ui.off_site == []
    assert problems == {}
