"""The ``ops`` scenario: task kinds that fail for hidden reasons the loops must find and fix.

Five task kinds run on the executor. From the seed, four of them get one hidden failure cause each and the fifth
stays healthy (the control):

``size_limit``        a task whose ``size`` is above a hidden limit fails (the worker runs out of memory) unless
                      its work is split into chunks no larger than the limit (parameter ``chunk_size``)
``time_window``       a run started in hidden hours of the day fails (the upstream service is down)
``flaky_dependency``  each attempt fails with a hidden probability (a dependency times out)
``bad_parameter``     a hidden value of one parameter (``codec`` or ``region``) always fails (the request is
                      rejected)

On top, every attempt of every kind fails with a small probability (a reset connection): noise the analysis
must not mistake for a cause. Tasks carry observable features (``size``, ``params.codec``, ``params.region``,
the hour a run starts), and failed runs realistic errors that do not name their cause.

Scores: ``success_rate`` (tasks done / tasks ended in the window), ``time_to_done_s`` (mean seconds from
creation to done of the tasks done in the window), and ``precision`` / ``recall`` of the **learned causes**
against the hidden ones at the window's end. A learned cause is the (kind, cause) of an active lesson with an
effect; it is correct when the kind's hidden cause is that cause and the effect fixes it without harm: chunks
no larger than the limit, only hours of the window avoided (the window is learned as its hours pass), more
attempts than the default, the bad value replaced by another.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Scenario, register
from .driver import Action

if TYPE_CHECKING:
    from grace_core.tasks import Task
    from grace_core.workspace import Workspace

__all__ = ["KINDS", "OpsScenario", "addresses"]

KINDS = ("ops.backup", "ops.export", "ops.ingest", "ops.render", "ops.sync")
CAUSES = ("size_limit", "time_window", "flaky_dependency", "bad_parameter")
PARAMS: Mapping[str, tuple[str, ...]] = {
    "codec": ("gzip", "lz4", "snappy", "zstd"),
    "region": ("ap-south", "eu-west", "us-east"),
}
DEFAULT_ATTEMPTS = 3
_DATASETS = ("billing", "clickstream", "crm", "inventory", "logs", "orders", "sensors", "support")
_TEAMS = ("team-data", "team-platform", "team-research", "team-web")
_DEPENDENCY = {
    "ops.backup": "object-store",
    "ops.export": "warehouse",
    "ops.ingest": "message-queue",
    "ops.render": "tile-server",
    "ops.sync": "directory",
}


class OutOfMemory(Exception):  # noqa: N818 - named as the simulated worker reports it
    pass


class ServiceUnavailable(Exception):  # noqa: N818
    pass


class DependencyTimeout(Exception):  # noqa: N818
    pass


class BadRequest(Exception):  # noqa: N818
    pass


class ConnectionReset(Exception):  # noqa: N818
    pass


def addresses(effect: Mapping[str, Any], truth: Mapping[str, Any]) -> bool:
    """Whether a lesson's ``effect`` fixes the hidden cause ``truth`` of its kind (see the module docstring)."""
    cause = truth.get("cause")
    if cause is None or effect.get("cause") != cause:
        return False
    params = effect.get("params", {})
    when = effect.get("when", {})
    if cause == "size_limit":
        chunk = params.get("chunk_size")
        return isinstance(chunk, int | float) and 0 < chunk <= truth["limit"] and not when
    if cause == "time_window":  # hours are learned as they pass: some of the window, and nothing else
        avoided = set(effect.get("avoid_hours", ()))
        return bool(avoided) and avoided <= set(truth["hours"])
    if cause == "flaky_dependency":
        return int(effect.get("retry", {}).get("max_attempts", DEFAULT_ATTEMPTS)) > DEFAULT_ATTEMPTS
    if cause == "bad_parameter":
        name, bad = truth["param"], truth["value"]
        fixed = name in params and params[name] != bad
        return fixed and (when == {name: bad} or not when)
    return False


