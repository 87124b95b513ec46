"""Dashboard: the running scenario (start one, its live score and learning curve), loop status and controls,
health per component, metrics over time, latest insights, recent events."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import panel as pn
import param
from bokeh.models import HoverTool
from bokeh.palettes import Category10
from bokeh.plotting import figure

from grace_core.errors import ViewError
from grace_core.events import Event

from .base import GraceView, frame_for_table, short, side_by_side
from .scenarios import ScenarioView

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = [
    "SERIES",
    "DashboardView",
    "activity_frame",
    "health_frame",
    "insights_frame",
    "mttr_frame",
    "open_counts",
]

# name shown -> topic glob counted per time bucket
SERIES: dict[str, str] = {
    "events": "*",
    "chat messages": "chat.message.received",
    "alerts": "hunter.alert",
    "task changes": "task.*",
    "loop ticks": "loop.ticked",
}
_WRAP = {"type": "textarea"}  # a long cell wraps instead of being cut off (the formatter escapes it)
_LOOP_COLUMNS = ["loop", "state", "lag", "ticks", "errors", "alive", "last_tick", "interval", "cursor"]
PLOT_EVERY = 5.0  # seconds between plot redraws while events stream in (tables update on every batch)
# The governed action behind each loop control (a pause is a stop that keeps the schedule).
_LOOP_ACTIONS = {
    "start": "loop.start",
    "pause": "loop.stop",
    "resume": "loop.start",
    "stop": "loop.stop",
    "step": "loop.step",
}


def activity_frame(ws: Any, *, minutes: int = 60, bucket: int = 60) -> pd.DataFrame:
    """Events per ``bucket`` seconds over the last ``minutes`` for each of ``SERIES`` (one column each)."""
    since = ws.clock.now() - timedelta(minutes=minutes)
    counts: pd.DataFrame = ws.ledger.counts_per_bucket(SERIES, since=since, bucket_s=bucket)
    return counts


def health_frame(ws: Workspace) -> pd.DataFrame:
    """Each component's status from self-healing."""
    status = ws.healing.status()
    rows = [
        {"component": name, "status": s.get("status"), "detail": short(s.get("detail"), 100),
         "checked_at": s.get("checked_at")}
        for name, s in sorted(status.items())
        if name != "overall"  # a summary of the others, shown in the headline instead
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["component", "status", "detail", "checked_at"])


def mttr_frame(ws: Workspace) -> pd.DataFrame:
    """Resolved incidents from self-healing (resolved_at, component, mttr_s, running mean), oldest first."""
    frame = ws.healing.incidents()
    columns = ["resolved_at", "component", "reason", "mttr_s"]
    if frame.empty or "resolved_at" not in frame.columns:
        return pd.DataFrame(columns=[*columns, "mean_s"])
    done = frame[frame["resolved_at"].notna()].sort_values("resolved_at").reindex(columns=columns)
    done["mean_s"] = done["mttr_s"].expanding().mean()
    return done.reset_index(drop=True)


def insights_frame(ws: Workspace, limit: int = 8) -> pd.DataFrame:
    return ws.reflection.latest_insights(limit)


def open_counts(ws: Workspace) -> dict[str, int]:
    """The headline numbers that are not the ledger's own: alerts raised and open tasks."""
    return {"alerts": ws.hunter.alert_count(), "open tasks": ws.tasks.open_count()}


