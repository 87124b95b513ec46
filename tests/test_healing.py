"""Self-healing: health checks, incidents with MTTR, remediation rules as data, and injected faults."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from support import grace

import grace_core as g
from grace_core.errors import ModelCallError, PolicyError, ReadOnlyError
from grace_core.healing import default_rules, rules_from_dict
from grace_core.loops import Loop, Scheduler

PASSWORD = "correct horse battery staple 42"


def healing_every(ws: g.Workspace, seconds: float) -> None:
    ws.loops.set_param("healing", "interval", seconds, actor="system", reason="test")


def test_default_rules_load_and_bad_rules_are_refused() -> None:
    rules = default_rules()
    ids = {r.id for r in rules}
    assert {"restart-stalled-loop", "replay-dead-letters", "pause-failing-handler"} <= ids
    with pytest.raises(PolicyError, match="unknown action"):
        rules_from_dict({"rules": [{"id": "x", "component": "mesh", "actions": ["reboot"]}]})
    with pytest.raises(PolicyError, match="unknown degraded mode"):
        rules_from_dict(
            {"rules": [{"id": "x", "component": "mesh", "actions": [{"enter_mode": {"mode": "x"}}]}]}
        )
    with pytest.raises(PolicyError, match="status"):
        rules_from_dict({"rules": [{"id": "x", "component": "mesh", "status": ["ok"], "actions": ["alert"]}]})


def test_status_shape_on_a_healthy_workspace(ws: g.Workspace) -> None:
    status = ws.healing.status()
    assert status["overall"]["status"] == "ok"
    for component in ("loop:executor", "loop:healing", "ledger", "mesh", "executor", "workspace", "chat"):
        entry = status[component]
        assert set(entry) == {"status", "detail", "checked_at"}
        assert entry["status"] == "ok"
        assert isinstance(entry["checked_at"], str)
        assert entry["checked_at"].startswith("2026-01-01")
    ws.healing.check()
    recorded = ws.healing.status()
    assert recorded["overall"]["status"] == "ok"
    summary = ws.ledger.events(topic="healing.checked")[-1].payload
    assert summary["overall"] == "ok"
    assert "mesh" in summary["components"]
    gauges = ws.metrics.series("grace_health_status")
    assert not gauges.empty


def test_stalled_loop_is_detected_restarted_and_the_incident_resolved(ws: g.Workspace) -> None:
    ws.loops.start("executor")
    ws.loops.start("healing")
    ws.loops.run_for(minutes=2)
    # Fault: the executor's schedule is lost, as when its thread dies without the scheduler noticing.
    ws.loops.state("executor").next_due = math.inf
    ws.loops.run_for(minutes=2)
    incidents = ws.healing.incidents()
    assert len(incidents) == 1
    inc = incidents.iloc[0]
    assert (inc["component"], inc["status"], inc["reason"]) == ("loop:executor", "critical", "stalled")
    assert [a["action"] for a in inc["actions"]] == ["restart_loop"]
    assert inc["resolved_at"] is not pd_nat()
    assert inc["mttr_s"] == pytest.approx(30)
    assert ws.healing.status()["loop:executor"]["status"] == "ok"
    assert ws.healing.mttr() == pytest.approx(30)
    # The causal chain: the loop's last tick (the fault's evidence) -> incident -> remediation -> restart.
    opened = ws.ledger.get(inc["id"])
    last_tick = ws.ledger.get(opened.parent_id)
    assert last_tick.topic == "loop.ticked"
    assert last_tick.resource == "loop:executor"
    restarted = [e for e in ws.ledger.events(topic="loop.started") if e.actor == "healing"]
    assert restarted
    assert restarted[0].parent_id == opened.id
    resolved = ws.ledger.events(topic="healing.incident_resolved")[-1]
    assert resolved.parent_id == opened.id
    mttr = ws.metrics.series("grace_healing_mttr_seconds")
    assert not mttr.empty


def pd_nat() -> Any:
    import pandas as pd

    return pd.NaT


@pytest.mark.slow
def test_failing_handler_retries_backs_off_then_is_paused_and_resumed(ws: g.Workspace) -> None:
    calls: list[float] = []

    def broken(task: Any, w: g.Workspace) -> None:
        calls.append(w.clock.time())
        raise ConnectionError("model server down")

    ws.executor.register("summarise", broken, max_attempts=4, backoff=5)
    ws.loops.set_param("executor", "interval", 5.0, actor="system", reason="test")
    ws.loops.start("executor")
    ws.loops.start("healing")
    tasks = [ws.tasks.create(f"summary {i}", kind="summarise", actor="alice") for i in range(3)]
    ws.loops.run_for(minutes=2)
    assert ws.healing.status()["executor"]["status"] == "critical"
    incident = ws.healing.incidents(open_only=True).iloc[0]
    assert incident["reason"] == "failure_rate"
    assert [a["action"] for a in incident["actions"]] == ["backoff_kind", "pause_kind"]
    factor, paused_until = ws.executor.settings("summarise")
    assert factor == 4
    assert paused_until is not None
    assert paused_until > ws.clock.time()
    # The incident is caused by the last failed run of the kind.
    cause = ws.ledger.get(ws.ledger.get(incident["id"]).parent_id)
    assert cause.topic == "task.state_changed"
    assert cause.payload["kind"] == "summarise"
    n = len(calls)
    ws.loops.run_for(minutes=5)
    assert len(calls) == n  # paused: nothing of the kind runs
    waiting = ws.tasks.get(tasks[-1].id)
    if waiting.state == "pending":
        assert "paused by healing" in (waiting.note or "")
    # After the pause the last attempts fail for good; once those runs age out of the window, all is ok again.
    ws.loops.run_for(minutes=20)
    resolved = ws.healing.incidents().iloc[0]
    assert not math.isnan(resolved["mttr_s"])
    assert resolved["mttr_s"] > 0
    assert resolved["actions"][-1]["action"] == "resume_kind"  # on_resolve
    assert ws.executor.settings("summarise") == (1.0, None)


def test_dead_letters_are_replayed_by_remediation(ws: g.Workspace) -> None:
    seen: list[str] = []
    down = {"flag": True}

    def fragile(event: g.Event) -> None:
        if down["flag"]:
            raise OSError("index locked")
        seen.append(event.id)

    ws.subscribe("docs.added", fragile, name="indexer")
    for i in range(2):
        ws.publish("docs.added", {"i": i}, actor="alice")
        for _ in range(6):  # the mesh retries with backoff on the workspace clock, then gives up
            ws.clock.advance(seconds=2)
            ws.mesh.pump()
    assert len(ws.mesh.dead_letters()) == 2
    down["flag"] = False  # the transient fault is gone
    ws.healing.check()
    incident = ws.healing.incidents().iloc[0]
    assert (incident["component"], incident["reason"]) == ("mesh", "dead_letters")
    assert incident["actions"][0]["ok"]
    assert "replayed 2 of 2" in incident["actions"][0]["detail"]
    assert len(seen) == 2
    assert ws.mesh.dead_letters().empty
    ws.healing.check()
    assert ws.healing.incidents().iloc[0]["resolved_at"] is not None
    assert ws.healing.status()["mesh"]["status"] == "ok"


class Crashing(Loop):
    name = "crashing"
    topics = ("*",)
    params: ClassVar[dict[str, Any]] = {"interval": 10.0, "batch_size": 100}
    process_idle = True

    def process(self, events: list[g.Event], scheduler: Scheduler) -> None:
        raise RuntimeError("bad state")


def test_no_rule_means_an_alert_and_a_task_for_a_person(ws: g.Workspace) -> None:
    ws.loops.add(Crashing())
    ws.loops.start("crashing")
    ws.loops.run_for(seconds=15)
    ws.healing.check()
    ws.healing.check()
    incident = ws.healing.incidents().iloc[0]
    assert (incident["component"], incident["status"], incident["reason"]) == (
        "loop:crashing",
        "warn",
        "failing",
    )
    assert incident["alerted"]
    alerts = ws.ledger.events(topic="healing.alert")
    assert len(alerts) == 1  # once per incident, not once per check
    assert "no remediation rule" in alerts[0].payload["why"]
    task = ws.tasks.get(alerts[0].payload["task"])
    assert task.kind == "healing_alert"
    assert "loop:crashing" in task.title
    # The failure that caused it is on the chain: loop.failed -> incident -> alert.
    opened = ws.ledger.get(incident["id"])
    assert ws.ledger.get(opened.parent_id).topic in ("loop.failed", "loop.ticked")
    assert alerts[0].parent_id == opened.id


def test_workspace_too_big_enters_read_only_and_leaves_it_when_resolved(file_ws) -> None:  # type: ignore[no-untyped-def]
    ws = file_ws(clock=g.ManualClock(), seed=5)
    ws.healing.measure_host = True  # a real file, really measured
    real_size = ws.healing.size_probe
    assert (real_size() or 0) > 0
    ws.healing.check()
    assert ws.healing.status()["workspace"]["status"] == "ok"
    ws.healing.size_probe = lambda: 100 * 2**30  # the fault: the disk fills up (100 GB)
    ws.clock.advance(seconds=30)
    ws.healing.check()
    assert ws.modes.is_active("read_only")
    assert ws.healing.status()["workspace"]["status"] == "critical"
    with pytest.raises(ReadOnlyError, match="read_only"):
        ws.publish("notes.added", {}, actor="alice")
    head = ws.ledger.head[0]
    ws.clock.advance(seconds=30)
    ws.healing.check()  # health bookkeeping still lands
    assert ws.ledger.head[0] > head
    ws.healing.size_probe = real_size  # an operator made room
    ws.clock.advance(seconds=30)
    ws.healing.check()
    assert not ws.modes.is_active("read_only")
    ws.publish("notes.added", {}, actor="alice")
    incident = ws.healing.incidents().iloc[0]
    assert [a["action"] for a in incident["actions"]] == ["enter_mode", "leave_mode"]
    assert incident["mttr_s"] == pytest.approx(60)


def test_model_failures_pause_chat_until_they_age_out(ws: g.Workspace) -> None:
    ws.auth.register("ada", PASSWORD, role="admin", by="system")

    def down(inputs: Any) -> str:
        raise ConnectionError("server gone")

    ws.llm.register_offline("chat.answer", down)
    for i in range(3):
        with pytest.raises(ModelCallError):
            ws.chat.send("ada", f"question {i}")
    ws.healing.check()
    assert ws.modes.is_active("chat_paused")
    ws.clock.advance(seconds=float(ws.loops.param("healing", "failure_window")) + 1)
    ws.healing.check()
    assert not ws.modes.is_active("chat_paused")


def test_rules_are_replaceable_data_kept_on_the_ledger(tmp_path: Path, ws: g.Workspace) -> None:
    custom = tmp_path / "rules.yaml"
    custom.write_text(
        "name: strict\nrules:\n  - id: alert-everything\n    component: '*'\n    actions: [alert]\n"
    )
    ws.healing.load_rules(custom, actor="system", reason="a person looks at everything")
    assert [r.id for r in ws.healing.rules] == ["alert-everything"]
    copy = g.replay(ws, ":memory:")
    try:
        assert [r.id for r in copy.healing.rules] == ["alert-everything"]
    finally:
        copy.close()


def test_objective_history_and_replay(ws: g.Workspace) -> None:
    start = ws.clock.time()
    ws.loops.start("healing")
    ws.loops.start("executor")
    ws.loops.run_for(minutes=2)
    assert ws.healing.loop.objective(ws, start, ws.clock.time()) is None  # nothing was repaired
    ws.loops.state("executor").next_due = math.inf
    ws.loops.run_for(minutes=3)
    assert ws.healing.loop.objective(ws, start, ws.clock.time()) == pytest.approx(-30)
    history = ws.healing.history()
    executor = history[history["component"] == "loop:executor"]
    assert list(executor["status"]).count("critical") == 1
    copy = g.replay(ws, ":memory:")
    try:
        assert g.projection_differences(ws, copy) == {}
    finally:
        copy.close()


@pytest.mark.slow
def test_live_thread_killed_is_detected_and_restarted(file_ws) -> None:  # type: ignore[no-untyped-def]
    ws = file_ws()  # SystemClock: real threads
    ws.loops.set_param("executor", "interval", 0.2, actor="system", reason="test")
    ws.loops.set_param("healing", "interval", 0.2, actor="system", reason="test")
    ws.loops.start("executor")
    ws.loops.start("healing")
    deadline = time.time() + 10
    while ws.loops.state("executor").ticks < 2 and time.time() < deadline:
        time.sleep(0.05)
    # Fault: end the executor's thread behind the scheduler's back (its state still says running).
    thread, stop = ws.loops._threads["executor"]
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    deadline = time.time() + 15
    resolved = None
    while time.time() < deadline:
        frame = ws.healing.incidents()
        # Only the executor's incident: on a loaded machine a slow write may open a `ledger` incident too.
        done = (
            frame[frame["resolved_at"].notna() & (frame["component"] == "loop:executor")]
            if not frame.empty
            else frame
        )
        if not done.empty:
            resolved = done.iloc[0]
            break
        time.sleep(0.1)
    assert resolved is not None, ws.healing.incidents()
    assert resolved["component"] == "loop:executor"
    assert resolved["reason"] == "stalled"
    assert resolved["mttr_s"] < 10
    assert ws.loops._threads["executor"][0].is_alive()


@pytest.mark.slow
def test_cli_health_json_and_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    g.open_workspace(path).close()
    out = grace("health", "--json", "-w", path)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["overall"]["status"] == "ok"
    assert status["mesh"]["status"] == "ok"
    assert "checked_at" in status["mesh"]
    table = grace("health", "-w", path)
    assert "overall" in table.stdout
    assert "loop:healing" in table.stdout
