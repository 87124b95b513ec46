"""Learning: tasks from recurring insights (deduplicated by key); advice lessons voted on by recurrence; lessons
with an effect voted on by measured outcomes (holdout), dropped at zero; the pure choice of operations."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import grace

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.errors import EventError, LessonError, ModelOutputError
from grace_core.events import Event
from grace_core.learning import (
    INITIAL_VOTES,
    answer_of,
    choose_operations,
    insight_operations,
    lesson_text,
    operations_of_answer,
    rule_votes,
)
from grace_core.tasks import Task

PASSWORD = "correct horse battery staple 42"
KEY = "AKIAIOSFODNN7EXAMPLE"


def failures(ws: Workspace, n: int, topic: str = "experiment.run_failed") -> list[Event]:
    return [ws.publish(topic, {"run": i}, actor="runner") for i in range(n)]


def cycle(ws: Workspace) -> None:
    """One reflection (past its period) followed by one learning tick."""
    assert isinstance(ws.clock, ManualClock)
    ws.clock.advance(seconds=ws.loops.param("reflection", "period"))
    ws.loops.step("reflection")
    ws.loops.step("learning")


def votes_of(ws: Workspace, key: str) -> list[tuple[str, int]]:
    rules = ws.learning.rules(include_dropped=True)
    ids = list(rules[rules["key"] == key].sort_values("created_at")["id"])
    return [(r.op, int(r.votes)) for rule_id in ids for r in ws.learning.history(rule_id).itertuples()]


def test_recurring_failures_create_one_task_caused_by_the_insights(ws: Workspace) -> None:
    first = failures(ws, 3)
    cycle(ws)
    cycle(ws)  # nothing new: no insight
    assert ws.learning.tasks().empty
    failures(ws, 1)
    cycle(ws)
    assert ws.learning.tasks().empty  # two insights so far; min_insights is 3
    failures(ws, 1)
    cycle(ws)
    tasks = ws.learning.tasks()
    assert len(tasks) == 1
    task = ws.tasks.get(tasks["id"].iloc[0])
    assert task.key == "learned:failure:experiment.run_failed"
    assert task.kind == "learned"
    assert task.created_by == "learning"
    insights = ws.reflection.insights()
    assert task.details["insights"] == list(insights["id"])
    assert task.details["pattern"] == "failure:experiment.run_failed"
    # The task is caused by the latest insight, which is caused by a failure event: raw event -> insight -> task.
    lineage = ws.causal.lineage(task.id)
    assert list(lineage["topic"])[:3] == ["task.created", "reflection.insight", "experiment.run_failed"]
    assert lineage["id"].iloc[1] == insights["id"].iloc[-1]
    assert first[0].id in ws.reflection.insight(lineage["id"].iloc[1])["evidence"]

    # The pattern keeps recurring: the open task is not duplicated.
    failures(ws, 1)
    cycle(ws)
    assert len(ws.learning.tasks()) == 1
    # Once it is done, min_insights insights newer than the task (one came while it was open) open another.
    ws.tasks.transition(task.id, "done", actor="system")
    for expected in (1, 2):
        failures(ws, 1)
        cycle(ws)
        assert len(ws.learning.tasks()) == expected
    newer = ws.tasks.get(ws.learning.tasks().sort_values("created_at")["id"].iloc[-1])
    assert set(newer.details["insights"]).isdisjoint(task.details["insights"])


def test_a_learned_task_traces_back_to_the_chat_message(ws: Workspace) -> None:
    ws.auth.register("ada", PASSWORD, role="admin", by="system")
    ws.auth.register("rita", PASSWORD, role="researcher", by="ada")
    ws.loops.set_param("learning", "min_insights", 2.0, actor="system")
    questions = []
    for _ in range(2):
        ws.chat.send("rita", f"here is {KEY}")
        questions.append(ws.sql("SELECT id FROM chat_messages WHERE kind = 'received'")["id"].iloc[-1])
        ws.chat.send("rita", f"again {KEY}")
        cycle(ws)
    [task_id] = ws.learning.tasks()["id"]
    assert ws.tasks.get(task_id).details["pattern"] == "alert:aws-access-key-id"
    lineage = ws.causal.lineage(task_id)
    assert list(lineage["topic"]) == [
        "task.created",
        "reflection.insight",
        "hunter.alert",
        "chat.message.received",
    ]
    assert lineage["actor"].iloc[-1] == "rita"


def test_lessons_strengthen_while_recurring_then_decay_and_drop(ws: Workspace) -> None:
    ws.loops.set_param("learning", "decay_after", 2.0, actor="system")
    key = "failure:experiment.run_failed"
    failures(ws, 3)
    cycle(ws)  # reflection 1: add
    for _ in range(2):  # reflections 2, 3: agree
        failures(ws, 1)
        cycle(ws)
    assert votes_of(ws, key) == [("add", 2), ("upvote", 3), ("upvote", 4)]
    # Another pattern keeps the reflections coming while this one is quiet.
    ws.loops.set_param("reflection", "lookback", 300.0, actor="system")
    for _ in range(8):  # reflections 4..11: quiet for 1..8 reflections
        failures(ws, 3, topic="build.link_error")
        cycle(ws)
    # -1 at 2, 4, 6 and 8 quiet reflections: 4 -> 0, dropped.
    assert votes_of(ws, key)[3:] == [("downvote", 3), ("downvote", 2), ("downvote", 1), ("downvote", 0)]
    assert set(ws.learning.history()["basis"]) >= {"insight", "recurrence", "quiet"}
    rules = ws.learning.rules(include_dropped=True).set_index("key")
    assert rules.loc[key, "state"] == "dropped"
    assert key not in set(ws.learning.rules()["key"])
    assert ws.learning.rules().set_index("key").loc["failure:build.link_error", "votes"] == 2 + 7
    # The pattern comes back: a new lesson starts from scratch.
    failures(ws, 3)
    cycle(ws)
    assert votes_of(ws, key)[-1] == ("add", INITIAL_VOTES)
    assert len(ws.learning.rules(include_dropped=True).query("key == @key")) == 2


def test_a_lesson_is_edited_when_its_wording_changes(ws: Workspace) -> None:
    key = "failure:experiment.run_failed"
    failures(ws, 3)
    cycle(ws)
    [rule_id] = ws.learning.rules()["id"]
    assert "now and then" in ws.learning.rules()["text"].iloc[0]
    failures(ws, 600)  # now it fails constantly
    cycle(ws)
    history = ws.learning.history(rule_id)
    assert list(history["op"]) == ["add", "edit", "upvote"]  # reworded, and its recurrence is a vote
    assert list(history["votes"]) == [2, 2, 3]
    assert "constant" in ws.learning.rules().set_index("key").loc[key, "text"]
    [edited] = ws.ledger.events(topic="learning.rule_edited")
    assert "now and then" in edited.payload["old_text"]


def test_rule_operations_are_caused_by_their_insight(ws: Workspace) -> None:
    failures(ws, 3)
    cycle(ws)
    added = ws.events(topic="learning.rule_added")
    insight = ws.reflection.insights()["id"].iloc[0]
    assert added["parent_id"].iloc[0] == insight
    assert ws.learning.history()["insight"].iloc[0] == insight


_OPS = st.lists(st.sampled_from(["upvote", "edit", "downvote"]), max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_vote_arithmetic_matches_the_projection(ops: list[str]) -> None:
    """Any sequence of operations: the table's votes follow add=2, edit=0, upvote=+1, downvote=-1, gone at 0."""
    with open_workspace(":memory:", clock=ManualClock(), seed=1) as ws:
        rule = ws.publish(
            "learning.rule_added", {"key": "k", "text": "t", "votes": 2, "reflection": 1}, actor="learning"
        )
        expected = rule_votes(["add", *ops])
        topics = {
            "upvote": "learning.rule_upvoted",
            "edit": "learning.rule_edited",
            "downvote": "learning.rule_downvoted",
        }
        for i, op in enumerate(ops, start=1):
            payload = {"key": "k", "rule_id": rule.id, "reflection": 1 + i, "text": f"t{i}"}
            if i >= len(expected):  # the rule was dropped: any further vote is refused
                with pytest.raises(EventError, match="dropped"):
                    ws.publish(topics[op], payload, actor="learning")
                break
            ws.publish(topics[op], payload, actor="learning")
        history = ws.learning.history(rule.id)
        assert list(history["votes"]) == expected
        state = ws.learning.rules(include_dropped=True)["state"].iloc[0]
        assert state == ("dropped" if expected[-1] == 0 else "active")
        assert all(v > 0 for v in expected[:-1])


