"""The task executor: runs pending tasks with the handler registered for their kind, as lessons say.

``ws.executor.register(kind, handler, max_attempts=3, backoff=30.0)`` registers ``handler(task, ws) -> result``
(a JSON-able value). The loop ``executor`` (``ws.loops``, default every 10 s) picks the due pending tasks,
highest priority first, then oldest, and for each one, while handling its ``task.created`` event (so everything
the run publishes is caused by the task, and through it by whatever created the task):

1. applies the **lessons** for the task's kind: the effects of the active lessons (``ws.learning``, schema in
   ``grace_core.effects``) whose condition holds for the task's ``details.params``, oldest first. A run that
   would start in an hour a lesson avoids is deferred to the next allowed hour (``task.deferred``); parameter
   overrides reach the handler in ``task.details["params"]``; retry overrides replace the kind's attempts and
   backoff. A seeded share of tasks (``learning.holdout_share``, ``learning.held_out``) is held out of every
   lesson: the baseline the lessons are measured against. Which lessons applied to the run, or would have, is
   recorded on the run (``policy``), so outcomes can be attributed (table ``lesson_runs``);
2. asks governance: ``check("executor", "task.run", "task:<id>", {"kind": ...})`` (a denial
   fails the task with the decision's explanation),
3. moves it to ``running`` (attempt n), calls the handler,
4. moves it to ``done`` with the handler's result, or, when the handler raised, back to ``pending`` with a retry
   time ``backoff * 2**(n-1)`` seconds later on the workspace clock (capped at ``max_backoff``), or to
   ``failed`` once ``max_attempts`` runs failed.

A task whose kind has no handler stays pending with the note ``no handler for kind X`` (a ``task.noted``
event), and runs as soon as a handler is registered. Remediation (or an operator) can raise a kind's backoff
or pause it for a while (``adjust``, an ``executor.kind_adjusted`` event). While the workspace is in the
``read_only`` degraded mode nothing runs. ``runs()`` gives the ended runs with their observable features, the
input of the failure analysis (``grace_core.diagnosis``).

Two handlers come built in, for the tasks the system creates itself:

- ``security_alert`` (Hunter's fan-out): collects the alert's causal lineage (the ids of the events that led to
  it) and a summary of the finding into the result, appends the case to ``/security/cases/<rule>.md`` and
  publishes an ``executor.notification``.
- ``learned`` (the learning engine): investigates the pattern behind it. For the failures of a task kind it runs
  the failure analysis over the kind's whole history and reports, per error type, the failure rates by feature
  and the causes found (with the lessons already acting on the kind); for any pattern it collects the evidence
  of the insights behind it. The report goes to ``/lessons/<pattern>.md`` and an ``executor.notification``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from .causal import handling
from .diagnosis import diagnose, error_type
from .effects import applies, combine, next_allowed
from .errors import ArtifactError, PayloadError, PermissionDenied, TaskError
from .events import Event, canonical_json
from .learning import ActiveEffect, Learning, describe_effect, held_out
from .loops import Loop, Scheduler, negated_window_mean
from .mesh import Message
from .tasks import COLUMNS, Task, _task
from .times import TS, from_us, to_us

if TYPE_CHECKING:
    from .governance import Governance
    from .modes import Modes
    from .tasks import Tasks
    from .workspace import Workspace

__all__ = ["ACTOR", "Executor", "ExecutorLoop", "HandlerSpec", "TaskHandler"]

ACTOR = "executor"
TaskHandler = Callable[[Task, "Workspace"], Any]
MAX_EVIDENCE = 500  # ids kept in a result (the count is always exact)
CASES = "/security/cases"
LESSONS = "/lessons"
KNOWLEDGE = "/knowledge"
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class HandlerSpec:
    """How the tasks of one kind run."""

    kind: str
    handler: TaskHandler
    max_attempts: int = 3
    backoff: float = 30.0  # seconds before the second attempt; doubles with each further attempt
    max_backoff: float = 3600.0

    def delay(self, attempt: int, factor: float = 1.0) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        return float(min(self.max_backoff * factor, self.backoff * factor * 2.0 ** (attempt - 1)))


@dataclass(frozen=True)
class Policy:
    """What the lessons do to one run: the lessons applied (or held out), and their combined effect."""

    lessons: tuple[str, ...] = ()
    held_out: tuple[str, ...] = ()
    effect: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The ``policy`` recorded on the run (empty when no lesson concerned it)."""
        out: dict[str, Any] = {}
        if self.lessons:
            out["lessons"] = list(self.lessons)
            out.update({k: v for k, v in self.effect.items() if k != "avoid_hours"})
        if self.held_out:
            out["held_out"] = list(self.held_out)
        return out

    def outcome_record(self, deferred_by: Sequence[str] = ()) -> dict[str, Any] | None:
        """The ``policy`` recorded on the run's end: the lessons it ran under (those that deferred the task
        included) or was held out of, so that the outcome reaches them (``lesson_runs``)."""
        lessons = list(dict.fromkeys([*deferred_by, *self.lessons]))
        out: dict[str, Any] = {}
        if lessons:
            out["lessons"] = lessons
        if self.held_out:
            out["held_out"] = list(self.held_out)
        return out or None


