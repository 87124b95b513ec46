"""Loops: durable subscribers with a schedule, run live in threads or stepped on a ManualClock.

A process that owns a workspace runs its loops with ``run_foreground`` (what ``grace loops start`` does); another
process asks it to stop them with ``request_stop``: a request file beside the workspace (``<workspace>.loops-stop``,
JSON ``{"loop", "by"}``, mode 0600) that the running process honours within a fraction of a second -- it stops
the loops as the requester (governed, recorded as ``loop.stopped`` events) -- and removes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from .clock import ManualClock
from .errors import LoopError, PayloadError
from .events import Event, canonical_json, is_finite_number
from .files import write_private
from .mesh import Message
from .projections import topic_matcher
from .times import TS, to_us

if TYPE_CHECKING:
    from .governance import Governance
    from .mesh import Mesh
    from .workspace import Workspace

__all__ = [
    "STOP_SUFFIX",
    "Loop",
    "LoopStatus",
    "Scheduler",
    "negated_window_mean",
    "request_stop",
    "run_foreground",
]

STATES = ("stopped", "running", "paused")


class Loop:
    """Subclass and override ``process``. Parameters live in the workspace; ``params`` gives the defaults.

    Each tick reads the events after the loop's cursor (those matching ``topics``; ``loop.*`` bookkeeping is
    skipped), calls ``process`` with them, then records a ``loop.ticked`` event that moves the cursor in the
    same transaction, so a restart resumes exactly where the last tick ended.
    """

    name: ClassVar[str] = "loop"
    topics: ClassVar[tuple[str, ...]] = ("*",)
    params: ClassVar[Mapping[str, Any]] = {"interval": 10.0, "batch_size": 10_000}
    # True: ``process`` runs on every tick, even with no new event (loops that poll state: health checks, retries).
    process_idle: ClassVar[bool] = False
    # The tuning contract of the meta-loop: parameters it may change, with (min, max) bounds governance enforces,
    # and ``objective`` (higher is better). A loop without ``tunable`` is never tuned.
    tunable: ClassVar[Mapping[str, tuple[float, float]]] = {}

    def objective(self, ws: Workspace, since: float, until: float) -> float | None:
        """How well the loop did between two workspace-clock instants (higher is better; None: no data)."""
        return None

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        """Handle a batch of new events; return a small summary for the tick event (or None)."""
        raise LoopError(f"loop {self.name!r} ({type(self).__name__}) does not implement process()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def negated_window_mean(ws: Workspace, sql: str, since: float, until: float) -> float | None:
    """Minus the one value ``sql`` selects (a mean) over the window [since, until), whose bounds are its two
    ``TS`` parameters; None when it selects nothing: an objective for a loop that does better when the mean
    (seconds to finish, to repair) is lower."""
    row = ws.ledger.reader().execute(sql, [to_us(since), to_us(until)]).fetchone()
    return None if row is None or row[0] is None else -float(row[0])


@dataclass
class LoopStatus:
    name: str
    state: str = "stopped"
    ticks: int = 0
    errors: int = 0
    last_tick: float | None = None
    next_due: float | None = None
    last_error: str | None = None


class Scheduler:
    """Owns the loops of a workspace: start, stop, pause, step, and simulated time.

    With ``governance`` (a workspace gives its own), parameter changes always pass
    ``governance.check(actor, "loop.set_param", ...)``, and start, stop, pause, resume and step pass
    ``loop.start``/``loop.stop``/``loop.step`` when an actor is named (the scheduler's own ticks are not
    governed: they are the schedule the governed start asked for).
    """

    def __init__(self, mesh: Mesh, *, governance: Governance | None = None, actor: str = "scheduler") -> None:
        self.mesh = mesh
        self.ledger = mesh.ledger
        self.clock = mesh.clock
        self.actor = actor
        self._loops: dict[str, Loop] = {}
        self._status: dict[str, LoopStatus] = {}
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._tick_locks: dict[str, threading.Lock] = {}
        self._lock = threading.RLock()
        self.governance = governance
        # Parameter values read from loop_params; set_param keeps it current (a tick reads several each time).
        self._param_cache: dict[tuple[str, str], Any] = {}
        self._cursors: dict[str, int] = {}  # loop -> its cursor (see cursor())
        # A floor under every tunable ``interval`` (bounds()): set by a simulation, so that a tuner cannot undo the
        # schedule it keeps a simulated day to (a 2 s loop ticks 43200 times a day).
        self.min_interval: float | None = None

    # -- registry --------------------------------------------------------------------------------------------
    def add(self, loop: Loop) -> Loop:
        with self._lock:
            if loop.name in self._loops:
                raise LoopError(f"a loop named {loop.name!r} is registered already")
            if "interval" not in loop.params:
                raise LoopError(f"loop {loop.name!r} declares no 'interval' parameter")
            self._loops[loop.name] = loop
            self._status[loop.name] = LoopStatus(loop.name)
            self._tick_locks[loop.name] = threading.Lock()
        return loop

    def __getitem__(self, name: str) -> Loop:
        try:
            return self._loops[name]
        except KeyError:
            known = ", ".join(sorted(self._loops)) or "none"
            raise LoopError(f"no loop named {name!r}; loops: {known}") from None

    @property
    def names(self) -> list[str]:
        return list(self._loops)

    def _select(self, name: str | None) -> list[str]:
        return self.names if name is None else [self[name].name]

    # -- parameters ------------------------------------------------------------------------------------------
    def param(self, name: str, key: str) -> Any:
        loop = self[name]
        if key not in loop.params:
            raise LoopError(f"loop {name!r} has no parameter {key!r}; it has {', '.join(loop.params)}")
        cached = self._param_cache.get((name, key), _MISSING)
        if cached is not _MISSING:
            return cached
        row = (
            self.ledger.reader()
            .execute("SELECT value FROM loop_params WHERE loop = ? AND name = ?", [name, key])
            .fetchone()
        )
        value = json.loads(row[0]) if row else loop.params[key]
        self._param_cache[(name, key)] = value
        return value

    def bounds(self, name: str, key: str) -> tuple[float, float] | None:
        """The (min, max) a tuner may set ``key`` to (from the loop's ``tunable``), or None when not tunable.

        While ``min_interval`` is set (a simulation does), an ``interval`` may not be tuned below it either.
        """
        bounds = type(self[name]).tunable.get(key) if self[name].tunable else None
        if bounds is None:
            return None
        lo, hi = float(bounds[0]), float(bounds[1])
        if key == "interval" and self.min_interval is not None:
            lo = max(lo, float(self.min_interval))
            hi = max(hi, lo)
        return lo, hi

    def params_of(self, name: str) -> dict[str, Any]:
        return {key: self.param(name, key) for key in self[name].params}

    def set_param(self, name: str, key: str, value: Any, *, actor: str, reason: str = "") -> Event:
        """Change a loop parameter; the change is a ``loop.param_changed`` event.

        Governance decides first (``loop.set_param`` on ``loop:<name>``; context: key, value, old and, for a
        tunable parameter, min, max and within_bounds): the default pack lets service actors and admins change
        parameters, asks an admin to approve a researcher's change, and refuses the meta-loop and researchers a
        value outside the loop's ``tunable`` bounds. Refusals raise PermissionDenied and change nothing.
        """
        old = self.param(name, key)
        default = self[name].params[key]
        if isinstance(default, int | float) and not isinstance(default, bool):
            if not is_finite_number(value) or value <= 0:  # NaN and inf would stall or spin the schedule
                raise LoopError(f"{name}.{key} must be a positive number, not {value!r}")
            if isinstance(default, int) and key != "interval" and not float(value).is_integer():
                raise LoopError(f"{name}.{key} must be a whole number, not {value!r}")  # e.g. a batch size
        try:
            canonical_json({"v": value})  # fail early on values that cannot be stored
        except PayloadError as exc:
            raise LoopError(f"{name}.{key} cannot be stored: {exc}") from exc
        if self.governance is not None:
            context: dict[str, Any] = {"key": key, "value": value, "old": old}
            bounds = self.bounds(name, key)
            if bounds is not None:
                within = is_finite_number(value) and bounds[0] <= float(value) <= bounds[1]
                context.update({"min": bounds[0], "max": bounds[1], "within_bounds": within})
            self.governance.check(actor, "loop.set_param", resource=f"loop:{name}", context=context)
        event = self.mesh.publish(
            "loop.param_changed",
            {"loop": name, "name": key, "old": old, "new": value, "reason": reason},
            actor=actor,
            resource=f"loop:{name}",
        )
        self._param_cache[(name, key)] = value
        status = self._status[name]
        if key == "interval" and status.last_tick is not None:
            status.next_due = status.last_tick + float(value)
        return event

    # -- control ---------------------------------------------------------------------------------------------
    def start(self, name: str | None = None, *, actor: str | None = None) -> None:
        """Run loops on their schedule: in a thread each on a live clock, or from ``run_for`` on a ManualClock."""
        for n in self._select(name):
            status = self._status[n]
            if status.state == "running":
                continue
            self._govern(actor, "loop.start", n)
            status.next_due = self.clock.time()
            if not isinstance(self.clock, ManualClock):
                # The thread runs before the loop is marked running (it idles until then): a health check
                # between the two must never find a running loop without its thread ("thread is gone").
                stop = threading.Event()
                thread = threading.Thread(
                    target=self._live, args=(n, stop), name=f"grace-loop-{n}", daemon=True
                )
                self._threads[n] = (thread, stop)
                thread.start()
            try:
                self._set_state(n, "running", actor)
            except BaseException:
                self._join(n, 10.0)
                raise

    def stop(self, name: str | None = None, *, actor: str | None = None, timeout: float = 10.0) -> None:
        for n in self._select(name):
            if self._status[n].state == "stopped":
                continue
            self._govern(actor, "loop.stop", n)
            self._set_state(n, "stopped", actor)
            self._join(n, timeout)

    def pause(self, name: str | None = None, *, actor: str | None = None) -> None:
        for n in self._select(name):
            if self._status[n].state == "running":
                self._govern(actor, "loop.stop", n)  # a pause is a stop that keeps the schedule
                self._set_state(n, "paused", actor)

    def resume(self, name: str | None = None, *, actor: str | None = None) -> None:
        for n in self._select(name):
            if self._status[n].state == "paused":
                self._govern(actor, "loop.start", n)
                self._set_state(n, "running", actor)

    def _govern(self, actor: str | None, action: str, name: str) -> None:
        if actor is not None and self.governance is not None:
            self.governance.check(actor, action, resource=f"loop:{name}")

    def _set_state(self, name: str, state: str, actor: str | None) -> None:
        old = self._status[name].state
        self._status[name].state = state
        self.mesh.publish(
            f"loop.{_VERB[state]}",
            {"loop": name, "from": old},
            actor=actor or self.actor,
            resource=f"loop:{name}",
        )

    def _join(self, name: str, timeout: float) -> None:
        entry = self._threads.pop(name, None)
        if entry is not None:
            thread, stop = entry
            stop.set()
            if thread is not threading.current_thread():
                thread.join(timeout)

    def close(self) -> None:
        """Stop every loop thread without recording state changes (the workspace is closing)."""
        for name in list(self._threads):
            self._join(name, 10.0)

    # -- ticking ---------------------------------------------------------------------------------------------
    def cursor(self, name: str) -> int:
        # Only this scheduler's ticks move a loop's cursor, so it is read from the workspace once and then
        # kept current by step() (a tick, a health check and status() all ask for it).
        cached = self._cursors.get(name)
        if cached is None:
            cached = self._cursors[name] = self.ledger.cursor(f"loop:{self[name].name}")
        return cached

    def step(self, name: str, *, actor: str | None = None) -> int:
        """Run one tick of a loop now, whatever its state or schedule; returns how many events it processed.

        A tick that found nothing new (no event after the cursor but ``loop.*`` bookkeeping) and whose
        ``process`` (run anyway by ``process_idle`` loops) returned no summary records nothing on the ledger:
        an idle workspace does not fill its ledger with empty ticks. Its time still counts as the loop's last
        tick (``status()``, health checks).
        """
        loop = self[name]
        status = self._status[name]
        self._govern(actor, "loop.step", name)
        with self._tick_locks[name]:
            cursor = self.cursor(name)
            head = self.ledger.head[0]
            batch = int(self.param(name, "batch_size")) if "batch_size" in loop.params else 10_000
            fetched = self.ledger.events(since=cursor, until=head, limit=batch)
            matchers = [topic_matcher(p) for p in loop.topics]
            events = [
                e for e in fetched if not e.topic.startswith("loop.") and any(m(e.topic) for m in matchers)
            ]
            to_seq = fetched[-1].seq if fetched else cursor
            try:
                summary = dict(loop.process(events, self) or {}) if events or loop.process_idle else {}
            except Exception as exc:
                status.errors += 1
                status.last_error = f"{type(exc).__name__}: {exc}"
                self.mesh.publish(
                    "loop.failed",
                    {"loop": name, "error": status.last_error[:2000], "cursor": cursor},
                    actor=self.actor,
                    resource=f"loop:{name}",
                )
                raise
            finally:
                status.last_tick = self.clock.time()
                status.next_due = status.last_tick + float(self.param(name, "interval"))
            status.ticks += 1
            status.last_error = None
            # An idle tick records nothing, unless bookkeeping events pile up after the cursor (then the cursor
            # moves past them, so a small batch never fills with them for good).
            idle = not summary and not any(not e.topic.startswith("loop.") for e in fetched)
            if idle and len(fetched) < min(batch, _IDLE_SKIP_LIMIT):
                return 0
            payload = {
                "loop": name,
                "processed": len(events),
                "from_seq": cursor,
                "to_seq": to_seq,
                "lag": max(0, head - to_seq),
                **summary,
            }
            self.mesh.publish_many(
                [Message("loop.ticked", payload, f"loop:{name}")],
                actor=self.actor,
                cursors={f"loop:{name}": to_seq},
            )
            self._cursors[name] = to_seq
            return len(events)

    def run_for(self, *, seconds: float = 0.0, minutes: float = 0.0, hours: float = 0.0) -> int:
        """On a ManualClock: advance simulated time, ticking each running loop whenever it is due.

        Deterministic: loops due at the same instant tick in registration order. Returns the number of ticks.
        """
        if not isinstance(self.clock, ManualClock):
            raise LoopError(
                "run_for needs a workspace opened with a ManualClock; on a live clock use start()"
            )
        end = self.clock.time() + seconds + 60 * minutes + 3600 * hours
        ticks = 0
        while True:
            due = [
                (s.next_due, i, n)
                for i, (n, s) in enumerate(self._status.items())
                if s.state == "running" and s.next_due is not None and s.next_due <= end
            ]
            if not due:
                break
            when, _, name = min(due)
            if when > self.clock.time():
                self.clock.set(when)
            self.mesh.pump()
            try:
                self.step(name)
            except Exception:  # noqa: BLE001, S112 - recorded as loop.failed; a simulation goes on
                continue
            finally:
                ticks += 1
        if end > self.clock.time():
            self.clock.set(end)
        self.mesh.pump()
        return ticks

    def _live(self, name: str, stop: threading.Event) -> None:
        while not stop.is_set():
            status = self._status[name]
            wait = (status.next_due or 0.0) - self.clock.time()
            if wait > 0:
                stop.wait(min(wait, 1.0))
                continue
            if status.state != "running":
                stop.wait(0.2)
                continue
            try:
                self.step(name)
            except Exception:  # noqa: BLE001, S112 - recorded as loop.failed; the loop keeps its schedule
                continue

    # -- inspection ------------------------------------------------------------------------------------------
    def status(self) -> pd.DataFrame:
        """One row per loop: state, cursor, lag, ticks, errors, parameters.

        ``lag`` counts the events after the loop's cursor that it would process (``loop.*`` bookkeeping, such as
        its own tick event, is not work), so a loop that is caught up shows 0.
        """
        rows = []
        for name, s in self._status.items():
            cursor = self.cursor(name)
            lag = (
                self.ledger.reader()
                .execute(
                    "SELECT count(*) FROM events WHERE seq > ? AND NOT starts_with(topic, 'loop.')", [cursor]
                )
                .fetchone()
            )
            thread = self._threads.get(name)
            rows.append(
                {
                    "loop": name,
                    "state": s.state,
                    "cursor": cursor,
                    "lag": int(lag[0]) if lag else 0,
                    "ticks": s.ticks,
                    "errors": s.errors,
                    "alive": bool(thread and thread[0].is_alive()) or isinstance(self.clock, ManualClock),
                    "last_tick": _ts(s.last_tick),
                    "next_due": _ts(s.next_due),
                    "last_error": s.last_error,
                    **{f"param.{k}": v for k, v in self.params_of(name).items()},
                }
            )
        return pd.DataFrame(rows)

    def state(self, name: str) -> LoopStatus:
        return self._status[self[name].name]


# -- running in the foreground, stopped from another process ----------------------------------------------------
STOP_SUFFIX = ".loops-stop"  # beside the workspace file: the stop request a running process polls for
_POLL_S = 0.2


def run_foreground(
    ws: Workspace,
    name: str | None = None,
    *,
    actor: str,
    seconds: float | None = None,
    started: Callable[[list[str]], None] | None = None,
) -> None:
    """Run the loops (or loop ``name``) live until ``seconds`` pass, a stop request stops them all, or the
    caller is interrupted (KeyboardInterrupt propagates); the loops are stopped as ``actor`` on the way out.

    ``started`` is called with the names of the loops running once they started.
    """
    request = Path(ws.path + STOP_SUFFIX)
    ws.loops.start(name, actor=actor)
    if started is not None:
        started([n for n in ws.loops.names if ws.loops.state(n).state == "running"])
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(_POLL_S)
            if request.exists():
                asked = _read_request(request)
                ws.loops.stop(asked.get("loop"), actor=asked.get("by") or actor)
                with contextlib.suppress(OSError):
                    request.unlink()
                if not any(ws.loops.state(n).state == "running" for n in ws.loops.names):
                    return
    finally:
        ws.loops.stop(name, actor=actor)


def request_stop(path: str, *, loop: str | None = None, by: str, wait: float = 10.0) -> None:
    """Ask the process running the loops of the workspace at ``path`` to stop them (or ``loop``), and wait for
    it to do so; raises LoopError (and withdraws the request) when it does not within ``wait`` seconds."""
    request = Path(path + STOP_SUFFIX)
    write_private(request, json.dumps({"loop": loop, "by": by}))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not request.exists():
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        request.unlink()
    raise LoopError(f"the process that owns {path} did not honour the stop request within {wait:g} s")


def _read_request(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


_VERB = {"running": "started", "stopped": "stopped", "paused": "paused"}
_MISSING = object()
_IDLE_SKIP_LIMIT = 256  # bookkeeping events an idle tick may leave after its cursor before it records a tick


def _ts(t: float | None) -> pd.Timestamp | None:
    return pd.Timestamp(t, unit="s", tz="UTC") if t is not None else None


def apply_loop_params(con: Any, events: list[Event]) -> None:
    """Projection: the current value of each loop parameter, from ``loop.param_changed``."""
    for e in events:
        p = e.payload
        con.execute("DELETE FROM loop_params WHERE loop = ? AND name = ?", [p["loop"], p["name"]])
        con.execute(
            f"INSERT INTO loop_params VALUES (?, ?, ?, ?, {TS})",
            [p["loop"], p["name"], canonical_json({"v": p["new"]})[5:-1], e.id, e.ts_us],
        )
