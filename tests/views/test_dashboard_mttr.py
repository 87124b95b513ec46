"""The dashboard's time-to-repair section, from self-healing's incidents."""

from __future__ import annotations

from grace_core.views.dashboard import DashboardView, mttr_frame


def _incident(ws, component: str, repair_s: float) -> None:
    # Injected as self-healing records them: an opened incident, then its resolution with the time to repair.
    opened = ws.publish(
        "healing.incident_opened",
        {"component": component, "status": "failing", "reason": "stalled", "detail": "test", "data": {},
         "evidence": []},
        actor="healing",
    )  # fmt: skip
    ws.clock.advance(seconds=repair_s)
    ws.publish(
        "healing.incident_resolved",
        {"incident": opened.id, "component": component, "mttr_s": repair_s, "detail": "ok again"},
        actor="healing",
    )


def test_mttr_plot_follows_resolved_incidents(vws):
    view = DashboardView(ws=vws, user="ada", role="admin")
    assert "no incident resolved yet" in view.mttr_note.object
    assert not view.mttr_plot.visible
    _incident(vws, "loops", 30)
    _incident(vws, "mesh", 90)
    frame = mttr_frame(vws)
    assert frame["mttr_s"].tolist() == [30, 90]
    assert frame["mean_s"].tolist() == [30, 60]
    view.redraw()
    assert "MTTR 60.0 s" in view.mttr_note.object
    assert "2 resolved" in view.mttr_note.object
    assert view.mttr_plot.visible
    view.close()
