"""Memory: a file explorer of artifacts at paths, every version kept, its audit trail on the ledger.

Each change is one event, and tables ``memory_items`` (the artifacts) and ``memory_versions`` (every version
of every artifact) are their projection:

* ``memory.item.created`` / ``memory.item.updated`` — a new version, holding the whole content;
* ``memory.item.moved`` — a new path (rename = a move within the folder); the versions move with it;
* ``memory.item.deleted`` / ``memory.item.restored`` — soft delete and its undo; nothing is ever erased.

Writes pass governance (``memory.write:<path>``, ``memory.delete:<path>``; the default pack keeps ``/system``
for admins) and Hunter: a text with findings raises alerts and is stored with each finding's span masked,
unless governance allows ``memory.write_unmasked:<path>`` for that actor (the default pack denies it to all).

Search is BM25 ranking over DuckDB's ``fts`` extension. The index is derived state, not a projection: it lives
in a private in-memory DuckDB database of this process (so it never reaches snapshots, replays or projection
comparisons, and works on read-only snapshots too), and it is rebuilt lazily, at the first search after memory
changed. Queries rank straight from the index tables (postings of the query's terms only) rather than through
``match_bm25``, which scores every document.
"""

from __future__ import annotations

import builtins
import difflib
import json
import math
import mimetypes
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from .errors import ArtifactError
from .events import Event
from .hunter.scanner import redact
from .mesh import Message

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["Artifact", "Memory", "normalise_path"]

_SEGMENT = re.compile(r"^[^\x00-\x1f\x7f/]{1,255}$")
_TOPICS = (
    "memory.item.created",
    "memory.item.updated",
    "memory.item.moved",
    "memory.item.deleted",
    "memory.item.restored",
)
_SNIPPET = 80  # characters of context either side of the first hit
# BM25 parameters, the usual defaults (the same as the fts extension's match_bm25).
_K1, _B = 1.2, 0.75


def normalise_path(path: str) -> str:
    """``/projects/alpha/notes.md``: absolute, '/'-separated, no empty, '.' or '..' segments."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ArtifactError(f"a memory path is absolute, like /projects/alpha/notes.md, not {path!r}")
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in {".", ".."} or not _SEGMENT.match(p) for p in parts) or len(path) > 1024:
        raise ArtifactError(f"bad memory path {path!r}: no '.', '..', control characters or empty names")
    return "/" + "/".join(parts)


def _folder(prefix: str | None) -> str:
    """A folder prefix ending in '/' ('/' for the root)."""
    if prefix is None or prefix.strip("/") == "":
        return "/"
    return normalise_path(prefix) + "/"


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
    """Artifacts at paths (``ws.memory``)."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws
        self._search = _SearchIndex(ws)
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
        self._ws.governance.check(actor, f"memory.write:{path}")
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
        self._ws.publish(topic, payload, actor=actor, resource=f"memory:{path}")
        return self.read(path)

    def _screen(self, content: str, *, path: str, actor: str) -> tuple[str, list[str]]:
        findings = self._ws.hunter.screen(content, target="memory", actor=actor, resource=f"memory:{path}")
        if not findings:
            return content, []
        allowed = self._ws.governance.check(actor, f"memory.write_unmasked:{path}", enforce=False)
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
        self._ws.governance.check(actor, f"memory.write:{path}")
        self._ws.governance.check(actor, f"memory.write:{new_path}")
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
        path = normalise_path(path)
        row = self._row(path)
        if row is None or row["deleted"]:
            raise ArtifactError(f"no memory artifact at {path}")
        self._ws.governance.check(actor, f"memory.delete:{path}")
        self._ws.publish(
            "memory.item.deleted",
            {"path": path, "id": row["id"], "reason": reason},
            actor=actor,
            resource=f"memory:{path}",
        )

    def restore(self, path: str, *, actor: str, reason: str = "") -> Artifact:
        """Undo a soft delete."""
        path = normalise_path(path)
        row = self._row(path)
        if row is None or not row["deleted"]:
            raise ArtifactError(f"nothing deleted at {path}")
        self._ws.governance.check(actor, f"memory.write:{path}")
        self._ws.publish(
            "memory.item.restored",
            {"path": path, "id": row["id"], "reason": reason},
            actor=actor,
            resource=f"memory:{path}",
        )
        return self.read(path)

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
        """Write the live artifacts under ``prefix`` as files under ``directory`` (folders made as needed)."""
        folder = _folder(prefix)
        out = Path(directory)
        files = []
        single = self._row(normalise_path(prefix)) if folder != "/" else None
        paths = (
            [normalise_path(prefix)]
            if single is not None and not single["deleted"]
            else list(self.list(folder, actor=actor)["path"])
        )
        for path in paths:
            rel = path.rsplit("/", 1)[1] if single is not None else path[len(folder) :]
            target = out.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.read(path, actor=actor).content, encoding="utf-8")
            files.append(target)
        return files

    # -- reading -----------------------------------------------------------------------------------------------
    def read(self, path: str, *, version: int | None = None, actor: str | None = None) -> Artifact:
        """The artifact at ``path`` (its latest or an older ``version``); ``actor``'s read is governed."""
        path = normalise_path(path)
        self._may(actor, "memory.read", path)
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
            .execute("SELECT id, version, deleted, tags FROM memory_items WHERE path = ?", [path])
            .fetchone()
        )
        if row is None:
            return None
        return {"id": row[0], "version": row[1], "deleted": bool(row[2]), "tags": json.loads(row[3])}

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
        self._ws.governance.check(actor, action, resource, record="refusals")


