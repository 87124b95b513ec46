"""Running the real `grace` command in a subprocess, the way a user does, and a free local port (shared helpers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

GRACE = [sys.executable, "-m", "grace_core.cli"]
# Settings a developer's shell may carry that must not leak into a test's command.
_SCRUBBED = ("GRACE_WORKSPACE", "GRACE_JWT_SECRET", "GRACE_LLM", "GRACE_WITNESS")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env.update(extra)
    return env


def grace(
    *args: str | Path,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `grace ARGS...`; without ``stdin`` the command reads an empty stdin (a prompt fails, never hangs)."""
    return subprocess.run(
        [*GRACE, *map(str, args)],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env or clean_env(),
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_scans(ws: Any) -> list[tuple[str, str]]:
    """Make ``ws.hunter`` record every text it scans, as (target, text); returns that (live) list.

    The scans themselves stay Hunter's own: the subclass only counts, then scans as before.
    """
    from grace_core.hunter import Finding, Hunter

    scans: list[tuple[str, str]] = []

    class CountingHunter(Hunter):
        def scan(self, text: str, *, target: str) -> list[Finding]:
            scans.append((target, text))
            return super().scan(text, target=target)

    ws.hunter.__class__ = CountingHunter
    return scans