def test_rule_votes_pure_function() -> None:
    assert rule_votes(["add", "upvote", "edit", "upvote", "downvote"]) == [2, 3, 3, 4, 3]
    assert rule_votes(["add", "downvote", "downvote", "upvote"]) == [2, 1, 0]


def _run(seed: int) -> bytes:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=seed)
    try:
        ws.loops.start("reflection")
        ws.loops.start("learning")
        for r in range(5):
            failures(ws, 3 + r)
            failures(ws, r % 3, topic="build.link_error")
            ws.loops.run_for(minutes=6)
        assert len(ws.learning.tasks()) >= 1
        return ws.ledger.head[1]
    finally:
        ws.close()


@pytest.mark.slow
def test_same_seed_same_head_hash_with_both_loops() -> None:
    assert _run(21) == _run(21)


def test_objective_is_the_share_of_votes_that_held_up(ws: Workspace) -> None:
    loop = ws.loops["learning"]
    assert set(loop.tunable) <= set(loop.params)
    start = ws.clock.time()
    failures(ws, 3)
    cycle(ws)
    assert loop.objective(ws, start, ws.clock.time() + 1) is None  # only an add
    for _ in range(3):
        failures(ws, 1)
        cycle(ws)
    assert loop.objective(ws, start, ws.clock.time() + 1) == 1.0  # three upvotes
    ws.loops.set_param("learning", "decay_after", 1.0, actor="system")
    ws.loops.set_param("reflection", "lookback", 300.0, actor="system")
    for _ in range(3):
        failures(ws, 3, topic="build.link_error")
        cycle(ws)
    value = loop.objective(ws, start, ws.clock.time() + 1)
    assert value is not None
    assert 0.0 < value < 1.0