def _touched(events: Iterable[Event]) -> builtins.list[str]:
    paths = []
    for e in events:
        p = e.payload
        for key in ("path", "new_path"):
            if isinstance(p.get(key), str):
                paths.append(p[key])
    return paths


def _snippet(content: str, terms: Sequence[str]) -> str:
    low = content.lower()
    hits = [i for i in (low.find(t) for t in terms) if i >= 0]
    at = min(hits) if hits else 0
    start, end = max(0, at - _SNIPPET), min(len(content), at + _SNIPPET)
    text = " ".join(content[start:end].split())
    return ("…" if start else "") + text + ("…" if end < len(content) else "")


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
                "INSERT INTO memory_versions VALUES (?, ?, ?, ?, ?, ?, ?, make_timestamptz(?::BIGINT), ?)",
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


# -- the search index ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Doc:
    """A live artifact scored outside the big index (changed since it was built)."""

    path: str
    content: str
    content_type: str
    tags: tuple[str, ...]
    owner: str
    version: int
    updated_at: datetime
    tf: dict[str, int]  # stemmed term -> occurrences, tokenised exactly as the fts extension does
    length: int


@dataclass
class _Base:
    """One full build: a private DuckDB with the fts index and a termid-sorted postings table."""

    con: duckdb.DuckDBPyConnection
    docs: dict[str, tuple[int, int]]  # path -> (fts docid, document length in terms)
    num_docs: int
    total_len: int


_DOCS_SQL = (
    "SELECT i.path, v.content, i.content_type, i.tags, i.owner, i.version, i.updated_at "
    "FROM memory_items i JOIN memory_versions v ON v.path = i.path AND v.version = i.version "
    "WHERE NOT i.deleted"
)
# Terms of a text exactly as create_fts_index makes them: tokenize, drop empty tokens and stop words, stem.
_TERMS_SQL = (
    "SELECT p, stem(w, 'porter') AS t, count(*)::INTEGER FROM ("
    "SELECT p, unnest(fts_main_docs.tokenize(b)) AS w FROM "
    "(SELECT unnest(?::VARCHAR[]) AS p, unnest(?::VARCHAR[]) AS b)) "
    "WHERE len(w) > 0 AND w NOT IN (SELECT sw FROM fts_main_docs.stopwords) GROUP BY ALL"
)


