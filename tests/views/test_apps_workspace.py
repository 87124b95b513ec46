"""`panel serve apps/...` and `voila apps/...` open the project's default workspace, wherever they are started
(a Voila kernel runs in the notebook's folder, apps/: it used to open an empty apps/grace.duckdb)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import clean_env, free_port

APPS = Path(__file__).resolve().parents[2] / "apps"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _checkout(root: Path) -> Path:
    """A project directory (the pyproject that marks one, and the real chat app and notebook in apps/)."""
    (root / "apps").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "grace-workbench"\n', encoding="utf-8")
    for name in ("chat.py", "chat.ipynb"):
        shutil.copy(APPS / name, root / "apps" / name)
    return root


@contextmanager
def _server(args: list[str], *, cwd: Path, log: Path, ready: str) -> Iterator[str]:
    port = free_port()
    env = clean_env(GRACE_NO_LOOPS="1")  # no GRACE_WORKSPACE: the default is what is tested
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*args, f"--port={port}"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + ready, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.read().decode("utf-8", "replace")


def test_panel_serve_started_elsewhere_opens_the_projects_workspace(tmp_path: Path) -> None:
    project = _checkout(tmp_path / "checkout")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = [str(BIN / "panel"), "serve", str(project / "apps" / "chat.py"), "--address=127.0.0.1"]
    with _server(args, cwd=elsewhere, log=tmp_path / "panel.log", ready="/chat") as base:
        _get(base + "/chat")  # a session: the app's script runs and opens the workspace
    assert (project / "grace.duckdb").exists()
    assert not (elsewhere / "grace.duckdb").exists()


def test_voila_opens_the_projects_workspace_not_one_in_apps(tmp_path: Path) -> None:
    project = _checkout(tmp_path / "checkout")
    args = [
        str(BIN / "voila"), str(project / "apps" / "chat.ipynb"), "--no-browser", "--Voila.ip=127.0.0.1",
        "--MappingKernelManager.cull_idle_timeout=20", "--MappingKernelManager.cull_interval=5",
    ]  # fmt: skip
    with _server(args, cwd=project, log=tmp_path / "voila.log", ready="/voila/static/voila.js") as base:
        page = _get(base + "/")  # runs the notebook in a kernel whose folder is apps/
        deadline = time.monotonic() + 60
        while not (project / "grace.duckdb").exists() and time.monotonic() < deadline:
            time.sleep(0.3)
    assert (project / "grace.duckdb").exists(), page[-2000:]
    assert not (project / "apps" / "grace.duckdb").exists()