@register
class OpsScenario(Scenario):
    """Task kinds with hidden failure causes (size limit, time window, flaky dependency, bad parameter) and a
    healthy control; scores are success rate, time to done, and precision/recall of learned causes."""

    name: ClassVar[str] = "ops"
    summary: ClassVar[str] = (
        "Task kinds fail for hidden reasons (size limit, time window, flaky dependency, bad parameter); "
        "lessons must find the causes and change how the executor runs them."
    )
    score_names: ClassVar[Mapping[str, str]] = {
        "success_rate": "tasks done / tasks ended in the window (higher is better)",
        "time_to_done_s": "mean seconds from creation to done, tasks done in the window (lower is better)",
        "precision": "learned causes that are hidden causes and fixed by their effect / learned causes",
        "recall": "hidden causes learned and fixed by an effect / hidden causes",
    }
    # The executor ticks every 10 simulated minutes, reflection and learning every 20: plenty for patterns that
    # last hours, and a simulated day stays within seconds of wall time.
    min_interval: ClassVar[float | None] = 600.0
    intervals: ClassVar[Mapping[str, float]] = {"reflection": 1200.0, "learning": 1200.0}
    tasks_per_hour: ClassVar[float] = 3.0  # per kind
    noise: ClassVar[float] = 0.02  # every attempt's chance of an unrelated transient failure

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self._submitted = 0

    def draw(self, rng: random.Random) -> dict[str, Any]:
        kinds = list(KINDS)
        rng.shuffle(kinds)
        truth: dict[str, dict[str, Any]] = {}
        for kind, cause in zip(kinds, (*CAUSES, None), strict=True):
            if cause == "size_limit":
                truth[kind] = {"cause": cause, "limit": float(rng.randrange(150, 450, 10))}
            elif cause == "time_window":
                start, length = rng.randrange(24), rng.randint(4, 6)
                truth[kind] = {"cause": cause, "hours": sorted((start + i) % 24 for i in range(length))}
            elif cause == "flaky_dependency":
                truth[kind] = {"cause": cause, "p": round(rng.uniform(0.6, 0.8), 3)}
            elif cause == "bad_parameter":
                param = rng.choice(sorted(PARAMS))
                truth[kind] = {"cause": cause, "param": param, "value": rng.choice(PARAMS[param])}
            else:
                truth[kind] = {"cause": None}
        return {"kinds": dict(sorted(truth.items())), "noise": self.noise}

    # -- setup and traffic -----------------------------------------------------------------------------------
    def setup(self, ws: Workspace) -> None:
        for kind in KINDS:
            ws.executor.register(kind, self._handle, max_attempts=DEFAULT_ATTEMPTS, backoff=60.0)

    def plan(self, step: float) -> list[tuple[float, Action]]:
        rng = self.rng
        chance = self.tasks_per_hour * step / 3600
        actions = []
        for kind in KINDS:
            if rng.random() >= chance:
                continue
            offset = round(rng.uniform(0, step), 3)
            size = round(min(5000.0, max(5.0, rng.lognormvariate(math.log(250), 0.9))), 1)
            params = {name: rng.choice(values) for name, values in sorted(PARAMS.items())}
            dataset, team = rng.choice(_DATASETS), rng.choice(_TEAMS)
            self._submitted += 1
            ref = f"{kind}-{self._submitted:06d}"
            actions.append(
                (offset, kind, functools.partial(self._submit, kind, ref, size, params, dataset, team))
            )
        actions.sort(key=lambda a: (a[0], a[1]))
        return [(offset, action) for offset, _, action in actions]

    def _submit(
        self, kind: str, ref: str, size: float, params: dict[str, str], dataset: str, team: str
    ) -> None:
        assert self.ws is not None
        verb = kind.split(".", 1)[1]
        self.ws.tasks.create(
            f"{verb.capitalize()} the {dataset} data ({size:g} MB)",
            kind=kind,
            actor=team,
            details={"size": size, "params": params, "dataset": dataset, "ref": ref},
        )

    def _handle(self, task: Task, ws: Workspace) -> dict[str, Any]:
        """A run of an ops task: fails as the kind's hidden cause (and the noise) says."""
        truth = self.truth["kinds"][task.kind]
        params = dict(task.details.get("params") or {})
        size = float(task.details.get("size", 0.0))
        # The same task (by its place in the traffic) and attempt draw the same numbers in every run of this seed,
        # loops on or off: the two arms of a comparison meet the same luck (common random numbers).
        ref = task.details.get("ref", task.id)
        rng = random.Random(f"grace-scenario:ops:{self.seed}:{ref}:{task.attempts}")  # noqa: S311
        dependency = _DEPENDENCY.get(task.kind, "backend")
        if rng.random() < self.noise:
            raise ConnectionReset("[Errno 104] connection reset by peer")
        chunk = float(params.get("chunk_size") or size)
        piece = min(size, chunk) if chunk > 0 else size
        cause = truth["cause"]
        if cause == "size_limit" and piece > truth["limit"]:
            raise OutOfMemory(
                f"worker killed after exceeding its memory allowance (peak {piece * 4.3 / 1000:.1f} GiB)"
            )
        if cause == "time_window" and int(ws.clock.time() // 3600) % 24 in truth["hours"]:
            raise ServiceUnavailable(f"the {dependency} service answered 503 Service Unavailable")
        if cause == "flaky_dependency" and rng.random() < truth["p"]:
            raise DependencyTimeout(f"no reply from the {dependency} service within 30 s")
        if cause == "bad_parameter" and params.get(truth["param"]) == truth["value"]:
            raise BadRequest(f"request rejected by the {dependency} API: 400 Bad Request")
        chunks = max(1, math.ceil(size / piece)) if piece > 0 else 1
        return {"size": size, "chunks": chunks, "codec": params.get("codec"), "region": params.get("region")}

    # -- scores ------------------------------------------------------------------------------------------------
    def measure(self, ws: Workspace, since: float, until: float) -> dict[str, float | None]:
        row = (
            ws.ledger.reader()
            .execute(
                "SELECT count(*) FILTER (WHERE state = 'done'), count(*), "
                "avg(epoch(updated_at) - epoch(created_at)) FILTER (WHERE state = 'done') FROM tasks "
                "WHERE state IN ('done', 'failed') AND list_contains(?, kind) "
                "AND updated_at >= make_timestamptz(?::BIGINT) AND updated_at < make_timestamptz(?::BIGINT)",
                [list(KINDS), round(since * 1e6), round(until * 1e6)],
            )
            .fetchone()
        )
        done, ended, mean = (int(row[0]), int(row[1]), row[2]) if row else (0, 0, None)
        precision, recall = self.learned_causes(ws)
        return {
            "success_rate": done / ended if ended else None,
            "time_to_done_s": None if mean is None else round(float(mean), 3),
            "precision": precision,
            "recall": recall,
        }

    def learned_causes(self, ws: Workspace) -> tuple[float | None, float | None]:
        """(precision, recall) of the causes the active lessons with effects stand for, against the truth."""
        learned: set[tuple[str, str]] = set()
        correct: set[tuple[str, str]] = set()
        for kind, lessons in ws.learning.effects().items():
            if kind not in self.truth["kinds"]:
                continue
            for lesson in lessons:
                pair = (kind, str(lesson.effect.get("cause")))
                learned.add(pair)
                if addresses(lesson.effect, self.truth["kinds"][kind]):
                    correct.add(pair)
        hidden = sum(1 for t in self.truth["kinds"].values() if t["cause"] is not None)
        precision = len(correct) / len(learned) if learned else None
        return precision, len(correct) / hidden if hidden else None

    def counts(self, ws: Workspace, since: float, until: float) -> dict[str, int]:
        span = [list(KINDS), round(since * 1e6), round(until * 1e6)]
        tasks = (
            ws.ledger.reader()
            .execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'), "
                "coalesce(sum(attempts), 0) FROM tasks WHERE list_contains(?, kind) "
                "AND created_at >= make_timestamptz(?::BIGINT) AND created_at < make_timestamptz(?::BIGINT)",
                span,
            )
            .fetchone()
        )
        events = (
            ws.ledger.reader()
            .execute(
                "SELECT count(*) FILTER (WHERE topic = 'task.deferred'), "
                "count(*) FILTER (WHERE topic = 'reflection.insight' AND (payload->>'$.kind') = 'failure_cause'), "
                "count(*) FILTER (WHERE topic = 'learning.rule_added'), "
                "count(*) FILTER (WHERE topic = 'learning.rule_upvoted' AND (payload->>'$.basis') = 'outcome'), "
                "count(*) FILTER (WHERE topic = 'learning.rule_downvoted' AND (payload->>'$.basis') = 'outcome') "
                "FROM events WHERE ts >= make_timestamptz(?::BIGINT) AND ts < make_timestamptz(?::BIGINT)",
                span[1:],
            )
            .fetchone()
        )
        active = sum(len(v) for k, v in ws.learning.effects().items() if k in KINDS)
        t = tasks or (0, 0, 0, 0)
        e = events or (0, 0, 0, 0, 0)
        return {
            "tasks_created": int(t[0]),
            "tasks_done": int(t[1]),
            "tasks_failed": int(t[2]),
            "runs": int(t[3]),
            "deferred": int(e[0]),
            "cause_insights": int(e[1]),
            "lessons_added": int(e[2]),
            "outcome_upvotes": int(e[3]),
            "outcome_downvotes": int(e[4]),
            "lessons_with_effect": active,
        }
