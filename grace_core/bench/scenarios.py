"""Benchmarks of the scenarios: how long a simulated day of one takes."""

from __future__ import annotations

import time
from collections.abc import Iterator

from grace_core.bench.core import Context, Figure, Goal, benchmark, figure

# ``scenario.ops_day_s``: wall seconds of one simulated day of the ops scenario with the loops on (reflection,
# learning, executor) in a throwaway in-memory workspace, against the goal of 10 s; ``scenario.ops_day_cpu_s``: the
# CPU seconds of the same run (process time: on a shared machine the wall time also measures the neighbours);
# ``scenario.ops_day_all_s``: the same day with every loop (self-healing and the meta-loop too). A quick run
# simulates 2 hours and reports the day at that pace (the cost per simulated hour is about constant).
DAY_GOAL_S = 10.0


@benchmark(
    "scenario.ops_day_s",
    figures=["scenario.ops_day_s", "scenario.ops_day_cpu_s", "scenario.ops_day_all_s"],
    goals=[
        Goal("scenario.ops_day_s", DAY_GOAL_S, text="a simulated day of the ops scenario (loops on) <= 10 s")
    ],
)
def bench_scenario(ctx: Context) -> Iterator[Figure]:
    from grace_core.scenarios import run_scenario  # the scenarios open workspaces: import when measured

    hours = ctx.seconds(24.0, 2.0, minimum=0.5)
    per_day = 24.0 / hours
    cpu = time.process_time()
    on = run_scenario(":memory:", "ops", hours=hours, seed=1, loops="on")
    cpu = time.process_time() - cpu
    yield figure("scenario.ops_day_s", on.wall_seconds * per_day, "s", "goal", DAY_GOAL_S)
    yield figure("scenario.ops_day_cpu_s", cpu * per_day, "s", "goal", DAY_GOAL_S)
    every = run_scenario(":memory:", "ops", hours=hours, seed=1, loops="all")
    yield figure("scenario.ops_day_all_s", every.wall_seconds * per_day, "s", "goal", DAY_GOAL_S)


# ``scenario.qa_day_s``: wall seconds of one simulated day of the qa scenario with the loops on (144 questions
# answered through ws.llm, six resolved conversations turned into knowledge notes) in a throwaway in-memory
# workspace; ``scenario.qa_day_cpu_s``: its CPU seconds, against the goal of about 10 s. A quick run simulates 3
# hours and reports the day at that pace.
@benchmark(
    "scenario.qa_day_s",
    figures=["scenario.qa_day_s", "scenario.qa_day_cpu_s"],
    goals=[
        Goal(
            "scenario.qa_day_cpu_s",
            DAY_GOAL_S,
            text="a simulated day of the qa scenario (loops on) <= 10 s CPU",
        )
    ],
)
def bench_qa_day(ctx: Context) -> Iterator[Figure]:
    from grace_core.scenarios import run_scenario

    hours = ctx.seconds(24.0, 3.0, minimum=0.5)
    per_day = 24.0 / hours
    cpu = time.process_time()
    on = run_scenario(":memory:", "qa", hours=hours, seed=1, loops="on")
    cpu = time.process_time() - cpu
    yield figure("scenario.qa_day_s", on.wall_seconds * per_day, "s", "goal", DAY_GOAL_S)
    yield figure("scenario.qa_day_cpu_s", cpu * per_day, "s", "goal", DAY_GOAL_S)


# ``scenario.security_day_s``: wall seconds of one simulated day of the security scenario with the loops on, in a
# throwaway in-memory workspace, against the goal of 10 s; ``scenario.security_day_cpu_s``: its CPU seconds. Its
# cost is the traffic's: every alert fans out into a task, a memory note and a case note. A quick run simulates 2
# hours and reports the day at that pace; the start (users with argon2 hashes, the deployed model loaded) is
# counted once, not scaled with the hours.
@benchmark(
    "scenario.security_day_s",
    figures=["scenario.security_day_s", "scenario.security_day_cpu_s"],
    goals=[
        Goal(
            "scenario.security_day_s",
            DAY_GOAL_S,
            text="a simulated day of the security scenario (loops on) <= 10 s",
        )
    ],
)
def bench_security_day(ctx: Context) -> Iterator[Figure]:
    from grace_core.scenarios import run_scenario

    hours = ctx.seconds(24.0, 2.0, minimum=0.5)
    per_day = 24.0 / hours
    marks: list[tuple[float, float]] = []
    began = (time.perf_counter(), time.process_time())
    run_scenario(
        ":memory:",
        "security",
        hours=hours,
        seed=1,
        loops="on",
        before=lambda _run: marks.append((time.perf_counter(), time.process_time())),
    )
    ended = (time.perf_counter(), time.process_time())
    (started,) = marks
    wall, cpu = ((s - b) + (e - s) * per_day for b, s, e in zip(began, started, ended, strict=True))
    yield figure("scenario.security_day_s", wall, "s", "goal", DAY_GOAL_S)
    yield figure("scenario.security_day_cpu_s", cpu, "s", "goal", DAY_GOAL_S)
