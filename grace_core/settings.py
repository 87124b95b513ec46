"""Settings: every value Grace reads from outside its code, where it comes from, and which source wins.

A setting is found in the first of these places that has it:

1. an explicit argument (a ``grace`` option such as ``--workspace``, or a keyword of the library call);
2. the environment (an empty variable counts as unset);
3. the workspace: ``workspace_meta`` for plain settings, the workspace's secrets (``ws.secrets``, the
   ``<workspace>.keys`` file) for secret ones;
4. the default (for secrets: generated once per workspace and kept among its secrets).

==============  ====================  ===========================  ========================================
setting         environment           workspace                    default and meaning
==============  ====================  ===========================  ========================================
workspace       GRACE_WORKSPACE       --                           grace.duckdb in the project (see below)
jwt_secret      GRACE_JWT_SECRET      secret jwt_secret            64 random bytes; signs access tokens
llm.backend     GRACE_LLM_BACKEND     meta llm.backend             offline; ws.llm's default backend
llm.base_url    GRACE_LLM_BASE_URL    meta llm.base_url            none; the OpenAI-compatible model server
llm.model       GRACE_LLM_MODEL       meta llm.model               default
llm.api_key     GRACE_LLM_API_KEY     secret llm_api_key           none
llm.model_path  GRACE_LLM_MODEL_PATH  meta llm.model_path          the SmolLM2 file of the llm extra
demo_password   GRACE_DEMO_PASSWORD   secret demo_password.<user>  generated per demo user
monitor_token   GRACE_MONITOR_TOKEN   --                           none; Bearer token for /metrics
no_loops        GRACE_NO_LOOPS        --                           off; panel serve apps/*.py runs loops
user            GRACE_USER            --                           none; who a notebook/Voila view acts as
ray_address     RAY_ADDRESS           --                           none: a local Ray (Ray's own variable)
witness         GRACE_WITNESS         --                           none; a file or folder for checkpoint copies
==============  ====================  ===========================  ========================================

The default workspace is ``grace.duckdb`` in the *project directory*: the nearest directory, from the current
one upwards, whose ``pyproject.toml`` is this project's (a source checkout), so ``grace serve``, the ``grace``
command, ``panel serve apps/...`` and ``voila apps/...`` (whose kernels start in ``apps/``) all open the same file
from anywhere in the checkout; an app also finds the project from its own file, wherever it was started.
Outside a checkout it is ``grace.duckdb`` in the current directory.

Workspace settings are operational configuration, not events: set them with ``ws.settings.set(name, value)``
(a secret one goes to the key file, never to the ledger or the DuckDB file).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ReadOnlyError, WorkspaceError

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = [
    "DEFAULT_WORKSPACE",
    "DEMO_PASSWORD",
    "JWT_SECRET",
    "LLM_API_KEY",
    "LLM_BACKEND",
    "LLM_BASE_URL",
    "LLM_MODEL",
    "LLM_MODEL_PATH",
    "MONITOR_TOKEN",
    "NO_LOOPS",
    "RAY_ADDRESS",
    "SETTINGS",
    "USER",
    "WITNESS",
    "WORKSPACE",
    "Setting",
    "Settings",
    "from_env",
    "project_dir",
    "resolve",
    "workspace_path",
]

DEFAULT_WORKSPACE = "grace.duckdb"
PROJECT_NAME = "grace-workbench"  # the [project] name in the pyproject.toml that marks a project directory


@dataclass(frozen=True, kw_only=True)
class Setting:
    """One setting: its name, the variable that overrides it, where a workspace keeps it, its default."""

    name: str
    env: str | None = None
    meta: str | None = None  # key in workspace_meta
    secret: str | None = None  # name among the workspace's secrets
    default: str | None = None
    help: str = ""


WORKSPACE = Setting(
    name="workspace", env="GRACE_WORKSPACE", default=DEFAULT_WORKSPACE, help="the workspace file"
)
JWT_SECRET = Setting(
    name="jwt_secret",
    env="GRACE_JWT_SECRET",
    secret="jwt_secret",  # noqa: S106 - the secret's name, not its value
    help="the key access tokens are signed with (at least 32 bytes)",
)
LLM_BACKEND = Setting(
    name="llm.backend",
    env="GRACE_LLM_BACKEND",
    meta="llm.backend",
    default="offline",
    help="the backend ws.llm calls by default: offline, http or llamacpp",
)
LLM_BASE_URL = Setting(
    name="llm.base_url",
    env="GRACE_LLM_BASE_URL",
    meta="llm.base_url",
    help="the OpenAI-compatible model server",
)
LLM_MODEL_PATH = Setting(
    name="llm.model_path",
    env="GRACE_LLM_MODEL_PATH",
    meta="llm.model_path",
    help="a GGUF file for the llamacpp backend (default: the SmolLM2 file of the llm extra)",
)
LLM_MODEL = Setting(
    name="llm.model", env="GRACE_LLM_MODEL", meta="llm.model", default="default", help="the model to ask"
)
LLM_API_KEY = Setting(
    name="llm.api_key",
    env="GRACE_LLM_API_KEY",
    secret="llm_api_key",  # noqa: S106 - the secret's name, not its value
    help="the model server's API key",
)
DEMO_PASSWORD = Setting(
    name="demo_password",
    env="GRACE_DEMO_PASSWORD",
    help="one password for every demo user (else each gets its own, generated)",
)
MONITOR_TOKEN = Setting(
    name="monitor_token",
    env="GRACE_MONITOR_TOKEN",
    help="the Bearer token (32+ characters) a monitor reads /metrics and /health details with",
)
NO_LOOPS = Setting(
    name="no_loops", env="GRACE_NO_LOOPS", help="`panel serve apps/*.py` leaves the loops stopped when set"
)
USER = Setting(name="user", env="GRACE_USER", help="the user a notebook or Voila view acts as")
RAY_ADDRESS = Setting(name="ray_address", env="RAY_ADDRESS", help="the Ray cluster `grace sweep` runs on")
WITNESS = Setting(
    name="witness",
    env="GRACE_WITNESS",
    help="a second witness of signed checkpoints, outside the workspace: a file, or a folder",
)
SETTINGS = {
    s.name: s
    for s in (
        WORKSPACE,
        JWT_SECRET,
        LLM_BACKEND,
        LLM_BASE_URL,
        LLM_MODEL,
        LLM_API_KEY,
        LLM_MODEL_PATH,
        DEMO_PASSWORD,
        MONITOR_TOKEN,
        NO_LOOPS,
        USER,
        RAY_ADDRESS,
        WITNESS,
    )
}


def _setting(setting: Setting | str) -> Setting:
    if isinstance(setting, Setting):
        return setting
    try:
        return SETTINGS[setting]
    except KeyError:
        raise WorkspaceError(f"unknown setting {setting!r}; known: {', '.join(sorted(SETTINGS))}") from None


def from_env(setting: Setting | str) -> str | None:
    """The setting's environment variable, or None when it is unset or empty."""
    s = _setting(setting)
    return (os.environ.get(s.env) or None) if s.env else None


