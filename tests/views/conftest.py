"""Views under test: a deterministic workspace (inline mesh delivery, so live updates land before publish
returns) with one user per role."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from grace_core import ManualClock, Workspace, open_workspace

PASSWORD = "view-test-password-1"


@pytest.fixture(autouse=True)
def _quiet_bokeh() -> None:
    from grace_core.server import quiet_warnings

    quiet_warnings()
    warnings.filterwarnings("ignore", message=".*sizing_mode.*")


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def vws() -> Iterator[Workspace]:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=7)
    for name, role in (("ada", "admin"), ("bob", "researcher"), ("vic", "viewer")):
        ws.auth.register(name, PASSWORD, role=role, by="system")
    yield ws
    ws.close()
