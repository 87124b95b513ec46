"""The workspace's secrets (``ws.secrets``): key material and passwords that are never events.

What is kept here: the JWT secret, the checkpoint signing key, the demo users' passwords, an LLM API key, a lake
catalog's password. None of it is on the ledger, in the DuckDB file, in snapshots, replays or the lake: a
stolen workspace file alone lets nobody forge a token or sign a checkpoint.

Where: a file workspace keeps them in ``<workspace>.keys``, a small JSON file (values base64) that is mode 0600
from its creation and replaced atomically on every change; an in-memory workspace keeps them in memory. A
read-only snapshot copy has none (tokens verify only where they were issued). Back up the key file with the
workspace file: without it, tokens and demo passwords are renewed, and checkpoints get a new signing key (the
old key stays published on the ledger, so old checkpoints still verify).

Workspaces made before the key file kept their secrets in a ``workspace_secrets`` table; opening such a
workspace for writing moves them into the key file and drops the table (``adopt_table``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from .errors import ReadOnlyError, WorkspaceError
from .files import check_private, log, write_private

__all__ = ["FORMAT", "LEGACY_TABLE", "Secrets"]

FORMAT = "grace.keys.v1"
LEGACY_TABLE = "workspace_secrets"


class Secrets:
    """Named secrets of one workspace: ``get``, ``text``, ``put``, ``generate``, ``delete``."""

    def __init__(self, path: str | os.PathLike[str] | None, *, read_only: bool = False) -> None:
        """``path`` is the key file (None: in memory only); a read-only store refuses every change."""
        self.path = None if path is None else Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._values: dict[str, bytes] = {}
        if self.path is not None:
            check_private(self.path)
            self._values = _load(self.path)

    @classmethod
    def empty(cls) -> Secrets:
        """A read-only store with nothing in it (a snapshot copy's)."""
        return cls(None, read_only=True)

    def get(self, name: str) -> bytes | None:
        with self._lock:
            return self._values.get(name)

    def text(self, name: str) -> str | None:
        """The secret as UTF-8 text (passwords, URLs, API keys)."""
        value = self.get(name)
        return None if value is None else value.decode("utf-8")

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._values)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._values

    def put(self, name: str, value: bytes | str) -> None:
        """Keep ``value`` under ``name`` (replacing any), durably before returning."""
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        with self._lock:
            self._writable(name)
            self._save({**self._values, name: raw})

    def generate(self, name: str, *, nbytes: int = 32, text: bool = False) -> bytes:
        """The secret ``name``, made now (``nbytes`` random bytes, or URL-safe text of them) if missing."""
        with self._lock:
            found = self._values.get(name)
            if found is not None:
                return found
            self._writable(name)
            made = secrets.token_urlsafe(nbytes).encode() if text else secrets.token_bytes(nbytes)
            self._save({**self._values, name: made})
            return made

    def delete(self, name: str) -> None:
        with self._lock:
            if name not in self._values:
                return
            self._writable(name)
            self._save({k: v for k, v in self._values.items() if k != name})

    def adopt_table(self, con: Any) -> int:
        """Move the rows of a pre-key-file ``workspace_secrets`` table here, then drop the table.

        Secrets already in the key file win over the table's. Returns how many were moved. A read-only store
        only reads them (the file stays as it is).
        """
        found = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
            [LEGACY_TABLE],
        ).fetchone()
        if not found or not found[0]:
            return 0
        rows = con.execute(f"SELECT name, value FROM {LEGACY_TABLE}").fetchall()
        with self._lock:
            moved = {str(n): bytes(v) for n, v in rows if str(n) not in self._values}
            if self.read_only:
                self._values = {**moved, **self._values}
                return len(moved)
            if moved:
                self._save({**self._values, **moved})
        con.execute(f"DROP TABLE {LEGACY_TABLE}")
        con.execute("CHECKPOINT")  # fold the drop into the file now, so the WAL holds no copy of the rows
        return len(moved)

    # -- internals ---------------------------------------------------------------------------------------------
    def _writable(self, name: str) -> None:
        if self.read_only:
            raise ReadOnlyError(
                f"cannot keep the secret {name!r}: this read-only workspace has no writable secrets "
                "(secrets are never copied into snapshots)"
            )

    def _save(self, values: dict[str, bytes]) -> None:
        if self.path is not None:
            document = {
                "format": FORMAT,
                "secrets": {k: base64.b64encode(v).decode("ascii") for k, v in sorted(values.items())},
            }
            write_private(self.path, json.dumps(document, indent=1) + "\n")
        self._values = values

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else str(self.path)
        return f"<Secrets {where}: {len(self._values)} kept>"


def _load(path: Path) -> dict[str, bytes]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise WorkspaceError(f"cannot read the key file {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        return {str(k): base64.b64decode(v, validate=True) for k, v in document["secrets"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise WorkspaceError(
            f"the key file {path} is damaged ({exc}); restore it from a backup, or move it away to start "
            "new keys (tokens and demo passwords are then renewed)"
        ) from exc


def set_aside(path: Path) -> None:
    """Keep a key file that belongs to no workspace file (it was deleted) as ``.old`` instead of reusing it."""
    if not path.exists():
        return
    old = path.with_name(path.name + ".old")
    with contextlib.suppress(OSError):
        os.replace(path, old)
        log.warning("grace: %s belonged to a workspace file that is gone; kept it as %s", path, old.name)
