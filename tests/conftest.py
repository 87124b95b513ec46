"""Shared fixtures: deterministic in-memory workspaces and real workspace files in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from grace_core import ManualClock, Workspace, open_workspace

SEED = 1234


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at the default start (2026-01-01 UTC)."""
    return ManualClock()


@pytest.fixture
def ws(clock: ManualClock) -> Iterator[Workspace]:
    """An in-memory, deterministic workspace: ManualClock, seeded ids, inline delivery."""
    workspace = open_workspace(":memory:", clock=clock, seed=SEED)
    yield workspace
    workspace.close()


@pytest.fixture
def file_ws(tmp_path: Path) -> Iterator[Callable[..., Workspace]]:
    """Factory for workspaces on a real file in tmp_path: ``file_ws(name="w.duckdb", **open_kwargs)``.

    Every workspace it opened is closed at teardown (closing twice is harmless).
    """
    opened: list[Workspace] = []

    def make(name: str = "w.duckdb", **kwargs: Any) -> Workspace:
        workspace = open_workspace(tmp_path / name, **kwargs)
        opened.append(workspace)
        return workspace

    yield make
    for workspace in reversed(opened):
        workspace.close()