class DashboardView(GraceView):
    """The workspace at a glance, updated live."""

    title = "Dashboard"
    live_patterns: ClassVar[tuple[str, ...]] = ("*",)

    selected_loop = param.String(default="")
    minutes = param.Integer(default=60, bounds=(5, 24 * 60), doc="The window of the activity plot.")
    head = param.Integer(default=0, doc="The ledger's last seq.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._plotted_at = 0.0
        self.loops = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, selectable=1, sizing_mode="stretch_width",
            layout="fit_data_stretch",
        )  # fmt: skip
        self.loops.param.watch(self._pick_loop, "selection")
        self.buttons = {
            name: pn.widgets.Button(label=label, color=kind)
            for name, label, kind in (
                ("start", "Start all", "success"), ("pause", "Pause", "warning"), ("resume", "Resume", "primary"),
                ("stop", "Stop", "danger"), ("step", "Step selected", "light"),
            )
        }  # fmt: skip
        for name, button in self.buttons.items():
            self.allow(
                button,
                self.may(_LOOP_ACTIONS[name]),
                self.cannot("start, pause, stop or step the loops", needs="an admin"),
            )
            button.on_click(lambda _e, name=name: self.control(name))  # type: ignore[misc]  # name bound per loop
        self.health = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.health_table = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width", layout="fit_columns",
            formatters={"detail": _WRAP}, widths={"component": 130, "status": 80},
        )  # fmt: skip
        self.insights = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width", layout="fit_columns",
            formatters={"text": _WRAP}, widths={"created_at": 150, "kind": 90, "score": 60, "evidence_count": 80},
        )  # fmt: skip
        self.insights_note = pn.pane.Markdown("")
        self.recent = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width", page_size=12,
            pagination="local", layout="fit_columns", formatters={"summary": _WRAP},
            widths={"seq": 70, "ts": 150, "topic": "22%", "actor": 90},
        )  # fmt: skip
        self.numbers = {
            name: pn.indicators.Number(label=name, value=0, font_size="24pt", title_size="10pt")
            for name in ("events", "alerts", "open tasks", "loops running")
        }
        self.plot = pn.pane.Bokeh(sizing_mode="stretch_width", height=300)
        self.mttr_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.mttr_figure = pn.pane.Bokeh(sizing_mode="stretch_width", height=220)
        # Shown or hidden as a whole: the Bokeh pane takes some of its params from each new figure.
        self.mttr_plot = pn.Column(self.mttr_figure, sizing_mode="stretch_width", visible=False)
        self.scenario = ScenarioView(ws=self.ws, user=self.user, role=self.role)
        self.refresh()

    # -- data ----------------------------------------------------------------------------------------------
    def refresh(self, *, plot: bool = True) -> None:
        ws = self.ws
        self.head = ws.ledger.head[0]
        status = ws.loops.status()
        status = status.reindex(columns=[c for c in _LOOP_COLUMNS if c in status.columns])
        self.loops.value = frame_for_table(status) if len(status) else pd.DataFrame({"loop": []})
        health = health_frame(ws)
        bad = health[health["status"] != "ok"]
        self.health.object = f"**{len(health) - len(bad)} of {len(health)} components ok**"
        self.health_table.value = frame_for_table(health)
        self.health_table.visible = True
        insights = insights_frame(ws)
        self.insights_note.object = f"{len(insights)} latest insight(s)"
        self.insights.value = frame_for_table(insights)
        self.insights.visible = True
        recent = ws.ledger.events(since=max(0, self.head - 30))[::-1]
        self.recent.value = frame_for_table(
            pd.DataFrame(
                [
                    {
                        "seq": e.seq,
                        "ts": e.ts,
                        "topic": e.topic,
                        "actor": e.actor,
                        "summary": short(e.payload_json, 80),
                    }
                    for e in recent
                ],
                columns=["seq", "ts", "topic", "actor", "summary"],
            )
        )
        self.numbers["events"].value = self.head
        for name, value in open_counts(ws).items():
            self.numbers[name].value = value
        running = int((status["state"] == "running").sum()) if len(status) else 0
        self.numbers["loops running"].value = running
        if plot:
            self.redraw()

    @param.depends("minutes", watch=True)
    def redraw(self) -> None:
        self._plotted_at = time.monotonic()
        frame = activity_frame(self.ws, minutes=self.minutes)
        fig = figure(
            height=300, sizing_mode="stretch_width", x_axis_type="datetime", title="activity per minute",
            tools="pan,wheel_zoom,reset,save",
        )  # fmt: skip
        colors = Category10[10]
        if len(frame):
            times = pd.to_datetime(frame["t"]).dt.tz_localize(None) if frame["t"].dt.tz else frame["t"]
            for i, name in enumerate(SERIES):
                fig.line(times, frame[name], legend_label=name, color=colors[i], line_width=2)  # type: ignore[arg-type]  # bokeh takes Series; its stubs say sequences
                fig.scatter(times, frame[name], color=colors[i], size=4)  # type: ignore[arg-type]  # bokeh takes Series; its stubs say sequences
            fig.legend.location = "top_left"
            fig.legend.click_policy = "hide"
        fig.add_tools(
            HoverTool(tooltips=[("time", "$x{%H:%M}"), ("count", "$y{0}")], formatters={"$x": "datetime"})
        )
        self.plot.object = fig
        self.redraw_mttr()

    def redraw_mttr(self) -> None:
        """MTTR per resolved incident over time, with its running mean (self-healing's incidents)."""
        frame = mttr_frame(self.ws)
        open_now = len(self.ws.healing.incidents(open_only=True))
        if frame.empty:
            self.mttr_note.object = f"MTTR: *no incident resolved yet* ({open_now} open)."
            self.mttr_plot.visible = False
            return
        self.mttr_note.object = (
            f"**MTTR {frame['mttr_s'].mean():.1f} s** over {len(frame)} resolved incident(s), {open_now} open"
        )
        times = pd.to_datetime(frame["resolved_at"], utc=True).dt.tz_localize(None)
        fig = figure(
            height=220, sizing_mode="stretch_width", x_axis_type="datetime", title="time to repair (s)",
            tools="pan,wheel_zoom,reset,save",
        )  # fmt: skip
        fig.scatter(times, frame["mttr_s"], size=7, color=Category10[10][3], legend_label="incident")  # type: ignore[arg-type]  # bokeh takes Series; its stubs say sequences
        fig.line(times, frame["mean_s"], color=Category10[10][0], line_width=2, legend_label="running mean")  # type: ignore[arg-type]  # bokeh takes Series; its stubs say sequences
        fig.legend.location = "top_left"
        self.mttr_figure.object = fig
        self.mttr_plot.visible = True

    def on_event(self, events: list[Event]) -> None:
        self.refresh(plot=time.monotonic() - self._plotted_at >= PLOT_EVERY)

    # -- loop controls -------------------------------------------------------------------------------------
    def _pick_loop(self, event: Any) -> None:
        if event.new:
            self.selected_loop = str(self.loops.value.iloc[event.new[0]]["loop"])

    def control(self, action: str) -> None:
        """start | pause | resume | stop every loop, or step the selected one, as the user (governed)."""
        loops = self.ws.loops

        def run() -> None:
            if action == "step":
                if not self.selected_loop:
                    raise ViewError("select a loop first")
                n = loops.step(self.selected_loop, actor=self.actor)
                self.message = f"{self.selected_loop} processed {n} event(s)"
            else:
                getattr(loops, action)(actor=self.actor)
                self.message = f"loops: {action}"
            self.refresh(plot=False)

        self.act(f"{action} loops", run, action=_LOOP_ACTIONS[action])

    # -- layout --------------------------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        minutes = pn.widgets.IntInput.from_param(self.param.minutes, label="Window (minutes)", width=140)
        loops = pn.Column(
            pn.pane.Markdown("### Loops"),
            pn.FlexBox(*self.buttons.values()),
            self.loops,
        )
        health = pn.Column(pn.pane.Markdown("### Health"), self.health, self.health_table)
        recent = pn.Column(pn.pane.Markdown("### Recent events"), self.recent)
        insights = pn.Column(pn.pane.Markdown("### Latest insights"), self.insights_note, self.insights)
        return pn.Column(
            self._status,
            self.read_only_note(
                "start, pause, stop or step the loops",
                allowed=any(self.may(a) for a in set(_LOOP_ACTIONS.values())),
                needs="an admin",
            ),
            pn.FlexBox(*self.numbers.values()),
            self.scenario,
            side_by_side(loops, health, min_width=420),
            pn.Row(pn.pane.Markdown("### Activity"), minutes),
            self.plot,
            pn.pane.Markdown("### Time to repair"),
            self.mttr_note,
            self.mttr_plot,
            side_by_side(recent, insights, min_width=420),
            sizing_mode="stretch_width",
        )
