"""The offline policy: deterministic default handlers for the four prompts, replaceable per workspace."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.errors import ModelCallError
from grace_core.llm import DEFAULT_HANDLERS, default_prompts, schema_errors
from grace_core.llm.offline import short_answer

OBSERVATIONS = [
    {"id": "e1", "text": "task upload-42 failed: payload too large", "topic": "task.failed"},
    {"id": "e2", "text": "chat message about alpha deadlines", "topic": "chat.message"},
    {"id": "e3", "text": "task upload-43 failed: payload too large", "topic": "task.failed"},
    {"id": "e4", "text": "chat message about beta plans", "topic": "chat.message"},
    {"id": "e5", "text": "chat message about the lab", "topic": "chat.message"},
    {"id": "e6", "text": "hunter alert: aws key in chat", "topic": "hunter.alert"},
]


def test_chat_answer_gives_the_short_answer_then_the_best_sentence_with_its_id(ws: Workspace) -> None:
    passages = [
        {"id": "memory:/beta.md", "text": "Beta trains a classifier."},
        {
            "id": "memory:/alpha.md",
            "text": "Intro to alpha. The alpha deadline is Friday the 13th. Unrelated.",
        },
    ]
    answer = ws.llm.complete(
        "chat.answer", {"question": "When is the alpha deadline?", "passages": passages}, purpose="test"
    )
    assert answer.text == "Friday the 13th\n\nThe alpha deadline is Friday the 13th. [memory:/alpha.md]"
    # A heading that only repeats the question answers nothing: the sentence after it does.
    note = [
        {"id": "memory:/review.md", "text": "# Weekly review\n\nThe weekly review is on Fridays at 10:00."}
    ]
    review = ws.llm.complete(
        "chat.answer", {"question": "When is the weekly review?", "passages": note}, purpose="t"
    )
    assert review.text.startswith("Fridays at 10:00\n\nThe weekly review is on Fridays at 10:00")
    none = ws.llm.complete("chat.answer", {"question": "xylophone?", "passages": passages}, purpose="test")
    assert none.text.startswith("I do not know.")
    # the short answer is what the sentence says beyond the question (answers follow what they answer)
    assert short_answer(
        "What caused the cryostat outage?", "The cryostat outage was caused by a worn seal."
    ) == ("worn seal")
    assert short_answer("Who leads project Iris?", "Lena Novak leads project Iris.") == "Lena Novak"
    moved = "The Alpha results were moved to the results-prod bucket."
    assert short_answer("Where were the Alpha results moved?", moved) == "results-prod bucket"
    assert (
        short_answer("alpha deadline", "The alpha deadline.") == "The alpha deadline"
    )  # nothing new: all of it


def test_questions_put_failing_topics_first(ws: Workspace) -> None:
    data = ws.llm.complete_json("reflection.questions", {"observations": OBSERVATIONS}, purpose="test").data
    assert data["questions"] == [
        "Why do task.failed events fail (2 of 2 recent ones), and what would prevent it?",
        "What explains the recent chat.message events (3 of 6 observations)?",
        "What explains the recent hunter.alert events (1 of 6 observations)?",
    ]
    two = ws.llm.complete_json(
        "reflection.questions", {"observations": OBSERVATIONS, "count": 2}, purpose="test"
    ).data
    assert len(two["questions"]) == 2


def test_insights_cite_the_statements_they_rest_on(ws: Workspace) -> None:
    data = ws.llm.complete_json(
        "reflection.insights",
        {"question": "Why do uploads fail?", "statements": OBSERVATIONS},
        purpose="test",
    ).data
    assert [i["evidence"] for i in data["insights"]] == [
        ["e2", "e4", "e5", "e6"],
        ["e2", "e4", "e5"],
        ["e1", "e3"],
    ]
    assert data["insights"][0]["text"] == "'chat' recurs in 4 of 6 statements about: Why do uploads fail?"
    cited = {e for i in data["insights"] for e in i["evidence"]}
    assert cited <= {o["id"] for o in OBSERVATIONS}


def test_learning_votes_by_measured_outcome_and_adds_new_insights(ws: Workspace) -> None:
    inputs = {
        "lessons": [
            {"id": "L1", "text": "Split uploads over 10 MB into chunks.", "votes": 2},
            {"id": "L2", "text": "Retry failed uploads at once.", "votes": 2},
            {"id": "L3", "text": "Reschedule reports to the night.", "votes": 1},
        ],
        "insights": [
            {"id": "i1", "text": "Split uploads over 10 MB into chunks."},  # already a lesson
            {"id": "i2", "text": "Uploads fail when the payload is too large."},
        ],
        "outcomes": [
            {"lesson": "L1", "metric": "success_rate", "before": 0.5, "after": 0.9, "better": "higher"},
            {"lesson": "L2", "metric": "time_to_done_s", "before": 30, "after": 45, "better": "lower"},
            {"lesson": "L3", "metric": "success_rate", "before": 0.7, "after": 0.7, "better": "higher"},
            {"lesson": "L9", "metric": "success_rate", "before": 0.1, "after": 0.9, "better": "higher"},
        ],
    }
    ops = ws.llm.complete_json("learning.operations", inputs, purpose="test", version=1).data["operations"]
    assert ops == [
        {"op": "UPVOTE", "id": "L1", "reason": "success_rate went from 0.5 to 0.9"},
        {"op": "DOWNVOTE", "id": "L2", "reason": "time_to_done_s went from 30 to 45"},
        {"op": "ADD", "text": "Uploads fail when the payload is too large.", "evidence": ["i2"]},
    ]
    limited = ws.llm.complete_json(
        "learning.operations", {**inputs, "max_operations": 1}, purpose="test", version=1
    ).data["operations"]
    assert [o["op"] for o in limited] == ["UPVOTE"]


@pytest.mark.parametrize("name", sorted(DEFAULT_HANDLERS))
def test_default_answers_fit_their_prompts_schema(name: str) -> None:
    prompt = default_prompts().get(name)
    inputs: dict[str, Any] = {
        "question": "Why do uploads fail?",
        "passages": [{"id": "p1", "text": "Uploads fail over 10 MB."}],
        "observations": OBSERVATIONS,
        "statements": OBSERVATIONS,
        "lessons": [{"id": "L1", "key": "k1", "text": "Chunk uploads.", "votes": 2, "last_reflection": 1}],
        "insights": [{"id": "i1", "kind": "chat_topic", "key": "k2", "text": "Uploads fail over 10 MB."}],
        "reflection": 2,
    }
    values = prompt.normalize({k: v for k, v in inputs.items() if k in {s.name for s in prompt.inputs}})
    text = DEFAULT_HANDLERS[name](values)
    if prompt.schema is not None:
        assert schema_errors(json.loads(text), prompt.schema) == []
    else:
        assert text


def run_study(seed: int) -> tuple[str, list[str]]:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=seed)
    try:
        for obs in OBSERVATIONS:
            ws.publish("test.observed", {"text": obs["text"]}, actor="system")
        questions = ws.llm.complete_json("reflection.questions", {"observations": OBSERVATIONS}, purpose="r")
        texts = []
        for q in questions.data["questions"]:
            found = ws.llm.complete_json(
                "reflection.insights", {"question": q, "statements": OBSERVATIONS}, purpose="r"
            )
            texts += [i["text"] for i in found.data["insights"]]
        return ws.ledger.head[1].hex(), texts
    finally:
        ws.close()


def test_offline_runs_are_deterministic_to_the_head_hash() -> None:
    first, second = run_study(7), run_study(7)
    assert first == second
    assert first[1]  # it did produce insights
    assert run_study(8)[0] != first[0]  # the seed (ids, recorded seed) does matter


def test_offline_calls_record_no_latency_and_name_their_handler(ws: Workspace) -> None:
    c = ws.llm.complete_json("reflection.questions", {"observations": OBSERVATIONS}, purpose="test")
    payload = ws.ledger.get(c.event_id).payload
    assert payload["latency_ms"] is None
    assert payload["usage"] == {}
    assert payload["model"] == "grace_core.llm.offline.questions_from_analysis"


def test_a_registered_handler_replaces_the_default_for_this_workspace_only(ws: Workspace) -> None:
    def always(inputs: Mapping[str, Any]) -> str:
        return f"Always {inputs['question']}"

    previous = ws.llm.register_offline("chat.answer", always)
    assert previous is DEFAULT_HANDLERS["chat.answer"]
    c = ws.llm.complete("chat.answer", {"question": "this", "passages": []}, purpose="test")
    assert c.text == "Always this"
    assert c.model.endswith("always")
    other = open_workspace(":memory:", clock=ManualClock(), seed=1)
    try:
        assert other.llm.complete("chat.answer", {"question": "this", "passages": []}, purpose="t").text != (
            "Always this"
        )
    finally:
        other.close()


def test_a_failing_or_missing_handler_is_a_recorded_failure(ws: Workspace, tmp_path: Path) -> None:
    def broken(inputs: Mapping[str, Any]) -> str:
        raise KeyError("passages")

    ws.llm.register_offline("chat.answer", broken)
    with pytest.raises(ModelCallError, match=r"offline handler .*broken failed on chat.answer: KeyError"):
        ws.llm.complete("chat.answer", {"question": "q", "passages": []}, purpose="test")
    new = tmp_path / "demo.new.yaml"
    new.write_text("name: demo.new\nversions:\n  - version: 1\n    system: Be brief.\n    user: Say hi.\n")
    ws.llm.prompts.add_file(new)
    with pytest.raises(ModelCallError, match=r"no handler for prompt demo\.new; register one"):
        ws.llm.complete("demo.new", {}, purpose="test")
    failed = ws.llm.calls()
    assert failed["topic"].tolist() == ["llm.failed", "llm.failed"]
    assert ws.ledger.get(failed["id"].iloc[1]).payload["error_kind"] == "no_handler"
