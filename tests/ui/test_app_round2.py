"""The IDE, tasks and approvals views in a real browser, and a Voila notebook rendering the Hunter view."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

APPS = Path(__file__).resolve().parents[2] / "apps"


def _type_code(page, code: str) -> None:
    editor = page.locator(".ace_text-input").first
    editor.focus()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(code)  # one input event: no auto-indent or bracket pairing on the way
    page.wait_for_timeout(300)  # the editor's value reaches the server over the websocket


def test_ide_runs_code_and_a_remedy_fixes_a_failed_run(ui):
    page = ui.login("bob", "/ide")
    _type_code(page, "print('hello from the browser')")
    page.get_by_role("button", name="▶ Run").click()
    page.get_by_text("hello from the browser").first.wait_for()
    page.get_by_text("✓ completed").first.wait_for()
    page.get_by_text("isolation:").first.wait_for()

    _type_code(page, "print(json.dumps([1, 2, 3]))")
    page.get_by_role("button", name="▶ Run").click()
    page.get_by_text("✗ failed").first.wait_for()
    page.get_by_text("NameError").first.wait_for()
    page.get_by_text("Remedy: missing_import").first.wait_for()  # proposed asynchronously, pushed live
    ui.shot(page, "ide")
    page.get_by_role("button", name="Apply and re-run").first.click()
    page.get_by_text("the remedy worked").first.wait_for()
    page.get_by_text("[1, 2, 3]").first.wait_for()


def test_a_long_run_waits_for_an_admin_who_approves_it_in_the_tasks_view(ui):
    ide = ui.login("bob", "/ide")
    _type_code(ide, "print('the long batch')")
    limit = ide.get_by_label("Time limit (s)")
    limit.fill("600")
    limit.press("Enter")
    ide.wait_for_timeout(300)
    ide.get_by_role("button", name="▶ Run").click()
    ide.get_by_text("needs an admin's approval").first.wait_for()

    tasks = ui.login("ada", "/tasks")
    tasks.get_by_text("Approvals").first.wait_for()
    tasks.locator(".tabulator-cell", has_text="sandbox.execute").first.click()
    reason = tasks.get_by_placeholder("why (recorded on the ledger)")
    reason.fill("a reviewed batch job")
    reason.press("Enter")
    tasks.wait_for_timeout(300)
    ui.shot(tasks, "tasks")
    tasks.get_by_role("button", name="Approve").click()
    tasks.get_by_text("approved sandbox.execute for bob").first.wait_for()

    ide.bring_to_front()
    ide.get_by_role("button", name="▶ Run").click()  # the same run again goes ahead with the approval
    ide.get_by_text("the long batch").first.wait_for()


def test_voila_renders_the_hunter_notebook_with_its_alerts(browse, tmp_path, free_port):
    from grace_core import open_workspace

    ws = open_workspace(tmp_path / "ws.duckdb")
    ws.hunter.screen("key AKIAQ7Z3UITESTKEY123", target="chat", actor="system")
    ws.mesh.drain()
    ws.close()
    port = free_port()
    env = {**os.environ, "GRACE_WORKSPACE": str(tmp_path / "ws.duckdb")}
    log = (tmp_path / "voila.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "voila"), str(APPS / "hunter.ipynb"), "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1", "--MappingKernelManager.cull_idle_timeout=20",
         "--MappingKernelManager.cull_interval=5"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 40
        while True:  # a static file: `/` would start (and leak) a kernel per request
            try:
                with urllib.request.urlopen(base + "/voila/static/voila.js", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("voila did not start:\n" + (tmp_path / "voila.log").read_text())
            time.sleep(0.3)
        page = browse(base).context().new_page()
        page.goto(base + "/", timeout=60_000)
        page.get_by_text("aws-access-key-id", exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("Alerts (live)").first.wait_for()
        page.get_by_text("read-only").first.wait_for()  # no GRACE_USER: the page says it cannot act
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
