"""Prompts as data: loading, versioning, safe rendering, the JSON the model must answer with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grace_core.errors import ModelOutputError, PromptError
from grace_core.llm import PromptLibrary, default_prompts, extract_json, schema_errors
from grace_core.llm.prompts import check_params, load_prompt_text

PROMPT = """
name: demo.greet
description: a demo
references: ["Somebody 2023"]
versions:
  - version: 1
    inputs:
      who: {kind: text}
      notes: {kind: list, item: "[{id}] {text}", empty: "(no notes)", default: []}
      history: {kind: turns, default: []}
    system: "Greet people. Literal braces: {{like this}}."
    user: "Hello {who}!\\n{notes}"
    output: {kind: text}
    params: {temperature: 0.2, max_tokens: 10}
"""


def library(text: str = PROMPT) -> PromptLibrary:
    return PromptLibrary(load_prompt_text(text, "demo.yaml"))


def test_the_packaged_prompts_load_with_references_and_render() -> None:
    prompts = default_prompts()
    assert prompts.names() == [
        "chat.answer",
        "learning.operations",
        "reflection.insights",
        "reflection.questions",
        "reflection.wording",
    ]
    for prompt in prompts:
        assert prompt.references, f"{prompt.label} cites no source"
        assert prompt.params["temperature"] == 0.0
    answer = prompts.get("chat.answer").render(
        {
            "question": "When is the alpha deadline?",
            "passages": [{"id": "memory:/alpha.md", "text": "The alpha deadline is Friday."}],
            "lessons": ["Cite the notes."],
            "history": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}],
        }
    )
    assert [m["role"] for m in answer] == ["system", "user", "assistant", "user"]
    assert "- Cite the notes." in answer[0]["content"]
    assert "[memory:/alpha.md] The alpha deadline is Friday." in answer[-1]["content"]
    assert answer[-1]["content"].endswith("Question: When is the alpha deadline?")
    questions = prompts.get("reflection.questions").render(
        {"observations": [{"id": "e1", "text": "x failed"}]}
    )
    assert "e1. x failed" in questions[-1]["content"]
    assert "what are the 3 most salient high-level questions" in questions[-1]["content"]
    assert 'key "questions"' in questions[-1]["content"]


def test_rendering_substitutes_once_and_keeps_braces_in_inputs() -> None:
    prompt = library().get("demo.greet")
    messages = prompt.render({"who": "{notes} and {{x}}", "notes": [{"id": "n1", "text": "{who}"}]})
    assert messages[0]["content"] == "Greet people. Literal braces: {like this}."
    assert messages[1]["content"] == "Hello {notes} and {{x}}!\n[n1] {who}"
    assert prompt.render({"who": "Ada"})[1]["content"] == "Hello Ada!\n(no notes)"


@given(st.text(max_size=200))
def test_any_text_input_appears_verbatim(value: str) -> None:
    messages = library().get("demo.greet").render({"who": value})
    assert messages[1]["content"] == f"Hello {value}!\n(no notes)".strip()


def test_turns_become_chat_messages_between_system_and_user() -> None:
    messages = (
        library()
        .get("demo.greet")
        .render(
            {"who": "Ada", "history": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hey"}]}
        )
    )
    assert messages[1:3] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "input 'who' is missing"),
        ({"who": "Ada", "whom": "Bob"}, "unexpected input 'whom'"),
        ({"who": ["Ada"]}, "input who must be text or a number, not list"),
        ({"who": "Ada", "notes": "n1"}, "input notes must be a list, not str"),
        ({"who": "Ada", "notes": [{"text": "no id"}]}, r"notes\[0\] has no 'id'"),
        ({"who": "Ada", "history": [{"role": "system", "text": "x"}]}, r"history\[0\] must be \{role: user"),
    ],
)
def test_inputs_that_do_not_fit_get_one_clear_error(inputs: dict[str, object], message: str) -> None:
    with pytest.raises(PromptError, match=message):
        library().get("demo.greet").render(inputs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('user: "Hello {who}!\\n{notes}"', 'user: "Hello {who}! {nobody} {notes}"'), r"uses \{nobody\}"),
        (('user: "Hello {who}!\\n{notes}"', 'user: "Hello {who}!"'), "'notes' is declared but never used"),
        (('user: "Hello {who}!\\n{notes}"', 'user: "Hello {who}! } {notes}"'), "a lone '}'"),
        (("kind: turns", "kind: dialogue"), "kind 'dialogue'"),
        (("temperature: 0.2", "temperature: 5"), r"temperature must be a number in \[0, 2\]"),
        (("temperature: 0.2", "warmth: 1"), "unknown parameter 'warmth'"),
        (("output: {kind: text}", "output: {kind: json}"), "a json output needs a schema"),
        (("output: {kind: text}", "output: {kind: json, schema: {type: table}}"), "unknown type 'table'"),
        (("version: 1", "version: one"), "a positive integer"),
        (("name: demo.greet", "name: Demo Greet"), "dotted lower-case words"),
        (("    system:", "    sytem:"), "unknown key 'sytem'"),
    ],
)
def test_a_malformed_prompt_file_is_refused_with_the_reason(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in PROMPT
    with pytest.raises(PromptError, match=message):
        load_prompt_text(PROMPT.replace(old, new), "demo.yaml")


def test_versions_newest_by_default_and_a_file_adds_versions(tmp_path: Path) -> None:
    prompts = library()
    v2 = PROMPT.replace("version: 1", "version: 2").replace("Hello {who}!", "Hi {who}!")
    (tmp_path / "v2.yaml").write_text(v2)
    added = prompts.add_file(tmp_path / "v2.yaml")
    assert [p.label for p in added] == ["demo.greet v2"]
    assert prompts.versions("demo.greet") == [1, 2]
    assert prompts.get("demo.greet").render({"who": "Ada"})[1]["content"].startswith("Hi Ada!")
    assert prompts.get("demo.greet", 1).render({"who": "Ada"})[1]["content"].startswith("Hello Ada!")
    with pytest.raises(PromptError, match=r"demo\.greet v2 exists already"):
        prompts.add_file(tmp_path / "v2.yaml")
    with pytest.raises(PromptError, match="has no version 3; it has 1, 2"):
        prompts.get("demo.greet", 3)
    with pytest.raises(PromptError, match=r"unknown prompt 'demo\.other'"):
        prompts.get("demo.other")
    frame = prompts.frame()
    assert frame[["version", "latest"]].values.tolist() == [[1, False], [2, True]]
    assert frame["inputs"].iloc[0] == "who, notes?, history?"


def test_a_rendered_prompt_too_big_for_the_ledger_is_refused() -> None:
    with pytest.raises(PromptError, match="over the 524288 the ledger can record"):
        library().get("demo.greet").render({"who": "x" * 600_000})


def test_params_are_checked() -> None:
    assert check_params({"seed": 7, "stop": ["\n"], "structured": False}, "t") == {
        "seed": 7,
        "stop": ["\n"],
        "structured": False,
    }
    for bad in ({"max_tokens": 0}, {"top_p": 0}, {"seed": 1.5}, {"stop": "x"}, {"structured": "yes"}):
        with pytest.raises(PromptError, match="must be"):
            check_params(bad, "t")


# -- the JSON a model answers with -----------------------------------------------------------------------------
def test_json_is_found_in_fences_and_prose() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert extract_json('Sure! Here it is: {"a": {"b": 2}} Hope it helps.') == {"a": {"b": 2}}
    with pytest.raises(ModelOutputError, match="not JSON"):
        extract_json("I cannot answer that.")
    with pytest.raises(ModelOutputError, match="empty"):
        extract_json("  ")


def test_schema_errors_name_the_path() -> None:
    schema = default_prompts().get("learning.operations").schema
    assert schema is not None
    ok = {
        "operations": [
            {"op": "ADD", "text": "Retry uploads", "evidence": ["i1"]},
            {"op": "UPVOTE", "id": "L1"},
        ]
    }
    assert schema_errors(ok, schema) == []
    assert schema_errors({}, schema) == ["$: missing key 'operations'"]
    assert schema_errors({"operations": [{"op": "REMOVE"}]}, schema) == [
        '$.operations[0].op: expected one of "ADD", "EDIT", "UPVOTE", "DOWNVOTE", got "REMOVE"'
    ]
    assert schema_errors({"operations": [{"op": "ADD", "evidence": "i1"}]}, schema) == [
        "$.operations[0].evidence: expected array, got string"
    ]
    assert schema_errors({"operations": [{"op": True}]}, {"type": "object"}) == []
    assert schema_errors(True, {"type": "integer"}) == ["$: expected integer, got boolean"]
    assert json.loads(json.dumps(schema)) == schema  # plain JSON, fit to send to a server