def test_cli_lists_lessons_and_their_history(file_ws: Callable[..., Workspace], tmp_path: Path) -> None:
    ws = file_ws(clock=ManualClock(), seed=4)
    failures(ws, 3)
    cycle(ws)
    failures(ws, 1)
    cycle(ws)
    [rule_id] = ws.learning.rules()["id"]
    ws.close()
    path = tmp_path / "w.duckdb"
    listed = grace("lessons", "ls", "--json", "-w", path)
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["votes"] == 3
    assert row["key"] == "failure:experiment.run_failed"
    history = grace("lessons", "history", rule_id, "--json", "-w", path)
    assert [json.loads(line)["op"] for line in history.stdout.splitlines()] == ["add", "upvote"]
    table = grace("lessons", "ls", "-w", path)
    assert "experiment.run_failed" in table.stdout
    unknown = grace("lessons", "history", "nope", "-w", path)
    assert unknown.returncode == 2


# -- the choice of operations (pure) ------------------------------------------------------------------------------
EFFECT = {"kind": "ops.k", "cause": "bad_parameter", "when": {"codec": "lz4"}, "params": {"codec": "zstd"}}


def cause_insight(effect: dict | None = EFFECT, n: int = 1) -> dict:
    data = {"task_kind": "ops.k", "cause": "bad_parameter", "error": "BadRequest"}
    if effect is not None:
        data["effect"] = effect
    return {
        "id": f"i{n}",
        "kind": "failure_cause",
        "key": "cause:ops.k:BadRequest",
        "text": "t",
        "data": data,
    }


def lesson(effect: dict | None = EFFECT, **kw: object) -> dict:
    text = lesson_text("failure_cause", "cause:ops.k:BadRequest", cause_insight(effect)["data"])
    base = {
        "id": "r1",
        "key": "cause:ops.k:BadRequest",
        "text": text,
        "votes": 2,
        "effect": effect,
        "last_reflection": 1,
    }
    return {**base, **kw}


def ops_of(**request: object) -> list[dict]:
    answer = choose_operations({"reflection": 2, **request})
    assert json.loads(json.dumps(answer)) == answer  # JSON out
    return answer["operations"]


