"""``grace scenario``: list, describe and run scenarios from the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from support import grace

from grace_core import open_workspace


def test_ls_and_show() -> None:
    listed = grace("scenario", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert "ops" in {r["name"] for r in rows}
    shown = grace("scenario", "show", "ops")
    described = json.loads(shown.stdout)
    assert "success_rate" in described["scores"]
    assert "truth" not in described
    with_truth = json.loads(grace("scenario", "show", "ops", "--seed", "3").stdout)
    assert with_truth["truth"]["kinds"]  # the hidden ground truth of seed 3, for researchers


def test_run_prints_scores_and_the_learning_curve_and_repeats_across_processes(tmp_path: Path) -> None:
    heads = []
    for i in range(2):
        out = grace("scenario", "run", "ops", "--hours", "1", "--seed", "4", "--score-every", "1800",
                    "--json", "--no-progress", "--workspace", tmp_path / f"w{i}.duckdb")  # fmt: skip
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        heads.append(result["head_hash"])
        assert [row["hours"] for row in result["timeline"]] == [0.5, 1.0]
        assert set(result["scores"]) == {"success_rate", "time_to_done_s", "precision", "recall"}
        assert result["loops"] == ["reflection", "learning", "executor"]
    assert heads[0] == heads[1]
    with open_workspace(tmp_path / "w0.duckdb", snapshot=True) as ws:
        assert len(ws.scenarios.runs()) == 1
    text = grace("scenario", "run", "ops", "--hours", "0.5", "--loops", "off", "--progress")
    assert text.returncode == 0, text.stderr
    assert "learning curve" in text.stdout
    assert "success_rate" in text.stdout
    assert "ops" in text.stderr  # the progress bar


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_workspace(path):
        pass
    unknown = grace("scenario", "run", "nope", "--hours", "1", "--workspace", path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "grace: error: unknown scenario 'nope'; scenarios: ops, qa, security"
    with open_workspace(path, snapshot=True) as ws:
        assert [e.payload["scenario"] for e in ws.ledger.events(topic="scenario.rejected")] == ["nope"]
    assert grace("scenario", "show", "nope").returncode == 2
    loops = grace("scenario", "run", "ops", "--loops", "maybe")
    assert loops.returncode == 2
    assert len(loops.stderr.strip().splitlines()) == 1
