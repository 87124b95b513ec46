"""Benchmarks of the apps: first render of each view and the dashboard queries on a large workspace."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from grace_core.bench.core import REPEATS, Context, Figure, Goal, _timed, benchmark, figure

if TYPE_CHECKING:
    from panel.viewable import Viewable

    from grace_core.workspace import Workspace


# -- views (the apps) -------------------------------------------------------------------------------------------
# Goals from the apps issue: each view's first render <= 2 s, each dashboard query <= 100 ms on a workspace of
# 1,000,000 events. The "peer" of these figures is the goal itself, so ratio >= 1 means the goal is met.
_VIEW_SLUGS = ("dashboard", "chat", "hunter", "memory", "audit", "ide", "tasks")
_DASHBOARD_QUERIES = ("activity", "counts", "recent", "loops", "health", "mttr", "insights", "refresh")
_RENDER_GOAL_MS = 2000.0
_QUERY_GOAL_MS = 100.0
GOALS = (  # beside the benchmark below
    *(
        Goal(f"views.{s}.first_render_ms", _RENDER_GOAL_MS, text=f"first render of {s} <= 2 s")
        for s in _VIEW_SLUGS
    ),
    *(
        Goal(f"views.dashboard_query.{q}_ms", _QUERY_GOAL_MS, text=f"dashboard query {q} <= 100 ms")
        for q in _DASHBOARD_QUERIES
        if q != "refresh"  # the whole refresh (every query plus the widgets) is reported, not a goal
    ),
)


def _view_workspace(ctx: Context, n: int) -> Workspace:
    """A file workspace with ``n`` events (batches through ``publish_many``, the ledger's Arrow path), a user
    per role, some tasks, alerts and memory, so every view has rows to show."""
    from grace_core.mesh import Message

    ws = ctx.workspace("views")
    for name, role in (("ada", "admin"), ("bob", "researcher")):
        ws.auth.register(name, "bench-password-views-1", role=role, by="system")
    topics = ("bench.event", "bench.chat", "bench.loop", "bench.task")
    batch = 100_000
    for start in range(0, n, batch):
        ws.publish_many(
            [
                Message(topics[i % 4], {"i": i, "text": "the quick brown fox"}, f"item/{i % 100}")
                for i in range(start, min(n, start + batch))
            ],
            actor="bench",
        )
    for i in range(20):
        ws.tasks.create(f"bench task {i}", kind="bench", actor="bob")
    ws.memory.write("/bench/note.md", "# Note\n\nA note for the memory view.\n", actor="bob")
    ws.hunter.screen("key AKIAQ7Z3BENCHKEY1234", target="chat", actor="bob")
    ws.mesh.drain()
    return ws


@benchmark(
    "views",
    figures=[
        *(f"views.{s}.first_render_ms" for s in _VIEW_SLUGS),
        *(f"views.dashboard_query.{q}_ms" for q in _DASHBOARD_QUERIES),
    ],
    goals=GOALS,
)
def bench_views(ctx: Context) -> Iterator[Figure]:
    """First render of each view (construct it, build its Bokeh model as a server session does) and each
    dashboard query, on a workspace of 1,000,000 events (times ``scale``; 50,000 in quick mode).

    Render: best of 3 fresh view objects, each ``pn.panel(view).get_root()``. Queries: median of 7 calls.
    """
    import statistics
    import warnings

    import panel as pn

    from grace_core.server import quiet_warnings
    from grace_core.views import view_class
    from grace_core.views.dashboard import (
        DashboardView,
        activity_frame,
        health_frame,
        insights_frame,
        mttr_frame,
        open_counts,
    )

    quiet_warnings()
    warnings.filterwarnings("ignore", message=".*sizing_mode.*")
    pn.extension("tabulator")
    n = ctx.size(1_000_000, 50_000, minimum=1_000)
    ws = _view_workspace(ctx, n)
    for slug in _VIEW_SLUGS:
        cls = view_class(slug)
        times = []
        for _ in range(REPEATS):

            def render(cls: Any = cls) -> None:
                view = cls(ws=ws, user="ada", role="admin")
                cast("Viewable", pn.panel(view)).get_root()  # a Viewer's panel is a Viewable
                view.close()

            times.append(_timed(render)[0])
        yield figure(f"views.{slug}.first_render_ms", min(times) * 1e3, "ms", "goal", _RENDER_GOAL_MS)
    head = ws.ledger.head[0]
    dashboard = DashboardView(ws=ws, user="ada", role="admin")
    queries: dict[str, Callable[[], Any]] = {
        "activity": lambda: activity_frame(ws, minutes=60),
        "counts": lambda: open_counts(ws),
        "recent": lambda: ws.ledger.events(since=max(0, head - 30)),
        "loops": ws.loops.status,
        "health": lambda: health_frame(ws),
        "mttr": lambda: mttr_frame(ws),
        "insights": lambda: insights_frame(ws),
        "refresh": lambda: dashboard.refresh(plot=False),
    }
    for name in _DASHBOARD_QUERIES:
        fn = queries[name]
        fn()  # warm: the first call plans the query
        ms = statistics.median(_timed(fn)[0] for _ in range(7)) * 1e3
        yield figure(f"views.dashboard_query.{name}_ms", ms, "ms", "goal", _QUERY_GOAL_MS)
    dashboard.close()