def test_an_insight_with_an_effect_adds_a_lesson_that_carries_it() -> None:
    [op] = ops_of(insights=[cause_insight()])
    assert (op["op"], op["basis"], op["effect"]) == ("ADD", "insight", EFFECT)
    assert "use codec = zstd" in op["text"]


def test_an_effect_lesson_is_not_voted_on_by_recurrence_but_edited_when_the_proposal_changes() -> None:
    assert ops_of(insights=[cause_insight()], lessons=[lesson()]) == []  # recurs unchanged: nothing
    other = {**EFFECT, "params": {"codec": "gzip"}}
    [edit] = ops_of(insights=[cause_insight(other)], lessons=[lesson()])
    assert (edit["op"], edit["effect"], edit["old_effect"]) == ("EDIT", other, EFFECT)
    # quiet for a long time: an effect lesson does not decay (a fix that works makes its pattern go away)
    assert ops_of(reflection=30, lessons=[lesson()], params={"decay_after": 1}) == []


def test_outcomes_vote_when_the_difference_is_significant() -> None:
    def vote(applied: tuple[int, int], held: tuple[int, int]) -> list[str]:
        outcome = {
            "rule_id": "r1",
            "applied": {"tasks": applied[0], "done": applied[1]},
            "held_out": {"tasks": held[0], "done": held[1]},
        }
        return [o["op"] for o in ops_of(lessons=[lesson()], outcomes=[outcome])]

    assert vote((20, 20), (5, 2)) == ["UPVOTE"]  # helps
    assert vote((10, 0), (4, 4)) == ["DOWNVOTE"]  # hurts
    assert vote((10, 9), (5, 4)) == []  # no measurable difference
    assert vote((20, 0), (2, 2)) == []  # too few held out to tell
    [op] = ops_of(
        lessons=[lesson()],
        outcomes=[
            {"rule_id": "r1", "applied": {"tasks": 10, "done": 0}, "held_out": {"tasks": 4, "done": 4}}
        ],
    )
    assert op["basis"] == "outcome"
    assert op["evidence"]["held_out"] == {"tasks": 4, "done": 4}
    assert op["evidence"]["z"] < -1.96


def test_an_effect_dropped_for_harm_is_not_added_again() -> None:
    dropped = [{"key": "cause:ops.k:BadRequest", "effect": EFFECT}]
    assert ops_of(insights=[cause_insight()], dropped=dropped) == []
    other = {**EFFECT, "params": {"codec": "gzip"}}
    assert [o["op"] for o in ops_of(insights=[cause_insight(other)], dropped=dropped)] == ["ADD"]


def test_a_malformed_proposal_teaches_advice_not_behaviour() -> None:
    [op] = ops_of(insights=[cause_insight({"kind": "ops.k", "retry": {"max_attempts": 99}})])
    assert op["op"] == "ADD"
    assert "effect" not in op


# -- lessons with effects in a workspace ----------------------------------------------------------------------------
def test_add_lesson_refuses_a_bad_effect_and_a_duplicate_key(ws: Workspace) -> None:
    with pytest.raises(LessonError, match="max_attempts"):
        ws.learning.add_lesson("more", effect={"kind": "k", "retry": {"max_attempts": 0}}, actor="rita")
    assert ws.learning.rules().empty  # nothing was written
    ws.learning.add_lesson("use zstd", effect={"kind": "k", "params": {"codec": "zstd"}}, actor="rita")
    with pytest.raises(LessonError, match="already"):
        ws.learning.add_lesson("use gzip", effect={"kind": "k", "params": {"codec": "gzip"}}, actor="rita")
    [row] = ws.learning.rules().to_dict(orient="records")
    assert (row["created_by"], row["task_kind"], json.loads(row["effect"])["params"]) == (
        "rita",
        "k",
        {"codec": "zstd"},
    )


