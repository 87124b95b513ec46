"""One way to convert time. The ledger keeps time as integer microseconds since the Unix epoch (UTC).

- seconds (a clock's ``time()``) <-> microseconds: ``to_us`` (rounded to the nearest) and ``from_us``;
- microseconds <-> an aware UTC datetime: ``to_datetime`` (exact) and ``from_datetime``;
- in SQL, a bound microseconds parameter becomes a ``TIMESTAMPTZ`` through ``TS`` (the ``?`` placeholder of
  ``make_timestamptz(?::BIGINT)``), and a column goes back with DuckDB's ``epoch_us(column)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .errors import GraceError

__all__ = ["EPOCH", "TS", "US_PER_SECOND", "from_datetime", "from_us", "to_datetime", "to_us"]

US_PER_SECOND = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TS = "make_timestamptz(?::BIGINT)"  # a SQL placeholder taking epoch microseconds


def to_us(seconds: float) -> int:
    """Seconds since the epoch (a float from a clock) as whole microseconds."""
    return round(seconds * US_PER_SECOND)


def from_us(us: int | float) -> float:
    """Microseconds since the epoch as float seconds (what a clock's ``time()`` returns)."""
    return us / US_PER_SECOND


def to_datetime(us: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime, exactly (no float on the way)."""
    return EPOCH + timedelta(microseconds=us)


def from_datetime(when: datetime) -> int:
    """An aware datetime as microseconds since the epoch, exactly."""
    if when.tzinfo is None:
        raise GraceError("a naive datetime has no defined instant; give it a tzinfo (e.g. UTC)")
    return (when - EPOCH) // timedelta(microseconds=1)
