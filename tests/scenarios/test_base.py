"""The scenario framework: a small subclass is a scenario; runs are seeded, scored over time, remembered by the
workspace, and keep their ground truth out of it."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.clock import DEFAULT_START
from grace_core.errors import ScenarioError
from grace_core.scenarios import (
    REGISTRY,
    Scenario,
    ScenarioRun,
    get_scenario,
    loop_selection,
    register,
    run_scenario,
    scenarios,
)
from grace_core.scenarios.driver import Action
from grace_core.tasks import Task


class Queue(Scenario):
    """Jobs fail above a hidden size; the score is the share done."""

    name: ClassVar[str] = "test-queue"
    summary: ClassVar[str] = "Jobs fail above a hidden size."
    score_names: ClassVar[dict[str, str]] = {"done_share": "jobs done / jobs ended (higher is better)"}
    min_interval: ClassVar[float | None] = 300.0

    def draw(self, rng: random.Random) -> dict[str, Any]:
        return {"hidden_size_limit": rng.randint(3, 9)}

    def setup(self, ws: Workspace) -> None:
        ws.executor.register("queue.job", self._job, max_attempts=1)

    def plan(self, step: float) -> list[tuple[float, Action]]:
        size = self.rng.randint(1, 12)
        return [(30.0, lambda: self._submit(size))] if self.rng.random() < 0.5 else []

    def _submit(self, size: int) -> None:
        assert self.ws is not None
        self.ws.tasks.create("job", kind="queue.job", actor="bob", details={"size": size})

    def _job(self, task: Task, ws: Workspace) -> str:
        if task.details["size"] > self.truth["hidden_size_limit"]:
            raise MemoryError("too big")
        return "ok"

    def measure(self, ws: Workspace, since: float, until: float) -> dict[str, float | None]:
        row = ws.sql(
            "SELECT count(*) FILTER (WHERE state = 'done') AS done, count(*) AS ended FROM tasks "
            "WHERE kind = 'queue.job' AND state IN ('done', 'failed') "
            "AND updated_at >= make_timestamptz(?::BIGINT) AND updated_at < make_timestamptz(?::BIGINT)",
            [round(since * 1e6), round(until * 1e6)],
        ).iloc[0]
        return {"done_share": float(row["done"] / row["ended"]) if row["ended"] else None}


@pytest.fixture
def queue() -> Iterator[type[Queue]]:
    register(Queue)
    yield Queue
    REGISTRY.pop(Queue.name, None)


def test_a_small_subclass_is_a_scenario_with_a_learning_curve(queue: type[Queue], ws: Workspace) -> None:
    assert "test-queue" in scenarios()
    result = run_scenario(ws, "test-queue", hours=3, seed=5, loops="off", score_every=3600)
    assert list(result.timeline.columns) == ["hours", "done_share"]
    assert list(result.timeline["hours"]) == [1.0, 2.0, 3.0]
    assert 0 < result.scores["done_share"] < 1  # some jobs were above the limit
    assert result.loops == ["executor"]
    assert result.truth == Queue(5).truth
    # The workspace remembers the run: events, and tables views can plot.
    topics = [e.topic for e in ws.ledger.events(topic="scenario.*")]
    assert topics == [
        "scenario.started",
        "scenario.scored",
        "scenario.scored",
        "scenario.scored",
        "scenario.finished",
    ]
    [run] = ws.scenarios.runs().to_dict(orient="records")
    assert (run["id"], run["scenario"], run["seed"], run["state"], run["hours"]) == (
        result.run_id,
        "test-queue",
        5,
        "finished",
        3.0,
    )
    assert json.loads(run["scores"]) == result.scores
    curve = ws.scenarios.scores()
    assert list(curve["hours"]) == [1.0, 2.0, 3.0]
    assert list(curve["done_share"]) == pytest.approx(list(result.timeline["done_share"]))


def test_a_run_in_steps_allows_interventions_and_a_last_short_window(
    queue: type[Queue], ws: Workspace
) -> None:
    run = ScenarioRun(ws, Queue(2), loops="off", score_every=1800).start()
    run.advance(0.75)
    ws.publish("note.added", {"text": "a researcher's intervention"}, actor="rita")
    result = run.advance(0.5).finish()
    assert list(result.timeline["hours"]) == [0.5, 1.0, 1.25]  # the last window is the rest of the run
    assert result.hours == 1.25


def test_the_ground_truth_never_enters_the_workspace(queue: type[Queue], ws: Workspace) -> None:
    result = run_scenario(ws, "test-queue", hours=1, seed=11, loops="on")
    ledger = " ".join(ws.sql("SELECT payload FROM events")["payload"])
    assert "hidden_size_limit" not in ledger
    assert json.dumps(result.truth)[1:-1] not in ledger
    started = ws.ledger.events(topic="scenario.started")[0].payload
    assert set(started) == {"scenario", "seed", "loops", "score_every", "step"}


def test_same_seed_same_head_hash_and_another_seed_differs(queue: type[Queue]) -> None:
    def head(seed: int) -> str:
        return run_scenario(":memory:", "test-queue", hours=2, seed=seed, loops="on").head_hash

    assert head(3) == head(3)
    assert head(3) != head(4)


def test_loops_on_off_all_and_by_name(ws: Workspace) -> None:
    assert loop_selection(ws, "on") == ["reflection", "learning", "executor"]
    assert loop_selection(ws, "off") == ["executor"]
    assert loop_selection(ws, "all") == ws.loops.names
    assert loop_selection(ws, ["healing"]) == ["executor", "healing"]
    with pytest.raises(ScenarioError, match="no loop named 'dreaming'"):
        loop_selection(ws, ["dreaming"])
    with pytest.raises(ScenarioError, match="'on', 'off', 'all'"):
        loop_selection(ws, "maybe")


def test_off_means_off_even_if_loops_ran_before(queue: type[Queue], ws: Workspace) -> None:
    ws.loops.start()
    run_scenario(ws, "test-queue", hours=0.5, seed=1, loops="off")
    assert [n for n in ws.loops.names if ws.loops.state(n).state == "running"] == ["executor"]
    assert ws.ledger.events(topic="reflection.completed") == []


def test_an_unknown_scenario_is_one_clear_error_and_an_event_on_a_given_workspace(ws: Workspace) -> None:
    with pytest.raises(ScenarioError, match=r"unknown scenario 'nope'; scenarios: .*ops"):
        run_scenario(ws, "nope", hours=1, seed=1)
    [event] = ws.ledger.events(topic="scenario.rejected")
    assert event.payload["scenario"] == "nope"
    with pytest.raises(ScenarioError, match="unknown scenario"):
        get_scenario("nope")


def test_an_unknown_scenario_on_a_workspace_file_is_recorded_there(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_workspace(path):
        pass
    with pytest.raises(ScenarioError):
        run_scenario(path, "nope", hours=1, seed=1)
    with open_workspace(path, snapshot=True) as ws:
        assert len(ws.ledger.events(topic="scenario.rejected")) == 1


def test_a_scenario_needs_a_manual_clock_and_sane_options(queue: type[Queue]) -> None:
    with open_workspace(":memory:") as live, pytest.raises(ScenarioError, match="ManualClock"):
        run_scenario(live, "test-queue", hours=1, seed=1)
    with open_workspace(":memory:", clock=ManualClock(), seed=1) as ws:
        with pytest.raises(ScenarioError, match="hours"):
            run_scenario(ws, "test-queue", hours=0, seed=1)
        with pytest.raises(ScenarioError, match="score_every"):
            run_scenario(ws, "test-queue", hours=1, seed=1, score_every=0)
        with pytest.raises(ScenarioError, match="whole number"):
            Queue("7")  # type: ignore[arg-type]
        assert ws.ledger.events(topic="scenario.*") == []  # nothing was started


def test_a_new_workspace_starts_at_the_usual_instant_and_an_existing_one_after_its_events(
    queue: type[Queue], tmp_path: Path
) -> None:
    in_memory = run_scenario(":memory:", "test-queue", hours=0.5, seed=1, loops="off")
    in_file = run_scenario(tmp_path / "new.duckdb", "test-queue", hours=0.5, seed=1, loops="off")
    assert in_file.head_hash == in_memory.head_hash  # the same run, wherever it is stored
    with open_workspace(tmp_path / "new.duckdb", snapshot=True) as ws:
        assert ws.ledger.events(topic="scenario.started")[0].ts == DEFAULT_START
        last = ws.ledger.at(ws.ledger.head[0]).ts_us
    run_scenario(tmp_path / "new.duckdb", "test-queue", hours=0.5, seed=1, loops="off")
    with open_workspace(tmp_path / "new.duckdb", snapshot=True) as ws:
        second = ws.ledger.events(topic="scenario.started")[-1]
        assert second.ts_us > last
        assert len(ws.scenarios.runs()) == 2
