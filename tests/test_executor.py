"""The task executor: handlers per kind, priority order, governance, retries with backoff, built-in handlers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from support import grace

import grace_core as g
from grace_core.causal import handling
from grace_core.errors import DegradedModeError, TaskError
from grace_core.tasks import Task

KEY = "AKIAIOSFODNN7EXAMPLE"


def fast(ws: g.Workspace, interval: float = 1.0) -> None:
    """Start only the executor, ticking every ``interval`` simulated seconds."""
    ws.loops.set_param("executor", "interval", interval, actor="system", reason="test")
    ws.loops.start("executor")


def test_register_validates_its_settings(ws: g.Workspace) -> None:
    with pytest.raises(TaskError, match="max_attempts"):
        ws.executor.register("k", lambda t, w: None, max_attempts=0)
    with pytest.raises(TaskError, match="backoff"):
        ws.executor.register("k", lambda t, w: None, backoff=float("nan"))
    with pytest.raises(TaskError, match="not callable"):
        ws.executor.register("k", "nope")  # type: ignore[arg-type]
    spec = ws.executor.register("k", lambda t, w: None, max_attempts=2, backoff=5)
    assert (spec.max_attempts, spec.backoff) == (2, 5.0)
    kinds = ws.executor.handlers()
    assert {"security_alert", "learned", "k"} <= set(kinds["kind"])


def test_runs_by_priority_then_age_and_records_every_transition(ws: g.Workspace) -> None:
    order: list[str] = []

    def handler(task: Task, _ws: g.Workspace) -> dict[str, Any]:
        order.append(task.title)
        return {"title": task.title, "attempt": task.attempts}

    ws.executor.register("work", handler)
    low = ws.tasks.create("low", kind="work", actor="alice", priority=10)
    ws.clock.advance(seconds=1)
    ws.tasks.create("high-old", kind="work", actor="alice", priority=90)
    ws.clock.advance(seconds=1)
    ws.tasks.create("high-new", kind="work", actor="alice", priority=90)
    counts = ws.executor.run_due()
    assert order == ["high-old", "high-new", "low"]
    assert counts["done"] == 3
    done = ws.tasks.get(low.id)
    assert (done.state, done.attempts, done.result) == ("done", 1, {"title": "low", "attempt": 1})
    changes = [e for e in ws.ledger.events(topic="task.state_changed") if e.payload["task_id"] == low.id]
    assert [(e.payload["from"], e.payload["to"]) for e in changes] == [
        ("pending", "running"),
        ("running", "done"),
    ]
    # Run while handling the task.created event: the run's events are caused by the task.
    assert all(e.parent_id == low.id for e in changes)
    decision = [e for e in ws.ledger.events(topic="governance.decision") if e.resource == f"task:{low.id}"]
    assert decision
    assert decision[0].payload["action"] == "task.run"


def test_failures_retry_with_exponential_backoff_on_the_workspace_clock(ws: g.Workspace) -> None:
    attempts: list[float] = []

    def flaky(task: Task, w: g.Workspace) -> str:
        attempts.append(w.clock.time())
        if len(attempts) < 3:
            raise RuntimeError(f"transient {len(attempts)}")
        return "ok"

    ws.executor.register("flaky", flaky, max_attempts=3, backoff=10)
    fast(ws)
    task = ws.tasks.create("flaky", kind="flaky", actor="alice")
    ws.loops.run_for(seconds=5)
    waiting = ws.tasks.get(task.id)
    assert (waiting.state, waiting.attempts, waiting.last_error) == (
        "pending",
        1,
        "RuntimeError: transient 1",
    )
    assert waiting.next_attempt_at is not None
    ws.loops.run_for(minutes=2)
    final = ws.tasks.get(task.id)
    assert (final.state, final.attempts, final.result) == ("done", 3, "ok")
    gaps = [round(b - a) for a, b in itertools.pairwise(attempts)]
    assert gaps == [10, 20]  # backoff, then twice the backoff
    frame = ws.executor.attempts()
    assert list(frame["outcome"]) == ["pending", "pending", "done"]


def test_a_task_fails_after_its_last_attempt(ws: g.Workspace) -> None:
    ws.executor.register("broken", lambda t, w: 1 / 0, max_attempts=2, backoff=1)
    fast(ws)
    task = ws.tasks.create("broken", kind="broken", actor="alice")
    ws.loops.run_for(minutes=1)
    failed = ws.tasks.get(task.id)
    assert (failed.state, failed.attempts) == ("failed", 2)
    assert "ZeroDivisionError" in (failed.last_error or "")


def test_unknown_kind_waits_with_a_note_until_a_handler_exists(ws: g.Workspace) -> None:
    fast(ws)
    task = ws.tasks.create("Review the report", kind="review", actor="alice")
    ws.loops.run_for(seconds=30)
    waiting = ws.tasks.get(task.id)
    assert waiting.state == "pending"
    assert waiting.note is not None
    assert "no handler for kind 'review'" in waiting.note
    assert len(ws.events(topic="task.noted")) == 1  # noted once, not on every tick
    ws.executor.register("review", lambda t, w: "reviewed")
    ws.loops.run_for(seconds=2)
    done = ws.tasks.get(task.id)
    assert (done.state, done.result, done.note) == ("done", "reviewed", None)


def test_governance_denial_fails_the_task_with_the_reason(ws: g.Workspace) -> None:
    ws.governance.add_policy(
        {
            "id": "no-dangerous-tasks",
            "effect": "deny",
            "actors": ["*"],
            "actions": ["task.run"],
            "conditions": [{"key": "kind", "op": "eq", "value": "dangerous"}],
            "description": "Dangerous tasks are never run automatically.",
        },
        actor="system",
    )
    ran: list[str] = []
    ws.executor.register("dangerous", lambda t, w: ran.append(t.id))
    task = ws.tasks.create("rm -rf", kind="dangerous", actor="alice")
    ws.executor.run_due()
    failed = ws.tasks.get(task.id)
    assert ran == []
    assert failed.state == "failed"
    assert "no-dangerous-tasks" in (failed.last_error or "")


def test_paused_kind_waits_then_runs(ws: g.Workspace) -> None:
    ws.executor.register("slow", lambda t, w: "ran")
    ws.executor.adjust("slow", actor="healing", reason="too many failures", pause_for=60)
    fast(ws)
    task = ws.tasks.create("later", kind="slow", actor="alice")
    ws.loops.run_for(seconds=30)
    waiting = ws.tasks.get(task.id)
    assert waiting.state == "pending"
    assert "paused by healing" in (waiting.note or "")
    ws.loops.run_for(seconds=40)
    assert ws.tasks.get(task.id).state == "done"


def test_backoff_factor_widens_retries(ws: g.Workspace) -> None:
    ws.executor.register("k", lambda t, w: 1 / 0, max_attempts=3, backoff=10)
    ws.executor.adjust("k", actor="healing", reason="failing", backoff_factor=4)
    task = ws.tasks.create("x", kind="k", actor="alice")
    start = ws.clock.time()
    ws.executor.run_due()
    retry = ws.tasks.get(task.id).next_attempt_at
    assert retry is not None
    assert retry.timestamp() - start == pytest.approx(40)


def test_a_task_interrupted_mid_run_is_retried(ws: g.Workspace) -> None:
    ws.executor.register("k", lambda t, w: "second time lucky")
    task = ws.tasks.create("x", kind="k", actor="alice")
    ws.tasks.transition(task.id, "running", actor="executor", attempt=1)  # the process died here
    ws.executor.run_due()
    done = ws.tasks.get(task.id)
    assert (done.state, done.attempts, done.result) == ("done", 2, "second time lucky")
    assert "interrupted" in (done.last_error or "")


def test_handler_result_that_cannot_be_stored_is_a_failure(ws: g.Workspace) -> None:
    ws.executor.register("k", lambda t, w: {"x": float("nan")}, max_attempts=1)
    task = ws.tasks.create("x", kind="k", actor="alice")
    ws.executor.run_due()
    assert ws.tasks.get(task.id).state == "failed"
    assert "cannot be stored" in (ws.tasks.get(task.id).last_error or "")


def test_read_only_mode_runs_nothing_and_run_now_is_refused(ws: g.Workspace) -> None:
    ws.executor.register("k", lambda t, w: "ran")
    task = ws.tasks.create("x", kind="k", actor="alice")
    ws.modes.enter("read_only", actor="healing", reason="disk full")
    assert ws.executor.run_due() == {}  # nothing runs
    with pytest.raises(DegradedModeError, match="disk full"):
        ws.executor.run(task.id)
    ws.modes.leave("read_only", actor="healing", reason="room again")
    assert ws.executor.run(task.id).state == "done"


def test_security_alert_handler_attaches_lineage_notifies_and_writes_a_case(ws: g.Workspace) -> None:
    source = ws.publish("demo.upload", {"name": "creds.txt"}, actor="alice")
    with handling(source):
        ws.hunter.screen(f"aws key {KEY}", target="file", actor="alice", resource="file:creds.txt")
    alert = ws.ledger.events(topic="hunter.alert")[-1]
    tasks = ws.tasks.list(kind="security_alert")
    assert len(tasks) == 1
    task = ws.executor.run(tasks["id"].iloc[0])
    assert task.state == "done"
    result = task.result
    assert result["alert"] == alert.id
    assert result["evidence"][0] == alert.id
    assert source.id in result["evidence"]
    assert result["finding"]["rule"] == alert.payload["rule"]
    assert KEY not in json.dumps(result)  # excerpts stay masked
    note = ws.memory.read(result["memory_path"])
    assert task.id in note.content
    assert alert.id in note.content
    notification = ws.ledger.events(topic="executor.notification")[-1]
    assert notification.payload["task"] == task.id
    # The notification's causal chain reaches the upload through the alert and the task.
    chain = set(ws.causal.lineage(notification.id)["id"])
    assert {task.id, alert.id, source.id} <= chain


def test_case_note_appends_one_section_per_task(ws: g.Workspace) -> None:
    for name in ("a", "b"):
        ws.hunter.screen(f"key {KEY}", target="file", actor="alice", resource=f"file:{name}")
    ws.executor.run_due()
    tasks = ws.tasks.list(kind="security_alert", state="done")
    assert len(tasks) == 2
    paths = {json.loads(r)["memory_path"] for r in tasks["result"]}
    assert len(paths) == 1  # one case file per rule
    content = ws.memory.read(paths.pop()).content
    assert all(f"## Task {tid}" in content for tid in tasks["id"])


def _insight(ws: g.Workspace, evidence: list[str], n: int = 1) -> g.Event:
    now = round(ws.clock.time() * 1e6)
    return ws.publish(
        "reflection.insight",
        {
            "kind": "failure_rate",
            "key": "failure:sandbox.failed",
            "text": "sandbox runs fail often",
            "score": 0.8,
            "evidence": evidence,
            "reflection": n,
            "trigger": "interval",
            "window": {"start_us": now - 10_000_000, "end_us": now},
        },
        actor="reflection",
    )


def test_learned_handler_attaches_the_insights_evidence_and_writes_the_lesson(ws: g.Workspace) -> None:
    raw = [ws.publish("sandbox.failed", {"n": i}, actor="sandbox") for i in range(3)]
    first = _insight(ws, [raw[0].id, raw[1].id], 1)
    # Insights are ordered by when they were made; their ids break ties, in no set order.
    ws.clock.advance(seconds=1)
    second = _insight(ws, [raw[1].id, raw[2].id], 2)
    with handling(second):
        task = ws.tasks.create(
            "Look into sandbox failures",
            kind="learned",
            actor="learning",
            key="learned:failure:sandbox.failed",
            details={
                "pattern": "failure:sandbox.failed",
                "insights": [first.id, second.id],
                "lesson": "Sandbox runs fail often: check the quota.",
                "summary": "sandbox runs fail often",
            },
        )
    done = ws.executor.run(task.id)
    assert done.state == "done"
    assert done.result["insights"] == [first.id, second.id]
    assert done.result["evidence"] == [r.id for r in raw]  # deduplicated, in order
    lesson = ws.memory.read(done.result["memory_path"]).content
    assert "check the quota" in lesson
    assert done.result["memory_path"].startswith("/lessons/")


def test_learned_task_with_unknown_insights_fails_clearly(ws: g.Workspace) -> None:
    task = ws.tasks.create("x", kind="learned", actor="learning", details={"insights": ["nope"]})
    ws.executor.register("learned", ws.executor.handler("learned").handler, max_attempts=1)  # type: ignore[union-attr]
    ws.executor.run(task.id)
    assert "none of the insights" in (ws.tasks.get(task.id).last_error or "")


def test_objective_is_minus_the_mean_time_to_finish(ws: g.Workspace) -> None:
    ws.executor.register("k", lambda t, w: "ok")
    start = ws.clock.time()
    assert ws.executor.loop.objective(ws, start, start + 100) is None
    ws.tasks.create("x", kind="k", actor="alice")
    ws.clock.advance(seconds=20)
    ws.executor.run_due()
    assert ws.executor.loop.objective(ws, start, start + 100) == pytest.approx(-20)


@pytest.mark.slow
def test_same_seed_same_ledger_with_executor_and_healing() -> None:
    heads = []
    for _ in range(2):
        ws = g.open_workspace(":memory:", clock=g.ManualClock(), seed=7)
        try:
            ws.executor.register("flaky", lambda t, w: 1 / 0 if t.attempts < 2 else "ok", backoff=5)
            ws.loops.start("executor")
            ws.loops.start("healing")
            for i in range(3):
                ws.tasks.create(f"t{i}", kind="flaky", actor="alice", priority=10 * i)
            ws.hunter.screen(f"key {KEY}", target="chat", actor="alice")
            ws.loops.run_for(minutes=5)
            heads.append(ws.ledger.head)
        finally:
            ws.close()
    assert heads[0] == heads[1]


@pytest.mark.slow
def test_cli_tasks_ls_show_run_cancel(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with g.open_workspace(path) as ws:
        ws.hunter.screen(f"key {KEY}", target="file", actor="alice", resource="file:x")
        assert ws.mesh.drain(10)  # live workspace: the fan-out runs on the dispatcher thread
        alert_task = ws.tasks.list(kind="security_alert")["id"].iloc[0]
        other = ws.tasks.create("Read the paper", kind="manual", actor="alice").id
    out = grace("tasks", "ls", "--json", "-w", path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["id"] for r in rows} == {alert_task, other}
    ran = grace("tasks", "run", alert_task, "-w", path)
    assert ran.returncode == 0, ran.stderr
    assert "done" in ran.stdout
    shown = grace("tasks", "show", alert_task, "--json", "-w", path)
    assert json.loads(shown.stdout)["result"]["alert"]
    stuck = grace("tasks", "run", other, "-w", path)
    assert stuck.returncode == 2
    assert "no handler for kind 'manual'" in stuck.stderr
    cancelled = grace("tasks", "cancel", other, "--reason", "read already", "-w", path)
    assert cancelled.returncode == 0, cancelled.stderr
    pending = grace("tasks", "ls", "--state", "pending", "-w", path)
    assert other not in pending.stdout


# -- lessons as executable policy ---------------------------------------------------------------------------------
def _recording(
    ws: g.Workspace, kind: str, *, fails: Any = None, max_attempts: int = 3
) -> list[dict[str, Any]]:
    """Register a handler for ``kind`` that records what each run saw (and raises when ``fails(task)``)."""
    seen: list[dict[str, Any]] = []

    def handler(task: Task, w: g.Workspace) -> str:
        seen.append(
            {
                "task": task.id,
                "params": dict(task.details.get("params", {})),
                "attempt": task.attempts,
                "hour": int(w.clock.time() // 3600) % 24,
            }
        )
        if fails is not None and fails(task):
            raise RuntimeError("refused")
        return "ok"

    ws.executor.register(kind, handler, max_attempts=max_attempts, backoff=1)
    return seen


def test_a_lessons_parameter_fix_reaches_the_handler_only_when_its_condition_holds(ws: g.Workspace) -> None:
    seen = _recording(ws, "export")
    rule = ws.learning.add_lesson(
        "lz4 fails: use zstd",
        effect={"kind": "export", "when": {"codec": "lz4"}, "params": {"codec": "zstd"}},
        actor="rita",
    )
    ws.loops.set_param("learning", "holdout_share", 1e-9, actor="system")  # none held out
    bad = ws.tasks.create("a", kind="export", actor="alice", details={"params": {"codec": "lz4"}})
    fine = ws.tasks.create("b", kind="export", actor="alice", details={"params": {"codec": "gzip"}})
    ws.executor.run_due()
    # Both were created at the same instant: the order between them is not what this test is about.
    assert sorted(s["params"]["codec"] for s in seen) == ["gzip", "zstd"]
    assert ws.tasks.get(bad.id).details["params"] == {"codec": "lz4"}  # the task itself is unchanged
    started = {
        e.payload["task_id"]: e.payload
        for e in ws.ledger.events(topic="task.state_changed")
        if e.payload["to"] == "running"
    }
    assert started[bad.id]["policy"] == {"lessons": [rule], "params": {"codec": "zstd"}}
    assert "policy" not in started[fine.id]
    runs = ws.sql("SELECT rule_id, task_id, arm, outcome FROM lesson_runs")
    assert runs.to_dict(orient="records") == [
        {"rule_id": rule, "task_id": bad.id, "arm": "applied", "outcome": "done"}
    ]


def test_a_retry_lesson_gives_a_flaky_kind_more_attempts(ws: g.Workspace) -> None:
    seen = _recording(ws, "sync", fails=lambda t: t.attempts < 5, max_attempts=3)
    ws.loops.set_param("learning", "holdout_share", 1e-9, actor="system")  # none held out
    fast(ws)
    first = ws.tasks.create("a", kind="sync", actor="alice")
    ws.loops.run_for(minutes=5)
    assert (ws.tasks.get(first.id).state, len(seen)) == ("failed", 3)
    ws.learning.add_lesson("retry more", effect={"kind": "sync", "retry": {"max_attempts": 6}}, actor="rita")
    second = ws.tasks.create("b", kind="sync", actor="alice")
    ws.loops.run_for(minutes=5)
    done = ws.tasks.get(second.id)
    assert (done.state, done.attempts) == ("done", 5)


def test_an_hours_lesson_defers_runs_out_of_the_window_and_gets_the_outcome(ws: g.Workspace) -> None:
    seen = _recording(ws, "backup")
    ws.loops.set_param("learning", "holdout_share", 1e-9, actor="system")  # none held out
    rule = ws.learning.add_lesson(
        "not at night", effect={"kind": "backup", "avoid_hours": [0, 1]}, actor="rita"
    )
    fast(ws, interval=60)
    task = ws.tasks.create("a", kind="backup", actor="alice")  # created at 00:00
    ws.loops.run_for(minutes=30)
    waiting = ws.tasks.get(task.id)
    assert waiting.state == "pending"
    assert waiting.deferred_by == (rule,)
    assert waiting.next_attempt_at is not None
    assert waiting.next_attempt_at.hour == 2
    assert len(ws.events(topic="task.deferred")) == 1  # deferred once, not on every tick
    ws.loops.run_for(hours=2)
    assert ws.tasks.get(task.id).state == "done"
    assert [s["hour"] for s in seen] == [2]
    [row] = ws.sql("SELECT arm, outcome, duration_s FROM lesson_runs").to_dict(orient="records")
    assert (row["arm"], row["outcome"]) == ("applied", "done")
    assert row["duration_s"] >= 2 * 3600


def test_held_out_tasks_run_without_lessons_and_record_which_would_have_applied(ws: g.Workspace) -> None:
    seen = _recording(ws, "export")
    rule = ws.learning.add_lesson(
        "use zstd", effect={"kind": "export", "params": {"codec": "zstd"}}, actor="rita"
    )
    ws.loops.set_param("learning", "holdout_share", 0.5, actor="system")
    tasks = [
        ws.tasks.create(f"t{i}", kind="export", actor="alice", details={"params": {"codec": "lz4"}})
        for i in range(40)
    ]
    ws.executor.run_due(limit=None)
    arms = dict(ws.sql("SELECT task_id, arm FROM lesson_runs").itertuples(index=False, name=None))
    assert set(arms) == {t.id for t in tasks}
    held = [t.id for t in tasks if arms[t.id] == "held_out"]
    assert 8 <= len(held) <= 32  # about half, drawn from the seed and the task id
    codecs = {s["task"]: s["params"]["codec"] for s in seen}
    assert all(codecs[t] == "lz4" for t in held)
    assert all(codecs[t.id] == "zstd" for t in tasks if t.id not in held)
    assert set(ws.learning.outcomes()["arm"]) == {"applied", "held_out"}
    assert ws.executor.policy(ws.tasks.get(held[0])).held_out == (rule,)  # the same draw every time


def test_runs_are_the_analysis_input_and_can_leave_out_what_lessons_changed(ws: g.Workspace) -> None:
    _recording(ws, "export", fails=lambda t: t.details["params"]["codec"] == "lz4", max_attempts=1)
    ws.loops.set_param("learning", "holdout_share", 1e-9, actor="system")  # none held out
    a = ws.tasks.create("a", kind="export", actor="alice", details={"size": 12.5, "params": {"codec": "lz4"}})
    ws.executor.run_due()
    ws.learning.add_lesson("use zstd", effect={"kind": "export", "params": {"codec": "zstd"}}, actor="rita")
    ws.tasks.create("b", kind="export", actor="alice", details={"size": 3, "params": {"codec": "lz4"}})
    ws.executor.run_due()
    runs = ws.tasks.runs(kinds=["export"])
    assert [(r["task"] == a.id, r["ok"], r["features"]) for r in runs] == [
        (True, False, {"codec": "lz4", "size": 12.5}),
        (False, True, {"codec": "lz4", "size": 3}),
    ]
    assert runs[0]["error"] == "RuntimeError: refused"
    assert runs[0]["hour"] == 0
    assert [r["task"] for r in ws.tasks.runs(kinds=["export"], unaffected=True)] == [a.id]
    assert json.loads(json.dumps(runs)) == runs


def test_the_learned_handler_investigates_a_failing_task_kind(ws: g.Workspace) -> None:
    _recording(ws, "export", fails=lambda t: t.details["params"]["codec"] == "lz4", max_attempts=1)
    for i in range(24):
        ws.tasks.create(
            f"t{i}",
            kind="export",
            actor="alice",
            details={"size": 10 + i, "params": {"codec": ("lz4", "gzip", "zstd")[i % 3]}},
        )
    ws.executor.run_due(limit=None)
    task = ws.tasks.create(
        "Investigate",
        kind="learned",
        actor="learning",
        details={"pattern": "failure:task:export", "lesson": "export fails"},
    )
    done = ws.executor.run(task.id)
    report = done.result["investigation"]
    assert (report["runs"], report["failed"]) == (24, 8)
    assert report["failure_rate_by"]["codec"] == {"gzip": 0.0, "lz4": 1.0, "zstd": 0.0}
    [cause] = report["causes"]
    assert cause["effect"]["when"] == {"codec": "lz4"}
    note = ws.memory.read(done.result["memory_path"]).content
    assert "failure rate by codec: gzip 0%, lz4 100%, zstd 0%" in note


def test_each_lesson_draws_its_own_holdout(ws: g.Workspace) -> None:
    """Two lessons of one kind: a task held out of one is as likely as any other to get the second, so the
    second cannot take credit for the first (or the other way round)."""
    _recording(ws, "export")
    first = ws.learning.add_lesson(
        "zstd", effect={"kind": "export", "params": {"codec": "zstd"}}, actor="rita", key="manual:zstd"
    )
    second = ws.learning.add_lesson(
        "retry", effect={"kind": "export", "retry": {"max_attempts": 5}}, actor="rita", key="manual:retry"
    )
    ws.loops.set_param("learning", "holdout_share", 0.5, actor="system")
    for i in range(40):
        ws.tasks.create(f"t{i}", kind="export", actor="alice", details={"params": {"codec": "lz4"}})
    ws.executor.run_due(limit=None)
    arms = ws.sql("SELECT task_id, rule_id, arm FROM lesson_runs").pivot(
        index="task_id", columns="rule_id", values="arm"
    )
    combinations = set(zip(arms[first], arms[second], strict=True))
    assert combinations == {
        ("applied", "applied"),
        ("applied", "held_out"),
        ("held_out", "applied"),
        ("held_out", "held_out"),
    }
