"""Browser tests: a real `grace serve` subprocess on a free port, driven by Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port

CHROMIUM = os.environ.get("GRACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "ui-test-password-1"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """A function giving a free TCP port on 127.0.0.1, for tests that start their own server."""
    return free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a `grace serve` on a fresh demo workspace, ready (its /health answered)."""
    workdir = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "GRACE_DEMO_PASSWORD": PASSWORD, "PYTHONUNBUFFERED": "1"}
    env.pop("GRACE_WORKSPACE", None)
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "grace_core.cli", "serve", "--workspace", str(workdir / "ws.duckdb"),
         "--port", str(port), "--address", "127.0.0.1", "--demo"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("grace serve did not start:\n" + (workdir / "server.log").read_text())
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def login(context: Any, base: str, name: str, *, next_: str = "/dashboard") -> Any:
    """A page of ``context`` signed in as ``name`` (the cookie then serves every page of the context)."""
    page = context.new_page()
    page.goto(f"{base}{next_}")
    page.wait_for_url("**/login**")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("#signin")
    page.wait_for_url(f"**{next_}")
    page.wait_for_selector("#whoami", timeout=15_000)
    return page


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(400)  # let Bokeh finish laying out after the last update
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


class UI:
    """What a test needs: the server's URL, the browser, signing in and screenshots."""

    def __init__(self, base: str, browser: Any) -> None:
        self.base = base
        self.browser = browser
        self.contexts: list[Any] = []

    def context(self) -> Any:
        context = self.browser.new_context(viewport={"width": 1440, "height": 960})
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        return context

    def login(self, name: str, next_: str = "/dashboard", context: Any = None) -> Any:
        return login(context or self.context(), self.base, name, next_=next_)

    def shot(self, page: Any, name: str) -> None:
        shot(page, name)


@pytest.fixture
def ui(server: str, chromium: Any) -> Iterator[UI]:
    helper = UI(server, chromium)
    yield helper
    for context in helper.contexts:
        context.close()
