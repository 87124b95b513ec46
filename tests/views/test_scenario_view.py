"""The scenario view: a researcher starts a scenario and sees its live score and learning curve; a viewer is
told why they cannot; the start is a governed, recorded decision; the dashboard shows the view."""

from __future__ import annotations

import pandas as pd
import panel as pn

from grace_core.scenarios import run_scenario
from grace_core.views.dashboard import DashboardView
from grace_core.views.scenarios import POINTS, ScenarioView


def test_a_researcher_starts_a_scenario_and_sees_its_score_and_curve(vws):
    view = ScenarioView(ws=vws, user="bob", role="researcher")
    assert view.scenario == "ops"
    assert view.state == "idle"
    assert not view.start_button.disabled
    seen: list[int] = []
    view.param.watch(lambda e: seen.append(len(e.new)), "curve")
    view.param.update(hours=2.0, seed=3, loops="on")
    assert view.start() is True
    assert view.wait(timeout=300)
    assert view.state == "finished", view.message
    assert len(view.curve) == POINTS
    assert view.curve["hours"].iloc[-1] == 2.0
    assert seen[1 : POINTS + 1] == list(range(1, POINTS + 1))  # the curve grew window by window (live)
    assert set(view.final) == {"success_rate", "time_to_done_s", "precision", "recall"}
    # The same run outside the view measures the same thing: the view shows the scenario's real scores.
    direct = run_scenario(":memory:", "ops", hours=2.0, seed=3, loops="on", score_every=2 * 3600 / POINTS)
    assert view.final == direct.scores
    pd.testing.assert_frame_equal(view.curve.reset_index(drop=True), direct.timeline, check_dtype=False)
    assert "success_rate" in view.numbers
    assert view.plot.visible
    # The start is on this workspace's ledger as a governance decision with what was asked for.
    decisions = [
        e for e in vws.ledger.events(topic="governance.decision") if e.payload.get("action") == "scenario.run"
    ]
    assert decisions
    assert decisions[-1].actor == "bob"
    assert decisions[-1].payload["effect"] == "allow"
    # ... and the scenario's own traffic is not: it ran in a workspace of its own.
    assert not list(vws.ledger.events(topic="scenario.started"))


def test_a_viewer_cannot_start_one_and_is_told_why(vws):
    view = ScenarioView(ws=vws, user="vic", role="viewer")
    assert view.start_button.disabled
    assert "viewer" in view.start_button.description
    assert "start a scenario" in view.start_button.description
    assert view.start() is False
    assert view.message.startswith("refused")
    assert view.state == "idle"
    layout = view.__panel__()
    notes = [
        o for o in layout.objects if o.visible and "not start a scenario" in str(getattr(o, "object", ""))
    ]
    assert notes, "a viewer sees a note saying what they cannot do"
    assert not list(vws.ledger.events(topic="scenario.*"))


def test_the_dashboard_shows_the_scenario_view(vws):
    dash = DashboardView(ws=vws, user="ada", role="admin")
    assert isinstance(dash.scenario, ScenarioView)
    assert dash.scenario.role == "admin"
    assert not dash.scenario.start_button.disabled
    headings = [m.object for m in dash.__panel__().select(pn.pane.Markdown)]
    assert "### Scenario" in headings
    dash.close()
