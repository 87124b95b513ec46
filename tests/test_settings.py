"""Settings: an explicit value beats the environment, which beats the workspace, which beats the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from grace_core import ReadOnlyError, Workspace, WorkspaceError, open_workspace
from grace_core import settings as s
from grace_core.llm import HttpBackend


@pytest.fixture(autouse=True)
def _no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in s.SETTINGS.values():
        if setting.env:
            monkeypatch.delenv(setting.env, raising=False)


def test_precedence_given_then_environment_then_workspace_then_default(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ws.settings.get("llm.model") == "default"
    ws.settings.set("llm.model", "from-the-workspace")
    assert ws.settings.get("llm.model") == "from-the-workspace"
    monkeypatch.setenv("GRACE_LLM_MODEL", "from-the-environment")
    assert ws.settings.get("llm.model") == "from-the-environment"
    assert ws.settings.get("llm.model", given="given") == "given"
    monkeypatch.setenv("GRACE_LLM_MODEL", "")  # an empty variable is unset
    assert ws.settings.get("llm.model") == "from-the-workspace"
    ws.settings.set("llm.model", None)
    assert ws.settings.get(s.LLM_MODEL) == "default"


def test_the_http_backend_reads_its_settings_with_that_precedence(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.settings.set("llm.base_url", "http://127.0.0.1:9/v1")
    ws.settings.set("llm.api_key", "sk-from-the-key-file")
    backend = HttpBackend(ws=ws)
    assert (backend.base_url, backend.model) == ("http://127.0.0.1:9/v1", "default")
    monkeypatch.setenv("GRACE_LLM_BASE_URL", "http://127.0.0.1:10/v1")
    assert HttpBackend(ws=ws).base_url == "http://127.0.0.1:10/v1"
    assert HttpBackend(ws=ws, base_url="http://127.0.0.1:11/v1").base_url == "http://127.0.0.1:11/v1"


def test_a_secret_setting_goes_to_the_key_file_not_the_database(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_workspace(path) as ws:
        ws.settings.set("llm.api_key", "sk-very-secret-0123456789")
        assert ws.settings.get("llm.api_key") == "sk-very-secret-0123456789"
        meta = ws.sql("SELECT * FROM workspace_meta")
        assert "sk-very-secret" not in meta.to_string()
    assert b"sk-very-secret-0123456789" not in path.read_bytes()
    with open_workspace(path) as ws:
        assert ws.settings.stored("llm.api_key") == "sk-very-secret-0123456789"


def test_the_workspace_path_from_the_option_the_environment_or_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # outside any project
    assert s.workspace_path() == "grace.duckdb"
    monkeypatch.setenv("GRACE_WORKSPACE", "team.duckdb")
    assert s.workspace_path() == "team.duckdb"
    assert s.workspace_path(Path("mine.duckdb")) == "mine.duckdb"


def test_unknown_settings_and_read_only_workspaces_are_refused(tmp_path: Path, ws: Workspace) -> None:
    with pytest.raises(WorkspaceError, match=r"unknown setting 'llm\.colour'"):
        ws.settings.get("llm.colour")
    with pytest.raises(WorkspaceError, match=r"set \$GRACE_USER instead"):
        ws.settings.set("user", "ada")
    path = tmp_path / "w.duckdb"
    open_workspace(path).close()
    with open_workspace(path, snapshot=True) as snap, pytest.raises(ReadOnlyError):
        snap.settings.set("llm.model", "x")


def test_every_setting_is_documented_in_the_module() -> None:
    assert s.__doc__ is not None
    for setting in s.SETTINGS.values():
        assert setting.name in s.__doc__
        if setting.env:
            assert setting.env in s.__doc__


def _project(root: Path, name: str = "grace-workbench") -> Path:
    (root / "apps").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n', encoding="utf-8")
    return root


def test_the_default_workspace_is_the_projects_from_anywhere_inside_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = _project(tmp_path / "checkout")
    for where in (project, project / "apps"):  # `grace serve` at the root; a Voila kernel starts in apps/
        monkeypatch.chdir(where)
        assert s.project_dir() == project
        assert s.workspace_path() == str(project / "grace.duckdb")
    monkeypatch.setenv("GRACE_WORKSPACE", "team.duckdb")  # the environment still wins
    assert s.workspace_path() == "team.duckdb"


def test_an_app_started_elsewhere_finds_its_project_and_other_projects_do_not_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = _project(tmp_path / "checkout")
    elsewhere = _project(tmp_path / "another", name="another-tool")
    monkeypatch.chdir(elsewhere / "apps")
    assert s.project_dir() is None
    assert s.workspace_path() == "grace.duckdb"
    assert s.workspace_path(near=project / "apps" / "chat.py") == str(project / "grace.duckdb")
