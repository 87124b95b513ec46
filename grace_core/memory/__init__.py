"""Memory: a file explorer of artifacts at paths, every version kept, its audit trail on the ledger.

Each change is one event, and tables ``memory_items`` (the artifacts) and ``memory_versions`` (every version
of every artifact) are their projection:

* ``memory.item.created`` / ``memory.item.updated`` — a new version, holding the whole content;
* ``memory.item.moved`` — a new path (rename = a move within the folder); the versions move with it;
* ``memory.item.deleted`` / ``memory.item.restored`` — soft delete and its undo; nothing is ever erased.

Writes pass governance (``memory.write:<path>``, ``memory.delete:<path>``; the default pack keeps ``/system``
for admins) and Hunter: a text with findings raises alerts and is stored with each finding's span masked,
unless governance allows ``memory.write_unmasked:<path>`` for that actor (the default pack denies it to all).

Search is BM25 ranking over DuckDB's ``fts`` extension, in an index kept beside the tables
(:mod:`grace_core.memory.index`).
"""

from __future__ import annotations

import builtins
import difflib
import json
import mimetypes
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from grace_core.errors import ArtifactError
from grace_core.events import Event
from grace_core.hunter.scanner import redact
from grace_core.mesh import Message
from grace_core.times import TS

from .artifact import Artifact
from .index import SearchIndex

if TYPE_CHECKING:
    from grace_core.governance import Governance
    from grace_core.hunter import Hunter
    from grace_core.workspace import Workspace

__all__ = ["Artifact", "Memory", "normalise_path"]

_SEGMENT = re.compile(r"^[^\x00-\x1f\x7f/]{1,255}$")
_TOPICS = (
    "memory.item.created",
    "memory.item.updated",
    "memory.item.moved",
    "memory.item.deleted",
    "memory.item.restored",
)


