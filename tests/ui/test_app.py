"""The web app in a real browser: sign in, chat, a live Hunter alert in a second page, the audit view."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from playwright.sync_api import expect

from grace_core.views.ide import VIEWER_NOTE

pytestmark = pytest.mark.slow

SECRET = "AKIAQ7Z3UITESTKEY123"


def test_sign_in_shows_the_dashboard_with_user_and_role(ui):
    page = ui.login("ada")
    assert "ada" in page.inner_text("#whoami")
    assert "admin" in page.inner_text("#whoami")
    page.get_by_text("Recent events").wait_for()
    ui.shot(page, "dashboard")
    page.locator(".tabulator-cell", has_text="reflection").first.wait_for()  # the loops table
    page.get_by_text(re.compile(r"\d+ of \d+ components ok")).wait_for()  # health from self-healing


def test_a_wrong_password_is_refused_on_the_login_page(ui):
    page = ui.context().new_page()
    page.goto(f"{ui.base}/chat")
    page.fill("#name", "ada")
    page.fill("#password", "not-the-password")
    page.click("#signin")
    assert "invalid" in page.inner_text("#error").lower() or page.inner_text("#error")
    assert "/login" in page.url
    ui.shot(page, "login")


def test_chat_reply_and_a_posted_secret_alerts_the_hunter_view_live(ui):
    context = ui.context()
    hunter = ui.login("bob", "/hunter", context=context)
    before = _alert_rows(hunter)

    chat = context.new_page()
    chat.goto(f"{ui.base}/chat")
    box = chat.locator("textarea").first
    box.fill("When is the weekly review?")
    box.press("Enter")
    chat.get_by_text("Fridays").last.wait_for()
    ui.shot(chat, "chat")

    box.fill(f"here is my key {SECRET} for the deploy")
    box.press("Enter")
    chat.get_by_text("Hunter:").last.wait_for()
    assert SECRET not in chat.inner_text("body")  # masked in the conversation, as on the ledger

    # The Hunter page was opened before the alert and is never reloaded: the row arrives over its websocket.
    hunter.bring_to_front()
    expect(hunter.get_by_text("aws-access-key-id", exact=True)).to_have_count(before + 1, timeout=5_000)
    ui.shot(hunter, "hunter")


def _alert_rows(page) -> int:
    page.get_by_text("Alerts (live)").wait_for()
    page.get_by_text("aws-access-key-id", exact=True).first.wait_for()  # the demo's alert
    return page.get_by_text("aws-access-key-id", exact=True).count()


def test_audit_view_verifies_the_chain_and_proves_an_event(ui):
    page = ui.login("vic", "/audit")
    page.get_by_role("button", name="Verify chain").click()
    page.get_by_text("Chain verified").wait_for()
    page.locator(".tabulator-row").first.locator("[tabulator-field=seq]").click()  # no sideways scroll
    page.get_by_text("hash ").first.wait_for()
    ui.shot(page, "audit")


def test_memory_view_and_viewer_cannot_run_code(ui):
    context = ui.context()
    page = ui.login("vic", "/memory", context=context)
    page.goto(f"{ui.base}/memory?path=/notes/weekly-review.md")
    page.get_by_text("in the small room").first.wait_for()
    search = page.get_by_placeholder("words to find")
    search.fill("weekly review")
    search.press("Enter")
    page.get_by_text("match(es) for").first.wait_for()
    results = page.locator(".tabulator-row", has_text="/notes/weekly-review.md").first
    expect(results).to_contain_text("Fridays at 10:00")  # the snippet says why it matched
    expect(results).to_contain_text(re.compile(r"\d\.\d+"))  # with its score
    ui.shot(page, "memory")
    ide = context.new_page()
    ide.goto(f"{ui.base}/ide")
    ide.get_by_text(VIEWER_NOTE).first.wait_for()


def test_health_and_metrics_answer_for_monitoring(server, monitor_token):
    auth = {"Authorization": f"Bearer {monitor_token}"}
    request = urllib.request.Request(server + "/health", headers=auth)
    with urllib.request.urlopen(request, timeout=5) as r:
        report = json.loads(r.read())
    assert report["status"] == "ok"
    assert report["components"]["ledger"]["status"] == "ok"
    request = urllib.request.Request(server + "/metrics", headers=auth)
    with urllib.request.urlopen(request, timeout=5) as r:
        text = r.read().decode()
    assert "grace_ledger_events" in text
