"""Browser tests: a real `grace serve` subprocess on a free port, driven by Debian's Chromium through Playwright.

Every browser context answers requests for anything but the server under test itself (a font, a CDN, an
image a note points at) with an error, without sending them, and records them: ``UI.off_site``.
Screenshots go to ``build/screenshots`` (``$GRACE_SCREENSHOTS`` elsewhere; ``make screenshots`` updates
``docs/screenshots``).
"""

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
MONITOR_TOKEN = "ui-test-monitor-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / os.environ.get("GRACE_SCREENSHOTS", "build/screenshots")  # relative to the repository


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """A function giving a free TCP port on 127.0.0.1, for tests that start their own server."""
    return free_port


def start_server(workdir: Path, workspace: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """A `grace serve` of ``workspace`` on a free port, ready (its /health answered): (process, base URL)."""
    port = free_port()
    env = {**os.environ, "GRACE_DEMO_PASSWORD": PASSWORD, "GRACE_MONITOR_TOKEN": MONITOR_TOKEN}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("GRACE_WORKSPACE", None)
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "grace_core.cli", "serve", "--workspace", str(workspace),
         "--port", str(port), "--address", "127.0.0.1", *args],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )  # fmt: skip
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError("grace serve did not start:\n" + (workdir / "server.log").read_text())
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def start_grace() -> Iterator[Callable[..., str]]:
    """``start(workspace, *args)``: serve a workspace the test prepared itself; returns the base URL. Every
    server started is stopped after the module."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(workspace: Path, *args: str) -> str:
        proc, base = start_server(workspace.parent, workspace, *args)
        procs.append(proc)
        return base

    yield start
    for proc in procs:
        stop_server(proc)


@pytest.fixture
def password() -> str:
    """The password of every user of the test servers (the demo's, and those tests register)."""
    return PASSWORD


@pytest.fixture
def monitor_token() -> str:
    """The monitoring token the test servers are started with ($GRACE_MONITOR_TOKEN)."""
    return MONITOR_TOKEN


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a `grace serve` on a fresh demo workspace, ready (its /health answered)."""
    workdir = tmp_path_factory.mktemp("serve")
    proc, base = start_server(workdir, workdir / "ws.duckdb", "--demo")
    yield base
    stop_server(proc)


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
    """What a test needs: the server's URL, the browser, signing in, screenshots, and the requests a page
    tried to send anywhere but the server (``off_site``: refused, never sent)."""

    def __init__(self, base: str, browser: Any) -> None:
        self.base = base
        self.browser = browser
        self.contexts: list[Any] = []
        self.off_site: list[str] = []
        self.requests: list[str] = []

    def context(self, *, width: int = 1440, height: int = 960) -> Any:
        context = self.browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(15_000)
        context.route("**/*", self._route)
        self.contexts.append(context)
        return context

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.requests.append(url)
        if url == self.base or url.startswith(self.base + "/"):
            route.continue_()
        else:
            self.off_site.append(url)
            route.abort()

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


@pytest.fixture
def browse(chromium: Any) -> Iterator[Callable[[str], UI]]:
    """``browse(base)``: a UI helper for another server than the demo one (contexts closed afterwards)."""
    made: list[UI] = []

    def make(base: str) -> UI:
        made.append(UI(base, chromium))
        return made[-1]

    yield make
    for helper in made:
        for context in helper.contexts:
            context.close()
