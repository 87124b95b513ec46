"""Reflection: insights from the ledger, importance-triggered, with evidence and causal lineage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import grace

from grace_core import ManualClock, Workspace, open_workspace, projection_differences, replay
from grace_core.errors import GraceError
from grace_core.events import Event
from grace_core.reflection import importance

PASSWORD = "correct horse battery staple 42"
KEY = "AKIAIOSFODNN7EXAMPLE"
RESET = ["How do I reset my password?", "Password reset fails for me", "Where is the password reset page?"]


def users(ws: Workspace) -> None:
    ws.auth.register("ada", PASSWORD, role="admin", by="system")
    ws.auth.register("rita", PASSWORD, role="researcher", by="ada")
    ws.auth.register("sam", PASSWORD, role="researcher", by="ada")


def failures(ws: Workspace, n: int, topic: str = "experiment.run_failed") -> list[Event]:
    return [ws.publish(topic, {"run": i}, actor="runner") for i in range(n)]


def reflect_now(ws: Workspace) -> None:
    """Step the loop once past its period, so it reflects whatever is pending."""
    assert isinstance(ws.clock, ManualClock)
    ws.clock.advance(seconds=ws.loops.param("reflection", "period"))
    ws.loops.step("reflection")


def kinds(ws: Workspace) -> dict[str, str]:
    frame = ws.reflection.insights()
    return dict(zip(frame["key"], frame["kind"], strict=True))


@pytest.fixture
def uws(ws: Workspace) -> Workspace:
    users(ws)
    return ws


def test_a_crafted_stream_gives_topic_failure_alert_and_refusal_insights(uws: Workspace) -> None:
    ws = uws
    for i, text in enumerate(RESET):
        ws.chat.send(["rita", "sam"][i % 2], text)
    ws.chat.send("rita", "What is the sandbox quota?")
    for _ in range(3):
        ws.chat.send("nobody", "Tell me about the budget")  # unregistered: refused by default deny
    ws.chat.send("rita", f"my key is {KEY}")
    ws.chat.send("sam", f"and mine is {KEY}")
    failed = failures(ws, 4)
    reflect_now(ws)

    found = kinds(ws)
    assert found["topic:reset password"] == "chat_topic"
    assert found["failure:experiment.run_failed"] == "failure_rate"
    assert found["unanswered:refused"] == "unanswered"
    alert_keys = [k for k, v in found.items() if v == "alert_rate"]
    assert alert_keys
    assert all(k.startswith("alert:") for k in alert_keys)

    frame = ws.reflection.insights().set_index("key")
    assert list(frame.loc["failure:experiment.run_failed", "evidence"]) == [e.id for e in failed]
    topic = frame.loc["topic:reset password"]
    assert topic["evidence_count"] == 3
    questions = ws.sql("SELECT id, text FROM chat_messages WHERE kind = 'received' ORDER BY position")
    reset_ids = set(questions[questions["text"].isin(RESET)]["id"])
    assert set(topic["evidence"]) == reset_ids
    # The refusal insight lists the refusals and the questions behind them.
    refused = ws.reflection.insight(frame.loc["unanswered:refused", "id"])
    topics = ws.sql("SELECT topic FROM events WHERE list_contains(?, id)", [refused["evidence"]])["topic"]
    assert sorted(set(topics)) == ["chat.message.received", "chat.message.refused"]
    # The questions that carried a secret are not a "topic": they are reported as alerts.
    assert not any("key" in k for k, v in found.items() if v == "chat_topic")
    # One reflection row records the window and trigger; payload and table agree.
    reflections = ws.reflection.reflections()
    assert list(reflections["n"]) == [1]
    assert reflections["insights"].iloc[0] == len(frame)


def test_insight_payload_lists_complete_evidence_and_window(ws: Workspace) -> None:
    failed = failures(ws, 5, topic="job.compile_error")
    reflect_now(ws)
    [insight_id] = ws.reflection.insights()["id"]
    insight = ws.reflection.insight(insight_id)
    assert insight["evidence"] == [e.id for e in failed]
    assert insight["evidence_count"] == 5
    assert insight["window"]["to_seq"] >= failed[-1].seq
    assert insight["window"]["from_seq"] < failed[0].seq
    assert insight["parent_id"] == failed[-1].id  # published while handling its newest evidence
    assert "job.compile_error failed 5 times" in insight["text"]


def test_lineage_reaches_back_to_the_chat_message(uws: Workspace) -> None:
    ws = uws
    ws.chat.send("rita", f"store {KEY} please")
    ws.chat.send("sam", f"the key {KEY} again")
    reflect_now(ws)
    alerts = ws.reflection.insights(kind="alert_rate")
    assert len(alerts) >= 1
    lineage = ws.causal.lineage(alerts["id"].iloc[0])
    assert list(lineage["topic"])[:2] == ["reflection.insight", "hunter.alert"]
    assert lineage["topic"].iloc[-1] == "chat.message.received"
    assert lineage["actor"].iloc[-1] == "sam"
    assert lineage["id"].iloc[-1] in set(ws.reflection.insight(alerts["id"].iloc[0])["evidence"]) | set(
        ws.sql("SELECT parent_id FROM events WHERE topic = 'hunter.alert'")["parent_id"]
    )


def test_importance_triggers_a_reflection_before_the_period_ends(ws: Workspace) -> None:
    ws.loops.set_param("reflection", "period", 3600.0, actor="system")
    ws.loops.set_param("reflection", "importance_threshold", 30.0, actor="system")
    ws.loops.start("reflection")
    # Low-importance chatter: 20 events of importance 1 stay below the threshold for the whole hour.
    for i in range(20):
        ws.publish("note.touched", {"i": i}, actor="rita")
    ws.loops.run_for(minutes=5)
    assert ws.reflection.reflections().empty
    # Five dead letters (7 each) push the sum over 30: the next tick reflects, well before the hour is up.
    for i in range(5):
        dead = {"subscriber": "indexer", "event_id": f"e{i}", "event_seq": i, "topic": "note.touched"}
        ws.publish(
            "mesh.delivery_failed", {**dead, "attempts": 5, "error": "OSError: disk full"}, actor="mesh"
        )
    ws.loops.run_for(seconds=10)
    reflections = ws.reflection.reflections()
    assert list(reflections["trigger"]) == ["importance"]
    # The four genesis events (1 each), the chatter (1 each) and the dead letters (7 each).
    assert reflections["importance"].iloc[0] == pytest.approx(4 + 20 * 1 + 5 * 7)
    insight = ws.reflection.insights().set_index("key").loc["failure:subscriber:indexer"]
    assert insight["trigger"] == "importance"
    # Quiet again: below the threshold, the next reflection waits for the period.
    ws.publish("note.touched", {"i": 99}, actor="rita")
    ws.loops.run_for(minutes=30)
    assert len(ws.reflection.reflections()) == 1
    ws.loops.run_for(minutes=31)
    assert list(ws.reflection.reflections()["trigger"]) == ["importance", "interval"]


def test_importance_table() -> None:
    def ev(topic: str, payload: dict[str, object], actor: str = "rita") -> Event:
        return Event(1, "x", 0, topic, actor, None, json.dumps(payload), None, "x", b"", b"")

    assert importance(ev("hunter.alert", {"severity": "critical"})) == 10
    assert importance(ev("hunter.alert", {"severity": "low"})) == 3
    assert importance(ev("governance.decision", {"effect": "deny"})) == 4
    assert importance(ev("governance.decision", {"effect": "allow"})) == 0
    assert importance(ev("task.state_changed", {"to": "failed"})) == 6
    assert importance(ev("sandbox.execution_failed", {})) == 6
    assert importance(ev("anything.else_error", {})) == 6
    assert importance(ev("chat.message.received", {})) == 2
    assert importance(ev("metrics.sampled", {})) == 0
    assert importance(ev("task.created", {}, actor="learning")) == 0  # the loops' own output never counts


def test_restart_resumes_from_the_cursor_without_losing_or_repeating_events(
    file_ws: Callable[..., Workspace], tmp_path: Path
) -> None:
    clock = ManualClock()
    ws = file_ws(clock=clock, seed=5)
    ws.loops.set_param("reflection", "period", 600.0, actor="system")
    first = failures(ws, 2)
    ws.loops.step("reflection")  # folds them into the pending window; not yet time to reflect
    assert ws.reflection.reflections().empty
    cursor = ws.loops.cursor("reflection")
    assert cursor >= first[-1].seq
    ws.close()

    ws = file_ws(clock=clock, seed=6)
    assert ws.loops.cursor("reflection") == cursor
    second = failures(ws, 2)
    clock.advance(seconds=601)
    ws.loops.step("reflection")
    [row] = ws.reflection.insights().itertuples()
    # Events from before and after the restart, each exactly once.
    assert list(row.evidence) == [e.id for e in first + second]
    ws.close()

    ws = file_ws(clock=clock, seed=7)
    clock.advance(seconds=601)
    ws.loops.step("reflection")
    ws.publish("note.touched", {}, actor="rita")
    ws.loops.step("reflection")
    assert len(ws.reflection.insights()) == 1  # nothing new: no repeated insight


def test_anomaly_against_the_rolling_baseline(ws: Workspace) -> None:
    ws.loops.set_param("reflection", "importance_threshold", 10_000.0, actor="system")
    for _ in range(4):  # four quiet windows establish the baseline: 2 uploads per 5 minutes
        for _ in range(2):
            ws.publish("data.uploaded", {}, actor="rita")
        reflect_now(ws)
    assert ws.reflection.insights(kind="anomaly").empty
    for _ in range(30):
        ws.publish("data.uploaded", {}, actor="rita")
    reflect_now(ws)
    anomalies = ws.reflection.insights(kind="anomaly")
    assert list(anomalies["key"]) == ["anomaly:data.uploaded"]
    assert anomalies["evidence_count"].iloc[0] == 30
    baseline = json.loads(ws.reflection.reflections()["baseline"].iloc[-1])
    assert baseline["data.uploaded"] > 0.4  # the spike moved the baseline up


def test_parameters_change_what_counts(ws: Workspace) -> None:
    failures(ws, 2)
    reflect_now(ws)
    assert ws.reflection.insights().empty  # two failures are below min_count 3
    ws.loops.set_param("reflection", "min_count", 2.0, actor="system", reason="more sensitive")
    failures(ws, 1)
    reflect_now(ws)
    assert list(ws.reflection.insights()["key"]) == ["failure:experiment.run_failed"]
    assert (
        ws.reflection.insights()["evidence_count"].iloc[0] == 3
    )  # the hour's failures, not just the new one


def test_optional_wording_through_the_model_keeps_the_plain_text(ws: Workspace) -> None:
    prompts: list[str] = []

    def rephrase(inputs):  # type: ignore[no-untyped-def]
        prompts.append(inputs["insight"])
        return "Experiments keep failing."

    ws.llm.register_offline("reflection.wording", rephrase)
    ws.loops.set_param("reflection", "wording", "model", actor="system")
    failures(ws, 3)
    reflect_now(ws)
    insight = ws.reflection.insight(ws.reflection.insights()["id"].iloc[0])
    assert insight["text"] == "Experiments keep failing."
    assert insight["wording"].startswith("offline:")
    assert insight["wording"].endswith("rephrase")
    assert insight["plain"].startswith("experiment.run_failed failed 3 times")
    assert prompts == [insight["plain"]]
    calls = ws.llm.calls(prompt="reflection.wording")
    assert calls["topic"].tolist() == ["llm.completed"]


def test_a_failing_model_falls_back_to_plain_wording_and_the_failure_is_recorded(ws: Workspace) -> None:
    def down(inputs):  # type: ignore[no-untyped-def]
        raise TimeoutError("the model is down")

    ws.llm.register_offline("reflection.wording", down)
    ws.loops.set_param("reflection", "wording", "model", actor="system")
    failures(ws, 3)
    reflect_now(ws)
    insight = ws.reflection.insight(ws.reflection.insights()["id"].iloc[0])
    assert insight["wording"] == "plain"
    assert insight["text"].startswith("experiment.run_failed failed 3 times")
    assert ws.llm.calls(prompt="reflection.wording")["topic"].tolist() == ["llm.failed"]


def _scripted_run(seed: int) -> tuple[bytes, int]:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=seed)
    try:
        users(ws)
        ws.loops.start("reflection")
        ws.loops.start("learning")
        for r in range(4):
            for i, text in enumerate(RESET):
                ws.chat.send(["rita", "sam"][i % 2], text)
            failures(ws, r + 2)
            ws.loops.run_for(minutes=6)
        return ws.ledger.head[1], len(ws.reflection.insights())
    finally:
        ws.close()


@pytest.mark.slow
def test_same_seed_same_head_hash() -> None:
    a, b = _scripted_run(11), _scripted_run(11)
    assert a == b
    assert a[1] > 0


def test_replay_rebuilds_insights_and_reflections(uws: Workspace, tmp_path: Path) -> None:
    ws = uws
    for text in RESET:
        ws.chat.send("rita", text)
    failures(ws, 3)
    reflect_now(ws)
    assert len(ws.reflection.insights()) >= 2
    copy = replay(ws, tmp_path / "copy.duckdb")
    try:
        diff = projection_differences(ws, copy)
        assert diff.get("insights", 0) == 0
        assert diff.get("reflections", 0) == 0
    finally:
        copy.close()


def test_objective_scores_insights_by_the_tasks_they_led_to(ws: Workspace) -> None:
    loop = ws.loops["reflection"]
    assert loop.tunable["importance_threshold"][0] < loop.tunable["importance_threshold"][1]
    start = ws.clock.time()
    failures(ws, 3)
    reflect_now(ws)
    assert loop.objective(ws, start, ws.clock.time() + 1) is None  # one insight is not enough to judge
    for _ in range(3):
        failures(ws, 3, topic="build.link_error")
        reflect_now(ws)
    ids = list(ws.reflection.insights()["id"])
    assert len(ids) == 4
    assert loop.objective(ws, start, ws.clock.time() + 1) == 0.0
    task = ws.tasks.create("look", kind="learned", actor="learning", details={"insights": ids[:2]})
    ws.tasks.transition(task.id, "done", actor="system")
    assert loop.objective(ws, start, ws.clock.time() + 1) == pytest.approx(0.5)


def test_cli_lists_and_shows_insights(file_ws: Callable[..., Workspace], tmp_path: Path) -> None:
    clock = ManualClock()
    ws = file_ws(clock=clock, seed=3)
    failed = failures(ws, 3)
    clock.advance(seconds=301)
    ws.loops.step("reflection")
    insight_id = ws.reflection.insights()["id"].iloc[0]
    ws.close()
    path = tmp_path / "w.duckdb"
    listed = grace("insights", "ls", "--json", "-w", path)
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["key"] == "failure:experiment.run_failed"
    assert row["evidence_count"] == 3
    shown = grace("insights", "show", insight_id, "--evidence", "-w", path)
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert lines[0]["evidence"] == [e.id for e in failed]
    assert lines[0]["lineage"][1]["id"] == failed[-1].id
    assert [r["id"] for r in lines[1:]] == [e.id for e in failed]
    missing = grace("insights", "show", "nope", "-w", path)
    assert missing.returncode == 2
    assert "nope" in missing.stderr


def test_insight_lookup_refuses_other_events(ws: Workspace) -> None:
    event = ws.publish("note.touched", {}, actor="rita")
    with pytest.raises(GraceError, match="not an insight"):
        ws.reflection.insight(event.id)


def test_failure_cause_insights_explain_why_a_task_kind_fails_and_propose_a_fix(ws: Workspace) -> None:
    def handler(task: object, _ws: Workspace) -> str:
        if task.details["params"]["region"] == "us-east":  # type: ignore[attr-defined]
            raise ConnectionError("request rejected: 400 Bad Request")
        return "ok"

    ws.executor.register("sync", handler, max_attempts=1)
    regions = ("eu-west", "us-east", "ap-south")
    for i in range(18):
        ws.tasks.create(f"t{i}", kind="sync", actor="alice", details={"params": {"region": regions[i % 3]}})
    ws.executor.run_due(limit=None)
    reflect_now(ws)
    [insight] = ws.reflection.insights(kind="failure_cause").to_dict(orient="records")
    assert insight["key"] == "cause:sync:ConnectionError"
    full = ws.reflection.insight(insight["id"])
    assert full["data"]["effect"] == {
        "kind": "sync",
        "cause": "bad_parameter",
        "when": {"region": "us-east"},
        "params": {"region": "ap-south"},
    }
    evidence = ws.reflection.evidence(insight["id"])
    assert set(evidence["topic"]) == {"task.state_changed"}
    assert len(evidence) == 6 + 10  # the six failures, and the latest ten successes they contrast with
    # Caused by a failed run, so its lineage reaches the task that failed.
    assert "task.created" in set(ws.causal.lineage(insight["id"])["topic"])


def test_scenario_events_are_never_reflected_on(ws: Workspace) -> None:
    """Scenario scores are measured against a hidden ground truth: a loop that read them would learn from the
    answer key."""
    reflect_now(ws)  # the workspace's own genesis
    before = len(ws.reflection.reflections())
    scored = ws.publish(
        "scenario.scored",
        {"run": "r", "scenario": "ops", "elapsed_s": 3600.0, "window_s": 3600.0, "scores": {"recall": 0.25}},
        actor="scenario",
    )
    assert importance(scored) == 0.0
    for _ in range(30):
        ws.publish("scenario.run_failed", {"n": 1}, actor="scenario")
    reflect_now(ws)
    assert len(ws.reflection.reflections()) == before  # nothing relevant was pending
    assert not any(k.startswith("failure:scenario") for k in ws.reflection.insights()["key"])


# -- the model step (Generative Agents) ----------------------------------------------------------------------------
def generative(ws: Workspace) -> list[Event]:
    return [e for e in ws.ledger.events(topic="reflection.insight") if e.payload["kind"] == "generative"]


def test_an_important_window_asks_the_model_and_keeps_insights_citing_what_was_retrieved(
    ws: Workspace,
) -> None:
    failures(ws, 12)  # 12 x 6 importance: over the threshold of 60
    reflect_now(ws)
    [reflection] = ws.reflection.reflections().itertuples()
    assert reflection.trigger == "importance"
    calls = ws.llm.calls()
    assert calls["prompt"].tolist()[0] == "reflection.questions"
    assert set(calls["prompt"]) == {"reflection.questions", "reflection.insights"}
    assert set(calls["topic"]) == {"llm.completed"}
    # Every call is caused by the reflection's start, so its lineage leads to the tick that made it.
    [started] = ws.ledger.events(topic="reflection.started")
    assert set(calls["parent_id"]) == {started.id}
    # The start is caused by the window's most important event (the latest failure), so lineage goes on to it.
    assert ws.ledger.get(str(started.parent_id)).topic == "experiment.run_failed"
    made = generative(ws)
    assert made
    for insight in made:
        data = insight.payload["data"]
        assert set(insight.payload["evidence"]) <= set(data["retrieved"])
        assert len(data["retrieved"]) <= ws.loops.param("reflection", "statements")
        assert insight.parent_id == data["completion"]  # caused by the answer it came from
        assert ws.ledger.get(data["completion"]).parent_id == started.id
    # The analysis's insight was published first, so the model could be asked about it.
    first_question = ws.llm.call(calls["id"].iloc[0])["messages"][-1]["content"]
    assert "experiment.run_failed failed 12 times" in first_question
    completed = ws.ledger.events(topic="reflection.completed")[-1].payload
    assert completed["insights"] == len(ws.reflection.insights())
    assert completed["model"]["insights"] == len(made)
    assert completed["model"]["rejected"] == completed["model"]["failed"] == 0


def test_a_window_below_the_threshold_calls_no_model(ws: Workspace) -> None:
    failures(ws, 3)
    reflect_now(ws)
    assert ws.reflection.reflections()["trigger"].tolist() == ["interval"]
    assert ws.llm.calls().empty
    ws.loops.set_param("reflection", "generative", "off", actor="system")
    failures(ws, 12)
    reflect_now(ws)
    assert ws.reflection.reflections()["trigger"].tolist() == ["interval", "importance"]
    assert ws.llm.calls().empty  # the model step is off


def test_reflections_over_reflections_cite_earlier_insights(ws: Workspace) -> None:
    failures(ws, 12)
    reflect_now(ws)
    earlier = {e.id for e in ws.ledger.events(topic="reflection.insight")}
    failures(ws, 12)
    reflect_now(ws)
    second = [e for e in generative(ws) if e.payload["reflection"] == 2]
    over = [e for e in second if e.payload["data"]["cites_insights"]]
    assert over, "no insight of the second reflection cites an insight"
    for insight in over:
        cited = set(insight.payload["data"]["cites_insights"])
        assert cited <= earlier | {e.id for e in ws.ledger.events(topic="reflection.insight")}
        assert cited <= set(insight.payload["evidence"])
        assert insight.payload["data"]["level"] >= 2


def test_insights_citing_ids_that_were_not_retrieved_are_rejected_and_not_stored(ws: Workspace) -> None:
    failed = failures(ws, 12)
    ws.loops.set_param("reflection", "statements", 1.0, actor="system")
    extra = iter(
        [lambda shown: "no-such-event", lambda shown: next(e.id for e in failed if e.id not in shown)]
    )

    def cite(inputs: dict[str, Any]) -> str:
        shown = [s["id"] for s in inputs["statements"]]
        more = next(extra, None)  # first an id that does not exist, then one that exists but was not shown
        evidence = shown + ([more(shown)] if more else [])
        return json.dumps({"insights": [{"text": "Runs fail.", "evidence": evidence}]})

    ws.llm.register_offline("reflection.insights", cite)  # a model that cites what it was not shown
    ws.loops.set_param("reflection", "questions", 3.0, actor="system")
    reflect_now(ws)
    rejected = ws.llm.calls()
    rejected = rejected[rejected["topic"] == "llm.output_rejected"]
    assert len(rejected) == 2
    assert "which is no statement's id" in rejected["error"].iloc[0]
    assert "which was not retrieved for this question" in rejected["error"].iloc[1]
    # Each rejection is caused by the completion it rejects; nothing of those answers is stored.
    for row in rejected.itertuples():
        assert ws.ledger.get(str(row.parent_id)).topic == "llm.completed"
    made = generative(ws)
    completions = {e.payload["data"]["completion"] for e in made}
    assert not completions & {str(p) for p in rejected["parent_id"]}
    assert ws.ledger.events(topic="reflection.completed")[-1].payload["model"]["rejected"] == 2