class _SearchIndex:
    """BM25 search that stays exact right after every write without rebuilding the big index.

    The big index (``_Base``) is built from a snapshot of memory. Every committed change marks its paths;
    the next search *absorbs* them: those paths are excluded from the big index (a small ``excluded`` table)
    and their current content is tokenised into the delta (a few dict entries). A query scores the big index
    without the excluded documents and the delta in Python with the *same* corpus statistics (number of
    documents, average length, each term's document frequency, all corrected for excluded and delta
    documents), so a search after a write ranks exactly as a full rebuild would. When the delta grows past
    ``threshold`` a rebuild runs in a background thread; paths changed while it reads stay in the delta.
    """

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws
        self._lock = threading.RLock()  # the base connection and the delta
        self._marks_lock = threading.Lock()  # the marks: taken by writers, never held while reading
        self._stale: set[str] = set()  # paths changed since the last absorb
        self._rebuild_marks: set[str] | None = None  # paths changed since a running rebuild read memory
        self._base: _Base | None = None
        self._dirty: set[str] = set()  # paths scored from the delta instead of the base
        self._delta: dict[str, _Doc] = {}
        self._excluded_n = 0
        self._excluded_len = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self.min_threshold = 1000
        self.last_build_s: float | None = None

    # -- change tracking (called in the committing thread) ------------------------------------------------
    def mark(self, paths: Iterable[str]) -> None:
        with self._marks_lock:
            self._stale.update(paths)
            if self._rebuild_marks is not None:
                self._rebuild_marks.update(paths)

    # -- building ------------------------------------------------------------------------------------------
    def _build(self) -> _Base:
        started = time.perf_counter()
        rows = self._ws.ledger.reader().execute(_DOCS_SQL + " ORDER BY i.path").arrow()
        con = duckdb.connect(":memory:")
        # A long build must not draw DuckDB's progress bar on the caller's standard output (e.g. `grace bench`).
        con.execute("SET enable_progress_bar = false")
        from .db import load_extension

        load_extension(con, "fts")
        con.register("src", rows)
        con.execute(
            "CREATE TABLE docs AS SELECT row_number() OVER (ORDER BY path) - 1 AS docid, path, "
            "path || chr(10) || content AS body, content, content_type, CAST(tags AS JSON)::VARCHAR[] AS tags, "
            "owner, version, updated_at FROM src"
        )
        con.unregister("src")
        # Digits are words too (error codes, versions, ids): keep them, unlike the extension's default.
        con.execute(
            "PRAGMA create_fts_index('docs', 'docid', 'body', ignore='(\\.|[^a-z0-9])+', overwrite=1)"
        )
        # Postings (term, document, frequency, document length) sorted by term, keyed by our docid (path
        # order): a query reads only the row groups of its terms and needs no join to score them.
        con.execute(
            "CREATE TABLE postings AS SELECT t.termid, k.name AS docid, count(*)::INTEGER AS tf, "
            "any_value(k.len)::INTEGER AS len FROM fts_main_docs.terms t JOIN fts_main_docs.docs k USING (docid) "
            "GROUP BY t.termid, k.name ORDER BY t.termid, k.name"
        )
        con.execute("CREATE TABLE excluded (docid BIGINT)")
        docs = {
            p: (int(i), int(n))
            for p, i, n in con.execute(
                "SELECT d.path, d.docid, k.len FROM docs d JOIN fts_main_docs.docs k ON k.name = d.docid"
            ).fetchall()
        }
        self.last_build_s = time.perf_counter() - started
        return _Base(con, docs, len(docs), sum(n for _, n in docs.values()))

    def _install(self, base: _Base, changed: set[str]) -> None:
        """Make ``base`` current; ``changed`` are paths that changed after it read memory."""
        old, self._base = self._base, base
        self._dirty, self._delta = set(), {}
        self._excluded_n = self._excluded_len = 0
        with self._marks_lock:
            self._stale |= changed
        if old is not None:
            old.con.close()

    def rebuild(self, *, wait: bool = True) -> None:
        with self._lock:
            thread = self._thread if self._thread is not None and self._thread.is_alive() else None
        if thread is not None:
            if wait:
                thread.join()
                self.rebuild(wait=True)
            return
        if wait:
            with self._lock:
                with self._marks_lock:
                    self._stale.clear()
                self._install(self._build(), set())
            return
        self._start_background()

    def _start_background(self) -> None:
        with self._marks_lock:
            self._rebuild_marks = set()
        self._thread = threading.Thread(target=self._background, name="grace-memory-index", daemon=True)
        self._thread.start()

    def _background(self) -> None:
        try:
            base = self._build()
        except Exception:  # noqa: BLE001 - the old index and the delta stay exact; the next threshold retries
            with self._marks_lock:
                self._rebuild_marks = None
            return
        with self._lock:
            with self._marks_lock:
                changed, self._rebuild_marks = self._rebuild_marks or set(), None
            if self._closed:
                base.con.close()
                return
            self._install(base, changed)

    # -- absorbing changes ---------------------------------------------------------------------------------
    def _absorb(self) -> _Base:
        """The current base with every committed change absorbed into the delta (lock held)."""
        if self._base is None:
            with self._marks_lock:
                self._stale.clear()
            self._install(self._build(), set())
        base = self._base
        assert base is not None
        with self._marks_lock:
            fresh, self._stale = self._stale, set()
        if not fresh:
            return base
        paths = sorted(fresh)
        live = {r[0]: r for r in self._current(paths)}
        terms: dict[str, dict[str, int]] = {p: {} for p in live}
        if live:
            names = list(live)
            bodies = [f"{p}\n{live[p][1]}" for p in names]
            for p, t, n in base.con.execute(_TERMS_SQL, [names, bodies]).fetchall():
                terms[p][t] = n
        newly_excluded = []
        for path in paths:
            if path not in self._dirty:
                self._dirty.add(path)
                if path in base.docs:
                    docid, length = base.docs[path]
                    newly_excluded.append(docid)
                    self._excluded_n += 1
                    self._excluded_len += length
            row = live.get(path)
            if row is None:
                self._delta.pop(path, None)
                continue
            tf = terms[path]
            self._delta[path] = _Doc(
                path,
                row[1],
                row[2],
                tuple(json.loads(row[3])),
                row[4],
                int(row[5]),
                row[6],
                tf,
                sum(tf.values()),
            )
        if newly_excluded:
            base.con.execute("INSERT INTO excluded SELECT unnest(?::BIGINT[])", [newly_excluded])
        threshold = max(self.min_threshold, base.num_docs // 20)
        if len(self._dirty) > threshold and (self._thread is None or not self._thread.is_alive()):
            self._start_background()
        return base

    def _current(self, paths: builtins.list[str]) -> builtins.list[tuple[Any, ...]]:
        """The live rows of ``paths`` (as in ``_DOCS_SQL``)."""
        reader = self._ws.ledger.reader()
        if len(paths) > 32:  # a bulk change: one join beats many lookups
            return reader.execute(
                _DOCS_SQL + " AND i.path IN (SELECT unnest(?::VARCHAR[]))", [paths]
            ).fetchall()
        # A few paths (the usual write): point lookups on the keys, not a join that scans every version.
        rows = []
        for path in paths:
            item = reader.execute(
                "SELECT path, content_type, tags, owner, version, updated_at FROM memory_items "
                "WHERE path = ? AND NOT deleted",
                [path],
            ).fetchone()
            if item is None:
                continue
            version = reader.execute(
                "SELECT content FROM memory_versions WHERE path = ? AND version = ?", [path, item[4]]
            ).fetchone()
            if version is not None:
                rows.append((item[0], version[0], *item[1:]))
        return rows

    # -- querying ------------------------------------------------------------------------------------------
    def query(
        self,
        query: str,
        *,
        prefix: str | None,
        tags: list[str],
        owner: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> pd.DataFrame:
        columns = ["path", "score", "snippet", "content_type", "tags", "owner", "version", "updated_at"]
        with self._lock:
            if self._closed:
                raise ArtifactError("this workspace is closed")
            base = self._absorb()
            con = base.con
            stems = [
                (t, termid, df)
                for t, termid, df in con.execute(
                    "SELECT s.t, d.termid, d.df FROM (SELECT DISTINCT stem(unnest(fts_main_docs.tokenize(?)), "
                    "'porter') AS t) s LEFT JOIN fts_main_docs.dict d ON d.term = s.t ORDER BY s.t",
                    [query],
                ).fetchall()
                if t
            ]
            delta = [d for d in self._delta.values()]
            # Corpus statistics of what a full rebuild would index now.
            n = base.num_docs - self._excluded_n + len(delta)
            total = base.total_len - self._excluded_len + sum(d.length for d in delta)
            known = [(int(termid), int(df)) for _, termid, df in stems if termid is not None]
            excluded_df: dict[int, int] = {}
            if known and self._excluded_n:
                ids = ", ".join(str(t) for t, _ in known)
                excluded_df = dict(
                    con.execute(
                        f"SELECT termid, count(*) FROM postings WHERE termid IN ({ids}) "
                        "AND docid IN (SELECT docid FROM excluded) GROUP BY termid"
                    ).fetchall()
                )
            base_df = {t: int(df) for t, termid, df in stems if termid is not None}
            termids = {t: int(termid) for t, termid, _ in stems if termid is not None}
            df = {}
            for t, _, _ in stems:
                in_delta = sum(1 for d in delta if t in d.tf)
                df[t] = base_df.get(t, 0) - excluded_df.get(termids.get(t, -1), 0) + in_delta
            hits: list[dict[str, Any]] = []
            if n > 0 and any(df.values()):
                avgdl = total / n
                hits = self._score_base(
                    con, known, df, termids, n, avgdl, prefix, tags, owner, since, until, limit
                )
                hits += _score_delta(delta, df, n, avgdl, prefix, tags, owner, since, until)
        if not hits:
            return pd.DataFrame(columns=columns)
        hits.sort(key=lambda h: (-h["score"], h["path"]))
        hits = hits[:limit]
        words = [t for t in re.split(r"[^\w]+", query.lower()) if t]
        for h in hits:
            h["snippet"] = _snippet(h.pop("content"), words)
        return pd.DataFrame(hits)[columns]

    def _score_base(
        self,
        con: duckdb.DuckDBPyConnection,
        known: list[tuple[int, int]],
        df: dict[str, int],
        termids: dict[str, int],
        n: int,
        avgdl: float,
        prefix: str | None,
        tags: list[str],
        owner: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        if not known:
            return []
        where: list[str] = ["true"]
        params: list[Any] = []
        if prefix is not None:
            where.append("starts_with(d.path, ?)")
            params.append(prefix)
        for tag in tags:
            where.append("list_contains(d.tags, ?)")
            params.append(tag)
        if owner is not None:
            where.append("d.owner = ?")
            params.append(owner)
        if since is not None:
            where.append("d.updated_at >= ?")
            params.append(since)
        if until is not None:
            where.append("d.updated_at < ?")
            params.append(until)
        params.append(limit)
        by_id = {termid: df[t] for t, termid in termids.items()}
        # The query's term ids and idf as constants: the scan of the (termid-sorted) postings skips every
        # row group without them.
        values = ", ".join(
            f"({t}, {math.log((n - by_id[t] + 0.5) / (by_id[t] + 0.5) + 1)!r}::DOUBLE)"
            for t, _ in known
            if by_id[t] > 0
        )
        if not values:
            return []
        ids = ", ".join(str(t) for t, _ in known)
        skip = " AND docid NOT IN (SELECT docid FROM excluded)" if self._excluded_n else ""
        norm = f"{_K1} * (1 - {_B} + {_B} * p.len / {avgdl!r}::DOUBLE)" if avgdl > 0 else f"{_K1}"
        scored = f"""
            WITH qd(termid, idf) AS (VALUES {values}),
            scored AS (
                SELECT p.docid, sum(qd.idf * p.tf * {_K1 + 1} / (p.tf + {norm})) AS score
                FROM postings p JOIN qd USING (termid) WHERE p.termid IN ({ids}){skip}
                GROUP BY p.docid)"""
        columns = "d.path, s.score, d.content, d.content_type, d.tags, d.owner, d.version, d.updated_at"
        if len(where) == 1:
            # No filter: the top documents first, then their rows (docid order is path order: same ties).
            sql = f"""{scored},
                top AS (SELECT docid, score FROM scored ORDER BY score DESC, docid LIMIT ?)
                SELECT {columns} FROM top s JOIN docs d USING (docid) ORDER BY s.score DESC, d.path"""
        else:
            sql = f"""{scored}
                SELECT {columns} FROM scored s JOIN docs d USING (docid)
                WHERE {" AND ".join(where)} ORDER BY s.score DESC, d.path LIMIT ?"""
        return [
            {
                "path": r[0],
                "score": float(r[1]),
                "content": r[2],
                "content_type": r[3],
                "tags": tuple(r[4] or ()),
                "owner": r[5],
                "version": int(r[6]),
                "updated_at": r[7],
            }
            for r in con.execute(sql, params).fetchall()
        ]

    def status(self) -> dict[str, Any]:
        with self._lock:
            base = self._base
            return {
                "built": base is not None,
                "base_docs": 0 if base is None else base.num_docs,
                "delta_paths": len(self._dirty),
                "pending_paths": len(self._stale),
                "rebuilding": self._thread is not None and self._thread.is_alive(),
                "last_build_s": self.last_build_s,
            }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:
            if self._base is not None:
                self._base.con.close()
                self._base = None


def _score_delta(
    delta: list[_Doc],
    df: dict[str, int],
    n: int,
    avgdl: float,
    prefix: str | None,
    tags: list[str],
    owner: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[dict[str, Any]]:
    idf = {t: math.log((n - f + 0.5) / (f + 0.5) + 1) for t, f in df.items() if f > 0}
    out = []
    for d in delta:
        matched = [t for t in idf if t in d.tf]
        if not matched:
            continue
        if prefix is not None and not d.path.startswith(prefix):
            continue
        if any(t not in d.tags for t in tags) or (owner is not None and d.owner != owner):
            continue
        if (since is not None and d.updated_at < since) or (until is not None and d.updated_at >= until):
            continue
        norm = _K1 * (1 - _B + _B * d.length / avgdl) if avgdl > 0 else _K1
        score = sum(idf[t] * d.tf[t] * (_K1 + 1) / (d.tf[t] + norm) for t in sorted(matched))
        out.append(
            {
                "path": d.path,
                "score": score,
                "content": d.content,
                "content_type": d.content_type,
                "tags": d.tags,
                "owner": d.owner,
                "version": d.version,
                "updated_at": d.updated_at,
            }
        )
    return out


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