def test_a_harmful_lesson_is_downvoted_by_outcomes_dropped_and_stops_applying(ws: Workspace) -> None:
    """A researcher's lesson sets a parameter value that makes every run fail. The held-out tasks keep
    succeeding, so the measured outcomes downvote it to zero; once dropped, its effect no longer applies."""
    seen: list[str] = []

    def handler(task: Task, _ws: Workspace) -> str:
        seen.append(task.details["params"]["mode"])
        if task.details["params"]["mode"] == "broken":
            raise RuntimeError("request rejected")
        return "ok"

    ws.executor.register("job", handler, max_attempts=1)
    ws.loops.set_param("learning", "holdout_share", 0.4, actor="system")
    rule_id = ws.learning.add_lesson(
        "job works better in broken mode", effect={"kind": "job", "params": {"mode": "broken"}}, actor="rita"
    )
    ws.loops.start("executor")
    ws.loops.start("reflection")
    ws.loops.start("learning")
    for _ in range(40):
        ws.tasks.create("job", kind="job", actor="alice", details={"params": {"mode": "fine"}})
        ws.loops.run_for(minutes=5)
        if ws.learning.rules(include_dropped=True).set_index("id").loc[rule_id, "state"] == "dropped":
            break
    history = ws.learning.history(rule_id)
    assert list(history["op"]) == ["add", "downvote", "downvote"]
    assert list(history["basis"]) == ["injected", "outcome", "outcome"]
    evidence = json.loads(history["evidence"].iloc[-1])
    assert evidence["applied"]["done"] == 0 < evidence["held_out"]["done"]
    assert "broken" in seen
    seen.clear()
    for _ in range(3):
        ws.tasks.create("job", kind="job", actor="alice", details={"params": {"mode": "fine"}})
    ws.loops.run_for(minutes=5)
    assert seen == ["fine"] * 3  # dropped: its effect no longer applies
    outcomes = ws.learning.outcomes().set_index("arm")
    assert outcomes.loc["applied", "success_rate"] == 0.0
    assert outcomes.loc["held_out", "success_rate"] == 1.0


HUNTER_EFFECT = {
    "target": "hunter",
    "rule": "aws-access-key-id",
    "cause": "false_positive",
    "suppress": {"context": ["example"]},
}


def hunter_insight(effect: dict = HUNTER_EFFECT) -> dict:
    data = {"rule": "aws-access-key-id", "false_positives": 6, "confirmed": 4, "covered": 5, "effect": effect}
    return {
        "id": "fp1",
        "kind": "false_positive",
        "key": "false_positive:aws-access-key-id",
        "text": "...",
        "data": data,
    }


def test_a_false_positive_insight_adds_a_lesson_for_hunter() -> None:
    [op] = ops_of(insights=[hunter_insight()])
    assert (op["op"], op["effect"]) == ("ADD", HUNTER_EFFECT)
    assert (
        op["text"]
        == 'Hunter rule aws-access-key-id fires on harmless text with "example" nearby: do not alert there.'
    )


def test_a_hunter_lesson_is_voted_on_by_the_verdicts_on_alerts_it_would_silence() -> None:
    hunter_lesson = {
        "id": "h1",
        "key": "false_positive:aws-access-key-id",
        "text": "t",
        "votes": 2,
        "effect": HUNTER_EFFECT,
        "last_reflection": 1,
    }

    def vote(silenced: tuple[int, int], alerts: tuple[int, int]) -> list[dict]:
        outcome = {
            "rule_id": "h1",
            "silenced": {"alerts": silenced[0], "confirmed": silenced[1]},
            "alerts": {"alerts": alerts[0], "confirmed": alerts[1]},
        }
        return ops_of(lessons=[hunter_lesson], outcomes=[outcome])

    # Silencing only false positives while most alerts are right raises F1: up.
    [up] = vote((10, 0), (40, 30))
    assert (up["op"], up["basis"]) == ("UPVOTE", "outcome")
    assert up["evidence"]["silenced"] == {"alerts": 10, "confirmed": 0}
    # Silencing alerts that are mostly confirmed attacks lowers F1: down, after only a few.
    [down] = vote((3, 3), (40, 30))
    assert down["op"] == "DOWNVOTE"
    assert down["evidence"]["z"] < -1.96
    assert vote((2, 2), (40, 30)) == []  # too few to tell
    assert vote((6, 2), (40, 30)) == []  # a third confirmed: no measurable harm or good yet


