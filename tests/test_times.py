"""Time conversion: microseconds since the epoch <-> seconds <-> datetimes <-> DuckDB TIMESTAMPTZ, one way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_core.errors import GraceError
from grace_core.times import TS, from_datetime, from_us, to_datetime, to_us

# From 1900 to 2200, in microseconds since the epoch.
MICROS = st.integers(min_value=-2_208_988_800_000_000, max_value=7_258_118_400_000_000)


def test_to_datetime_round_trips_microseconds() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    us = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert to_datetime(us) == when
    assert from_datetime(when) == us


@given(MICROS)
def test_datetimes_round_trip_exactly(us: int) -> None:
    assert from_datetime(to_datetime(us)) == us
    assert to_datetime(us).tzinfo is UTC


@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))
def test_seconds_round_trip_to_the_microsecond(us: int) -> None:
    # A clock's float seconds lose nothing a microsecond can hold until far beyond 2100.
    assert to_us(from_us(us)) == us


def test_to_us_rounds_to_the_nearest_microsecond() -> None:
    assert to_us(1.0000004) == 1_000_000
    assert to_us(1.0000006) == 1_000_001
    assert to_us(-0.5e-6 - 1e-9) == -1


def test_a_datetime_in_another_zone_is_the_same_instant() -> None:
    cet = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert from_datetime(cet) == from_datetime(datetime(2026, 1, 1, tzinfo=UTC))


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(GraceError, match="naive datetime"):
        from_datetime(datetime(2026, 1, 1))


_CON = duckdb.connect()
_CON.execute("SET TimeZone = 'UTC'")


@settings(deadline=None)  # a DuckDB query on a loaded machine can take longer than hypothesis' 200 ms
@given(MICROS)
def test_duckdb_reads_and_writes_the_same_instant(us: int) -> None:
    con = _CON.cursor()
    stored, back = con.execute(f"SELECT {TS} AS t, epoch_us(t)", [us]).fetchone()  # type: ignore[misc]
    assert back == us
    assert stored == to_datetime(us)
