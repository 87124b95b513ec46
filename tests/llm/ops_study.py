"""A short ops scenario with SmolLM2-135M in the reflection and learning loops, recorded once and replayed.

Record it again (after changing a prompt, the loops or the study) with the ``llm`` extra installed::

    python tests/llm/ops_study.py

which writes ``notebooks/data/14-smollm2-ops.jsonl`` (a cassette of every model call) and
``notebooks/data/14-smollm2-ops.json`` (the study's settings and the ledger head it reached). Without the
model, notebook 14 and the tests replay the cassette to that same head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.scenarios import ScenarioResult, run_scenario

DATA = Path(__file__).resolve().parents[2] / "notebooks" / "data"
CASSETTE = DATA / "14-smollm2-ops.jsonl"
RESULT = DATA / "14-smollm2-ops.json"
STUDY: dict[str, Any] = {
    "scenario": "ops",
    "hours": 1.0,
    "seed": 1,
    "backend": "llamacpp",
    # A lower importance threshold, so that one simulated hour holds model steps; one question over few
    # observations and statements keeps the prompts short: on two shared cores a call takes minutes.
    "reflection": {"importance_threshold": 20.0, "questions": 1.0, "observations": 10.0, "statements": 5.0},
}


def study(ws: Workspace, cassette: Path, *, mode: str) -> ScenarioResult:
    """Run the study on ``ws`` with its model calls recorded to or replayed from ``cassette``."""
    ws.settings.set("llm.backend", STUDY["backend"])
    for key, value in STUDY["reflection"].items():
        ws.loops.set_param("reflection", key, value, actor="system")
    ws.llm.use_cassette(cassette, mode=mode)
    return run_scenario(ws, STUDY["scenario"], hours=STUDY["hours"], seed=STUDY["seed"])


def record() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    CASSETTE.unlink(missing_ok=True)
    with open_workspace(":memory:", clock=ManualClock(), seed=STUDY["seed"]) as ws:
        result = study(ws, CASSETTE, mode="record")
        calls = ws.llm.calls()
        summary = {
            "study": STUDY,
            "head": ws.ledger.head[1].hex(),
            "events": ws.ledger.head[0],
            "calls": calls.groupby("topic").size().to_dict(),
            "scores": result.scores,
        }
    RESULT.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    record()
