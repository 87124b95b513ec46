"""Sweeps: planning grid and random searches, runs in their own workspaces, results in a lake table,
resumption, the same head hash on every backend, and the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from grace_core import open_workspace
from grace_core.errors import SweepError
from grace_core.lake import open_lake
from grace_core.sweep import RESULTS_TABLE, SweepConfig, load_config, plan, run_sweep
from tests.support import grace


def _config(tmp_path: Path, **overrides: object) -> Path:
    raw = {
        "name": "users-vs-seeds",
        "search": "grid",
        "seeds": [1, 2],
        "hours": 0.2,
        "simulate": {"attack_share": 0.2},
        "params": {"users": [2, 3], "reflection.interval": 300},
        "objective": "messages",
        "workers": 2,
        **overrides,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_grid_is_the_product_and_a_random_search_is_seeded(tmp_path: Path) -> None:
    grid = plan(load_config(_config(tmp_path)))
    assert len(grid) == 4  # 2 user counts x 1 interval x 2 seeds
    assert len({r.id for r in grid}) == 4
    assert {dict(r.params)["users"] for r in grid} == {2, 3}
    random_cfg = load_config(
        _config(tmp_path, search="random", samples=5, params={"failure_share": {"min": 0.0, "max": 0.5}})
    )
    first, again = plan(random_cfg), plan(random_cfg)
    assert [r.id for r in first] == [r.id for r in again]  # the same draws every time
    shares = [dict(r.params)["failure_share"] for r in first]
    assert all(0.0 <= s <= 0.5 for s in shares)
    assert len(set(shares)) == 5


def test_bad_configs_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="neither an argument of simulate"):
        load_config(_config(tmp_path, params={"velocity": [1, 2]}))
    with pytest.raises(SweepError, match="needs a name"):
        SweepConfig.from_mapping({"params": {}})
    with pytest.raises(SweepError, match="needs search: random"):
        plan(load_config(_config(tmp_path, params={"users": {"min": 1, "max": 3}})))


@pytest.mark.slow
def test_runs_land_in_one_lake_table_and_a_rerun_resumes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = run_sweep(config, backend="processes", limit=3)
    assert (first.ran, first.skipped, first.planned) == (3, 0, 4)
    # Interrupted after three runs: the rerun does only the missing one.
    second = run_sweep(config, backend="serial")
    assert (second.ran, second.skipped) == (1, 3)
    assert run_sweep(config, backend="serial").ran == 0
    results = second.results
    assert len(results) == 4
    assert results["run_id"].is_unique
    # Each run had its own workspace; its ledger holds what the lake row says, and the loop param was set.
    row = results.iloc[0]
    with open_workspace(row["workspace"], snapshot=True) as ws:
        assert ws.ledger.head[1].hex() == row["head_hash"]
        assert float(ws.loops.param("reflection", "interval")) == 300
        assert ws.verify().ok
    # The same seed and parameters give the same ledger on another backend (processes vs in-process).
    by_key = {(r["params"], r["seed"]): r["head_hash"] for _, r in results.iterrows()}
    assert len(set(by_key.values())) == 4  # different users or seeds: different ledgers
    # Readers see the table in the lake like any other.
    cfg = load_config(config)
    with open_lake(cfg.catalog) as lake:
        assert lake.sql(f"SELECT count(*) AS n FROM {RESULTS_TABLE}")["n"].iloc[0] == 4
    assert second.best()["params"]["users"] in (2, 3)


@pytest.mark.slow
def test_the_same_run_gives_the_same_head_hash_on_every_backend(tmp_path: Path) -> None:
    a = run_sweep(_config(tmp_path / "a", seeds=[5], params={"users": 2}), backend="serial")
    b = run_sweep(_config(tmp_path / "b", seeds=[5], params={"users": 2}), backend="processes")
    assert a.results["head_hash"].tolist() == b.results["head_hash"].tolist()
    assert a.results["run_id"].tolist() == b.results["run_id"].tolist()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install ray)")
def test_the_ray_backend_matches_the_local_one(tmp_path: Path) -> None:
    local = run_sweep(_config(tmp_path / "a", seeds=[3], params={"users": [2, 3]}), backend="serial")
    remote = run_sweep(_config(tmp_path / "b", seeds=[3], params={"users": [2, 3]}), backend="ray", workers=2)
    assert sorted(local.results["head_hash"]) == sorted(remote.results["head_hash"])


@pytest.mark.slow
def test_the_cli_runs_a_sweep_and_reports_the_best(tmp_path: Path) -> None:
    config = _config(tmp_path, seeds=[1], params={"users": [2, 3]})
    out = grace("sweep", config, "--backend", "processes", "--json", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    summary = lines[-1]
    assert summary["ran"] == 2
    assert summary["planned"] == 2
    assert summary["best"]["params"]["users"] in (2, 3)
    again = grace("sweep", config, "--backend", "serial", "--json", "--no-progress", cwd=tmp_path)
    assert json.loads(again.stdout.splitlines()[-1])["skipped"] == 2
    bad = grace("sweep", config, "--backend", "nope")
    assert bad.returncode == 2
    assert os.path.isdir(tmp_path / "sweep-runs")
