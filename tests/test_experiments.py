"""Experiments: bootstrap intervals against known cases, paired differences, arms, real runs of a scenario stored
in the sweep lake table (a rerun skips them, the same seed gives the same numbers), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_core import run_experiment
from grace_core.errors import ExperimentError, ScenarioError, SweepError
from grace_core.experiments import Arm, mean_ci, paired_difference_ci, parse_seeds
from grace_core.lake import open_lake
from grace_core.scenarios import run_scenario
from grace_core.sweep import RESULTS_TABLE, load_config, run_sweep
from tests.support import grace


# -- statistics ----------------------------------------------------------------------------------------------------
def test_the_interval_covers_the_true_mean_about_as_often_as_promised() -> None:
    rng = np.random.default_rng(12)
    covered = 0
    trials = 200
    for i in range(trials):
        sample = rng.normal(5.0, 2.0, size=25)
        _, low, high = mean_ci(sample, resamples=999, seed=i)
        covered += low <= 5.0 <= high
    assert 0.88 <= covered / trials <= 0.99  # 95 % intervals (bootstrap runs a little narrow on 25 values)


def test_a_wide_sample_has_a_wide_interval_and_the_mean_is_the_mean() -> None:
    narrow = mean_ci([10.0, 10.1, 9.9, 10.0, 10.05])
    wide = mean_ci([2.0, 18.0, 5.0, 15.0, 10.0])
    assert narrow[0] == pytest.approx(10.01)
    assert wide[0] == pytest.approx(10.0)
    assert narrow[2] - narrow[1] < 0.2 < 5 < wide[2] - wide[1]
    assert wide[1] < wide[0] < wide[2]


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    data = [0.3, 0.9, 0.5, 0.7, 0.2, 0.8]
    assert mean_ci(data, seed=4) == mean_ci(data, seed=4)
    assert mean_ci(data, seed=4) != mean_ci(data, seed=5)


def test_missing_constant_and_single_values() -> None:
    assert mean_ci([None, 0.5, float("nan"), 0.7])[0] == pytest.approx(0.6)
    assert mean_ci([0.25, 0.25, 0.25]) == (0.25, 0.25, 0.25)
    mean, low, high = mean_ci([3.0])
    assert mean == 3.0
    assert np.isnan(low)
    assert np.isnan(high)
    assert all(np.isnan(v) for v in mean_ci([None, None]))


def test_paired_differences_see_a_shift_that_unpaired_noise_hides() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(50, 20, size=8)  # seeds differ a lot ...
    other = base + 1.0 + rng.normal(0, 0.1, size=8)  # ... the arm adds 1 to each
    diff, low, high, n = paired_difference_ci(base.tolist(), other.tolist())
    assert n == 8
    assert diff == pytest.approx(1.0, abs=0.1)
    assert 0 < low < 1.0 < high < 2  # paired: the shift is resolved
    _, a_low, a_high = mean_ci(base)
    assert a_high - a_low > 10  # unpaired, each arm's own interval is far wider than the shift


def test_a_pair_with_a_missing_value_is_left_out_and_lengths_must_match() -> None:
    diff, _, _, n = paired_difference_ci([1.0, None, 3.0, 5.0], [2.0, 9.0, None, 7.0])
    assert (n, diff) == (2, pytest.approx(1.5))
    assert paired_difference_ci([1.0, 2.0], [1.5, 2.5])[:3] == (0.5, 0.5, 0.5)
    with pytest.raises(ExperimentError, match="differ in length"):
        paired_difference_ci([1.0], [1.0, 2.0])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12))
def test_an_interval_holds_its_mean(values: list[float]) -> None:
    mean, low, high = mean_ci(values, resamples=200)
    assert low - 1e-6 <= mean <= high + 1e-6


# -- arms and seeds ------------------------------------------------------------------------------------------------
def test_arms_and_seeds_from_text() -> None:
    assert Arm.parse("off") == Arm("off", loops="off")
    assert Arm.parse("slow:loops=on,reflection.interval=3600") == Arm(
        "slow", loops="on", params=(("reflection.interval", 3600),)
    )
    assert Arm.parse("pair:loops=learning+executor").loops == ("learning", "executor")
    assert Arm.of({"name": "x", "loops": "all"}) == Arm("x", loops="all")
    for bad, why in (
        ("fast", "not on, off or all"),
        (":loops=on", "no name"),
        ("x:loops", "not key=value"),
        ("x:speed=3", "neither loops nor a loop parameter"),
    ):
        with pytest.raises(ExperimentError, match=why):
            Arm.parse(bad)
    assert parse_seeds("1-3,7,2") == [1, 2, 3, 7]
    with pytest.raises(ExperimentError):
        parse_seeds("one")


def test_bad_arms_and_scenarios_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        run_experiment("nope", workdir=tmp_path / "a")
    with pytest.raises(ExperimentError, match=r"arm .x..*no parameter .intervl."):
        run_experiment("ops", arms=["off", "x:reflection.intervl=60"], workdir=tmp_path / "a")
    with pytest.raises(ExperimentError, match=r"arm 'x'.*no loop named 'nosuch'"):
        run_experiment("ops", arms=["off", "x:loops=nosuch"], workdir=tmp_path / "a")
    with pytest.raises(ExperimentError, match="baseline 'q' is not an arm"):
        run_experiment("ops", baseline="q", workdir=tmp_path / "a")
    with pytest.raises(ExperimentError, match="run the same thing"):
        run_experiment("ops", arms=["on", "again:loops=on"], workdir=tmp_path / "a")
    assert not (tmp_path / "a").exists()  # nothing was made


# -- real runs -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_on_off_experiment_runs_stores_and_reproduces(tmp_path: Path) -> None:
    report = run_experiment("ops", arms=["off", "on"], seeds=[1, 2], hours=3, workdir=tmp_path)
    assert (report.ran, report.skipped) == (4, 0)
    runs = report.runs.set_index(["arm", "seed"])
    # Each row is what the scenario measures for that arm and seed, run on its own.
    direct = run_scenario(":memory:", "ops", hours=3, seed=2, loops="on")
    assert runs.loc[("on", 2), "success_rate"] == pytest.approx(direct.scores["success_rate"])
    assert runs.loc[("on", 2), "head_hash"] == direct.head_hash
    # Means and paired differences are those of the rows.
    means = report.means.set_index(["arm", "score"])
    on_rates = [runs.loc[("on", s), "success_rate"] for s in (1, 2)]
    off_rates = [runs.loc[("off", s), "success_rate"] for s in (1, 2)]
    assert means.loc[("on", "success_rate"), "mean"] == pytest.approx(np.mean(on_rates))
    diff = report.differences.set_index("score").loc["success_rate"]
    assert diff["difference"] == pytest.approx(np.mean(np.subtract(on_rates, off_rates)))
    assert diff["n"] == 2
    assert diff["baseline"] == "off"
    # The learning curve: one point per arm, hour and score, averaged over both seeds.
    curve = report.curves[(report.curves["arm"] == "on") & (report.curves["score"] == "success_rate")]
    assert curve["hours"].tolist() == [1.0, 2.0, 3.0]
    assert (curve["n"] <= 2).all()
    assert report.timelines.groupby(["arm", "seed"]).size().tolist() == [3, 3, 3, 3]
    # Stored in the sweep lake table; a rerun skips every run and reports the same numbers.
    with open_lake(report.lake["catalog"]) as lake:
        stored = lake.sql(f"SELECT arm, scenario, scores FROM {RESULTS_TABLE} WHERE sweep = 'ops-experiment'")
    assert sorted(stored["arm"]) == ["off", "off", "on", "on"]
    assert set(stored["scenario"]) == {"ops"}
    again = run_experiment("ops", arms=["off", "on"], seeds=[1, 2], hours=3, workdir=tmp_path)
    assert (again.ran, again.skipped) == (0, 4)
    assert again.means.equals(report.means)
    assert again.differences.equals(report.differences)
    # A parameter arm is a new run in the same table; the shared arms are not run again.
    slower = run_experiment(
        "ops",
        arms=["off", "slow:loops=on,learning.interval=7200"],
        seeds=[1, 2],
        hours=3,
        workdir=tmp_path,
    )
    assert (slower.ran, slower.skipped) == (2, 2)
    assert "slow" in str(slower)
    assert "paired difference to off" in str(slower)


@pytest.mark.slow
def test_the_command_prints_the_table_and_json_and_refuses_bad_input(tmp_path: Path) -> None:
    done = grace(
        "experiment",
        "ops",
        "--seeds",
        "1,2",
        "--hours",
        "1",
        "--workdir",
        tmp_path,
        "--no-progress",
        "--curves",
    )
    assert done.returncode == 0, done.stderr
    assert "mean over seeds [95% bootstrap interval]" in done.stdout
    assert "paired difference to off" in done.stdout
    assert "learning curves" in done.stdout
    as_json = grace("experiment", "ops", "--seeds", "1,2", "--hours", "1", "--workdir", tmp_path, "--json")
    report = json.loads(as_json.stdout)
    assert report["skipped"] == 4
    assert report["ran"] == 0
    assert {m["arm"] for m in report["means"]} == {"off", "on"}
    for args, why in (
        (["nope"], "unknown scenario 'nope'"),
        (["ops", "--arm", "fast"], "arm 'fast' is not on, off or all"),
        (["ops", "--arm", "x:executor.max_tasks=0"], "arm 'x'"),
        (["ops", "--seeds", "a-b"], "seeds are whole numbers"),
    ):
        bad = grace("experiment", *args, "--workdir", tmp_path / "bad")
        assert bad.returncode == 2
        assert bad.stderr.count("\n") == 1, bad.stderr
        assert why in bad.stderr
    assert not (tmp_path / "bad").exists()


# -- sweeps over scenario scores -----------------------------------------------------------------------------------
def _scenario_sweep(tmp_path: Path, **overrides: object) -> Path:
    raw = {
        "name": "ops-learning-interval",
        "scenario": "ops",
        "seeds": [1],
        "hours": 2,
        "params": {"learning.interval": [1200, 7200]},
        "objective": "time_to_done_s",
        "goal": "min",
        **overrides,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_scenario_sweep_checks_its_objective_and_params(tmp_path: Path) -> None:
    config = load_config(_scenario_sweep(tmp_path))
    assert (config.scenario, config.objective, config.goal) == ("ops", "time_to_done_s", "min")
    for overrides, why in (
        ({"objective": "tasks_done"}, "not a score of scenario 'ops'"),
        ({"scenario": "nope"}, "unknown scenario"),
        ({"goal": "down"}, "goal must be max or min"),
        ({"params": {"users": [1, 2]}}, "loop parameters written as loop.param"),
        ({"simulate": {"users": 2}}, "takes no simulate arguments"),
    ):
        with pytest.raises(SweepError, match=why):
            load_config(_scenario_sweep(tmp_path, **overrides))


@pytest.mark.slow
def test_a_scenario_sweep_minimises_a_score(tmp_path: Path) -> None:
    report = run_sweep(_scenario_sweep(tmp_path), backend="serial")
    values = report.results.set_index("params")["value"]
    assert len(values) == 2
    assert values.notna().all()
    best = report.best()
    assert best["mean"] == pytest.approx(values.min())  # goal min: the lowest mean wins
    assert json.loads(report.results["scores"].iloc[0])["time_to_done_s"] == pytest.approx(values.iloc[0])
    maxed = run_sweep(_scenario_sweep(tmp_path, goal="max", name="ops-max"), backend="serial")
    assert maxed.best()["mean"] == pytest.approx(maxed.results["value"].max())
