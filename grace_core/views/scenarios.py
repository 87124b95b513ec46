"""The running scenario: start one (name, hours, seed, loops), watch its live score and learning curve.

A scenario needs simulated time (a ManualClock) and must not write its traffic into the workspace people work
in, so the view runs it in a throwaway in-memory workspace of its own, on a background thread, a window of the
learning curve at a time (``POINTS`` windows per run); after each window the view shows the latest scores and
the curve so far. Starting one is governed (``scenario.run`` on ``scenario:<name>``: researchers and admins in
the default pack): the decision is recorded on this workspace's ledger, with the name, hours, seed and loops.
One scenario runs at a time per view.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import pandas as pd
import panel as pn
import param
from bokeh.palettes import Category10
from bokeh.plotting import figure

from grace_core.errors import ViewError
from grace_core.scenarios import ScenarioRun, get_scenario, scenarios
from grace_core.scenarios.base import _open

from .base import GraceView, frame_for_table

__all__ = ["POINTS", "ScenarioView"]

POINTS = 12  # windows of the learning curve per run (and live updates)
ACTION = "scenario.run"


class ScenarioView(GraceView):
    """Start a scenario and follow it: the latest window's scores and the learning curve, live."""

    title = "Scenario"

    scenario: param.Selector[Any] = param.Selector(
        default=None, objects=[], doc="The registered scenario to run."
    )
    hours = param.Number(default=6.0, bounds=(0.25, 24 * 7), doc="Simulated hours to run.")
    seed = param.Integer(default=1, doc="Seed of the hidden truth and the traffic.")
    loops: param.Selector[Any] = param.Selector(
        default="on", objects=["on", "off", "all"], doc="Which loops run."
    )
    state: param.Selector[Any] = param.Selector(
        default="idle", objects=["idle", "running", "finished", "failed"]
    )
    elapsed = param.Number(default=0.0, doc="Simulated hours run so far.")
    scores = param.Dict(default={}, doc="The latest window's scores (score -> value or None).")
    curve = param.DataFrame(default=pd.DataFrame(), doc="The learning curve so far: hours, then each score.")
    final = param.Dict(default={}, doc="The scores over the whole run, once finished.")

    def __init__(self, **params: Any) -> None:
        names = list(scenarios())
        super().__init__(**params)
        self.param.scenario.objects = names
        if self.scenario is None and names:
            self.scenario = names[0]
        self._thread: threading.Thread | None = None
        self.start_button = pn.widgets.Button(label="Start scenario", color="primary")
        self.allow(self.start_button, self.may(ACTION), self.cannot("start a scenario"))
        self.start_button.on_click(self._clicked)
        self.headline = pn.pane.Markdown("*No scenario started yet.*", sizing_mode="stretch_width")
        self.numbers: dict[str, pn.indicators.Number] = {}
        self.number_row = pn.FlexBox()
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width", layout="fit_columns"
        )
        self.plot = pn.pane.Bokeh(sizing_mode="stretch_width", height=260, visible=False)
        self.param.watch(self._show, ["state", "scores", "curve", "elapsed"])

    # -- running -------------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the scenario the parameters describe (governed); False when refused or one is running."""
        if self.state == "running":
            self.message = "a scenario is running already; wait for it to finish"
            return False
        name, hours, seed, loops = self.scenario, float(self.hours), int(self.seed), str(self.loops)
        context = {"hours": hours, "seed": seed, "loops": loops}
        resource = f"scenario:{name}"

        def begin() -> bool:
            if name is None:
                raise ViewError("no scenario is registered")
            get_scenario(name)
            # The real decision, recorded on this workspace's ledger (the button asked a what-if).
            self.ws.governance.check(self.actor, ACTION, resource, context)
            self.state, self.elapsed, self.scores, self.final = "running", 0.0, {}, {}
            self.curve = pd.DataFrame()
            self.message = f"scenario {name} started: {hours:g} simulated hours, seed {seed}, loops {loops}"
            self._thread = threading.Thread(
                target=self._run, args=(name, hours, seed, loops), name=f"scenario-{name}", daemon=True
            )
            self._thread.start()
            return True

        return bool(self.act("start a scenario", begin, action=ACTION, resource=resource, context=context))

    def _clicked(self, _event: Any) -> None:
        self.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running scenario (tests, notebooks); True once none is running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _run(self, name: str, hours: float, seed: int, loops: str) -> None:
        window = hours * 3600 / POINTS
        try:
            with _open(":memory:", seed) as ws:
                run = ScenarioRun(ws, get_scenario(name)(seed), loops=loops, score_every=window).start()
                for _ in range(POINTS):
                    run.advance(window / 3600)
                    curve = run.timeline()
                    latest = {str(k): v for k, v in curve.iloc[-1].to_dict().items()} if len(curve) else {}
                    self._on_doc(functools.partial(self._progress, curve, latest, run.elapsed))
                result = run.finish()
            self._on_doc(lambda: self._finished(result.timeline, dict(result.scores), result.hours))
        except Exception as exc:  # noqa: BLE001 - shown to the user; the thread must not die silently
            error = f"error: scenario {name}: {exc}"
            self._on_doc(lambda: self._failed(error))

    def _on_doc(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the view's document (widgets are touched there only); directly outside a server."""
        if self._doc is None:
            fn()
            return
        try:
            self._doc.add_next_tick_callback(fn)
        except Exception:  # noqa: BLE001 - the session is gone: nobody is watching any more
            return

    def _progress(self, curve: pd.DataFrame, latest: dict[str, Any], elapsed: float) -> None:
        self.curve = curve
        self.scores = {k: (None if pd.isna(v) else float(v)) for k, v in latest.items() if k != "hours"}
        self.elapsed = round(elapsed / 3600, 6)

    def _finished(self, curve: pd.DataFrame, final: dict[str, float | None], hours: float) -> None:
        self.curve = curve
        self.final = final
        self.elapsed = hours
        self.state = "finished"
        self.message = f"scenario {self.scenario} finished after {hours:g} simulated hours"

    def _failed(self, error: str) -> None:
        self.state = "failed"
        self.message = error

    # -- display -------------------------------------------------------------------------------------------
    def _show(self, *_: Any) -> None:
        name = self.scenario or "-"
        if self.state == "idle":
            self.headline.object = "*No scenario started yet.*"
        else:
            self.headline.object = (
                f"**{name}** (seed {self.seed}, loops {self.loops}): {self.state}, "
                f"{self.elapsed:g} of {self.hours:g} simulated hours"
            )
        shown = self.final if self.state == "finished" else self.scores
        for score, value in shown.items():
            if score not in self.numbers:
                self.numbers[score] = pn.indicators.Number(
                    label=score, value=0, format="{value:.3g}", font_size="22pt", title_size="10pt"
                )
                self.number_row.append(self.numbers[score])
            number = self.numbers[score]
            number.value = float("nan") if value is None else float(value)  # shown as nan: no data, not 0
        self.table.value = frame_for_table(self.curve)
        self._draw()

    def _draw(self) -> None:
        curve = self.curve
        if curve.empty:
            self.plot.visible = False
            return
        fig = figure(
            height=260, sizing_mode="stretch_width", title="learning curve (scores in [0, 1] per window)",
            x_axis_label="simulated hours", tools="pan,wheel_zoom,reset,save",
        )  # fmt: skip
        colors = Category10[10]
        scores = [c for c in curve.columns if c != "hours"]
        for i, score in enumerate(scores):
            values = pd.to_numeric(curve[score], errors="coerce")
            if (
                values.dropna().between(0, 1).all() and values.notna().any()
            ):  # rates; seconds would dwarf them
                # bokeh accepts pandas Series; its stubs list only sequences and column names
                fig.line(curve["hours"], values, legend_label=score, color=colors[i % 10], line_width=2)  # type: ignore[arg-type]
                fig.scatter(curve["hours"], values, color=colors[i % 10], size=5)  # type: ignore[arg-type]
        if fig.renderers:
            fig.legend.location = "bottom_right"
        self.plot.object = fig
        self.plot.visible = True

    def __panel__(self) -> pn.viewable.Viewable:
        may = self.may(ACTION)
        controls = pn.FlexBox(
            pn.widgets.Select.from_param(self.param.scenario, name="Scenario", width=140),
            pn.widgets.FloatInput.from_param(self.param.hours, name="Hours", width=100),
            pn.widgets.IntInput.from_param(self.param.seed, name="Seed", width=100),
            pn.widgets.Select.from_param(self.param.loops, name="Loops", width=100),
            self.start_button,
            align="end",
        )
        return pn.Column(
            pn.pane.Markdown("### Scenario"),
            self.read_only_note("start a scenario", allowed=may),
            controls,
            self._status,
            self.headline,
            self.number_row,
            self.plot,
            self.table,
            sizing_mode="stretch_width",
        )