def normalise_path(path: str) -> str:
    """``/projects/alpha/notes.md``: absolute, '/'-separated, no empty, '.' or '..' segments."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ArtifactError(f"a memory path is absolute, like /projects/alpha/notes.md, not {path!r}")
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in {".", ".."} or not _SEGMENT.match(p) for p in parts) or len(path) > 1024:
        raise ArtifactError(f"bad memory path {path!r}: no '.', '..', control characters or empty names")
    return "/" + "/".join(parts)


def _check_export(targets: dict[str, Path]) -> None:
    """Refuse an export that cannot be written whole: a file that is also a folder, here or on disk."""
    folders = {parent: path for path, target in targets.items() for parent in target.parents}
    for path, target in targets.items():
        if target in folders:
            raise ArtifactError(
                f"cannot export {path} and {folders[target]}: {path} would be both a file and a folder; "
                "export them one at a time into different directories"
            )
        if target.is_dir():
            raise ArtifactError(f"cannot export {path}: {target} is a directory already")
        for parent in target.parents:  # up to the nearest folder that exists
            if parent.is_dir():
                break
            if parent.exists():
                raise ArtifactError(f"cannot export {path}: {parent} is a file, not a folder")


def _folder(prefix: str | None) -> str:
    """A folder prefix ending in '/' ('/' for the root)."""
    if prefix is None or prefix.strip("/") == "":
        return "/"
    return normalise_path(prefix) + "/"


class Memory:
    """Artifacts at paths (``ws.memory``)."""

    def __init__(self, ws: Workspace, *, governance: Governance, hunter: Hunter) -> None:
        self._ws = ws
        self._governance = governance
        self._hunter = hunter
        self._search = SearchIndex(ws.ledger)
        ws.projections.register(
            "memory", "memory.item.*", self._apply, tables=["memory_items", "memory_versions"]
        )
        # Marked again once durable: a search that ran between the projection and the commit read the old
        # state, so the paths must be re-read after the commit (replay has no listeners: _apply marks there).
        ws.ledger.add_commit_listener(self._on_commit)

    # -- writing -----------------------------------------------------------------------------------------------
    def write(
        self,
        path: str,
        content: str,
        *,
        actor: str,
        content_type: str = "text/markdown",
        tags: Iterable[str] | None = None,
        reason: str = "",
    ) -> Artifact:
        """Create the artifact at ``path``, or add a new version of it (``tags=None`` keeps the current tags).

        Governance must allow ``memory.write`` on the path. The content is screened by Hunter: findings raise
        alerts and their spans are stored masked unless ``memory.write_unmasked`` is allowed.
        """
        path = normalise_path(path)
        if not isinstance(content, str):
            raise ArtifactError("memory content is text (str)")
        current = self._row(path)
        if current is not None and current["deleted"]:
            raise ArtifactError(f"{path} is deleted; restore it first (memory.restore) or write elsewhere")
        if tags is None:
            tags = current["tags"] if current is not None else ()
        tag_list = sorted({str(t) for t in tags})
        self._governance.check(actor, f"memory.write:{path}")
        stored, masked = self._screen(content, path=path, actor=actor)
        version = 1 if current is None else int(current["version"]) + 1
        payload: dict[str, Any] = {
            "path": path,
            "content": stored,
            "content_type": content_type,
            "tags": tag_list,
            "version": version,
            "reason": reason,
        }
        if current is not None:
            payload["id"] = current["id"]
        if masked:
            payload["masked"] = masked
        topic = "memory.item.created" if current is None else "memory.item.updated"
        event = self._ws.publish(topic, payload, actor=actor, resource=f"memory:{path}")
        # The artifact as the projection wrote it (without reading it back).
        owner = actor if current is None else current["owner"]
        return Artifact(path, stored, content_type, tuple(tag_list), owner, version, event.ts)

    def _screen(self, content: str, *, path: str, actor: str) -> tuple[str, list[str]]:
        findings = self._hunter.screen(content, target="memory", actor=actor, resource=f"memory:{path}")
        if not findings:
            return content, []
        allowed = self._governance.check(actor, f"memory.write_unmasked:{path}", enforce=False)
        if allowed.effect == "allow":
            return content, []
        return redact(content, findings), sorted({f.rule for f in findings})

    def move(self, path: str, new_path: str, *, actor: str, reason: str = "") -> list[str]:
        """Move an artifact, or every artifact of a folder, to ``new_path``; returns the new paths.

        Versions and history follow the artifact. Needs ``memory.write`` on both places. A target that is
        taken (even by a deleted artifact) is refused.
        """
        path, new_path = normalise_path(path), normalise_path(new_path)
        if path == new_path:
            raise ArtifactError(f"{path} is already there")
        if new_path.startswith(path + "/"):
            raise ArtifactError(f"cannot move {path} into itself ({new_path})")
        cur = self._ws.ledger.reader()
        if self._row(path) is not None:
            rows = cur.execute("SELECT path, id, deleted FROM memory_items WHERE path = ?", [path]).fetchall()
        else:
            rows = cur.execute(
                "SELECT path, id, deleted FROM memory_items WHERE starts_with(path, ?) ORDER BY path",
                [path + "/"],
            ).fetchall()
        live = [(p, i) for p, i, d in rows if not d]
        if not live:
            raise ArtifactError(f"no memory artifact or folder at {path}")
        moves = [(p, new_path + p[len(path) :], i) for p, i in live]
        targets = [t for _, t, _ in moves]
        taken = cur.execute(
            "SELECT path FROM memory_items WHERE path IN (SELECT unnest(?::VARCHAR[]))", [targets]
        ).fetchall()
        if taken:
            raise ArtifactError(f"cannot move to {taken[0][0]}: an artifact (maybe deleted) is there")
        self._governance.check(actor, f"memory.write:{path}")
        self._governance.check(actor, f"memory.write:{new_path}")
        self._ws.publish_many(
            [
                Message(
                    "memory.item.moved",
                    {"path": old, "new_path": new, "id": ident, "reason": reason},
                    f"memory:{new}",
                )
                for old, new, ident in moves
            ],
            actor=actor,
        )
        return targets

    def rename(self, path: str, new_name: str, *, actor: str, reason: str = "") -> str:
        """Rename within the folder (a move)."""
        path = normalise_path(path)
        if "/" in new_name or not _SEGMENT.match(new_name) or new_name in {".", ".."}:
            raise ArtifactError(f"bad name {new_name!r}: one path segment")
        parent = path.rsplit("/", 1)[0]
        return self.move(path, f"{parent}/{new_name}", actor=actor, reason=reason)[0]

    def delete(self, path: str, *, actor: str, reason: str = "") -> None:
        """Soft-delete: the artifact disappears from reads, lists and search; its versions stay."""
        self._set_deleted(path, True, actor=actor, reason=reason)

    def restore(self, path: str, *, actor: str, reason: str = "") -> Artifact:
        """Undo a soft delete."""
        return self.read(self._set_deleted(path, False, actor=actor, reason=reason))

    def _set_deleted(self, path: str, deleted: bool, *, actor: str, reason: str) -> str:
        """Delete (governed as ``memory.delete``) or restore (as ``memory.write``) the artifact at ``path``;
        returns the normalised path."""
        path = normalise_path(path)
        row = self._row(path)
        if row is None or row["deleted"] == deleted:
            raise ArtifactError(f"no memory artifact at {path}" if deleted else f"nothing deleted at {path}")
        self._governance.check(actor, f"memory.{'delete' if deleted else 'write'}:{path}")
        self._ws.publish(
            "memory.item.deleted" if deleted else "memory.item.restored",
            {"path": path, "id": row["id"], "reason": reason},
            actor=actor,
            resource=f"memory:{path}",
        )
        return path

    def restore_version(self, path: str, version: int, *, actor: str, reason: str = "") -> Artifact:
        """Make an old version current again (a new version with its content, type and tags)."""
        old = self.read(path, version=version)
        tags = self._versions_tags(old.path, version)
        return self.write(
            old.path,
            old.content,
            actor=actor,
            content_type=old.content_type,
            tags=tags,
            reason=reason or f"restore version {version}",
        )

    def _versions_tags(self, path: str, version: int) -> tuple[str, ...]:
        row = (
            self._ws.ledger.reader()
            .execute("SELECT tags FROM memory_versions WHERE path = ? AND version = ?", [path, version])
            .fetchone()
        )
        return tuple(json.loads(row[0])) if row and row[0] else ()

    def import_tree(
        self,
        directory: str | Path,
        *,
        into: str = "/",
        actor: str,
        tags: Iterable[str] | None = None,
        reason: str = "",
    ) -> list[str]:
        """Write every text file under ``directory`` to memory under ``into``; returns the paths written.

        Files that are not UTF-8 text are skipped (memory holds text). Unchanged files add no version.
        """
        root = Path(directory)
        if not root.is_dir():
            raise ArtifactError(f"{root} is not a directory")
        base = _folder(into)
        written = []
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                text = file.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            path = normalise_path(base + file.relative_to(root).as_posix())
            try:
                if self.read(path).content == text:
                    continue
            except ArtifactError:
                pass
            ctype = mimetypes.guess_type(file.name)[0] or (
                "text/markdown" if file.suffix.lower() == ".md" else "text/plain"
            )
            self.write(
                path, text, actor=actor, content_type=ctype, tags=tags, reason=reason or f"import {file}"
            )
            written.append(path)
        return written

    def export_tree(self, prefix: str, directory: str | Path, *, actor: str | None = None) -> list[Path]:
        """Write the live artifacts under ``prefix`` as files under ``directory`` (folders made as needed).

        Nothing is written when an artifact's file would clash with a folder (``/a`` and ``/a/b.md``: a file
        system cannot hold both) or with what is in ``directory`` already; the error names the clash.
        """
        folder = _folder(prefix)
        out = Path(directory)
        single = self._row(normalise_path(prefix)) if folder != "/" else None
        paths = (
            [normalise_path(prefix)]
            if single is not None and not single["deleted"]
            else list(self.list(folder, actor=actor)["path"])
        )
        targets = {}
        for path in paths:
            rel = path.rsplit("/", 1)[1] if single is not None else path[len(folder) :]
            targets[path] = out.joinpath(*rel.split("/"))
        _check_export(targets)
        files = []
        for path, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.read(path, actor=actor).content, encoding="utf-8")
            files.append(target)
        return files

    # -- reading -----------------------------------------------------------------------------------------------
    def read(self, path: str, *, version: int | None = None, actor: str | None = None) -> Artifact:
        """The artifact at ``path`` (its latest or an older ``version``); ``actor``'s read is governed."""
        path = normalise_path(path)
        self._may(actor, "memory.read", path)
        # One statement: the item and the wanted version (the item's latest unless ``version`` is given).
        row = (
            self._ws.ledger.reader()
            .execute(
                "SELECT i.tags, i.owner, i.version, v.version, v.content, v.content_type, v.ts FROM memory_items i "
                "LEFT JOIN memory_versions v ON v.path = i.path AND v.version = coalesce(?, i.version) "
                "WHERE i.path = ? AND NOT i.deleted",
                [version, path],
            )
            .fetchone()
        )
        if row is None:
            raise ArtifactError(f"no memory artifact at {path}")
        tags, owner, latest, found, content, content_type, ts = row
        if found is None:
            want = latest if version is None else version
            raise ArtifactError(f"{path} has no version {want} (latest is {latest})")
        return Artifact(path, content, content_type, tuple(json.loads(tags)), owner, int(found), ts)

    def list(self, prefix: str = "/", *, deleted: bool = False, actor: str | None = None) -> pd.DataFrame:
        """Artifacts under a folder, newest first (``deleted=True``: the deleted ones instead)."""
        self._may(actor, "memory.list", _folder(prefix).rstrip("/") or "/")
        return self._ws.sql(
            "SELECT path, content_type, tags, owner, version, updated_at FROM memory_items "
            "WHERE deleted = ? AND starts_with(path, ?) ORDER BY updated_at DESC, path",
            [deleted, _folder(prefix)],
        )

    def tree(self, prefix: str = "/", *, actor: str | None = None) -> pd.DataFrame:
        """Folders under ``prefix`` (derived from the paths): folder, depth, artifacts directly in it, and all
        artifacts below it."""
        folder = _folder(prefix)
        paths = list(self.list(folder, actor=actor)["path"])
        direct: dict[str, int] = {}
        total: dict[str, int] = {}
        for p in paths:
            parts = p.split("/")[1:-1]
            parent = "/" + "/".join(parts) if parts else "/"
            direct[parent] = direct.get(parent, 0) + 1
            for i in range(len(parts) + 1):
                f = "/" + "/".join(parts[:i]) if i else "/"
                total[f] = total.get(f, 0) + 1
        root = folder.rstrip("/") or "/"
        rows = [
            {"folder": f, "depth": 0 if f == "/" else f.count("/"), "artifacts": direct.get(f, 0), "total": n}
            for f, n in total.items()
            if f == root or f.startswith(folder)
        ]
        return pd.DataFrame(rows, columns=["folder", "depth", "artifacts", "total"]).sort_values(
            "folder", ignore_index=True
        )

    def versions(self, path: str, *, actor: str | None = None) -> pd.DataFrame:
        """Every version of the artifact (deleted ones too): version, actor, reason, ts, size, event_id."""
        path = normalise_path(path)
        self._may(actor, "memory.read", path)
        if self._row(path) is None:
            raise ArtifactError(f"no memory artifact at {path}")
        return self._ws.sql(
            "SELECT version, actor, reason, ts, content_type, length(content) AS size, event_id "
            "FROM memory_versions WHERE path = ? ORDER BY version",
            [path],
        )

    def diff(
        self, path: str, a: int, b: int | None = None, *, context: int = 3, actor: str | None = None
    ) -> str:
        """A unified diff from version ``a`` to version ``b`` (default: the latest)."""
        old = self.read(path, version=a, actor=actor)
        new = self.read(path, version=b)
        return "".join(
            difflib.unified_diff(
                old.content.splitlines(keepends=True),
                new.content.splitlines(keepends=True),
                fromfile=f"{old.path}@{old.version}",
                tofile=f"{new.path}@{new.version}",
                n=context,
            )
        )

    def audit(self, path: str, *, actor: str | None = None) -> pd.DataFrame:
        """Who did what to the artifact, when and why, from the ledger (across its moves)."""
        path = normalise_path(path)
        self._may(actor, "memory.read", path)
        row = self._row(path)
        if row is None:
            raise ArtifactError(f"no memory artifact at {path}")
        ident = row["id"]
        frame = self._ws.sql(
            "SELECT seq, ts, topic, actor, json_extract_string(payload, '$.path') AS path, "
            "json_extract_string(payload, '$.new_path') AS new_path, "
            "TRY_CAST(json_extract(payload, '$.version') AS INTEGER) AS version, "
            "json_extract_string(payload, '$.reason') AS reason, "
            "json_extract(payload, '$.masked') IS NOT NULL AS masked, id AS event_id FROM events "
            "WHERE starts_with(topic, 'memory.item.') AND (id = ? OR json_extract_string(payload, '$.id') = ? "
            # updates written before updates carried the artifact's id: its path identifies them
            "OR (json_extract_string(payload, '$.id') IS NULL AND topic = 'memory.item.updated' AND resource = ?)) "
            "ORDER BY seq",
            [ident, ident, f"memory:{path}"],
        )
        frame["action"] = frame["topic"].str.removeprefix("memory.item.")
        return frame

    # -- search ------------------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        prefix: str | None = None,
        tags: Iterable[str] | None = None,
        owner: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 10,
        actor: str | None = None,
    ) -> pd.DataFrame:
        """Full-text search (BM25) over the live artifacts: path, score, snippet, content_type, tags, owner,
        version, updated_at; best first. Filters: folder ``prefix``, ``tags`` (all of them), ``owner``, and
        ``since``/``until`` on the last update. A write is reflected in the very next search."""
        if not isinstance(query, str) or not query.strip():
            raise ArtifactError("search needs some words to look for")
        self._may(actor, "memory.search", (_folder(prefix).rstrip("/") or "/"))
        return self._search.query(
            query,
            prefix=None if prefix is None else _folder(prefix),
            tags=sorted({str(t) for t in tags or ()}),
            owner=owner,
            since=_instant(since),
            until=_instant(until),
            limit=int(limit),
        )

    def reindex(self, *, wait: bool = True) -> None:
        """Rebuild the search index now (``wait=False``: in the background; searches stay exact meanwhile)."""
        self._search.rebuild(wait=wait)

    def index_status(self) -> dict[str, Any]:
        """The search index: artifacts in its big (built) part, artifacts scored from the delta since, and
        whether a rebuild is running."""
        return self._search.status()

    @property
    def last_index_build_s(self) -> float | None:
        """How long the last full build of the search index took (None: not built yet)."""
        return self._search.last_build_s

    def close(self) -> None:
        self._search.close()

    # -- internals ---------------------------------------------------------------------------------------------
    def _row(self, path: str) -> dict[str, Any] | None:
        row = (
            self._ws.ledger.reader()
            .execute("SELECT id, version, deleted, tags, owner FROM memory_items WHERE path = ?", [path])
            .fetchone()
        )
        if row is None:
            return None
        return {
            "id": row[0],
            "version": row[1],
            "deleted": bool(row[2]),
            "tags": json.loads(row[3]),
            "owner": row[4],
        }

    def _apply(self, con: Any, events: builtins.list[Event]) -> None:
        _apply(con, events)
        self._search.mark(_touched(events))

    def _on_commit(self, events: builtins.list[Event]) -> None:
        paths = _touched(e for e in events if e.topic.startswith("memory.item."))
        if paths:
            self._search.mark(paths)

    def _may(self, actor: str | None, action: str, resource: str) -> None:
        """Govern a read by ``actor`` (None: the workspace's own code, e.g. a responder, is not checked).

        Reads are frequent: an allowed one records no decision event; a refused one is recorded and raises
        PermissionDenied with the policy's reason.
        """
        if actor is None:
            return
        self._governance.check(actor, action, resource, record="refusals")


