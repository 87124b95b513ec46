"""The qa scenario: gold answers drawn from the seed; questions about seeded notes are answered from the start,
questions whose facts come up only in resolved conversations are answered only once the loops have written
them to memory; SQuAD scoring; bad input and a model that cannot answer give one line and an event."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from support import grace

from grace_core import ManualClock, open_workspace
from grace_core.errors import ModelCallError, ModelOutputError, ScenarioError
from grace_core.llm import HttpBackend
from grace_core.llm.offline import answer_by_extraction
from grace_core.scenarios import ScenarioRun, run_scenario
from grace_core.scenarios.qa import (
    ASKER,
    LEAD,
    QaScenario,
    exact_match,
    normalize_answer,
    short_answer_of,
    token_f1,
)

SEEDS = (1, 2, 3)
HOURS = 18.0  # every learned fact is resolved by hour 14 and 45 minutes


def test_the_gold_answers_are_drawn_from_the_seed_and_half_need_learning() -> None:
    truth = QaScenario(4).truth
    assert truth == QaScenario(4).truth
    assert truth != QaScenario(5).truth
    groups = [f["group"] for f in truth["facts"]]
    assert groups.count("seeded") == 6
    assert groups.count("learned") == 6
    for fact in truth["facts"]:
        assert normalize_answer(fact["answer"]) in normalize_answer(fact["sentence"])
    assert all(1 <= f["hour"] < 14 for f in truth["facts"] if f["group"] == "learned")
    assert "facts" not in json.dumps(QaScenario.describe())
    assert QaScenario.describe()["options"] == {"questions": "question set: lab (default lab)"}


@pytest.mark.parametrize(
    ("prediction", "gold", "em", "f1"),
    [
        ("The 3.21 kPa!", "3.21 kPa", 1.0, 1.0),
        ("stuck helium valve", "a stuck helium valve", 1.0, 1.0),
        ("a helium valve", "a stuck helium valve", 0.0, 0.8),
        ("I do not know.", "the lab-raw bucket", 0.0, 0.0),
    ],
)
def test_answers_are_scored_as_squad_does(prediction: str, gold: str, em: float, f1: float) -> None:
    assert exact_match(prediction, gold) == em
    assert token_f1(prediction, gold) == pytest.approx(f1)


def test_the_short_answer_is_the_first_line_without_citations() -> None:
    reply = "Mira Chen\n\nThe principal investigator of project Alpha is Mira Chen. [memory:/lab/projects/alpha.md]"
    assert short_answer_of(reply) == "Mira Chen"
    assert short_answer_of("[memory:/x.md] Mira Chen [memory:/y.md]\nmore") == "Mira Chen"
    assert short_answer_of("") == ""


def test_with_the_loops_on_knowledge_dependent_questions_get_answered_and_with_them_off_never() -> None:
    for seed in SEEDS:
        off = run_scenario(":memory:", "qa", hours=HOURS, seed=seed, loops="off")
        on = run_scenario(":memory:", "qa", hours=HOURS, seed=seed, loops="on")
        # the same traffic in both arms: as many questions, the same conversations resolved
        for key in ("questions", "resolved_conversations", "model_answers"):
            assert on.counts[key] == off.counts[key], (seed, key)
        assert off.counts["knowledge_notes"] == 0
        assert on.counts["knowledge_notes"] == 6
        # the seeded facts are answered exactly in both arms
        assert off.scores["f1_seeded"] == on.scores["f1_seeded"] == 1.0
        # what only a resolved conversation says stays unanswerable with the loops off ...
        assert off.scores["f1_learned"] == 0.0
        # ... and gets answered once the loops have written it down
        assert on.scores["f1_learned"] is not None
        assert on.scores["f1_learned"] > 0.3, seed
        assert on.scores["exact_match"] > off.scores["exact_match"], seed
        # a learning curve: the last hours answer every question, the first hours only the seeded ones
        last = on.timeline.iloc[-3:]
        assert (last["f1_learned"].dropna() == 1.0).all(), seed
        assert on.timeline["f1_learned"].dropna().iloc[0] == 0.0, seed


def test_a_knowledge_note_carries_its_provenance_back_to_the_resolved_conversation() -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=7) as ws:
        result = run_scenario(ws, "qa", hours=6, seed=7, loops="on")
        resolved = [f for f in result.truth["facts"] if f["group"] == "learned" and f["hour"] < 5]
        assert resolved, "seed 7 resolves a conversation in the first five hours"
        notes = ws.memory.list("/knowledge/")
        assert len(notes) == len(resolved)
        created = ws.ledger.events(topic="memory.item.created")
        knowledge = [e for e in created if str(e.payload.get("path", "")).startswith("/knowledge/")]
        for event in knowledge:
            text = ws.memory.read(event.payload["path"]).content
            assert any(f["sentence"] in text for f in resolved)
            assert "Provenance: conversation" in text
            lineage = ws.causal.lineage(event.id)["topic"].tolist()
            assert "chat.conversation.resolved" in lineage  # the note -> task -> insight -> resolution
            assert "reflection.insight" in lineage
        # every answer is a model call caused by the analyst's question
        answers = ws.sql(
            "SELECT e.parent_id, q.actor FROM events e JOIN events q ON q.id = e.parent_id "
            "WHERE e.topic = 'llm.completed' AND (e.payload->>'$.prompt') = 'chat.answer'"
        )
        assert set(answers["actor"]) == {ASKER, "technician"}


def test_an_unknown_question_set_is_one_line_and_an_event() -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=1) as ws:
        with pytest.raises(ScenarioError, match="unknown question set 'trivia'") as info:
            run_scenario(ws, "qa", hours=1, seed=1, options={"questions": "trivia"})
        assert "\n" not in str(info.value)
        rejected = ws.ledger.events(topic="scenario.rejected")
        assert [e.payload["scenario"] for e in rejected] == ["qa"]
        assert "unknown question set" in rejected[0].payload["reason"]
        with pytest.raises(ScenarioError, match="has no option 'colour'"):
            run_scenario(ws, "qa", hours=1, seed=1, options={"colour": "red"})


def test_an_unreachable_model_stops_the_run_with_one_line_and_the_failure_on_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRACE_LLM_BACKEND", "http")
    monkeypatch.setenv("GRACE_LLM_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    with open_workspace(":memory:", clock=ManualClock(), seed=1) as ws:
        ws.llm.register_backend(HttpBackend(ws=ws, timeout=0.5, retries=0))
        with pytest.raises(ModelCallError) as info:
            run_scenario(ws, "qa", hours=1, seed=1, loops="off")
        assert "\n" not in str(info.value)
        failed = ws.ledger.events(topic="llm.failed")
        assert len(failed) == 1
        question = ws.ledger.get(str(failed[0].parent_id))
        assert (question.topic, question.actor) == ("chat.message.received", ASKER)  # the question is kept
        assert len(ws.ledger.events(topic="chat.message.failed")) == 1


def test_malformed_model_output_is_rejected_with_an_event() -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=1) as ws:
        ws.llm.register_offline("chat.answer", lambda inputs: "   ")
        with pytest.raises(ModelOutputError, match="answer is empty"):
            run_scenario(ws, "qa", hours=1, seed=1, loops="off")
        rejected = ws.ledger.events(topic="llm.output_rejected")
        assert [e.payload["reason"] for e in rejected] == ["the answer is empty"]


def test_cli_runs_qa_and_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    ok = grace("scenario", "run", "qa", "--hours", "2", "--seed", "2", "--json", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["scores"]["f1_seeded"] == 1.0
    assert result["counts"]["questions"] == 12
    bad = grace("scenario", "run", "qa", "--hours", "1", "-o", "questions=trivia", "--no-progress")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "unknown question set 'trivia'" in bad.stderr
    env = {**os.environ, "GRACE_LLM_BACKEND": "http", "GRACE_LLM_BASE_URL": "http://127.0.0.1:9/v1"}
    path = tmp_path / "qa.duckdb"
    down = grace("scenario", "run", "qa", "--hours", "1", "-w", path, "--no-progress", env=env, timeout=300)
    assert down.returncode == 2
    assert down.stderr.strip().count("\n") == 0
    assert "127.0.0.1:9" in down.stderr
    with open_workspace(path, snapshot=True) as ws:
        assert len(ws.ledger.events(topic="llm.failed")) == 1
        assert len(ws.ledger.events(topic="chat.message.received")) == 1


def test_a_lesson_that_makes_answers_worse_is_demoted_by_outcomes_and_the_score_recovers() -> None:
    """A model misled by a bad lesson: with it in context the answer is "I do not know". Chat holds the lesson
    out of a seeded share of questions; learning compares the two arms and votes it down until it is dropped."""
    with open_workspace(":memory:", clock=ManualClock(), seed=11) as ws:
        run = ScenarioRun(ws, QaScenario(11), loops="on").start()

        def misled(inputs: Mapping[str, Any]) -> str:
            if any("do not know" in str(lesson.get("text", "")) for lesson in inputs["lessons"]):
                return "I do not know.\n\nA lesson says to admit it when unsure."
            return answer_by_extraction(inputs)

        ws.llm.register_offline("chat.answer", misled)
        bad = ws.learning.add_lesson(
            "When a question seems hard, say that you do not know.", actor=LEAD, key="chat_topic:hard"
        )
        result = run.advance(16).finish()
        history = ws.learning.history(bad)
        assert history["op"].tolist() == ["add", "downvote", "downvote"]
        assert (history["basis"].iloc[1:] == "outcome").all()  # measured, not decayed
        assert ws.learning.rules(include_dropped=True).set_index("id").loc[bad, "state"] == "dropped"
        dropped_at = (history["ts"].iloc[-1] - history["ts"].iloc[0]).total_seconds() / 3600
        curve = result.timeline.set_index("hours")["f1_seeded"]
        before = curve[curve.index <= dropped_at].mean()
        after = curve[curve.index > dropped_at + 1].mean()
        assert before < 0.5  # most answers said "I do not know" while the lesson was in context
        assert after == 1.0  # the seeded questions are answered again once it is gone
