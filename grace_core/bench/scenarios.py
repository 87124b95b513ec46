"""Benchmarks of the scenarios: how long a simulated day of one takes."""

from __future__ import annotations

import time
from collections.abc import Iterator

from grace_core.bench.core import Context, Figure, Goal, benchmark, figure

DAY_GOAL_S = 10.0


def _simulated_day(ctx: Context, name: str, *, quick_hours: float, loops: str = "on") -> tuple[float, float]:
    """(wall, CPU) seconds of one simulated day of scenario ``name`` (seed 1) in a throwaway in-memory
    workspace. A quick run simulates ``quick_hours`` and reports the day at that pace (the cost per simulated
    hour is about constant); the start (opening the workspace, the scenario's users, loading what it loads
    before traffic) is counted once, not scaled with the hours. CPU is process time: on a shared machine the
    wall time also measures the neighbours."""
    from grace_core.scenarios import run_scenario  # the scenarios open workspaces: import when measured

    hours = ctx.seconds(24.0, quick_hours, minimum=0.5)
    per_day = 24.0 / hours
    marks: list[tuple[float, float]] = []
    began = (time.perf_counter(), time.process_time())
    run_scenario(
        ":memory:",
        name,
        hours=hours,
        seed=1,
        loops=loops,
        before=lambda _run: marks.append((time.perf_counter(), time.process_time())),
    )
    ended = (time.perf_counter(), time.process_time())
    (started,) = marks
    wall, cpu = ((s - b) + (e - s) * per_day for b, s, e in zip(began, started, ended, strict=True))
    return wall, cpu


def _day_benchmark(
    name: str, *, quick_hours: float, goal_on: str, text: str, every_loop: bool = False
) -> None:
    """Register benchmark ``scenario.<name>_day_s``: figures ``scenario.<name>_day_s`` (wall seconds of a
    simulated day, loops on) and ``scenario.<name>_day_cpu_s`` (its CPU seconds), with ``every_loop`` also
    ``scenario.<name>_day_all_s`` (the wall seconds with every loop: self-healing and the meta-loop too); the
    goal of 10 s is on ``goal_on`` (one of the figures)."""
    wall_name, cpu_name, all_name = (f"scenario.{name}_day{suffix}" for suffix in ("_s", "_cpu_s", "_all_s"))
    figures = [wall_name, cpu_name, *([all_name] if every_loop else [])]

    @benchmark(wall_name, figures=figures, goals=[Goal(goal_on, DAY_GOAL_S, text=text)])
    def bench_day(ctx: Context) -> Iterator[Figure]:
        wall, cpu = _simulated_day(ctx, name, quick_hours=quick_hours)
        yield figure(wall_name, wall, "s", "goal", DAY_GOAL_S)
        yield figure(cpu_name, cpu, "s", "goal", DAY_GOAL_S)
        if every_loop:
            every, _ = _simulated_day(ctx, name, quick_hours=quick_hours, loops="all")
            yield figure(all_name, every, "s", "goal", DAY_GOAL_S)


# ops: hidden failure causes of task kinds; 15 tasks an hour.
_day_benchmark(
    "ops",
    quick_hours=2.0,
    goal_on="scenario.ops_day_s",
    text="a simulated day of the ops scenario (loops on) <= 10 s",
    every_loop=True,
)
# qa: 144 questions answered through ws.llm, six resolved conversations turned into knowledge notes.
_day_benchmark(
    "qa",
    quick_hours=3.0,
    goal_on="scenario.qa_day_cpu_s",
    text="a simulated day of the qa scenario (loops on) <= 10 s CPU",
)
# security: every alert fans out into a task, a memory note and a case note (the traffic is the cost).
_day_benchmark(
    "security",
    quick_hours=2.0,
    goal_on="scenario.security_day_s",
    text="a simulated day of the security scenario (loops on) <= 10 s",
)
