"""Self-healing: health checks, incidents, remediation rules as data, degraded modes.

The loop ``healing`` (``ws.loops``, default every 30 s) checks every component:

- ``loop:<name>``: a started loop whose last tick is older than ``stall_factor`` (3) intervals, or whose thread
  died, is **stalled** (critical); one whose last tick failed is **failing** (warn); one far behind the ledger
  is **lagging** (warn).
- ``ledger``: the 95th percentile of recent write-transaction latencies (live runs; a ManualClock run does not
  measure host time, so that the same seed gives the same ledger).
- ``mesh``: dead letters not yet replayed, and the live subscribers' backlog.
- ``executor``: the queue of pending tasks, and the share of failed runs per task kind over a window.
- ``workspace``: the size of the workspace file (and its WAL) on disk (live runs, like the latency).
- ``chat``: the share of chat messages whose responder failed, over a window.

Each tick publishes ``healing.checked`` (every component's status), ``healing.status_changed`` for each change,
and gauges (``grace_health_status`` 0/1/2 per component, queue depth, dead letters, ...). A component leaving ok
opens an **incident** (``healing.incident_opened``, caused by the event that shows the fault when there is one:
the stalled loop's last tick, the latest dead letter, the latest failed run). The remediation rules
(``grace_core/data/remediation.yaml``; their actions are ``healing.remediated`` events caused by the incident)
restart loops, replay dead letters, back off or pause a failing task kind, enter or leave degraded modes; with no
rule, a ``healing.alert`` and a ``healing_alert`` task ask a person. The component's return to ok resolves the
incident (``healing.incident_resolved`` with its time to repair); ``incidents()`` lists them and
``grace_healing_mttr_seconds`` records each repair time.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.resources
import json
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import yaml

from .causal import handling
from .clock import ManualClock
from .errors import GraceError, LedgerError, PolicyError
from .events import Event
from .loops import Loop, Scheduler, negated_window_mean
from .mesh import Message
from .modes import MODES
from .times import TS, from_us, to_us

if TYPE_CHECKING:
    from .executor import Executor
    from .governance import Governance
    from .modes import Modes
    from .tasks import Tasks
    from .workspace import Workspace

__all__ = ["ACTOR", "STATUSES", "Check", "Healing", "HealingLoop", "RemediationRule", "default_rules"]

ACTOR = "healing"
STATUSES = ("ok", "warn", "critical")
RANK = {s: i for i, s in enumerate(STATUSES)}
ACTIONS = (
    "restart_loop",
    "replay_dead_letters",
    "backoff_kind",
    "pause_kind",
    "resume_kind",
    "enter_mode",
    "leave_mode",
    "alert",
)


@dataclass(frozen=True)
class Check:
    """The health of one component at one instant."""

    component: str
    status: str
    reason: str  # a code rules match on: ok, stalled, failing, lagging, latency, dead_letters, backlog, ...
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)  # e.g. the loop or task kind concerned
    evidence: str | None = None  # id of the event that shows the fault, if any (the incident's cause)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class RemediationRule:
    id: str
    component: str  # glob, e.g. loop:*
    statuses: tuple[str, ...]
    reason: tuple[str, ...]  # empty: any reason
    actions: tuple[tuple[str, Mapping[str, Any]], ...]
    on_resolve: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    retry_after: float | None = None
    description: str = ""

    def matches(self, check: Check) -> bool:
        return (
            fnmatch.fnmatchcase(check.component, self.component)
            and check.status in self.statuses
            and (not self.reason or check.reason in self.reason)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "component": self.component,
            "status": list(self.statuses),
            "reason": list(self.reason),
            "actions": [{name: dict(args)} for name, args in self.actions],
            "on_resolve": [{name: dict(args)} for name, args in self.on_resolve],
            "retry_after": self.retry_after,
            "description": self.description,
        }


def _action(spec: Any, rule_id: str) -> tuple[str, Mapping[str, Any]]:
    args: Any
    if isinstance(spec, str):
        name, args = spec, {}
    elif isinstance(spec, Mapping) and len(spec) == 1:
        name, args = next(iter(spec.items()))
        args = args or {}
    else:
        raise PolicyError(f"rule {rule_id}: an action is a name or {{name: {{args}}}}, not {spec!r}")
    if name not in ACTIONS:
        raise PolicyError(f"rule {rule_id}: unknown action {name!r}; actions: {', '.join(ACTIONS)}")
    if not isinstance(args, Mapping):
        raise PolicyError(f"rule {rule_id}: the arguments of {name} are a mapping, not {args!r}")
    mode = args.get("mode")
    if mode is not None and mode not in MODES:
        raise PolicyError(f"rule {rule_id}: unknown degraded mode {mode!r}; modes: {', '.join(MODES)}")
    return str(name), dict(args)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def rules_from_dict(data: Mapping[str, Any]) -> tuple[RemediationRule, ...]:
    """Validate a remediation pack ``{name, rules: [...]}`` (the YAML's shape)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("rules"), list):
        raise PolicyError("a remediation pack is a mapping with a list of `rules`")
    rules = []
    seen = set()
    for raw in data["rules"]:
        if not isinstance(raw, Mapping) or not raw.get("id") or not raw.get("component"):
            raise PolicyError(f"a remediation rule needs an id and a component: {raw!r}")
        rid = str(raw["id"])
        if rid in seen:
            raise PolicyError(f"two remediation rules are named {rid!r}")
        seen.add(rid)
        statuses = _as_tuple(raw.get("status", ("warn", "critical")))
        bad = [s for s in statuses if s not in ("warn", "critical")]
        if bad or not statuses:
            raise PolicyError(f"rule {rid}: status is warn and/or critical, not {list(statuses)!r}")
        retry = raw.get("retry_after")
        if retry is not None and (
            not isinstance(retry, int | float) or not math.isfinite(retry) or retry <= 0
        ):
            raise PolicyError(f"rule {rid}: retry_after is a positive number of seconds, not {retry!r}")
        actions = tuple(_action(a, rid) for a in raw.get("actions") or [])
        if not actions:
            raise PolicyError(f"rule {rid} has no actions")
        rules.append(
            RemediationRule(
                rid,
                str(raw["component"]),
                statuses,
                _as_tuple(raw.get("reason")),
                actions,
                tuple(_action(a, rid) for a in raw.get("on_resolve") or []),
                None if retry is None else float(retry),
                " ".join(str(raw.get("description", "")).split()),
            )
        )
    return tuple(rules)


def default_rules_text() -> str:
    return (
        importlib.resources.files("grace_core").joinpath("data/remediation.yaml").read_text(encoding="utf-8")
    )


def default_rules() -> tuple[RemediationRule, ...]:
    """The remediation rules a workspace starts with (``grace_core/data/remediation.yaml``)."""
    return rules_from_dict(yaml.safe_load(default_rules_text()))


class HealingLoop(Loop):
    """Checks every component on every tick (also when nothing new happened: a stall is the absence of events)."""

    name: ClassVar[str] = "healing"
    topics: ClassVar[tuple[str, ...]] = ("*",)
    params: ClassVar[Mapping[str, Any]] = {
        "interval": 30.0,
        "batch_size": 10_000,
        "stall_factor": 3.0,  # a loop is stalled when its last tick is older than this many intervals
        "lag_warn": 10_000,  # events a loop may be behind before it is lagging
        "latency_warn_ms": 250.0,
        "latency_critical_ms": 2000.0,
        "dead_letters_critical": 20,
        "backlog_warn": 10_000,
        "queue_warn": 500,
        "queue_critical": 5000,
        "failure_window": 600.0,  # seconds of task runs (and chat messages) the failure rates look at
        "failure_min_runs": 3,
        "failure_warn": 0.5,
        "failure_critical": 0.8,
        "size_warn_mb": 2048.0,
        "size_critical_mb": 8192.0,
        "retry_after": 300.0,  # default seconds before a rule without its own retry_after runs again
    }
    tunable: ClassVar[Mapping[str, tuple[float, float]]] = {
        "interval": (5.0, 300.0),
        "stall_factor": (2.0, 10.0),
        "failure_window": (60.0, 3600.0),
    }
    process_idle: ClassVar[bool] = True

    def __init__(self, healing: Healing) -> None:
        self.healing = healing

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        checks = self.healing.check()
        worst = max((RANK[c.status] for c in checks), default=0)
        return {"overall": STATUSES[worst], "not_ok": sum(1 for c in checks if c.status != "ok")}

    def objective(self, ws: Workspace, since: float, until: float) -> float | None:
        """Minus the mean time to repair (seconds) of the incidents resolved in the window; None if none was."""
        return negated_window_mean(
            ws,
            f"SELECT avg(mttr_s) FROM incidents WHERE resolved_at >= {TS} AND resolved_at < {TS}",
            since,
            until,
        )


class Healing:
    """``ws.healing``: health checks, incidents and remediation."""

    def __init__(
        self,
        ws: Workspace,
        *,
        loops: Scheduler,
        governance: Governance,
        modes: Modes,
        tasks: Tasks,
        executor: Executor,
    ) -> None:
        self.ws = ws
        self._loops = loops
        self._governance = governance
        self._modes = modes
        self._tasks = tasks
        self._executor = executor
        self._lock = threading.RLock()
        # Host measurements (write latency, file size) differ run to run: a ManualClock run, which must give the
        # same ledger for the same seed, leaves them out unless a caller turns them on.
        self.measure_host = not isinstance(ws.clock, ManualClock)
        self.size_probe: Callable[[], int | None] = self._file_size
        self._params: dict[str, Any] | None = None
        ws.projections.register("health_status", "healing.checked", _apply_health, tables=["health_status"])
        ws.projections.register("incidents", "healing.*", _apply_incidents, tables=["incidents"])
        self.loop = loops.add(HealingLoop(self))
        self._rules: tuple[RemediationRule, ...] = default_rules()
        self._rules_seq = 0  # seq of the healing.rules_loaded event in force (0: the default pack)
        self._rules_head = -1  # ledger head when that was last looked up

    @property
    def rules(self) -> tuple[RemediationRule, ...]:
        """The remediation rules in force: the last ``healing.rules_loaded`` pack, or the default one."""
        head = self.ws.ledger.head[0]
        if head != self._rules_head:
            row = (
                self.ws.ledger.reader()
                .execute(
                    "SELECT seq, payload FROM events WHERE topic = 'healing.rules_loaded' ORDER BY seq DESC LIMIT 1"
                )
                .fetchone()
            )
            if row is not None and int(row[0]) != self._rules_seq:
                self._rules = rules_from_dict(json.loads(row[1])["pack"])
                self._rules_seq = int(row[0])
            self._rules_head = head
        return self._rules

    # -- rules -----------------------------------------------------------------------------------------------
    def load_rules(
        self, source: str | os.PathLike[str] | Mapping[str, Any], *, actor: str, reason: str
    ) -> Event:
        """Replace the remediation rules (a YAML file or a mapping); a ``healing.rules_loaded`` event."""
        text = None if isinstance(source, Mapping) else Path(source).read_text(encoding="utf-8")
        data = dict(source) if isinstance(source, Mapping) else yaml.safe_load(text or "")
        rules = rules_from_dict(data)
        self._governance.check(actor, "healing.rules.load", resource="healing:rules")
        pack = {"name": str(data.get("name", "custom")), "rules": [r.as_dict() for r in rules]}
        event = self.ws.publish(
            "healing.rules_loaded", {"pack": pack, "reason": reason}, actor=actor, resource="healing:rules"
        )
        return event

    def rules_frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.as_dict() for r in self.rules])

    # -- checks ----------------------------------------------------------------------------------------------
    def _p(self, key: str) -> float:
        cached = self._params
        if cached is not None:
            return float(cached[key])
        return float(self._loops.param(HealingLoop.name, key))

    def _load_params(self) -> dict[str, Any]:
        # One query for all thresholds (a check reads a dozen of them).
        rows = (
            self.ws.ledger.reader()
            .execute("SELECT name, value FROM loop_params WHERE loop = ?", [HealingLoop.name])
            .fetchall()
        )
        return {**HealingLoop.params, **{str(k): json.loads(v) for k, v in rows}}

    def checks(self) -> list[Check]:
        """Check every component now (nothing is recorded)."""
        with self._lock:
            self._params = self._load_params()
            try:
                out = [*self._check_loops(), self._check_ledger(), self._check_mesh(), self._check_executor()]
                out += [self._check_workspace(), self._check_chat()]
            finally:
                self._params = None
        return out

    def _check_loops(self) -> list[Check]:
        ws = self.ws
        sched = self._loops
        now = ws.clock.time()
        factor = self._p("stall_factor")
        lags = self._lags([n for n in sched.names if sched.state(n).state == "running"])
        out = []
        for name in sched.names:
            component = f"loop:{name}"
            st = sched.state(name)
            data = {"loop": name}
            if st.state != "running":
                out.append(Check(component, "ok", "ok", st.state, data))
                continue
            interval = float(sched.param(name, "interval"))
            thread = sched._threads.get(name)
            alive = isinstance(ws.clock, ManualClock) or bool(thread and thread[0].is_alive())
            since = st.last_tick if st.last_tick is not None else st.next_due
            age = now - since if since is not None else math.inf
            if not alive or age > factor * interval:
                evidence = self._last_event(f"loop:{name}")  # looked up only for a fault (a query each)
                why = (
                    "its thread is gone"
                    if not alive
                    else f"no tick for {age:.0f} s ({factor:g} x {interval:g} s)"
                )
                out.append(Check(component, "critical", "stalled", f"stalled: {why}", data, evidence))
                continue
            if st.last_error:
                out.append(
                    Check(
                        component,
                        "warn",
                        "failing",
                        f"last tick failed: {st.last_error[:300]}",
                        data,
                        self._last_event(f"loop:{name}"),
                    )
                )
                continue
            lag = lags.get(name, 0)
            if lag > self._p("lag_warn"):
                evidence = self._last_event(f"loop:{name}")
                out.append(Check(component, "warn", "lagging", f"{lag} events behind", data, evidence))
                continue
            out.append(Check(component, "ok", "ok", f"running, last tick {age:.0f} s ago", data))
        return out

    def _lags(self, names: list[str]) -> dict[str, int]:
        """Events after each loop's cursor that it would process (not ``loop.*``), in one scan for all loops."""
        if not names:
            return {}
        cursors = [self._loops.cursor(n) for n in names]
        select = ", ".join(["count(*) FILTER (WHERE seq > ?)"] * len(names))
        row = (
            self.ws.ledger.reader()
            .execute(
                f"SELECT {select} FROM events WHERE seq > ? AND NOT starts_with(topic, 'loop.')",
                [*cursors, min(cursors)],
            )
            .fetchone()
        )
        return {n: int(v or 0) for n, v in zip(names, row or [0] * len(names), strict=True)}

    def _last_event(self, resource: str, topic: str | None = None) -> str | None:
        sql = "SELECT id FROM events WHERE resource = ?"
        params: list[Any] = [resource]
        if topic is not None:
            sql += " AND topic = ?"
            params.append(topic)
        row = self.ws.ledger.reader().execute(sql + " ORDER BY seq DESC LIMIT 1", params).fetchone()
        return None if row is None else str(row[0])

    def _check_ledger(self) -> Check:
        if not self.measure_host:
            return Check("ledger", "ok", "ok", "write latency not measured (deterministic run)")
        samples = sorted(self.ws.ledger.write_latencies)
        if not samples:
            return Check("ledger", "ok", "ok", "no writes measured yet")
        p95 = samples[min(len(samples) - 1, math.ceil(0.95 * len(samples)) - 1)] * 1000
        data = {"p95_ms": round(p95, 3)}
        detail = f"write p95 {p95:.1f} ms over {len(samples)} transactions"
        if p95 > self._p("latency_critical_ms"):
            return Check("ledger", "critical", "latency", detail, data)
        if p95 > self._p("latency_warn_ms"):
            return Check("ledger", "warn", "latency", detail, data)
        return Check("ledger", "ok", "ok", detail, data)

    def _check_mesh(self) -> Check:
        ws = self.ws
        row = (
            ws.ledger.reader()
            .execute("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .fetchone()
        )
        dead = int(row[0]) if row else 0
        backlog = sum(s.backlog for s in ws.mesh.subscriptions)
        data = {"dead_letters": dead, "backlog": backlog}
        if dead:
            latest = self._latest_dead_letter()
            status = "critical" if dead >= self._p("dead_letters_critical") else "warn"
            return Check("mesh", status, "dead_letters", f"{dead} dead letter(s) not replayed", data, latest)
        if backlog > self._p("backlog_warn"):
            return Check("mesh", "warn", "backlog", f"{backlog} deliveries waiting", data)
        return Check("mesh", "ok", "ok", f"no dead letters, backlog {backlog}", data)

    def _latest_dead_letter(self) -> str | None:
        row = (
            self.ws.ledger.reader()
            .execute("SELECT event_id FROM dead_letters WHERE replayed_at IS NULL ORDER BY ts DESC LIMIT 1")
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _check_executor(self) -> Check:
        ws = self.ws
        now = ws.clock.time()
        row = ws.ledger.reader().execute("SELECT count(*) FROM tasks WHERE state = 'pending'").fetchone()
        queue = int(row[0]) if row else 0
        window = self._p("failure_window")
        rows = (
            ws.ledger.reader()
            .execute(
                "SELECT payload->>'$.kind' AS kind, count(*) AS runs, "
                "count(*) FILTER (WHERE (payload->>'$.to') <> 'done') AS failures, max(seq) AS last "
                "FROM events WHERE topic = 'task.state_changed' AND (payload->>'$.from') = 'running' "
                f"AND ts >= {TS} GROUP BY 1 ORDER BY 1",
                [to_us(now - window)],
            )
            .fetchall()
        )
        worst: tuple[float, str, int, int] | None = None
        for kind, runs, failures, _ in rows:
            if runs >= self._p("failure_min_runs") and kind is not None:
                rate = failures / runs
                if worst is None or rate > worst[0]:
                    worst = (rate, str(kind), int(runs), int(failures))
        data: dict[str, Any] = {"queue": queue}
        if worst is not None and worst[0] >= self._p("failure_warn"):
            rate, kind, runs, failures = worst
            data.update(kind=kind, failure_rate=round(rate, 4), runs=runs)
            status = "critical" if rate >= self._p("failure_critical") else "warn"
            evidence = self._last_failed_run(kind)
            detail = f"{failures} of {runs} runs of {kind!r} failed in the last {window:g} s"
            return Check("executor", status, "failure_rate", detail, data, evidence)
        if queue > self._p("queue_critical"):
            return Check("executor", "critical", "queue", f"{queue} pending tasks", data)
        if queue > self._p("queue_warn"):
            return Check("executor", "warn", "queue", f"{queue} pending tasks", data)
        return Check("executor", "ok", "ok", f"{queue} pending tasks, failures under the limit", data)

    def _last_failed_run(self, kind: str) -> str | None:
        row = (
            self.ws.ledger.reader()
            .execute(
                "SELECT id FROM events WHERE topic = 'task.state_changed' AND (payload->>'$.from') = 'running' "
                "AND (payload->>'$.to') <> 'done' AND (payload->>'$.kind') = ? ORDER BY seq DESC LIMIT 1",
                [kind],
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _file_size(self) -> int | None:
        if self.ws.path == ":memory:":
            return None
        total = 0
        for path in (self.ws.path, self.ws.path + ".wal"):
            try:
                total += os.path.getsize(path)
            except OSError:
                continue
        return total

    def _check_workspace(self) -> Check:
        if not self.measure_host:
            return Check("workspace", "ok", "ok", "size not measured (deterministic run)")
        size = self.size_probe()
        if size is None:
            return Check("workspace", "ok", "ok", "in memory")
        mb = size / 1_048_576
        data = {"size_mb": round(mb, 3)}
        detail = f"{mb:.1f} MB on disk"
        if mb > self._p("size_critical_mb"):
            return Check(
                "workspace", "critical", "size", f"{detail}, over {self._p('size_critical_mb'):g} MB", data
            )
        if mb > self._p("size_warn_mb"):
            return Check("workspace", "warn", "size", f"{detail}, over {self._p('size_warn_mb'):g} MB", data)
        return Check("workspace", "ok", "ok", detail, data)

    def _check_chat(self) -> Check:
        now = self.ws.clock.time()
        window = self._p("failure_window")
        row = (
            self.ws.ledger.reader()
            .execute(
                "SELECT count(*) FILTER (WHERE topic = 'chat.message.failed'), "
                "count(*) FILTER (WHERE topic = 'chat.message.responded'), "
                "max(id) FILTER (WHERE topic = 'chat.message.failed' AND seq = (SELECT max(seq) FROM events "
                "WHERE topic = 'chat.message.failed')) "
                "FROM events WHERE topic IN ('chat.message.failed', 'chat.message.responded') "
                f"AND ts >= {TS}",
                [to_us(now - window)],
            )
            .fetchone()
        )
        failed, answered, latest = (int(row[0]), int(row[1]), row[2]) if row else (0, 0, None)
        total = failed + answered
        data = {"failed": failed, "answered": answered}
        if failed and total >= self._p("failure_min_runs"):
            rate = failed / total
            detail = f"the responder failed {failed} of {total} messages in the last {window:g} s"
            if rate >= self._p("failure_critical"):
                return Check("chat", "critical", "responder_failing", detail, data, latest)
            if rate >= self._p("failure_warn"):
                return Check("chat", "warn", "responder_failing", detail, data, latest)
        return Check("chat", "ok", "ok", f"{answered} answered, {failed} failed in the window", data)

    # -- one healing cycle -----------------------------------------------------------------------------------
    def check(self) -> list[Check]:
        """Check every component, record the results, open/escalate/resolve incidents and remediate."""
        with self._lock:
            checks = self.checks()
            ws = self.ws
            previous = self._recorded()
            changes = [
                Message(
                    "healing.status_changed",
                    {
                        "component": c.component,
                        "from": previous.get(c.component, "ok"),
                        "to": c.status,
                        "reason": c.reason,
                        "detail": c.detail,
                    },
                    f"component:{c.component}",
                )
                for c in checks
                if previous.get(c.component, "ok") != c.status
            ]
            worst = max((RANK[c.status] for c in checks), default=0)
            summary = Message(
                "healing.checked",
                {"overall": STATUSES[worst], "components": {c.component: c.as_dict() for c in checks}},
                "healing",
            )
            ws.publish_many([*changes, summary], actor=ACTOR)
            self._incidents(checks)
            self._gauges(checks)
            return checks

    def _recorded(self) -> dict[str, str]:
        rows = self.ws.ledger.reader().execute("SELECT component, status FROM health_status").fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def _gauges(self, checks: list[Check]) -> None:
        samples: list[tuple[str, float, Mapping[str, str]]] = [
            ("grace_health_status", float(RANK[c.status]), {"component": c.component}) for c in checks
        ]
        for c in checks:
            for key, metric in (
                ("queue", "grace_executor_queue_depth"),
                ("dead_letters", "grace_mesh_dead_letters"),
                ("backlog", "grace_mesh_backlog"),
                ("p95_ms", "grace_ledger_write_p95_ms"),
                ("size_mb", "grace_workspace_size_mb"),
            ):
                if key in c.data:
                    samples.append((metric, float(c.data[key]), {}))
        open_row = (
            self.ws.ledger.reader()
            .execute("SELECT count(*) FROM incidents WHERE resolved_at IS NULL")
            .fetchone()
        )
        samples.append(("grace_healing_open_incidents", float(open_row[0] if open_row else 0), {}))
        self.ws.metrics.record_many(samples, actor=ACTOR)

    # -- incidents -------------------------------------------------------------------------------------------
    def _open_incidents(self) -> dict[str, dict[str, Any]]:
        # Plain rows rather than a DataFrame: this runs on every check.
        cur = self.ws.ledger.reader().execute(
            "SELECT id, component, status, reason, actions, epoch_us(detected_at) AS detected_us "
            "FROM incidents WHERE resolved_at IS NULL ORDER BY detected_at"
        )
        columns = [d[0] for d in cur.description]
        return {str(r[1]): dict(zip(columns, r, strict=True)) for r in cur.fetchall()}

    def _incidents(self, checks: list[Check]) -> None:
        ws = self.ws
        now = ws.clock.time()
        open_ = self._open_incidents()
        for c in checks:
            incident = open_.get(c.component)
            if incident is None:
                if c.status == "ok":
                    continue
                cause = self._event_or_none(c.evidence)
                with handling(cause) if cause is not None else contextlib.nullcontext():
                    opened = ws.publish(
                        "healing.incident_opened",
                        {
                            "component": c.component,
                            "status": c.status,
                            "reason": c.reason,
                            "detail": c.detail,
                            "data": dict(c.data),
                            "evidence": c.evidence,
                        },
                        actor=ACTOR,
                        resource=f"component:{c.component}",
                    )
                self._remediate(opened, c, [], now)
                continue
            event = ws.ledger.get(str(incident["id"]))
            actions = json.loads(incident["actions"])
            if c.status == "ok":
                self._resolve(event, c, actions, now, from_us(float(incident["detected_us"])))
            elif RANK[c.status] > RANK[str(incident["status"])] or c.reason != incident["reason"]:
                with handling(event):
                    ws.publish(
                        "healing.incident_escalated",
                        {
                            "incident": event.id,
                            "component": c.component,
                            "status": c.status,
                            "reason": c.reason,
                            "detail": c.detail,
                        },
                        actor=ACTOR,
                        resource=f"component:{c.component}",
                    )
                self._remediate(event, c, [], now)  # the new status (or fault) gets its own rules now
            else:
                self._remediate(event, c, actions, now)

    def _event_or_none(self, event_id: str | None) -> Event | None:
        if not event_id:
            return None
        try:
            return self.ws.ledger.get(event_id)
        except LedgerError:
            return None

    def _remediate(self, incident: Event, check: Check, done: list[dict[str, Any]], now: float) -> None:
        """Run the actions of each matching rule that has not run for this incident (or whose retry is due)."""
        matching = [r for r in self.rules if r.matches(check)]
        default_retry = self._p("retry_after")
        alerted = any(a.get("action") == "alert" for a in done)
        if not matching:
            if not alerted:
                self._alert(incident, check, "no remediation rule applies")
            return
        failed = []
        for rule in matching:
            runs = [a for a in done if a.get("rule") == rule.id and a.get("status") == check.status]
            if runs:
                retry = rule.retry_after or default_retry
                if now - max(float(a["at"]) for a in runs) < retry:
                    continue
            for name, args in rule.actions:
                ok, detail = self._do(incident, rule, name, args, check)
                if not ok:
                    failed.append(f"{rule.id}/{name}: {detail}")
        if failed and not alerted:
            self._alert(incident, check, "remediation failed: " + "; ".join(failed))

    def _do(
        self, incident: Event, rule: RemediationRule, name: str, args: Mapping[str, Any], check: Check
    ) -> tuple[bool, str]:
        ws = self.ws
        with handling(incident):
            try:
                ok, detail = self._act(name, args, check, incident)
            except GraceError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # noqa: BLE001 - a failed action is recorded and alerted, never fatal
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            ws.publish(
                "healing.remediated",
                {
                    "incident": incident.id,
                    "component": check.component,
                    "status": check.status,
                    "rule": rule.id,
                    "action": name,
                    "args": dict(args),
                    "ok": ok,
                    "detail": detail[:2000],
                    "target": {k: check.data[k] for k in ("loop", "kind") if k in check.data},
                },
                actor=ACTOR,
                resource=f"component:{check.component}",
            )
        return ok, detail

    def _act(self, name: str, args: Mapping[str, Any], check: Check, incident: Event) -> tuple[bool, str]:
        ws = self.ws
        data = check.data
        reason = f"incident {incident.id}: {check.component} {check.status}: {check.detail}"
        if name == "restart_loop":
            loop = str(args.get("loop") or data.get("loop") or "")
            if not loop or loop == HealingLoop.name:
                return False, "no loop to restart (healing does not restart itself)"
            self._loops.stop(loop, actor=ACTOR, timeout=5.0)
            self._loops.start(loop, actor=ACTOR)
            return True, f"restarted loop {loop}"
        if name == "replay_dead_letters":
            pending = len(ws.mesh.dead_letters())
            replayed = ws.mesh.replay_dead_letters()
            return replayed == pending, f"replayed {replayed} of {pending} dead letter(s)"
        if name in ("backoff_kind", "pause_kind", "resume_kind"):
            kind = str(args.get("kind") or data.get("kind") or "")
            if not kind:
                return False, "no task kind named by the check"
            if name == "backoff_kind":
                factor = float(args.get("factor", 4.0))
                self._executor.adjust(kind, actor=ACTOR, reason=reason, backoff_factor=factor)
                return True, f"backoff of {kind!r} x{factor:g}"
            if name == "pause_kind":
                seconds = float(args.get("seconds", 600.0))
                self._executor.adjust(kind, actor=ACTOR, reason=reason, pause_for=seconds)
                return True, f"paused {kind!r} for {seconds:g} s"
            self._executor.adjust(kind, actor=ACTOR, reason=reason, backoff_factor=1.0, resume=True)
            return True, f"resumed {kind!r} with its registered backoff"
        if name in ("enter_mode", "leave_mode"):
            mode = str(args.get("mode") or "")
            if name == "enter_mode":
                entered = self._modes.enter(
                    mode, actor=ACTOR, reason=reason, details={"incident": incident.id}
                )
                return True, f"entered {mode}" if entered else f"{mode} was active already"
            left = self._modes.leave(mode, actor=ACTOR, reason=reason)
            return True, f"left {mode}" if left else f"{mode} was not active"
        if name == "alert":
            self._alert(incident, check, "a rule asks for a person")
            return True, "alert raised"
        return False, f"unknown action {name!r}"

    def _alert(self, incident: Event, check: Check, why: str) -> None:
        ws = self.ws
        task_id = None
        with handling(incident):
            try:
                task = self._tasks.create(
                    f"Health: {check.component} is {check.status} ({check.reason})",
                    kind="healing_alert",
                    actor=ACTOR,
                    priority=80 if check.status == "critical" else 60,
                    details={
                        "incident": incident.id,
                        "component": check.component,
                        "status": check.status,
                        "reason": check.reason,
                        "detail": check.detail,
                        "why": why,
                    },
                    key=f"healing:{check.component}:{check.reason}",
                )
                task_id = task.id
            except GraceError as exc:  # e.g. read_only: the alert event still lands
                why = f"{why} (no task: {exc})"
            ws.publish(
                "healing.alert",
                {
                    "incident": incident.id,
                    "component": check.component,
                    "status": check.status,
                    "reason": check.reason,
                    "detail": check.detail,
                    "why": why,
                    "task": task_id,
                },
                actor=ACTOR,
                resource=f"component:{check.component}",
            )

    def _resolve(
        self, incident: Event, check: Check, actions: list[dict[str, Any]], now: float, detected: float
    ) -> None:
        ws = self.ws
        mttr = max(0.0, now - detected)
        by_id = {r.id: r for r in self.rules}
        fired = list(dict.fromkeys(str(a["rule"]) for a in actions if a.get("rule") in by_id))
        for rule_id in fired:
            rule = by_id[rule_id]
            for name, args in rule.on_resolve:
                self._do(incident, rule, name, args, _resolving(check, actions))
        with handling(incident):
            ws.publish(
                "healing.incident_resolved",
                {
                    "incident": incident.id,
                    "component": check.component,
                    "mttr_s": mttr,
                    "detail": check.detail,
                },
                actor=ACTOR,
                resource=f"component:{check.component}",
            )
            ws.metrics.record(
                "grace_healing_mttr_seconds", mttr, labels={"component": check.component}, actor=ACTOR
            )

    # -- inspection ------------------------------------------------------------------------------------------
    def status(self, *, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """component -> {status, detail, checked_at (ISO)}, plus ``overall``: the last recorded health, or a fresh
        (unrecorded) check when none was recorded yet or ``refresh`` is set."""
        if not refresh:
            rows = (
                self.ws.ledger.reader()
                .execute("SELECT component, status, detail, checked_at FROM health_status ORDER BY component")
                .fetchall()
            )
            if rows:
                out = {
                    str(c): {"status": str(s), "detail": str(d), "checked_at": pd.Timestamp(t).isoformat()}
                    for c, s, d, t in rows
                }
                return _with_overall(out)
        when = pd.Timestamp(self.ws.clock.time(), unit="s", tz="UTC").isoformat()
        out = {
            c.component: {"status": c.status, "detail": c.detail, "checked_at": when} for c in self.checks()
        }
        return _with_overall(out)

    def incidents(self, *, open_only: bool = False) -> pd.DataFrame:
        """Incidents: component, worst status, reason, detection, actions taken, resolution and MTTR (s)."""
        sql = "SELECT * FROM incidents"
        if open_only:
            sql += " WHERE resolved_at IS NULL"
        frame = self.ws.sql(sql + " ORDER BY detected_at, id")
        frame["actions"] = frame["actions"].map(json.loads)
        return frame

    def mttr(self) -> float | None:
        """Mean time to repair (seconds) over the resolved incidents, or None."""
        row = self.ws.ledger.reader().execute("SELECT avg(mttr_s) FROM incidents").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def history(self) -> pd.DataFrame:
        """Every recorded check: ts, component, status (one row per component per check), for plotting."""
        return self.ws.sql(
            "SELECT e.ts, c.key AS component, c.value->>'$.status' AS status, c.value->>'$.reason' AS reason "
            "FROM events e, json_each(e.payload, '$.components') c WHERE e.topic = 'healing.checked' "
            "ORDER BY e.seq, component"
        )


def _resolving(check: Check, actions: Iterable[Mapping[str, Any]]) -> Check:
    # The ok check no longer names the loop or kind; the incident's own actions remember them.
    data = dict(check.data)
    for a in actions:
        for key, value in (a.get("data") or {}).items():
            data.setdefault(key, value)
    return Check(check.component, check.status, check.reason, check.detail, data, check.evidence)


def _with_overall(out: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    worst = max((RANK.get(v["status"], 0) for v in out.values()), default=0)
    bad = sorted(c for c, v in out.items() if v["status"] != "ok")
    checked = max((v["checked_at"] for v in out.values()), default="")
    out["overall"] = {
        "status": STATUSES[worst],
        "detail": "all components ok" if not bad else "not ok: " + ", ".join(bad),
        "checked_at": checked,
    }
    return out


def _apply_health(con: Any, events: list[Event]) -> None:
    for e in events:
        rows = sorted(e.payload["components"].items())
        if not rows:
            continue
        # One statement per check (not one per component): this runs on every healing tick.
        values = ", ".join([f"(?, ?, ?, {TS}, {TS})"] * len(rows))
        params = [v for component, c in rows for v in (component, c["status"], c["detail"], e.ts_us, e.ts_us)]
        con.execute(
            f"INSERT INTO health_status VALUES {values} "
            "ON CONFLICT (component) DO UPDATE SET since = CASE WHEN health_status.status = excluded.status "
            "THEN health_status.since ELSE excluded.since END, status = excluded.status, "
            "detail = excluded.detail, checked_at = excluded.checked_at",
            params,
        )


def _apply_incidents(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        if e.topic == "healing.incident_opened":
            con.execute(
                f"INSERT INTO incidents VALUES (?, ?, ?, ?, ?, {TS}, '[]', false, NULL, NULL)",
                [e.id, p["component"], p["status"], p["reason"], p["detail"], e.ts_us],
            )
        elif e.topic == "healing.incident_escalated":
            con.execute(
                "UPDATE incidents SET status = CASE WHEN ? = 'critical' THEN 'critical' ELSE status END, "
                "reason = ?, detail = ? WHERE id = ?",
                [p["status"], p["reason"], p["detail"], p["incident"]],
            )
        elif e.topic == "healing.remediated":
            action = {
                "rule": p["rule"],
                "action": p["action"],
                "status": p["status"],
                "ok": p["ok"],
                "detail": p["detail"],
                "at": from_us(e.ts_us),
                "event": e.id,
                "data": _action_data(p),
            }
            row = con.execute("SELECT actions FROM incidents WHERE id = ?", [p["incident"]]).fetchone()
            if row is not None:
                actions = [*json.loads(row[0]), action]
                con.execute(
                    "UPDATE incidents SET actions = ? WHERE id = ?",
                    [json.dumps(actions, sort_keys=True), p["incident"]],
                )
        elif e.topic == "healing.alert":
            row = con.execute("SELECT actions FROM incidents WHERE id = ?", [p["incident"]]).fetchone()
            if row is not None:
                alert = {
                    "rule": None,
                    "action": "alert",
                    "status": p["status"],
                    "ok": True,
                    "detail": p["why"],
                    "at": from_us(e.ts_us),
                    "event": e.id,
                    "data": {},
                }
                con.execute(
                    "UPDATE incidents SET alerted = true, actions = ? WHERE id = ?",
                    [json.dumps([*json.loads(row[0]), alert], sort_keys=True), p["incident"]],
                )
        elif e.topic == "healing.incident_resolved":
            con.execute(
                f"UPDATE incidents SET resolved_at = {TS}, mttr_s = ? WHERE id = ?",
                [e.ts_us, p["mttr_s"], p["incident"]],
            )


def _action_data(p: Mapping[str, Any]) -> dict[str, Any]:
    # What an on_resolve action needs to know later: the loop or task kind the action concerned.
    return {
        **dict(p.get("target") or {}),
        **{k: v for k, v in (p.get("args") or {}).items() if k in ("loop", "kind")},
    }
