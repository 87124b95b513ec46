"""The Makefile's entry points that a new user meets after `make run`: `make shell` puts `grace` on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.skipif(not (VENV / ".installed").exists(), reason="no `make install` in this checkout")
def test_make_shell_puts_grace_on_path() -> None:
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not p.startswith(str(VENV))
    )
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "shell"],
        input="command -v grace\ngrace --version\n",
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path, "SHELL": "/bin/sh"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert str(VENV / "bin" / "grace") in lines
    assert any(line.startswith("grace ") for line in lines)