_NO_POLICY = Policy()


@dataclass(frozen=True)
class _Adjustment:
    """A kind's adjustment by remediation or an operator (``executor.kind_adjusted``)."""

    factor: float
    paused_until: float | None
    reason: str
    by: str


@dataclass(frozen=True)
class _Start:
    """A task about to run: its handler settings (lessons applied), and its ``task.created`` event."""

    task: Task
    spec: HandlerSpec
    factor: float  # the kind's backoff factor (remediation)
    created: Event
    policy: Policy

    @property
    def attempt(self) -> int:
        return self.task.attempts + 1


@dataclass(frozen=True)
class _Context:
    lessons: Mapping[str, Sequence[ActiveEffect]]
    kinds: Mapping[str, _Adjustment]


class ExecutorLoop(Loop):
    """Runs the due pending tasks on every tick (also when no new event arrived: retries come due by time)."""

    name: ClassVar[str] = "executor"
    topics: ClassVar[tuple[str, ...]] = ("task.*", "executor.*")
    params: ClassVar[Mapping[str, Any]] = {"interval": 10.0, "batch_size": 10_000, "max_tasks": 20}
    tunable: ClassVar[Mapping[str, tuple[float, float]]] = {"interval": (1.0, 120.0), "max_tasks": (1, 200)}
    process_idle: ClassVar[bool] = True

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        return self.executor.run_due(limit=int(scheduler.param(self.name, "max_tasks")))

    def objective(self, ws: Workspace, since: float, until: float) -> float | None:
        """Minus the mean seconds from a task's creation to its end (done or failed), for tasks ended in the
        window: the executor does better when work finishes sooner. None when no task ended."""
        return negated_window_mean(
            ws,
            "SELECT avg(epoch(e.ts) - epoch(c.ts)) FROM events e JOIN events c "
            "ON c.id = (e.payload->>'$.task_id') WHERE e.topic = 'task.state_changed' "
            "AND (e.payload->>'$.to') IN ('done', 'failed') "
            f"AND e.ts >= {TS} AND e.ts < {TS}",
            since,
            until,
        )