def _touched(events: Iterable[Event]) -> builtins.list[str]:
    paths = []
    for e in events:
        p = e.payload
        for key in ("path", "new_path"):
            if isinstance(p.get(key), str):
                paths.append(p[key])
    return paths


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic in ("memory.item.created", "memory.item.updated"):
            tags = json.dumps(p["tags"])
            if e.topic == "memory.item.created":
                con.execute(
                    f"INSERT INTO memory_items VALUES (?, ?, ?, ?, ?, ?, false, {TS}, {TS})",
                    [p["path"], e.id, p["content_type"], tags, e.actor, p["version"], e.ts_us, e.ts_us],
                )
            else:
                con.execute(
                    "UPDATE memory_items SET content_type = ?, tags = ?, version = ?, "
                    f"updated_at = {TS} WHERE path = ?",
                    [p["content_type"], tags, p["version"], e.ts_us, p["path"]],
                )
            con.execute(
                f"INSERT INTO memory_versions VALUES (?, ?, ?, ?, ?, ?, ?, {TS}, ?)",
                [
                    p["path"],
                    p["version"],
                    p["content"],
                    p["content_type"],
                    e.actor,
                    p["reason"],
                    e.id,
                    e.ts_us,
                    tags,
                ],
            )
        elif e.topic == "memory.item.moved":
            con.execute("UPDATE memory_items SET path = ? WHERE path = ?", [p["new_path"], p["path"]])
            con.execute("UPDATE memory_versions SET path = ? WHERE path = ?", [p["new_path"], p["path"]])
        elif e.topic in ("memory.item.deleted", "memory.item.restored"):
            con.execute(
                "UPDATE memory_items SET deleted = ? WHERE path = ?", [e.topic.endswith("deleted"), p["path"]]
            )


def _instant(value: datetime | str | None) -> datetime | None:
    """A filter time as an aware datetime (a naive one, or an ISO text without offset, is UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise ArtifactError(f"bad time {value!r}: use ISO 8601, e.g. 2026-01-31T12:00:00Z") from exc
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        raise ArtifactError(f"a time filter is a datetime or ISO 8601 text, not {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