def test_hunter_lessons_are_kept_apart_from_the_executors(ws: Workspace) -> None:
    lesson = ws.learning.add_lesson("Example keys are no leak.", effect=HUNTER_EFFECT, actor="system")
    assert ws.learning.lessons()[0]["key"] == "manual:aws-access-key-id:false_positive"
    assert ws.learning.hunter_lessons() == [(lesson, HUNTER_EFFECT)]
    assert ws.learning.effects() == {}


def test_a_harmful_hunter_lesson_is_downvoted_by_verdicts_dropped_and_stops_silencing(ws: Workspace) -> None:
    """A lesson allowlists a word that real leaks carry. The analyst confirms the held-out alerts it would have
    silenced, so the verdicts downvote it to zero; once dropped, the leaks alert again."""
    ws.auth.register("ada", "Ada-admin-pass-9x!", role="admin", by="system")
    ws.auth.register("rex", "Rex-researcher-pass-9x!", role="researcher", by="system")
    ws.loops.set_param("learning", "holdout_share", 0.5, actor="system")
    bad = {**HUNTER_EFFECT, "suppress": {"context": ["credentials"]}}
    rule_id = ws.learning.add_lesson("Credentials talk is harmless.", effect=bad, actor="ada")
    ws.loops.start("reflection")
    ws.loops.start("learning")
    silenced = 0
    rng = random.Random(7)
    for i in range(60):
        key = "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
        ws.memory.write(
            f"/team/leak-{i}.md", f"Deploying now, the credentials are {key} for job {i}.", actor="rex"
        )
        ws.clock.advance(60)
        for alert in ws.hunter.alerts().query("verdict.isnull()").id:
            ws.hunter.feedback(str(alert), "confirmed", actor="rex")
        silenced = len(ws.ledger.events(topic="hunter.alert_suppressed"))
        ws.loops.run_for(minutes=5)
        if ws.learning.rules(include_dropped=True).set_index("id").loc[rule_id, "state"] == "dropped":
            break
    history = ws.learning.history(rule_id)
    assert list(history["op"]) == ["add", "downvote", "downvote"]
    assert list(history["basis"]) == ["injected", "outcome", "outcome"]
    evidence = json.loads(history["evidence"].iloc[-1])
    assert evidence["silenced"]["alerts"] == evidence["silenced"]["confirmed"] >= 3
    assert silenced > 0  # it did silence leaks while it was active
    assert ws.learning.hunter_lessons() == []
    before = ws.hunter.alert_count()
    ws.memory.write(
        "/team/leak-after.md", "Deploying now, the credentials are AKIAZ3MHQ7RBX2LPWK4D.", actor="rex"
    )
    assert ws.hunter.alert_count() == before + 1  # dropped: nothing silences the leak any more


# -- the model chooses the operations --------------------------------------------------------------------------
def scripted(*answers: dict) -> Callable[[dict], str]:
    """A model for ``learning.operations`` that answers ``answers`` in turn (built from what it is shown)."""
    queue = list(answers)

    def answer(inputs: dict) -> str:
        made = queue.pop(0) if queue else {"operations": []}
        return json.dumps(made(inputs) if callable(made) else made)

    return answer


def test_offline_learning_is_the_rules_through_one_recorded_call(ws: Workspace) -> None:
    failures(ws, 3)
    cycle(ws)
    [call] = ws.llm.calls(prompt="learning.operations").itertuples()
    completed = ws.ledger.events(topic="reflection.completed")[-1]
    assert call.topic == "llm.completed"
    assert call.parent_id == completed.id  # caused by the reflection the tick learns from
    [added] = ws.ledger.events(topic="learning.rule_added")
    assert added.payload["completion"] == call.id
    assert added.payload["text"] == "experiment.run_failed fails now and then: investigate the cause."
    ws.publish("note.touched", {}, actor="rita")
    cycle(ws)  # a reflection without insights: still an advice lesson to judge (quiet for one reflection)
    assert len(ws.llm.calls(prompt="learning.operations")) == 2
    ws.learning.rules()  # the lesson is still there: one quiet reflection is not yet a downvote
    assert ws.learning.history(added.id)["op"].tolist() == ["add"]


