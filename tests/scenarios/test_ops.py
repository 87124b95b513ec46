"""The ops scenario: hidden failure causes drawn from the seed; with the loops on they are found, fixed and
measured, success rises and learned causes match hidden ones; with the loops off nothing changes; a harmful
lesson is demoted by measured outcomes."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from grace_core import ManualClock, Workspace, open_workspace, projection_differences, replay
from grace_core.scenarios import ScenarioRun, run_scenario
from grace_core.scenarios.ops import KINDS, PARAMS, OpsScenario, addresses


def kind_with(truth: dict[str, Any], cause: str | None) -> str:
    return next(k for k, t in truth["kinds"].items() if t["cause"] == cause)


def test_the_ground_truth_is_drawn_from_the_seed() -> None:
    truth = OpsScenario(3).truth
    assert truth == OpsScenario(3).truth
    assert truth != OpsScenario(4).truth
    causes = sorted(str(t["cause"]) for t in truth["kinds"].values())
    assert causes == ["None", "bad_parameter", "flaky_dependency", "size_limit", "time_window"]
    assert set(truth["kinds"]) == set(KINDS)
    assert "truth" not in json.dumps(OpsScenario.describe())


def test_runs_fail_as_the_hidden_causes_say_and_errors_do_not_name_them(ws: Workspace) -> None:
    scenario = OpsScenario(3)
    truth = scenario.truth
    scenario.ws = ws
    scenario.setup(ws)
    size_kind = kind_with(truth, "size_limit")
    limit = truth["kinds"][size_kind]["limit"]
    param_kind = kind_with(truth, "bad_parameter")
    param, bad = truth["kinds"][param_kind]["param"], truth["kinds"][param_kind]["value"]
    control = kind_with(truth, None)

    good = {name: next(v for v in values if v != bad) for name, values in PARAMS.items()}

    def run(kind: str, size: float, **params: Any) -> str:
        details = {"size": size, "params": {**good, **params}, "ref": f"test-{kind}-{size}"}
        task = ws.tasks.create("t", kind=kind, actor="bob", details=details)
        return ws.executor.run(task.id).last_error or "ok"

    assert run(size_kind, limit - 10) == "ok"
    error = run(size_kind, limit * 2)
    assert error.startswith("OutOfMemory:")
    assert "size" not in error
    assert "limit" not in error
    assert run(size_kind, limit * 2, chunk_size=limit / 2) == "ok"  # chunking fixes it
    assert run(param_kind, 100, **{param: bad}).startswith("BadRequest:")
    assert bad not in run(param_kind, 100, **{param: bad})
    assert run(control, 4000) == "ok"


def test_addresses_judges_a_fix_against_the_hidden_cause() -> None:
    assert addresses(
        {"cause": "size_limit", "params": {"chunk_size": 200}}, {"cause": "size_limit", "limit": 250}
    )
    assert not addresses(
        {"cause": "size_limit", "params": {"chunk_size": 300}}, {"cause": "size_limit", "limit": 250}
    )
    window = {"cause": "time_window", "hours": [1, 2, 3]}
    assert addresses({"cause": "time_window", "avoid_hours": [1, 2]}, window)  # learned as the hours pass
    assert not addresses({"cause": "time_window", "avoid_hours": [2, 9]}, window)  # blocks a healthy hour
    flaky = {"cause": "flaky_dependency", "p": 0.7}
    assert addresses({"cause": "flaky_dependency", "retry": {"max_attempts": 8}}, flaky)
    assert not addresses({"cause": "flaky_dependency", "retry": {"max_attempts": 3}}, flaky)
    bad = {"cause": "bad_parameter", "param": "codec", "value": "lz4"}
    assert addresses({"cause": "bad_parameter", "when": {"codec": "lz4"}, "params": {"codec": "zstd"}}, bad)
    assert not addresses({"cause": "bad_parameter", "params": {"codec": "lz4"}}, bad)
    assert not addresses({"cause": "size_limit", "params": {"chunk_size": 1}}, bad)  # the wrong cause
    assert not addresses({"cause": "bad_parameter", "params": {"codec": "zstd"}}, {"cause": None})


@pytest.mark.slow
def test_loops_on_learn_the_hidden_causes_and_success_rises_while_loops_off_stay_flat() -> None:
    seed = 2
    on = run_scenario(":memory:", "ops", hours=24, seed=seed, loops="on")
    off = run_scenario(":memory:", "ops", hours=48, seed=seed, loops="off")
    curve_on = on.timeline.set_index("hours")["success_rate"]
    curve_off = off.timeline.set_index("hours")["success_rate"]
    # Loops on: the hidden causes are found and fixed by lessons whose effects match them.
    assert on.scores["recall"] >= 0.75
    assert on.scores["precision"] >= 0.75  # a spurious lesson may appear; the hidden ones are there
    assert on.counts["lessons_with_effect"] >= 3
    assert on.counts["outcome_upvotes"] >= 1
    # Success rises: the last half of the day against its first two hours...
    assert curve_on.loc[13:24].mean() >= curve_on.loc[1:2].mean() + 0.15
    # ...and against the same tasks at the same hours with the loops off (the traffic and each attempt's luck
    # are the same in both runs): equal before anything is learned, clearly better once it is.
    gap = curve_on - curve_off.loc[1:24]
    assert abs(gap.loc[1]) <= 0.05
    assert gap.loc[13:24].mean() >= 0.08
    # Loops off: nothing is learned, and the second day is no better than the first, hour for hour.
    assert off.scores["recall"] == 0.0
    assert off.scores["precision"] is None
    assert off.counts["lessons_added"] == off.counts["deferred"] == 0
    day1, day2 = curve_off.loc[1:24].to_numpy(), curve_off.loc[25:48].to_numpy()
    assert abs(day2.mean() - day1.mean()) <= 0.05
    assert curve_on.loc[13:24].mean() >= curve_off.loc[37:48].mean() + 0.08  # same hours of day 2


@pytest.mark.slow
def test_a_harmful_lesson_is_demoted_by_outcomes_and_the_score_recovers() -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=7) as ws:
        # A bigger holdout measures faster (a parameter of the experiment, set before it starts).
        ws.loops.set_param("learning", "holdout_share", 0.4, actor="system", reason="faster outcome votes")
        scenario = OpsScenario(7)
        run = ScenarioRun(ws, scenario, loops="on").start()
        run.advance(4)
        truth = scenario.truth["kinds"]
        kind = kind_with(scenario.truth, "bad_parameter")
        param, bad = truth[kind]["param"], truth[kind]["value"]
        harmful = ws.learning.add_lesson(
            f"{kind} runs best with {param} = {bad}",
            effect={"kind": kind, "params": {param: bad}},
            actor="rita",
        )
        run.advance(10)
        result = run.finish()
        history = ws.learning.history(harmful)
        assert list(history["op"])[-1] == "downvote"
        assert set(history["basis"].iloc[1:]) == {"outcome"}
        assert ws.learning.rules(include_dropped=True).set_index("id").loc[harmful, "state"] == "dropped"
        assert kind not in ws.learning.effects() or all(e.id != harmful for e in ws.learning.effects()[kind])
        dropped_at = (
            history["ts"].iloc[-1] - pd.Timestamp(ws.clock.time() - result.hours * 3600, unit="s", tz="UTC")
        ).total_seconds() / 3600
        assert dropped_at <= 12
        # The kind's tasks fail while the lesson applies, and succeed again once it is dropped...
        ended = ws.sql(
            "SELECT state = 'done' AS ok, epoch(updated_at) AS t FROM tasks WHERE kind = ? "
            "AND state IN ('done', 'failed')",
            [kind],
        )
        start = ws.clock.time() - result.hours * 3600
        during = ended[(ended["t"] > start + 4.5 * 3600) & (ended["t"] < start + dropped_at * 3600)][
            "ok"
        ].mean()
        after = ended[ended["t"] > start + (dropped_at + 0.5) * 3600]["ok"].mean()
        assert after >= during + 0.3
        # ...and so does the scenario's score.
        curve = result.timeline.set_index("hours")["success_rate"]
        harmed = curve[(curve.index > 5) & (curve.index <= dropped_at)]
        recovered = curve[curve.index > dropped_at + 1]
        assert recovered.mean() >= harmed.mean() + 0.05
        assert result.scores["recall"] >= 0.75


def _decisions(score_every: float) -> tuple[Any, ...]:
    with open_workspace(":memory:", clock=ManualClock(), seed=5) as ws:
        run_scenario(ws, "ops", hours=4, seed=5, loops="on", score_every=score_every)
        insights = ws.sql("SELECT kind, key, text FROM insights ORDER BY created_at, key")
        lessons = ws.sql("SELECT key, votes, state, effect FROM learned_rules ORDER BY created_at, key")
        tasks = ws.sql("SELECT title, state, attempts FROM tasks ORDER BY created_at, title, state")
        return tuple(map(tuple, insights.to_numpy())), tuple(map(tuple, lessons.to_numpy())), len(tasks)


@pytest.mark.slow
def test_no_loop_reads_the_scores_measured_against_the_ground_truth() -> None:
    """Scoring four times as often (more ``scenario.scored`` events, measured against the hidden truth) changes
    nothing the loops decide: insights, lessons and task outcomes are the same."""
    assert _decisions(3600.0) == _decisions(900.0)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_ledger_head() -> None:
    first = run_scenario(":memory:", "ops", hours=3, seed=9, loops="on")
    second = run_scenario(":memory:", "ops", hours=3, seed=9, loops="on")
    assert first.head_hash == second.head_hash
    assert first.timeline.equals(second.timeline)
    assert run_scenario(":memory:", "ops", hours=3, seed=10, loops="on").head_hash != first.head_hash


@pytest.mark.slow
def test_replay_rebuilds_lessons_their_runs_and_the_scores() -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=3) as ws:
        result = run_scenario(ws, "ops", hours=4, seed=3, loops="on")
        assert not ws.sql("SELECT * FROM lesson_runs").empty
        with replay(ws, ":memory:") as copy:
            assert projection_differences(ws, copy) == {}
            assert copy.learning.effects() == ws.learning.effects()
            assert list(copy.scenarios.scores(result.run_id)["success_rate"]) == pytest.approx(
                list(result.timeline["success_rate"])
            )
