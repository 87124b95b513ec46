"""Causal tracking: the event being handled is the parent of whatever is published meanwhile."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import networkx as nx
import pandas as pd

from .errors import LedgerError
from .events import Event

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["Causal", "current_event", "handling"]

_current: contextvars.ContextVar[Event | None] = contextvars.ContextVar("grace_current_event", default=None)


def current_event() -> Event | None:
    """The event whose handling is in progress in this context, if any."""
    return _current.get()


@contextmanager
def handling(event: Event) -> Iterator[Event]:
    """Everything published inside this block is caused by ``event`` (the mesh does this for handlers)."""
    token = _current.set(event)
    try:
        yield event
    finally:
        _current.reset(token)


_COLUMNS = "seq, id, ts, topic, actor, resource, payload, parent_id, correlation_id"


class Causal:
    """Lineage (why did this happen) and impact (what did it cause) as DataFrames and graphs."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    @staticmethod
    def _found(df: pd.DataFrame, event_id: str) -> pd.DataFrame:
        # Depth 0 is the event itself: an empty chain is an unknown id (the same error as ledger.get).
        if df.empty:
            raise LedgerError(f"no event with id {event_id!r}")
        return df

    def lineage(self, event_id: str) -> pd.DataFrame:
        """The chain of causes from ``event_id`` back to its root; depth 0 is the event itself."""
        sql = f"""
            WITH RECURSIVE chain(id, parent_id, depth) AS (
                SELECT id, parent_id, 0 FROM events WHERE id = ?
                UNION ALL
                SELECT e.id, e.parent_id, chain.depth + 1
                FROM events e JOIN chain ON e.id = chain.parent_id
                WHERE chain.depth < 10000
            )
            SELECT chain.depth, {", ".join("e." + c for c in _COLUMNS.split(", "))}
            FROM chain JOIN events e ON e.id = chain.id ORDER BY chain.depth
        """
        return self._found(self._ledger.reader().execute(sql, [event_id]).df(), event_id)

    def impact(self, event_id: str) -> pd.DataFrame:
        """Everything ``event_id`` caused, directly or not; depth 0 is the event itself."""
        sql = f"""
            WITH RECURSIVE tree(id, depth) USING KEY (id) AS (
                SELECT id, 0 FROM events WHERE id = ?
                UNION
                SELECT e.id, tree.depth + 1 FROM events e JOIN tree ON e.parent_id = tree.id
                WHERE tree.depth < 10000
            )
            SELECT tree.depth, {", ".join("e." + c for c in _COLUMNS.split(", "))}
            FROM tree JOIN events e ON e.id = tree.id ORDER BY e.seq
        """
        return self._found(self._ledger.reader().execute(sql, [event_id]).df(), event_id)

    def correlation(self, correlation_id: str) -> pd.DataFrame:
        """Every event of one causal tree (same root), in ledger order."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE correlation_id = ? ORDER BY seq"
        df = self._ledger.reader().execute(sql, [correlation_id]).df()
        if df.empty:
            raise LedgerError(f"no events with correlation id {correlation_id!r}")
        return df

    def graph(self, event_id: str, *, direction: str = "both") -> nx.DiGraph[str]:
        """A directed graph (cause -> effect) around an event: its lineage, its impact, or both."""
        if direction not in {"lineage", "impact", "both"}:
            raise LedgerError("direction is 'lineage', 'impact' or 'both'")
        frames = []
        if direction in {"lineage", "both"}:
            frames.append(self.lineage(event_id))
        if direction in {"impact", "both"}:
            frames.append(self.impact(event_id))
        df = pd.concat(frames).drop_duplicates("id")
        g: nx.DiGraph[str] = nx.DiGraph()
        records = df.to_dict("records")
        for row in records:
            g.add_node(
                row["id"],
                seq=int(row["seq"]),
                topic=row["topic"],
                actor=row["actor"],
                label=f"{row['seq']} {row['topic']}",
            )
        for row in records:
            if isinstance(row["parent_id"], str) and row["parent_id"] in g:
                g.add_edge(row["parent_id"], row["id"])
        return g