def test_model_operations_apply_as_learning_events(ws: Workspace) -> None:
    def add(inputs: dict) -> dict:
        [insight] = inputs["insights"]
        return {"operations": [{"op": "ADD", "text": "Retry flaky runs.", "evidence": [insight["id"]]}]}

    def edit(inputs: dict) -> dict:
        [lesson] = inputs["lessons"]
        return {"operations": [{"op": "EDIT", "id": lesson["id"], "text": "Retry flaky runs twice."}]}

    def downvote(inputs: dict) -> dict:
        [lesson] = inputs["lessons"]
        return {"operations": [{"op": "DOWNVOTE", "id": lesson["id"], "reason": "contradicted"}]}

    ws.llm.register_offline("learning.operations", scripted(add, edit, downvote, downvote))
    for _ in range(4):
        failures(ws, 3)
        cycle(ws)
    [rule_id] = ws.learning.rules(include_dropped=True)["id"]
    history = ws.learning.history(rule_id)
    assert list(history["op"]) == ["add", "edit", "downvote", "downvote"]
    assert list(history["votes"]) == [2, 2, 1, 0]
    assert history["text"].iloc[-1] == "Retry flaky runs twice."
    assert ws.learning.rules().empty  # dropped at zero, as any lesson
    assert ws.learning.rules(include_dropped=True)["key"].iloc[0] == "failure:experiment.run_failed"


def test_a_model_vote_on_a_lesson_with_an_effect_is_rejected(ws: Workspace) -> None:
    rule_id = ws.learning.add_lesson("Use zstd for lz4 runs.", effect=EFFECT, actor="system")

    def upvote(inputs: dict) -> dict:
        return {"operations": [{"op": "UPVOTE", "id": rule_id, "reason": "looks right"}]}

    ws.llm.register_offline("learning.operations", scripted(upvote))
    failures(ws, 3)
    cycle(ws)
    calls = ws.llm.calls(prompt="learning.operations")
    assert calls["topic"].tolist() == ["llm.completed", "llm.output_rejected"]
    assert "its measured outcomes vote on it, not the model" in calls["error"].iloc[1]
    assert calls["parent_id"].iloc[1] == calls["id"].iloc[0]
    assert ws.learning.history(rule_id)["op"].tolist() == ["add"]  # nothing of the answer applied
    assert ws.learning.rules().set_index("id").loc[rule_id, "votes"] == INITIAL_VOTES


def test_a_model_cannot_bring_back_what_the_outcomes_dropped() -> None:
    harmful = {"key": "cause:ops.k:BadRequest", "effect": EFFECT, "text": "t"}
    request = {"reflection": 3, "insights": [cause_insight()], "lessons": [], "dropped": [harmful]}
    bad = {
        "no active lesson": {"op": "UPVOTE", "id": "r1"},  # the dropped lesson: gone for the model too
        "dropped for doing harm": {
            "op": "ADD", "key": harmful["key"], "text": "again", "effect": EFFECT, "evidence": ["i1"]
        },
        "no insight of this reflection": {"op": "ADD", "text": "x", "evidence": ["i9"]},
        "unknown effect key": {"op": "ADD", "text": "x", "evidence": ["i1"], "effect": {**EFFECT, "zap": 1}},
    }  # fmt: skip
    for reason, op in bad.items():
        with pytest.raises(ModelOutputError, match=reason):
            operations_of_answer({"operations": [op]}, request)
    # Another effect under the same key is a new proposal: it may be added.
    other = {**EFFECT, "params": {"codec": "gzip"}}
    [added] = operations_of_answer(
        {"operations": [{"op": "ADD", "text": "use gzip", "effect": other, "evidence": ["i1"]}]}, request
    )
    assert (added["key"], added["effect"], added["insight"]) == (harmful["key"], other, "i1")


def test_the_offline_answer_is_the_rules_operations() -> None:
    request = {
        "reflection": 4,
        "insights": [cause_insight(), {**cause_insight(None, 2), "key": "failure:x", "kind": "failure_rate"}],
        "lessons": [lesson(None, key="failure:y", id="r2", last_reflection=1)],
        "dropped": [],
        "params": {"decay_after": 3},
    }
    rules = insight_operations(request)["operations"]
    assert [op["op"] for op in rules] == ["ADD", "ADD", "DOWNVOTE"]
    assert operations_of_answer(answer_of(rules), request) == rules
