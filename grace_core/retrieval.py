"""Retrieval: the passages of the workspace that best match a question (what chat answers from).

Passages are paragraphs of memory artifacts (``memory:/path``), tasks (``task:<event id>``), Hunter alerts
(``alert:<event id>``) and insights (``insight:<id>``), ranked by BM25 (``RETRIEVAL``). A memory artifact the
asker may not read (``memory.read``) is never a passage. The same workspace and question give the same passages.
"""

from __future__ import annotations

import functools
import re
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .bm25 import BM25, Params, tokenize
from .errors import ArtifactError

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["RETRIEVAL", "Passage", "retrieve", "workspace_passages"]


# -- retrieval -----------------------------------------------------------------------------------------------
# The ranking of passages (and of chat messages in ``chat.search``): k1=1.5 favours passages that repeat the
# question's words a little longer than the usual 1.2.
RETRIEVAL = Params(k1=1.5, b=0.75)


@dataclass(frozen=True)
class Passage:
    source: str  # the citation: memory:/path, task:<id>, alert:<id>, insight:<id>
    text: str


def _paragraphs(text: str, limit: int = 600) -> list[str]:
    parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [p if len(p) <= limit else p[: limit - 1] + "…" for p in parts]


def workspace_passages(ws: Workspace, user: str | None = None) -> list[Passage]:
    """Everything chat can answer from, in a stable order (paragraph by paragraph).

    With ``user``, memory artifacts that governance does not let that user read (``memory.read``) are left out:
    an answer must not quote what its asker could not open.
    """
    out: list[Passage] = []
    # Plain rows, not DataFrames: this runs for every chat message and pandas would cost more than the queries.
    cur = ws.ledger.reader()
    versions = dict(cur.execute("SELECT path, version FROM memory_items WHERE NOT deleted").fetchall())
    check = ws.governance.check
    for path in sorted(versions):
        # A filter over every artifact, not a request to read each: a what-if, nothing recorded.
        if user is not None and not check(user, "memory.read", path, record="none", enforce=False).allowed:
            continue
        paragraphs = _memory_paragraphs(ws, path, versions.get(path))
        if paragraphs is None:  # deleted meanwhile: simply not a source
            continue
        out.extend(Passage(f"memory:{path}", p) for p in paragraphs)
    tasks = cur.execute(
        "SELECT id, title, state, kind, details FROM tasks ORDER BY created_at, id"
    ).fetchall()
    for task_id, title, state, kind, details in tasks:
        out.append(Passage(f"task:{task_id}", f"Task ({kind}, {state}): {title} {details}"))
    alerts = cur.execute(
        "SELECT id, rule, severity, target, actor, excerpts FROM hunter_alerts ORDER BY ts, id"
    ).fetchall()
    for alert_id, rule, severity, target, actor, excerpts in alerts:
        out.append(
            Passage(
                f"alert:{alert_id}",
                f"Security alert {rule} ({severity}) on {target} text from {actor}: {excerpts}",
            )
        )
    cols = _insight_columns(ws)
    if "id" in cols:
        # The reflection engine's table has a ``text`` column (its kind and key are labels, not prose).
        text_cols = ["text"] if "text" in cols else [c for c in cols if c != "id"]
        select = ", ".join(f'"{c}"' for c in ["id", *text_cols])
        for row in cur.execute(f"SELECT {select} FROM insights ORDER BY id").fetchall():
            body = " ".join(str(v) for v in row[1:] if v is not None)
            out.append(Passage(f"insight:{row[0]}", body))
    return out


# Per-workspace caches (a chat message rebuilds the passages, so these keep it from re-reading every note):
# the paragraphs of a memory version never change, and the insights table's columns are fixed by migrations.
_PARAGRAPHS: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], list[str]]] = weakref.WeakKeyDictionary()
_INSIGHT_COLUMNS: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def _memory_paragraphs(ws: Workspace, path: str, version: Any) -> list[str] | None:
    cache = _PARAGRAPHS.setdefault(ws, {})
    key = (path, int(version)) if version is not None else None
    if key is not None and key in cache:
        return cache[key]
    try:
        artifact = ws.memory.read(path)
    except ArtifactError:
        return None
    paragraphs = _paragraphs(artifact.content)
    cache[(path, int(artifact.version))] = paragraphs
    return paragraphs


def _insight_columns(ws: Workspace) -> list[str]:
    """The insights table's text columns ([] without the table); it belongs to another engine."""
    cols = _INSIGHT_COLUMNS.get(ws)
    if cols is None:
        cols = ws.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'insights' "
            "AND data_type = 'VARCHAR' ORDER BY ordinal_position"
        )["column_name"].tolist()
        _INSIGHT_COLUMNS[ws] = cols
    return cols


@functools.lru_cache(maxsize=65_536)
def _passage_tokens(text: str) -> tuple[str, ...]:
    # Passages repeat from one message to the next: tokenise each text once.
    return tuple(tokenize(text))


def retrieve(ws: Workspace, text: str, *, top_k: int = 3, user: str | None = None) -> list[Passage]:
    """The ``top_k`` passages of the workspace that best match ``text`` (BM25 with ``RETRIEVAL``), best first."""
    query = tokenize(text)
    if not query:
        return []
    passages = workspace_passages(ws, user)
    index = BM25([_passage_tokens(p.text) for p in passages], params=RETRIEVAL)
    return [passages[i] for i, _ in index.top(query, top_k)]
