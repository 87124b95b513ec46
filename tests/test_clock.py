"""Clocks: a manual clock moves only when told to, never backwards; the system clock is the wall clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from grace_core import ManualClock, SystemClock
from grace_core.clock import DEFAULT_START
from grace_core.errors import ClockError


def test_manual_clock_starts_where_told_and_stays_there() -> None:
    start = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock.now() == start
    assert clock.time() == start.timestamp()
    time.sleep(0.01)  # real time passing must not move it
    assert clock.now() == start


def test_manual_clock_default_start_is_fixed() -> None:
    # Two runs that do not name a start must still agree on every timestamp.
    assert ManualClock().now() == ManualClock().now() == DEFAULT_START


def test_manual_clock_accepts_epoch_seconds_and_other_timezones() -> None:
    assert ManualClock(1_000_000.5).time() == 1_000_000.5
    plus_two = timezone(timedelta(hours=2))
    clock = ManualClock(datetime(2026, 1, 1, 2, 0, tzinfo=plus_two))
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


def test_advance_moves_by_seconds_minutes_and_hours() -> None:
    clock = ManualClock(0.0)
    assert clock.advance(1.5) == 1.5
    assert clock.advance(minutes=2) == 121.5
    assert clock.advance(hours=1) == 3721.5
    assert clock.advance(1, minutes=1, hours=1) == 3721.5 + 3661
    assert clock.advance(0) == 7382.5  # standing still is allowed
    assert clock.now() == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=7382.5)


def test_sleep_advances_a_manual_clock_instantly() -> None:
    clock = ManualClock(0.0)
    started = time.perf_counter()
    clock.sleep(3600)
    assert time.perf_counter() - started < 1.0
    assert clock.time() == 3600.0


def test_set_moves_to_a_datetime_or_timestamp() -> None:
    clock = ManualClock(0.0)
    target = datetime(2026, 3, 1, tzinfo=UTC)
    clock.set(target)
    assert clock.now() == target
    clock.set(target.timestamp() + 10)
    assert clock.time() == target.timestamp() + 10
    clock.set(clock.time())  # the same instant is not backwards


def test_manual_clock_never_goes_backwards() -> None:
    clock = ManualClock(100.0)
    with pytest.raises(ClockError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ClockError, match="backwards"):
        clock.advance(minutes=-0.5)
    with pytest.raises(ClockError, match="backwards"):
        clock.set(99.999)
    with pytest.raises(ClockError, match="backwards"):
        clock.set(datetime(1970, 1, 1, tzinfo=UTC))
    assert clock.time() == 100.0  # the refused moves changed nothing


def test_manual_clock_refuses_naive_datetimes() -> None:
    with pytest.raises(ClockError, match="aware"):
        ManualClock(datetime(2026, 1, 1))  # naive: refused


def test_system_clock_is_the_wall_clock() -> None:
    clock = SystemClock()
    before = time.time()
    t = clock.time()
    after = time.time()
    assert before <= t <= after
    now = clock.now()
    assert now.tzinfo is not None
    assert abs(now.timestamp() - time.time()) < 1.0


def test_system_clock_sleep_really_waits_and_ignores_negative() -> None:
    clock = SystemClock()
    started = time.perf_counter()
    clock.sleep(0.05)
    assert time.perf_counter() - started >= 0.045
    started = time.perf_counter()
    clock.sleep(-5)  # a deadline already passed: return at once
    assert time.perf_counter() - started < 0.5
