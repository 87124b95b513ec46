"""Fixtures of the model interface's tests: a real model server, and no model settings from the shell."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from model_server import ModelServer


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    server = ModelServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _no_model_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may point at a real server; these tests say what they use.
    for name in ("BACKEND", "BASE_URL", "MODEL", "API_KEY", "MODEL_PATH"):
        monkeypatch.delenv(f"GRACE_LLM_{name}", raising=False)
