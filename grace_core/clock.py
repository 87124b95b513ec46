"""Clocks: engines read time only through one of these, so experiments are reproducible."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol

from .errors import ClockError


class Clock(Protocol):
    """What engines may ask of time."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""

    def sleep(self, seconds: float) -> None:
        """Wait (really, or by advancing a manual clock)."""


class SystemClock:
    """The wall clock, for live runs."""

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class ManualClock:
    """A clock that moves only when told to: a simulated hour runs in seconds and repeats exactly."""

    def __init__(self, start: datetime | float = DEFAULT_START) -> None:
        if isinstance(start, datetime):
            if start.tzinfo is None:
                raise ClockError("ManualClock needs an aware datetime (e.g. tzinfo=UTC)")
            start = start.timestamp()
        self._t = float(start)
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0) -> float:
        """Move forward; returns the new time. Time never goes backwards."""
        delta = seconds + 60.0 * minutes + 3600.0 * hours
        if delta < 0:
            raise ClockError("a ManualClock cannot go backwards")
        with self._lock:
            self._t += delta
            return self._t

    def set(self, when: datetime | float) -> None:
        t = when.timestamp() if isinstance(when, datetime) else float(when)
        with self._lock:
            if t < self._t:
                raise ClockError("a ManualClock cannot go backwards")
            self._t = t

    def __repr__(self) -> str:
        return f"ManualClock({self.now().isoformat()})"