class Executor:
    """``ws.executor``: handlers per task kind, and the loop that runs the tasks."""

    def __init__(
        self,
        ws: Workspace,
        *,
        loops: Scheduler,
        governance: Governance,
        modes: Modes,
        tasks: Tasks,
        learning: Learning,
    ) -> None:
        self.ws = ws
        self._loops = loops
        self._governance = governance
        self._modes = modes
        self._tasks = tasks
        self._learning = learning
        self._handlers: dict[str, HandlerSpec] = {}
        self._lock = threading.RLock()  # one run at a time per workspace (the loop thread, the CLI, a test)
        self._running: set[str] = set()
        # Tasks left `running` come from a process that stopped mid-run, or from a tick of this one that did not
        # finish; only then is there anything to recover (checked on the first tick, and after such a tick).
        self._recovered = False
        ws.projections.register(
            "executor_kinds", "executor.kind_adjusted", _apply_kinds, tables=["executor_kinds"]
        )
        self.loop = loops.add(ExecutorLoop(self))
        self.register("security_alert", handle_security_alert, max_attempts=3, backoff=30.0)
        self.register("learned", handle_learned, max_attempts=3, backoff=60.0)
        self.register("knowledge", handle_knowledge, max_attempts=3, backoff=60.0)

    # -- handlers --------------------------------------------------------------------------------------------
    def register(
        self,
        kind: str,
        handler: TaskHandler,
        *,
        max_attempts: int = 3,
        backoff: float = 30.0,
        max_backoff: float = 3600.0,
    ) -> HandlerSpec:
        """Run tasks of ``kind`` with ``handler(task, ws)``; its return value (JSON-able) is the task's result.

        A handler that raises is retried ``backoff``, ``2*backoff``, ``4*backoff``... seconds later (workspace
        clock, capped at ``max_backoff``) until ``max_attempts`` runs failed; then the task fails. Registering a
        kind again replaces its handler. Handlers should be idempotent: a run interrupted by a crash runs again.
        """
        if not isinstance(kind, str) or not kind:
            raise TaskError("a handler needs a task kind")
        if not callable(handler):
            raise TaskError(f"the handler for {kind!r} is not callable")
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
            raise TaskError(f"max_attempts is a whole number >= 1, not {max_attempts!r}")
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise TaskError(f"{name} is a finite number of seconds >= 0, not {value!r}")
        spec = HandlerSpec(kind, handler, max_attempts, float(backoff), float(max_backoff))
        with self._lock:
            self._handlers[kind] = spec
        return spec

    def unregister(self, kind: str) -> None:
        with self._lock:
            self._handlers.pop(kind, None)

    def handler(self, kind: str) -> HandlerSpec | None:
        return self._handlers.get(kind)

    def handlers(self) -> pd.DataFrame:
        """The registered kinds with their retry settings and any adjustment (backoff factor, pause)."""
        adjusted = {r[0]: r for r in self._kind_rows()}
        rows = []
        for kind in sorted(self._handlers):
            spec = self._handlers[kind]
            adj = adjusted.get(kind)
            rows.append(
                {
                    "kind": kind,
                    "handler": getattr(spec.handler, "__qualname__", repr(spec.handler)),
                    "max_attempts": spec.max_attempts,
                    "backoff": spec.backoff,
                    "max_backoff": spec.max_backoff,
                    "backoff_factor": float(adj[1]) if adj else 1.0,
                    "paused_until": adj[2] if adj else None,
                }
            )
        return pd.DataFrame(rows)

    # -- per-kind adjustments (remediation) ------------------------------------------------------------------
    def adjust(
        self,
        kind: str,
        *,
        actor: str,
        reason: str,
        backoff_factor: float | None = None,
        pause_for: float | None = None,
        resume: bool = False,
    ) -> Event:
        """Raise or reset a kind's backoff factor and/or pause it for ``pause_for`` seconds (``resume`` lifts a
        pause); an ``executor.kind_adjusted`` event."""
        factor, paused_until = self.settings(kind)
        if backoff_factor is not None:
            if not math.isfinite(backoff_factor) or backoff_factor <= 0:
                raise TaskError(f"a backoff factor is a positive number, not {backoff_factor!r}")
            factor = float(backoff_factor)
        if pause_for is not None:
            if not math.isfinite(pause_for) or pause_for <= 0:
                raise TaskError(f"a pause is a positive number of seconds, not {pause_for!r}")
            paused_until = self.ws.clock.time() + pause_for
        if resume:
            paused_until = None
        return self.ws.publish(
            "executor.kind_adjusted",
            {
                "kind": kind,
                "backoff_factor": factor,
                "paused_until_us": None if paused_until is None else to_us(paused_until),
                "reason": reason,
            },
            actor=actor,
            resource=f"task_kind:{kind}",
        )

    def settings(self, kind: str) -> tuple[float, float | None]:
        """(backoff factor, paused until as epoch seconds or None) of a kind."""
        adjusted = self._adjustments().get(kind)
        return (1.0, None) if adjusted is None else (adjusted.factor, adjusted.paused_until)

    def _adjustments(self) -> dict[str, _Adjustment]:
        rows = (
            self.ws.ledger.reader()
            .execute(
                "SELECT kind, backoff_factor, epoch_us(paused_until), reason, changed_by FROM executor_kinds"
            )
            .fetchall()
        )
        return {
            str(r[0]): _Adjustment(float(r[1]), None if r[2] is None else from_us(r[2]), str(r[3]), str(r[4]))
            for r in rows
        }

    def _kind_rows(self) -> list[tuple[Any, ...]]:
        return (
            self.ws.ledger.reader()
            .execute("SELECT kind, backoff_factor, paused_until FROM executor_kinds ORDER BY kind")
            .fetchall()
        )

    # -- running ---------------------------------------------------------------------------------------------
    def due(self, limit: int | None = None) -> list[Task]:
        """Pending tasks whose retry time has come, highest priority first, then oldest."""
        now_us = to_us(self.ws.clock.time())
        sql = (
            f"SELECT {COLUMNS} FROM tasks WHERE state = 'pending' AND "
            "(next_attempt_at IS NULL OR epoch_us(next_attempt_at) <= ?) ORDER BY priority DESC, created_at, id"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_task(r) for r in self.ws.ledger.reader().execute(sql, [now_us]).fetchall()]

    def run_due(self, *, limit: int | None = 20) -> dict[str, int]:
        """Run the due tasks (at most ``limit``); returns the non-zero counts by outcome (ran, done, retried,
        failed, waiting, deferred) for the loop's tick event: empty when there was nothing to do, so an idle tick
        records nothing."""
        counts = {"ran": 0, "done": 0, "retried": 0, "failed": 0, "waiting": 0, "deferred": 0}
        if self._modes.is_active("read_only"):
            return {}  # nothing may change; healing lifts the mode
        with self._lock:
            if not self._recovered:
                self._recover()
                self._recovered = True
            tasks = self.due(None)
            context = self._context() if tasks else _Context({}, {})
            starts: list[_Start] = []
            for task in tasks:
                if limit is not None and len(starts) + counts["failed"] >= limit:
                    break
                prepared = self._prepare(task, context)
                if isinstance(prepared, _Start):
                    starts.append(prepared)
                else:
                    counts[prepared] += 1
                    counts["ran"] += prepared == "failed"
            for outcome in self._run_all(starts):
                counts["ran"] += 1
                counts[outcome] += 1
        # Tasks that only wait (no handler, a paused kind) are not news on every tick: their note says why.
        return {k: v for k, v in counts.items() if v} if counts["ran"] or counts["deferred"] else {}

    def run(self, task_id: str) -> Task:
        """Run one pending task now, whatever its retry time (``grace tasks run``); returns it afterwards."""
        self._modes.guard("read_only")
        with self._lock:
            task = self._tasks.get(task_id)
            if task.state != "pending":
                raise TaskError(f"task {task_id} is {task.state}; only a pending task can run")
            prepared = self._prepare(task, self._context(), deferrable=False)
            if isinstance(prepared, _Start):
                self._run_all([prepared])
            task = self._tasks.get(task_id)
            if prepared == "waiting":
                raise TaskError(f"task {task_id} cannot run: {task.note}")
            return task

    def _recover(self) -> None:
        # A task left `running` by a process that stopped mid-run: that attempt is lost, so it counts as failed.
        rows = (
            self.ws.ledger.reader()
            .execute(f"SELECT {COLUMNS} FROM tasks WHERE state = 'running' ORDER BY created_at, id")
            .fetchall()
        )
        for row in rows:
            task = _task(row)
            if task.id in self._running:
                continue
            spec = self._handlers.get(task.kind)
            error = "interrupted: the process stopped while the task ran"
            with handling(self.ws.ledger.get(task.id)):
                if spec is not None and task.attempts >= spec.max_attempts:
                    self._tasks.transition(task.id, "failed", actor=ACTOR, error=error, reason=error)
                else:
                    self._tasks.transition(
                        task.id, "pending", actor=ACTOR, error=error, reason="retry after an interruption"
                    )

    def policy(self, task: Task, lessons: Mapping[str, Sequence[ActiveEffect]] | None = None) -> Policy:
        """What the active lessons (``ws.learning.effects()`` unless given) do to a run of ``task`` now.

        A lesson concerns the run when its condition (``when``) holds for the task's parameters and it changes
        parameters or retries, or the run would start in an hour it avoids. Of those, the ones the task is held
        out of (``learning.held_out``, drawn for each lesson) are recorded as ``held_out``; the others apply.
        """
        candidates = (self._learning.effects() if lessons is None else lessons).get(task.kind)
        if not candidates:
            return _NO_POLICY
        params = task.details.get("params") if isinstance(task.details.get("params"), Mapping) else {}
        hour = int(self.ws.clock.time() // 3600) % 24
        relevant = [
            lesson
            for lesson in candidates
            if applies(lesson.effect, params or {})
            and (
                "params" in lesson.effect
                or "retry" in lesson.effect
                or hour in lesson.effect.get("avoid_hours", ())
            )
        ]
        if not relevant:
            return _NO_POLICY
        share = float(self._loops.param("learning", "holdout_share"))
        held = [lesson for lesson in relevant if held_out(self.ws.seed, task, share, lesson.key)]
        applied = [lesson for lesson in relevant if lesson not in held]
        return Policy(
            lessons=tuple(lesson.id for lesson in applied),
            held_out=tuple(lesson.id for lesson in held),
            effect=combine(lesson.effect for lesson in applied),
        )

    def _context(self) -> _Context:
        """What every run of one tick reads: the lessons' effects and the kinds' adjustments (read once)."""
        return _Context(self._learning.effects(), self._adjustments())

    def _prepare(self, task: Task, context: _Context, *, deferrable: bool = True) -> str | _Start:
        """Everything before a run: a kind without handler or paused waits, a lesson may defer it, governance
        may refuse it (each an outcome); otherwise what the run needs (``_Start``)."""
        ws = self.ws
        spec = self._handlers.get(task.kind)
        if spec is None:
            note = (
                f"no handler for kind {task.kind!r}: it waits for a person, or for a handler registered with "
                "ws.executor.register"
            )
            if task.note != note:
                self._tasks.note(task.id, note, actor=ACTOR)
            return "waiting"
        adjusted = context.kinds.get(task.kind)
        now = ws.clock.time()
        if adjusted is not None and adjusted.paused_until is not None and adjusted.paused_until > now:
            resumes = pd.Timestamp(adjusted.paused_until, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")
            note = f"kind {task.kind!r} paused by {adjusted.by} until {resumes} UTC: {adjusted.reason}"
            if task.note != note:
                self._tasks.note(task.id, note, actor=ACTOR)
            return "waiting"
        created = ws.ledger.get(task.id)
        policy = self.policy(task, context.lessons)
        effect = policy.effect
        if deferrable and effect.get("avoid_hours"):
            until = next_allowed(now, effect["avoid_hours"])
            if until is not None:
                with handling(created):
                    self._tasks.defer(
                        task,
                        until,
                        actor=ACTOR,
                        reason=f"deferred to {_hhmm(until)} UTC by lesson(s) {', '.join(policy.lessons)}",
                        policy=policy.record(),
                    )
                return "deferred"
        if effect.get("retry"):
            spec = dataclasses.replace(spec, **effect["retry"])
        with handling(created):
            try:
                self._governance.check(
                    ACTOR, "task.run", resource=f"task:{task.id}", context={"kind": task.kind}
                )
            except PermissionDenied as exc:
                self._tasks.move(task, "failed", actor=ACTOR, error=str(exc), reason="governance denied")
                return "failed"
        return _Start(task, spec, 1.0 if adjusted is None else adjusted.factor, created, policy)

    def _run_all(self, starts: Sequence[_Start]) -> list[str]:
        """Run prepared tasks: all move to ``running`` in one batch, then each handler runs, then all their ends
        are recorded in one batch (a crash in between leaves them ``running``, and recovery retries them:
        handlers are idempotent). Each event is caused by its task's ``task.created``. Returns the outcomes."""
        if not starts:
            return []
        ws = self.ws
        ws.publish_many(
            [
                self._tasks.message(
                    s.task, "running", attempt=s.attempt, policy=s.policy.record(), cause=s.created
                )
                for s in starts
            ],
            actor=ACTOR,
        )
        self._running.update(s.task.id for s in starts)
        outcomes: list[str] = []
        ends: list[Message] = []
        try:
            for s in starts:
                outcome, end = self._run_one(s)
                outcomes.append(outcome)
                ends.append(end)
        finally:
            self._recovered = len(ends) == len(starts)  # else the next tick recovers the ones left running
            try:
                if ends:
                    ws.publish_many(ends, actor=ACTOR)
            except BaseException:
                self._recovered = False
                raise
            finally:
                self._running.difference_update(s.task.id for s in starts)
        return outcomes

    def _run_one(self, s: _Start) -> tuple[str, Message]:
        """Call one prepared task's handler; its outcome and the ``task.state_changed`` that records it."""
        ws = self.ws
        task, spec, attempt = s.task, s.spec, s.attempt
        effect = s.policy.effect
        details = task.details
        if effect.get("params"):
            details = {**details, "params": {**(details.get("params") or {}), **effect["params"]}}
        # What the handler gets: the task as the running event left it (its projection, without a read).
        running = dataclasses.replace(task, state="running", attempts=attempt, details=details, note=None)
        ended = s.policy.outcome_record(task.deferred_by)
        with handling(s.created):
            try:
                result = spec.handler(running, ws)
                canonical_json({"result": result})
            except PayloadError as exc:
                error = f"the handler's result cannot be stored: {exc}"
            except Exception as exc:  # noqa: BLE001 - any handler error is the task's failure, retried
                error = f"{type(exc).__name__}: {exc}"
            else:
                done = self._tasks.message(
                    running, "done", result=result, attempt=attempt, policy=ended, cause=s.created
                )
                return "done", done
        if attempt >= spec.max_attempts:
            failed = self._tasks.message(
                running,
                "failed",
                attempt=attempt,
                error=error,
                reason=f"failed {attempt} time(s), no attempts left",
                policy=ended,
                cause=s.created,
            )
            return "failed", failed
        delay = spec.delay(attempt, s.factor)
        retry = self._tasks.message(
            running,
            "pending",
            attempt=attempt,
            error=error,
            retry_at=ws.clock.time() + delay,
            reason=f"attempt {attempt} of {spec.max_attempts} failed; retry in {delay:g} s",
            policy=ended,
            cause=s.created,
        )
        return "retried", retry

    # -- inspection ------------------------------------------------------------------------------------------
    def queue(self) -> pd.DataFrame:
        """Open tasks with why they wait: due now, retry at, no handler, paused."""
        return self.ws.sql(
            f"SELECT {COLUMNS} FROM tasks WHERE state IN ('pending', 'running') ORDER BY priority DESC, created_at"
        )

    def attempts(self, *, since: float | None = None, until: float | None = None) -> pd.DataFrame:
        """Ended attempts (one row per run that ended: done, retried or failed) with kind, outcome and error."""
        sql = (
            "SELECT ts, payload->>'$.task_id' AS task_id, payload->>'$.kind' AS kind, "
            "payload->>'$.to' AS outcome, TRY_CAST(payload->>'$.attempt' AS INTEGER) AS attempt, "
            "payload->>'$.error' AS error FROM events WHERE topic = 'task.state_changed' "
            "AND (payload->>'$.from') = 'running'"
        )
        params: list[Any] = []
        if since is not None:
            sql += f" AND ts >= {TS}"
            params.append(to_us(since))
        if until is not None:
            sql += f" AND ts < {TS}"
            params.append(to_us(until))
        return self.ws.sql(sql + " ORDER BY seq", params)


def _hhmm(t: float) -> str:
    return str(pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M"))


# -- built-in handlers ---------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return _SLUG.sub("-", text).strip("-.") or "unnamed"


def _append_note(
    ws: Workspace, path: str, title: str, section: str, *, tags: tuple[str, ...], reason: str
) -> int:
    """Open the note at ``path`` (with ``title``) or append ``section`` to it; returns its version."""
    try:
        current = ws.memory.read(path).content
    except ArtifactError:
        current = f"# {title}\n"
    if section.strip() in current:
        return ws.memory.read(path).version  # a retried run appends nothing twice
    artifact = ws.memory.write(
        path, current.rstrip("\n") + "\n\n" + section, actor=ACTOR, tags=tags, reason=reason
    )
    return artifact.version


def _when(ws: Workspace) -> str:
    return str(pd.Timestamp(ws.clock.time(), unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC"))


def _notify(
    ws: Workspace, task: Task, *, title: str, message: str, severity: str, path: str, n: int
) -> Event:
    return ws.publish(
        "executor.notification",
        {
            "task": task.id,
            "kind": task.kind,
            "title": title,
            "message": message,
            "severity": severity,
            "memory_path": path,
            "evidence_count": n,
        },
        actor=ACTOR,
        resource=f"task:{task.id}",
    )


def handle_security_alert(task: Task, ws: Workspace) -> dict[str, Any]:
    """Evidence (the alert's causal lineage and its finding), a case note, a notification."""
    alert_id = task.details.get("alert")
    if not alert_id:
        raise TaskError("a security_alert task names its Hunter alert in details.alert")
    lineage = ws.causal.lineage(alert_id)  # depth 0 is the alert itself (an unknown id raises LedgerError)
    alert_seq = int(lineage["seq"].iloc[0])
    p = json.loads(lineage["payload"].iloc[0])
    evidence = [str(i) for i in lineage["id"]]
    finding = {
        "rule": p.get("rule"),
        "severity": p.get("severity"),
        "category": p.get("category"),
        "description": p.get("description"),
        "target": p.get("target"),
        "resource": p.get("resource"),
        "from": p.get("actor"),
        "count": p.get("count"),
        "excerpts": list(p.get("excerpts", []))[:5],  # masked by Hunter
    }
    rule = str(p.get("rule", "unknown"))
    path = f"{CASES}/{_slug(rule)}.md"
    topics = " → ".join(str(t) for t in reversed(list(lineage["topic"])))
    section = "\n".join(
        [
            f"## Task {task.id}",
            "",
            f"- handled: {_when(ws)} by the executor",
            f"- alert: {alert_id} (seq {alert_seq}), severity {p.get('severity')}, {p.get('count')} occurrence(s)",
            f"- where: {p.get('target')} {p.get('resource') or ''}".rstrip(),
            f"- text from: {p.get('actor', '-')}",
            f"- causal chain ({len(evidence)} events): {topics}",
            f"- alert details: {task.details.get('memory_path', '-')}",
        ]
    )
    version = _append_note(
        ws,
        path,
        f"Security cases: {rule}",
        section,
        tags=("security", "case", str(p.get("severity", "")), rule),
        reason=f"case of task {task.id}",
    )
    _notify(
        ws,
        task,
        title=f"Security alert handled: {rule}",
        message=(
            f"{finding['description'] or rule}: {finding['count']} occurrence(s); "
            f"evidence attached, case in {path}"
        ),
        severity=str(p.get("severity", "medium")),
        path=path,
        n=len(evidence),
    )
    return {
        "alert": alert_id,
        "finding": finding,
        "evidence": evidence[:MAX_EVIDENCE],
        "evidence_count": len(evidence),
        "memory_path": path,
        "memory_version": version,
    }


def handle_knowledge(task: Task, ws: Workspace) -> dict[str, Any]:
    """Write what resolved a conversation to a memory note under ``/knowledge``, with its provenance."""
    summary = str(task.details.get("summary") or "").strip()
    if not summary:
        raise TaskError("a knowledge task needs the summary to write down")
    title = str(task.details.get("title") or "Resolved conversation").strip()
    conversation = str(task.details.get("conversation") or task.id)
    evidence = [str(i) for i in task.details.get("evidence", [])]
    path = f"{KNOWLEDGE}/{_slug(title.lower())[:60]}-{_slug(conversation)[:12]}.md"
    provenance = (
        f"Provenance: conversation {conversation}, insight {task.details.get('insight')}, "
        f"evidence {', '.join(evidence)} (written {_when(ws)} by task {task.id})."
    )
    artifact = ws.memory.write(
        path,
        f"# {title}\n\n{summary}\n\n{provenance}\n",
        actor=ACTOR,
        tags=("knowledge", "learned"),
        reason=f"knowledge from insight {task.details.get('insight')}",
    )
    return {"path": path, "version": artifact.version, "evidence": len(evidence)}


def handle_learned(task: Task, ws: Workspace) -> dict[str, Any]:
    """Investigate a learned pattern: the insights' evidence and, for a task kind's failures, the failure
    analysis of its whole history; a report in a memory note and a notification."""
    ids = [str(i) for i in task.details.get("insights", [])]
    rows = []
    if ids:
        rows = (
            ws.ledger.reader()
            .execute(
                'SELECT id, kind, "key", text, score, evidence FROM insights WHERE list_contains(?, id) '
                "ORDER BY created_at, id",
                [ids],
            )
            .fetchall()
        )
    if ids and not rows:
        raise TaskError(f"none of the insights {', '.join(ids[:3])} of this task is recorded")
    evidence: list[str] = []
    for row in rows:
        for event_id in row[5] or []:
            if event_id not in evidence:
                evidence.append(str(event_id))
    pattern = str(task.details.get("pattern") or task.key or task.id)
    lesson = str(task.details.get("lesson") or task.title)
    path = f"{LESSONS}/{_slug(pattern)}.md"
    lines = [f"## Task {task.id}", "", f"- investigated: {_when(ws)}", f"- lesson: {lesson}"]
    if task.details.get("summary"):
        lines.append(f"- latest insight: {task.details['summary']}")
    lines.append(f"- insights: {len(rows)}, resting on {len(evidence)} events")
    lines += [f"  - {r[1]} ({float(r[4]):.2f}): {r[3]}" for r in rows[:10]]
    result: dict[str, Any] = {}
    if pattern.startswith("failure:task:"):
        report = investigate_kind(ws, pattern.removeprefix("failure:task:"))
        result["investigation"] = report
        lines += ["", *_report_lines(report)]
    version = _append_note(
        ws,
        path,
        f"Lesson: {pattern}",
        "\n".join(lines),
        tags=("lesson", "learned"),
        reason=f"investigation of task {task.id}",
    )
    causes = len(result.get("investigation", {}).get("causes", []))
    _notify(
        ws,
        task,
        title=f"Investigated: {pattern}",
        message=(
            f"{lesson} ({len(rows)} insight(s), {len(evidence)} events of evidence"
            + (f"; {causes} cause(s) found" if "investigation" in result else "")
            + f"); report in {path}"
        ),
        severity="info",
        path=path,
        n=len(evidence),
    )
    return {
        "pattern": pattern,
        "lesson": lesson,
        "insights": [r[0] for r in rows],
        "evidence": evidence[:MAX_EVIDENCE],
        "evidence_count": len(evidence),
        "memory_path": path,
        "memory_version": version,
        **result,
    }


def investigate_kind(ws: Workspace, kind: str) -> dict[str, Any]:
    """Why do runs of ``kind`` fail? Failure rates by error type and feature over its whole history, the causes
    the failure analysis finds in the runs no lesson changed, and the lessons acting on the kind."""
    runs = ws.tasks.runs(kinds=[kind])
    unaffected = ws.tasks.runs(kinds=[kind], unaffected=True)
    failed = [r for r in runs if not r["ok"]]
    errors: dict[str, int] = {}
    for r in failed:
        errors[error_type(r["error"])] = errors.get(error_type(r["error"]), 0) + 1
    by_feature: dict[str, dict[str, list[int]]] = {}
    for r in runs:
        for name, value in [*r["features"].items(), ("hour", r["hour"])]:
            bucket = _bucket(name, value)
            counts = by_feature.setdefault(name, {}).setdefault(bucket, [0, 0])
            counts[0] += 1
            counts[1] += 0 if r["ok"] else 1
    causes = diagnose({"runs": unaffected})["insights"]
    lessons = [
        {"id": lesson.id, "effect": lesson.effect, "does": describe_effect(lesson.effect)}
        for lesson in ws.learning.effects().get(kind, [])
    ]
    return {
        "kind": kind,
        "runs": len(runs),
        "failed": len(failed),
        "errors": dict(sorted(errors.items())),
        "failure_rate_by": {
            name: {b: round(c[1] / c[0], 4) for b, c in sorted(buckets.items())}
            for name, buckets in sorted(by_feature.items())
        },
        "causes": [
            {"cause": c["data"]["cause"], "text": c["text"], "effect": c["data"].get("effect")}
            for c in causes
        ],
        "lessons": lessons,
    }


def _bucket(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or name == "hour":
        return str(value) if name != "hour" else f"{int(value):02d}"
    if value <= 0:
        return "<=0"
    low = 10 ** math.floor(math.log10(value))
    return f"{low:g}-{low * 10:g}"


def _report_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [
        f"### Failure analysis of {report['kind']}",
        "",
        f"- runs: {report['runs']}, failed: {report['failed']}; errors: "
        + (", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "none"),
    ]
    for name, rates in report["failure_rate_by"].items():
        lines.append(f"- failure rate by {name}: " + ", ".join(f"{b} {r:.0%}" for b, r in rates.items()))
    lines += [f"- cause: {c['text']}" for c in report["causes"]] or ["- cause: none found"]
    lines += [f"- lesson {x['id']}: {x['does']}" for x in report["lessons"]]
    return lines


def _apply_kinds(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        con.execute(
            f"INSERT OR REPLACE INTO executor_kinds VALUES (?, ?, {TS}, ?, ?, ?, {TS})",
            [p["kind"], p["backoff_factor"], p["paused_until_us"], p["reason"], e.actor, e.id, e.ts_us],
        )
