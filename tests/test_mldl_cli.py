"""`grace models ...` as a user runs it: real subprocesses on a real workspace file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import grace


def ok(*args: str | Path) -> str:
    result = grace(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    ok("init", "--workspace", path)
    return path


@pytest.mark.slow  # six `grace` processes, each importing scikit-learn
def test_train_list_show_deploy(ws: Path) -> None:
    w = ["--workspace", ws]
    out = ok("models", "train", "injection", "--rows", "240", "-p", "steps=1", "-p", "max_features=3000", "--deploy",
             "champion", *w)  # fmt: skip
    assert out.startswith("run ")
    assert "finished: f1=" in out
    # version 1 is the model a new workspace installs; the first trained one is version 2
    assert "registered prompt-injection version 2" in out
    assert "deployed prompt-injection version 2 as champion" in out
    ok("models", "train", "injection", "--rows", "240", "-p", "steps=1", "-p", "C=0.1", "--register", *w)
    listing = [json.loads(line) for line in ok("models", "ls", "--json", *w).splitlines()]
    assert [(m["name"], m["versions"], m["aliases"]) for m in listing] == [
        ("prompt-injection", 3, "champion=2")
    ]
    assert ok("models", "deploy", "prompt-injection", "3", "--alias", "challenger", *w) == (
        "deployed prompt-injection version 3 as challenger\n"
    )
    table = ok("models", "show", "prompt-injection", *w).splitlines()
    assert table[0].split()[:3] == ["version", "aliases", "run_id"]
    assert table[1].split()[0] == "1"
    assert table[2].split()[:2] == ["2", "champion"]
    assert table[3].split()[:2] == ["3", "challenger"]
    assert "f1=" in table[2]
    assert "sha256:" in table[2]
    runs = [json.loads(line) for line in ok("models", "runs", "--json", *w).splitlines()]
    assert [r["status"] for r in runs] == ["finished", "finished", "finished"]
    assert json.loads(runs[2]["params"])["C"] == 0.1


def test_errors_are_one_line(ws: Path) -> None:
    result = grace("models", "show", "nope", "--workspace", ws)
    assert result.returncode == 2
    assert result.stderr.strip() == "grace: error: no model 'nope'; see mldl.versions()"
    result = grace("models", "deploy", "nope", "1", "--workspace", ws)
    assert result.returncode == 2
    assert "no model 'nope'" in result.stderr
    result = grace("models", "train", "injection", "--rows", "240", "--by", "mallory", "--workspace", ws)
    assert result.returncode == 2
    assert "mallory may not model.train" in result.stderr