def resolve(setting: Setting | str, *, given: str | None = None, ws: Workspace | None = None) -> str | None:
    """The setting's value: ``given``, else the environment, else the workspace, else the default."""
    s = _setting(setting)
    if given:
        return given
    value = from_env(s)
    if value is None and ws is not None:
        value = ws.settings.stored(s)
    return value if value is not None else s.default


def project_dir(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The project directory holding ``start`` (a file or directory; default: the current directory): the
    nearest directory from there upwards whose ``pyproject.toml`` names this project; None outside one."""
    here = Path.cwd() if start is None else Path(start).resolve()
    for directory in (here, *here.parents):
        marker = directory / "pyproject.toml"
        if not marker.is_file():
            continue
        try:
            name = tomllib.loads(marker.read_text(encoding="utf-8")).get("project", {}).get("name")
        except (OSError, UnicodeError, tomllib.TOMLDecodeError):
            continue  # not readable as a pyproject: not ours
        if name == PROJECT_NAME:
            return directory
    return None


def workspace_path(
    given: str | os.PathLike[str] | None = None, *, near: str | os.PathLike[str] | None = None
) -> str:
    """The workspace file to open: ``given``, else ``$GRACE_WORKSPACE``, else ``grace.duckdb`` in the project
    directory of the current directory or, failing that, of ``near`` (an app's own file), else ``grace.duckdb``
    in the current directory."""
    if given is not None:
        return os.fspath(given)
    found = from_env(WORKSPACE)
    if found is not None:
        return found
    project = project_dir() or (None if near is None else project_dir(near))
    return DEFAULT_WORKSPACE if project is None else str(project / DEFAULT_WORKSPACE)


class Settings:
    """The settings one workspace keeps (``ws.settings``), read with the precedence above."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws

    def get(self, setting: Setting | str, *, given: str | None = None) -> str | None:
        """The effective value: ``given``, else the environment, else this workspace, else the default."""
        return resolve(setting, given=given, ws=self._ws)

    def stored(self, setting: Setting | str) -> str | None:
        """What this workspace itself keeps for the setting (None when nothing)."""
        s = _setting(setting)
        if s.secret is not None:
            return self._ws.secrets.text(s.secret)
        if s.meta is None:
            return None
        row = (
            self._ws.con.cursor()
            .execute("SELECT value FROM workspace_meta WHERE key = ?", [s.meta])
            .fetchone()
        )
        return None if row is None else str(row[0])

    def set(self, setting: Setting | str, value: str | None) -> None:
        """Keep ``value`` in this workspace (None removes it); the environment still wins over it."""
        s = _setting(setting)
        if self._ws.read_only:
            raise ReadOnlyError("a read-only snapshot cannot change settings")
        if s.secret is not None:
            if value is None:
                self._ws.secrets.delete(s.secret)
            else:
                self._ws.secrets.put(s.secret, value)
            return
        if s.meta is None:
            raise WorkspaceError(f"{s.name} is not kept in a workspace; set ${s.env} instead")
        cur = self._ws.con.cursor()
        if value is None:
            cur.execute("DELETE FROM workspace_meta WHERE key = ?", [s.meta])
        else:
            cur.execute(
                "INSERT INTO workspace_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [s.meta, value],
            )
