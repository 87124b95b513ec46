"""Projections: engine tables kept up to date from the events that change them, in the same transaction."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import translate

import duckdb

from .errors import EventError, WorkspaceError
from .events import Event

__all__ = ["Applier", "Projections", "topic_matcher"]

Applier = Callable[[duckdb.DuckDBPyConnection, list[Event]], None]


def topic_matcher(pattern: str) -> Callable[[str], bool]:
    """Glob over topics: ``*`` matches any run of characters (dots included), ``?`` one character.

    Live subscribers match in Python and durable ones with DuckDB's ``GLOB``, so only the syntax both read
    the same way is accepted: ``[...]`` classes and ``\\`` escapes differ in edge cases (``[a-]``, ``\\a``).
    """
    if not isinstance(pattern, str) or "[" in pattern or "\\" in pattern:
        raise EventError(
            f"bad topic pattern {pattern!r}: use topic characters with the wildcards '*' and '?' "
            "('[...]' classes and '\\' escapes are not supported)"
        )
    match = re.compile(translate(pattern)).match
    return lambda topic: match(topic) is not None


@dataclass(frozen=True)
class _Projection:
    name: str
    pattern: str
    applier: Applier
    tables: tuple[str, ...]
    matches: Callable[[str], bool]


class Projections:
    """The registry every engine adds its projection to; replay runs the same appliers."""

    def __init__(self) -> None:
        self._items: list[_Projection] = []
        self._by_topic: dict[str, list[_Projection]] = {}

    def register(self, name: str, pattern: str, applier: Applier, *, tables: Sequence[str]) -> None:
        if any(p.name == name for p in self._items):
            raise WorkspaceError(f"projection {name!r} is registered already")
        self._items.append(_Projection(name, pattern, applier, tuple(tables), topic_matcher(pattern)))
        self._by_topic.clear()

    @property
    def tables(self) -> list[str]:
        return [t for p in self._items for t in p.tables]

    def __iter__(self) -> Iterator[_Projection]:
        """The registered projections (name, pattern, tables, matches), in the order they are applied."""
        return iter(list(self._items))

    def _targets(self, topic: str) -> list[_Projection]:
        targets = self._by_topic.get(topic)
        if targets is None:
            targets = self._by_topic[topic] = [p for p in self._items if p.matches(topic)]
        return targets

    def touch(self, events: Sequence[Event]) -> bool:
        """Whether any projection applies to any of ``events`` (else ``apply`` writes nothing)."""
        return any(self._targets(event.topic) for event in events)

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        """Hand each applier its events, in ledger order. Runs inside the ledger's write transaction."""
        batches: dict[str, list[Event]] = {}
        for event in events:
            for projection in self._targets(event.topic):
                batches.setdefault(projection.name, []).append(event)
        if not batches:
            return
        for projection in self._items:
            selected = batches.get(projection.name)
            if selected:
                try:
                    projection.applier(con, selected)
                except (EventError, KeyError, TypeError, ValueError) as exc:
                    # An engine's topic published with a payload its projection cannot use (e.g. a raw
                    # `task.created` without a kind): refuse the whole batch with a clear reason.
                    raise EventError(
                        f"projection {projection.name!r} cannot apply these {projection.pattern} events "
                        f"(first: {selected[0].topic}): {type(exc).__name__}: {exc}; nothing was written"
                    ) from exc
