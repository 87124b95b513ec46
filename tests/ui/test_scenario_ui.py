"""The dashboard's scenario panel in a real browser: a researcher starts a scenario and sees its live score and
learning curve; a viewer sees why they cannot start one."""

from __future__ import annotations

import re

from playwright.sync_api import expect


def test_a_researcher_starts_a_scenario_from_the_dashboard_and_sees_its_score(ui):
    page = ui.login("bob")
    page.get_by_text("No scenario started yet").wait_for()
    hours = page.locator(".bk-input-group", has_text="Hours").locator("input").first
    hours.fill("1")
    hours.press("Enter")
    seed = page.locator(".bk-input-group", has_text="Seed").locator("input").first
    seed.fill("2")
    seed.press("Enter")
    start = page.get_by_role("button", name="Start scenario")
    expect(start).to_be_enabled()
    start.click()
    page.get_by_text(re.compile(r"scenario ops started: 1 simulated hours, seed 2")).wait_for()
    headline = page.get_by_text(re.compile(r"ops \(seed 2, loops on\): finished, 1 of 1 simulated hours"))
    headline.wait_for(timeout=120_000)
    # The live score (one number per score) and the learning curve's table, one row per window.
    expect(page.get_by_text("success_rate").first).to_be_visible()
    expect(page.locator(".tabulator-row", has_text="0.0833").first).to_be_visible()  # the first window's end
    ui.shot(page, "dashboard-scenario")


def test_a_viewer_sees_why_they_cannot_start_a_scenario(ui):
    page = ui.login("vic")
    page.get_by_text("No scenario started yet").wait_for()
    expect(page.get_by_role("button", name="Start scenario")).to_be_disabled()
    page.get_by_text(re.compile(r"you can look around but not start a scenario")).wait_for()
