"""Memory's search index: BM25 over DuckDB's ``fts`` extension, exact right after every write.

The index is derived state, not a projection: it lives in a private in-memory DuckDB database of this process
(so it never reaches snapshots, replays or projection comparisons, and works on read-only snapshots too), and
it is rebuilt lazily, at the first search after memory changed. Queries rank straight from the index tables
(postings of the query's terms only) rather than through ``match_bm25``, which scores every document.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from grace_core import bm25
from grace_core.errors import ArtifactError

from .artifact import Artifact

if TYPE_CHECKING:
    from grace_core.ledger import Ledger

__all__ = ["SearchIndex"]

_SNIPPET = 80  # characters of context either side of the first hit
_PARAMS = bm25.Params()  # the usual k1 and b (the same as the fts extension's match_bm25)


@dataclass(frozen=True)
class _Doc:
    """A live artifact scored outside the big index (changed since it was built)."""

    artifact: Artifact
    tf: dict[str, int]  # stemmed term -> occurrences, tokenised exactly as the fts extension does
    length: int


@dataclass(frozen=True)
class _Filter:
    """A search's filters, read the same way over the base (in SQL, on table ``d``) and over the delta."""

    prefix: str | None
    tags: Sequence[str]
    owner: str | None
    since: datetime | None
    until: datetime | None

    def sql(self) -> tuple[list[str], list[Any]]:
        """(conditions, their parameters) on the base's ``docs d``; no conditions without filters."""
        where: list[str] = []
        params: list[Any] = []
        if self.prefix is not None:
            where.append("starts_with(d.path, ?)")
            params.append(self.prefix)
        for tag in self.tags:
            where.append("list_contains(d.tags, ?)")
            params.append(tag)
        if self.owner is not None:
            where.append("d.owner = ?")
            params.append(self.owner)
        if self.since is not None:
            where.append("d.updated_at >= ?")
            params.append(self.since)
        if self.until is not None:
            where.append("d.updated_at < ?")
            params.append(self.until)
        return where, params

    def matches(self, a: Artifact) -> bool:
        return (
            (self.prefix is None or a.path.startswith(self.prefix))
            and all(t in a.tags for t in self.tags)
            and (self.owner is None or a.owner == self.owner)
            and (self.since is None or a.updated_at >= self.since)
            and (self.until is None or a.updated_at < self.until)
        )


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


class SearchIndex:
    """BM25 search that stays exact right after every write without rebuilding the big index.

    The big index (``_Base``) is built from a snapshot of memory. Every committed change marks its paths;
    the next search *absorbs* them: those paths are excluded from the big index (a small ``excluded`` table)
    and their current content is tokenised into the delta (a few dict entries). A query scores the big index
    without the excluded documents and the delta in Python with the *same* corpus statistics (number of
    documents, average length, each term's document frequency, all corrected for excluded and delta
    documents), so a search after a write ranks exactly as a full rebuild would. When the delta grows past
    ``threshold`` a rebuild runs in a background thread; paths changed while it reads stay in the delta.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
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
        rows = self._ledger.reader().execute(_DOCS_SQL + " ORDER BY i.path").arrow()
        con = duckdb.connect(":memory:")
        # A long build must not draw DuckDB's progress bar on the caller's standard output (e.g. `grace bench`).
        con.execute("SET enable_progress_bar = false")
        from grace_core.db import load_extension

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
            artifact = Artifact(path, row[1], row[2], tuple(json.loads(row[3])), row[4], int(row[5]), row[6])
            self._delta[path] = _Doc(artifact, tf, sum(tf.values()))
        if newly_excluded:
            base.con.execute("INSERT INTO excluded SELECT unnest(?::BIGINT[])", [newly_excluded])
        threshold = max(self.min_threshold, base.num_docs // 20)
        if len(self._dirty) > threshold and (self._thread is None or not self._thread.is_alive()):
            self._start_background()
        return base

    def _current(self, paths: list[str]) -> list[tuple[Any, ...]]:
        """The live rows of ``paths`` (as in ``_DOCS_SQL``)."""
        reader = self._ledger.reader()
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
                filters = _Filter(prefix, tags, owner, since, until)
                hits = self._score_base(con, known, df, termids, n, avgdl, filters, limit)
                hits += _score_delta(delta, df, n, avgdl, filters)
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
        filters: _Filter,
        limit: int,
    ) -> list[dict[str, Any]]:
        if not known:
            return []
        where, params = filters.sql()
        params.append(limit)
        by_id = {termid: df[t] for t, termid in termids.items()}
        # The query's term ids and idf as constants: the scan of the (termid-sorted) postings skips every
        # row group without them.
        values = ", ".join(f"({t}, {bm25.idf(n, by_id[t])!r}::DOUBLE)" for t, _ in known if by_id[t] > 0)
        if not values:
            return []
        ids = ", ".join(str(t) for t, _ in known)
        skip = " AND docid NOT IN (SELECT docid FROM excluded)" if self._excluded_n else ""
        term = bm25.sql_term_score(idf="qd.idf", tf="p.tf", length="p.len", avgdl=avgdl, params=_PARAMS)
        scored = f"""
            WITH qd(termid, idf) AS (VALUES {values}),
            scored AS (
                SELECT p.docid, sum({term}) AS score
                FROM postings p JOIN qd USING (termid) WHERE p.termid IN ({ids}){skip}
                GROUP BY p.docid)"""
        columns = "d.path, s.score, d.content, d.content_type, d.tags, d.owner, d.version, d.updated_at"
        if not where:
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
    filters: _Filter,
) -> list[dict[str, Any]]:
    idf = {t: bm25.idf(n, f) for t, f in df.items() if f > 0}
    out = []
    for d in delta:
        a = d.artifact
        if not any(t in d.tf for t in idf) or not filters.matches(a):
            continue
        score = bm25.score(d.tf, bm25.length_norm(d.length, avgdl, _PARAMS), idf, _PARAMS)
        out.append(
            {
                "path": a.path,
                "score": score,
                "content": a.content,
                "content_type": a.content_type,
                "tags": a.tags,
                "owner": a.owner,
                "version": a.version,
                "updated_at": a.updated_at,
            }
        )
    return out


def _snippet(content: str, terms: Sequence[str]) -> str:
    low = content.lower()
    hits = [i for i in (low.find(t) for t in terms) if i >= 0]
    at = min(hits) if hits else 0
    start, end = max(0, at - _SNIPPET), min(len(content), at + _SNIPPET)
    text = " ".join(content[start:end].split())
    return ("…" if start else "") + text + ("…" if end < len(content) else "")
