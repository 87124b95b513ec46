"""Memory: a file explorer of artifacts at paths, every version kept, its audit trail on the ledger."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import ArtifactError
from .events import Event

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["Artifact", "Memory", "normalise_path"]

_SEGMENT = re.compile(r"^[^\x00-\x1f\x7f/]{1,255}$")


def normalise_path(path: str) -> str:
    """``/projects/alpha/notes.md``: absolute, '/'-separated, no empty, '.' or '..' segments."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ArtifactError(f"a memory path is absolute, like /projects/alpha/notes.md, not {path!r}")
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in {".", ".."} or not _SEGMENT.match(p) for p in parts) or len(path) > 1024:
        raise ArtifactError(f"bad memory path {path!r}: no '.', '..', control characters or empty names")
    return "/" + "/".join(parts)


@dataclass(frozen=True)
class Artifact:
    path: str
    content: str
    content_type: str
    tags: tuple[str, ...]
    owner: str
    version: int
    updated_at: datetime


class Memory:
    """Artifacts at paths. Each write is a ``memory.item.created`` or ``.updated`` event holding the content."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws
        ws.projections.register("memory", "memory.item.*", _apply, tables=["memory_items", "memory_versions"])

    def write(
        self,
        path: str,
        content: str,
        *,
        actor: str,
        content_type: str = "text/markdown",
        tags: Iterable[str] = (),
        reason: str = "",
    ) -> Artifact:
        """Create the artifact at ``path``, or add a new version of it. Content is screened by Hunter."""
        path = normalise_path(path)
        if not isinstance(content, str):
            raise ArtifactError("memory content is text (str)")
        tag_list = sorted({str(t) for t in tags})
        current = (
            self._ws.ledger.reader()
            .execute("SELECT version, deleted FROM memory_items WHERE path = ?", [path])
            .fetchone()
        )
        self._ws.hunter.screen(content, target="memory", actor=actor, resource=f"memory:{path}")
        version = 1 if current is None else int(current[0]) + 1
        topic = "memory.item.created" if current is None else "memory.item.updated"
        self._ws.publish(
            topic,
            {
                "path": path,
                "content": content,
                "content_type": content_type,
                "tags": tag_list,
                "version": version,
                "reason": reason,
            },
            actor=actor,
            resource=f"memory:{path}",
        )
        return self.read(path)

    def read(self, path: str, *, version: int | None = None) -> Artifact:
        path = normalise_path(path)
        cur = self._ws.ledger.reader()
        item = cur.execute(
            "SELECT content_type, tags, owner, version, updated_at FROM memory_items WHERE path = ? AND NOT deleted",
            [path],
        ).fetchone()
        if item is None:
            raise ArtifactError(f"no memory artifact at {path}")
        want = int(item[3]) if version is None else version
        row = cur.execute(
            "SELECT content, content_type, ts FROM memory_versions WHERE path = ? AND version = ?",
            [path, want],
        ).fetchone()
        if row is None:
            raise ArtifactError(f"{path} has no version {want} (latest is {item[3]})")
        return Artifact(path, row[0], row[1], tuple(json.loads(item[1])), item[2], want, row[2])

    def list(self, prefix: str = "/") -> pd.DataFrame:
        """Artifacts under a folder, newest first."""
        prefix = "/" if prefix == "/" else normalise_path(prefix) + "/"
        return self._ws.sql(
            "SELECT path, content_type, tags, owner, version, updated_at FROM memory_items "
            "WHERE NOT deleted AND starts_with(path, ?) ORDER BY updated_at DESC, path",
            [prefix],
        )


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic in ("memory.item.created", "memory.item.updated"):
            tags = json.dumps(p["tags"])
            if e.topic == "memory.item.created":
                con.execute(
                    "INSERT INTO memory_items VALUES (?, ?, ?, ?, ?, ?, false, make_timestamptz(?::BIGINT), "
                    "make_timestamptz(?::BIGINT))",
                    [p["path"], e.id, p["content_type"], tags, e.actor, p["version"], e.ts_us, e.ts_us],
                )
            else:
                con.execute(
                    "UPDATE memory_items SET content_type = ?, tags = ?, version = ?, "
                    "updated_at = make_timestamptz(?::BIGINT) WHERE path = ?",
                    [p["content_type"], tags, p["version"], e.ts_us, p["path"]],
                )
            con.execute(
                "INSERT INTO memory_versions VALUES (?, ?, ?, ?, ?, ?, ?, make_timestamptz(?::BIGINT))",
                [
                    p["path"],
                    p["version"],
                    p["content"],
                    p["content_type"],
                    e.actor,
                    p["reason"],
                    e.id,
                    e.ts_us,
                ],
            )
