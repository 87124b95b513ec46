"""`grace llm`: prompts, render, complete, calls, show and cassette, the way a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from model_server import ModelServer
from support import clean_env, free_port, grace

PASSAGES = '[{"id": "memory:/a.md", "text": "The alpha deadline is Friday."}]'


def test_prompts_and_render_need_no_workspace(tmp_path: Path) -> None:
    listed = grace("llm", "prompts", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [(json.loads(line)["name"], json.loads(line)["version"]) for line in listed.stdout.splitlines()]
    assert names == [
        ("chat.answer", 1),
        ("chat.answer", 2),
        ("learning.operations", 1),
        ("learning.operations", 2),
        ("reflection.insights", 1),
        ("reflection.questions", 1),
        ("reflection.wording", 1),
    ]  # one line per version
    shown = grace(
        "llm", "render", "chat.answer", "-i", "question=When?", "-i", f"passages={PASSAGES}", cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert "--- system" in shown.stdout
    assert "[memory:/a.md] The alpha deadline is Friday." in shown.stdout
    assert not (tmp_path / "grace.duckdb").exists()


def test_complete_records_and_calls_lists_it(tmp_path: Path) -> None:
    ws = tmp_path / "w.duckdb"
    assert grace("init", "-w", ws).returncode == 0
    answer = grace(
        "llm", "complete", "chat.answer", "-w", ws, "-i", "question=When is the alpha deadline?", "-i",
        f"passages={PASSAGES}",
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "Friday\n\nThe alpha deadline is Friday. [memory:/a.md]"
    questions = grace(
        "llm", "complete", "reflection.questions", "-w", ws, "-i",
        'observations=[{"id": "e1", "text": "upload failed", "topic": "task"}]', "--json",
    )  # fmt: skip
    assert questions.returncode == 0, questions.stderr
    result = json.loads(questions.stdout)
    assert result["data"] == {
        "questions": ["Why do task events fail (1 of 1 recent ones), and what would prevent it?"]
    }
    calls = grace("llm", "calls", "-w", ws, "--json")
    rows = [json.loads(line) for line in calls.stdout.splitlines()]
    assert [(r["topic"], r["prompt"], r["purpose"]) for r in rows] == [
        ("completed", "chat.answer", "cli"),
        ("completed", "reflection.questions", "cli"),
    ]
    shown = json.loads(grace("llm", "show", rows[1]["id"], "-w", ws).stdout)
    assert shown["id"] == result["event_id"]
    assert shown["messages"][-1]["content"].startswith("Statements:\ne1. upload failed")


def test_bad_input_and_failures_are_one_line_exit_2(tmp_path: Path) -> None:
    ws = tmp_path / "w.duckdb"
    assert grace("init", "-w", ws).returncode == 0
    cases = [
        (("llm", "complete", "chat.anwser", "-w", ws), "unknown prompt 'chat.anwser'"),
        (("llm", "complete", "chat.answer", "-w", ws, "-i", "question=q"), "input 'passages' is missing"),
        (("llm", "complete", "chat.answer", "-w", ws, "-i", "oops"), "--input takes NAME=VALUE"),
        (("llm", "complete", "chat.answer", "-w", ws, "-p", "warmth=1", "-i", "question=q", "-i", "passages=[]"),
         "unknown parameter 'warmth'"),
        (("llm", "show", "nope", "-w", ws), "no event with id 'nope'"),
    ]  # fmt: skip
    for args, message in cases:
        run = grace(*args)
        assert run.returncode == 2, (args, run.stdout)
        assert run.stderr.startswith("grace: error: ")
        assert message in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1


def test_an_unreachable_server_is_recorded_and_reported(tmp_path: Path) -> None:
    ws = tmp_path / "w.duckdb"
    assert grace("init", "-w", ws).returncode == 0
    url = f"http://127.0.0.1:{free_port()}/v1"
    run = grace(
        "llm", "complete", "chat.answer", "-w", ws, "-b", "http", "-i", "question=q", "-i", "passages=[]",
        env=clean_env(GRACE_LLM_BASE_URL=url),
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith(
        f"grace: error: model server {url}/chat/completions unreachable after 4 attempt(s)"
    )
    rows = [json.loads(line) for line in grace("llm", "calls", "-w", ws, "--json").stdout.splitlines()]
    assert [r["topic"] for r in rows] == ["failed"]


def test_a_cassette_of_the_workspace_replays_its_calls(tmp_path: Path, model_server: ModelServer) -> None:
    ws, tape = tmp_path / "w.duckdb", tmp_path / "calls.jsonl"
    assert grace("init", "-w", ws).returncode == 0
    model_server.script = ["Friday, says the server."]
    env = clean_env(GRACE_LLM_BASE_URL=model_server.url, GRACE_LLM_MODEL="tiny")
    ask = ("llm", "complete", "chat.answer", "-w", ws, "-b", "http", "-i", "question=q", "-i", "passages=[]")
    assert grace(*ask, env=env).stdout.strip() == "Friday, says the server."
    exported = grace("llm", "cassette", tape, "-w", ws)
    assert exported.stdout.strip() == f"1 recorded call(s) -> {tape}"
    model_server.script = ["a different answer"]
    replayed = grace(*ask, "--cassette", tape, "--json", env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["replayed"] is True
    assert json.loads(replayed.stdout)["text"] == "Friday, says the server."
    assert len(model_server.requests) == 1
    missing = grace(*ask[:-1], 'passages=[{"id": "x", "text": "y"}]', "--cassette", tape, env=env)
    assert missing.returncode == 2
    assert "the cassette holds no chat.answer v2 call by http/tiny" in missing.stderr
