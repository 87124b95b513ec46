"""The security scenario: labelled traffic through the real entry points, labels never on the ledger, an
analyst's verdicts; with the loops on, lessons from the verdicts raise detection F1 over the day against the
loops off on identical traffic (three seeds); the run replays and repeats to the same head."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from support import grace

from grace_core import ManualClock, Workspace, open_workspace, projection_differences, replay
from grace_core.scenarios import ScenarioResult, ScenarioRun, run_scenario
from grace_core.scenarios.security import ANALYST, FAMILIES, SecurityScenario, detection

SEEDS = (1, 2, 3)


@dataclass
class Arm:
    scenario: SecurityScenario
    result: ScenarioResult
    lessons: list[tuple[str, dict]]

    def f1(self, since_hour: float, until_hour: float = 24.0) -> float:
        start = self.scenario.items[0].ts - (self.scenario.items[0].ts % 3600)  # the run starts on the hour
        scores = detection(self.scenario.window(start + since_hour * 3600, start + until_hour * 3600))
        assert scores["f1"] is not None
        return scores["f1"]


def run_day(seed: int, loops: str, hours: float = 24.0) -> Arm:
    ws = open_workspace(":memory:", clock=ManualClock(), seed=seed)
    try:
        scenario = SecurityScenario(seed)
        run = ScenarioRun(ws, scenario, loops=loops).start()
        result = run.advance(hours).finish()
        return Arm(scenario, result, ws.learning.hunter_lessons())
    finally:
        ws.close()


@pytest.fixture(scope="module")
def days() -> dict[tuple[int, str], Arm]:
    return {(seed, loops): run_day(seed, loops) for seed in SEEDS for loops in ("on", "off")}


def test_the_ground_truth_is_drawn_from_the_seed() -> None:
    truth = SecurityScenario(3).truth
    assert truth == SecurityScenario(3).truth
    assert truth != SecurityScenario(4).truth
    assert set(truth["weights"]) == set(FAMILIES)
    assert 0 < truth["analyst"]["error_rate"] < 0.1
    assert "truth" not in json.dumps(SecurityScenario.describe())


def test_traffic_enters_through_the_real_entry_points_and_the_labels_stay_hidden(ws: Workspace) -> None:
    scenario = SecurityScenario(5)
    run = ScenarioRun(ws, scenario, loops="off").start()
    run.advance(4)
    items = scenario.items
    assert {i.channel for i in items} == {"chat", "memory", "task"}
    assert {"attack", "benign"} == {i.label for i in items}
    topics = {e.topic for e in ws.ledger.events()}
    assert {"chat.message.received", "memory.item.created", "task.created", "hunter.alert"} <= topics
    # Leaked secrets are masked where they are stored, as for any user.
    leaks = [i for i in items if i.family.startswith("secret.") and i.channel == "memory"]
    for item in leaks:
        (path,) = ws.sql("SELECT path FROM memory_items WHERE path LIKE ?", [f"%/{item.ref}.md"]).path
        assert "[masked:" in ws.memory.read(path).content
    # Hard negatives fool the rules at first: harmless items raise alerts.
    assert any(i.detected and i.label == "benign" for i in items)
    assert any(i.detected and i.label == "attack" for i in items)
    # The analyst judged alerts through the public API, and was mostly right.
    feedback = ws.ledger.events(topic="hunter.feedback")
    assert feedback
    assert {e.actor for e in feedback} == {ANALYST}
    label_of = {a: i.label for i in items for a in i.alerts}
    right = sum(
        (e.payload["verdict"] == "confirmed") == (label_of[e.payload["alert"]] == "attack") for e in feedback
    )
    assert right / len(feedback) > 0.8
    # Nothing on the ledger says which items are attacks: no family, no trace of the drawn truth.
    ledger = " ".join(json.dumps(e.payload) for e in ws.ledger.events())
    for family in FAMILIES:
        assert family not in ledger
    assert json.dumps(scenario.truth["weights"])[1:-1] not in ledger
    assert "error_rate" not in ledger


def test_loops_on_raise_detection_f1_over_the_day_on_identical_traffic(
    days: dict[tuple[int, str], Arm],
) -> None:
    for seed in SEEDS:
        on, off = days[seed, "on"], days[seed, "off"]
        traffic = [(i.ref, i.family, i.channel, i.user) for i in on.scenario.items]
        assert traffic == [(i.ref, i.family, i.channel, i.user) for i in off.scenario.items]
        # Before any verdict can have taught anything, both arms detect alike.
        assert on.f1(0, 2) == off.f1(0, 2)
        # Over the second half of the day the loops on detect better: fewer false alarms, the attacks still found.
        assert on.f1(12) > off.f1(12) + 0.03, seed
        assert on.result.scores["f1"] > off.result.scores["f1"], seed
        assert on.result.scores["precision"] > off.result.scores["precision"], seed
        assert on.result.scores["recall"] >= off.result.scores["recall"] - 0.05, seed
        # What made the difference: lessons for Hunter that silence false positives; none with the loops off.
        assert on.lessons, seed
        assert all(e["cause"] == "false_positive" and e["suppress"]["context"] for _, e in on.lessons)
        assert on.result.counts["suppressed"] > 0
        assert off.lessons == []
        assert off.result.counts["suppressed"] == 0
        # The learning curve is on the result and on the ledger.
        assert len(on.result.timeline) == 24
        assert on.result.timeline.lessons.iloc[-1] == len(on.lessons)


def test_a_silenced_alert_is_one_the_analyst_would_mostly_call_harmless(
    days: dict[tuple[int, str], Arm],
) -> None:
    for seed in SEEDS:
        on = days[seed, "on"]
        silenced = [i for i in on.scenario.items if i.silenced]
        assert silenced
        assert sum(i.label == "benign" for i in silenced) / len(silenced) >= 0.8, seed


def test_the_same_seed_gives_the_same_ledger_head_and_replay_rebuilds_verdicts_and_lessons() -> None:
    first = run_scenario(":memory:", "security", hours=3, seed=9, loops="on")
    second = run_scenario(":memory:", "security", hours=3, seed=9, loops="on")
    assert (first.head_seq, first.head_hash) == (second.head_seq, second.head_hash)
    assert run_scenario(":memory:", "security", hours=3, seed=10, loops="on").head_hash != first.head_hash
    with open_workspace(":memory:", clock=ManualClock(), seed=4) as ws:
        scenario = SecurityScenario(4)
        run = ScenarioRun(ws, scenario, loops="on").start()
        run.advance(8).finish()
        ws.loops.stop("learning")  # the lessons as they stand
        ws.loops.stop("reflection")
        assert ws.hunter.verdicts()
        with replay(ws, ":memory:") as fresh:
            assert projection_differences(ws, fresh) == {}
            assert fresh.hunter.verdicts() == ws.hunter.verdicts()
            assert fresh.learning.hunter_lessons() == ws.learning.hunter_lessons()


def test_the_command_line_runs_the_scenario() -> None:
    done = grace("scenario", "run", "security", "--hours", "2", "--seed", "2", "--loops", "off", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["scenario"] == "security"
    assert set(result["scores"]) == {"precision", "recall", "f1", "lessons"}
    assert result["counts"]["items"] > 0
    listed = grace("scenario", "ls")
    assert "security" in listed.stdout
