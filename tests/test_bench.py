"""Tests for grace_core.bench and benchmarks/run.py: the shape of every figure, selection, cleanup.

Sizes are scaled down to a few hundred events so the suite stays fast; nothing here asserts speed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from grace_core import bench
from grace_core.errors import BenchError

ROOT = Path(__file__).resolve().parent.parent
TINY = 0.01  # 200 events in the ledger, 1,000 Merkle leaves, 50 ms of publishing per side
REQUIRED = {
    "ledger.append",
    "ledger.verify",
    "mesh.publish_to_durable_p50_ms",
    "mesh.publish_to_durable_p99_ms",
    "mesh.publish_concurrent",
    "merkle.root",
    "checkpoint.prove_p50_ms",
}


def check_figure(fig: dict) -> None:
    assert set(fig) == set(bench.KEYS)
    assert isinstance(fig["name"], str)
    assert fig["name"]
    assert isinstance(fig["peer"], str)
    assert fig["peer"]
    assert isinstance(fig["unit"], str)
    assert fig["unit"]
    for key in ("value", "peer_value", "ratio"):
        assert isinstance(fig[key], float), (fig["name"], key)
        assert math.isfinite(fig[key]), (fig["name"], key)
        assert fig[key] > 0, (fig["name"], key)
    # > 1 always means "better than the peer": higher rates are better, lower latencies are better.
    if bench.lower_is_better(fig["unit"]):  # latencies: ms, or us for sub-millisecond figures
        assert fig["name"].endswith("_" + fig["unit"])
        expected = fig["peer_value"] / fig["value"]
    else:
        # recall and F1: shares, higher is better
        assert fig["unit"].endswith("/s") or fig["unit"] in ("recall", "F1")
        expected = fig["value"] / fig["peer_value"]
    assert fig["ratio"] == pytest.approx(expected, rel=1e-3)


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    workdir = tmp_path_factory.mktemp("bench")
    out = list(bench.run(quick=True, scale=TINY, workdir=workdir))
    assert list(workdir.iterdir()) == [], "the run left files behind"
    return out


def test_quick_run_reports_every_figure_once_against_a_peer(figures: list[dict]) -> None:
    names = [f["name"] for f in figures]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED
    for fig in figures:
        check_figure(fig)
    by_name = {f["name"]: f for f in figures}
    assert by_name["ledger.append"]["peer"] == "duckdb.arrow_insert"
    assert by_name["ledger.verify"]["peer"] == "hashlib.sha256"
    p50, p99 = by_name["mesh.publish_to_durable_p50_ms"], by_name["mesh.publish_to_durable_p99_ms"]
    assert p50["value"] <= p99["value"]
    # Every line is plain JSON (what benchmarks/run.py and `grace bench` print).
    for fig in figures:
        assert json.loads(json.dumps(fig)) == fig


def test_registry_lists_what_a_full_run_yields(figures: list[dict]) -> None:
    declared = {f for b in bench.REGISTRY.values() for f in b.figures}
    assert {f["name"] for f in figures} == declared


@pytest.mark.parametrize(
    ("only", "expected"),
    [
        (["merkle.*"], ["merkle.root", "merkle.tree_append"]),
        (["mesh.publish_to_durable_p99_ms"], ["mesh.publish_to_durable_p99_ms"]),
        # verify alone has no append run before it: it builds its own ledger.
        (["ledger.verify"], ["ledger.verify"]),
    ],
)
def test_only_selects_benchmarks_and_single_figures(
    only: list[str], expected: list[str], tmp_path: Path
) -> None:
    figs = list(bench.run(quick=True, scale=TINY, only=only, workdir=tmp_path))
    assert [f["name"] for f in figs] == expected
    for fig in figs:
        check_figure(fig)
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"no benchmark or figure named ledger\.apend.*ledger\.append"):
        bench.run(only=["ledger.apend"], workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_abandoned_run_still_removes_its_files(tmp_path: Path) -> None:
    run = bench.run(quick=True, scale=TINY, only=["ledger.append", "ledger.verify"], workdir=tmp_path)
    first = next(run)
    assert first["name"] == "ledger.append"
    assert len(list(tmp_path.iterdir())) == 1  # the run's directory, with the ledger in it
    run.close()
    assert list(tmp_path.iterdir()) == []


def test_later_modules_can_register_figures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bench.core, "REGISTRY", dict(bench.REGISTRY))
    seen: list[bench.Context] = []

    @bench.benchmark("extra.thing", figures=["extra.thing_ms"])
    def extra(ctx: bench.Context) -> Iterator[dict]:
        seen.append(ctx)
        yield bench.figure("extra.thing_ms", 2.0, "ms", "peer.thing", 4.0)

    with pytest.raises(BenchError, match="registered already"):
        bench.benchmark("extra.thing")(extra)
    figs = list(bench.run(only=["extra.*"], scale=0.5, workdir=tmp_path))
    assert figs == [
        {
            "name": "extra.thing_ms",
            "value": 2.0,
            "unit": "ms",
            "peer": "peer.thing",
            "peer_value": 4.0,
            "ratio": 2.0,
        }
    ]
    assert seen[0].size(1000, 100) == 500  # full size, scaled


def test_figure_rejects_nonsense_measurements() -> None:
    with pytest.raises(BenchError, match="positive"):
        bench.figure("x", 0.0, "events/s", "p", 1.0)
    with pytest.raises(BenchError, match="positive"):
        bench.figure("x", 1.0, "ms", "p", float("nan"))
    assert bench.figure("x", 3.0, "events/s", "p", 2.0)["ratio"] == 1.5
    assert bench.figure("x", 3.0, "ms", "p", 2.0)["ratio"] == pytest.approx(0.6667)


def test_goals_read_latency_down_and_throughput_up() -> None:
    fast = bench.figure("mesh.publish_to_durable_p99_ms", 5.0, "ms", "p", 1.0)
    slow = bench.figure("mesh.publish_to_durable_p99_ms", 25.0, "ms", "p", 1.0)
    assert [met for _, met in bench.goal_status(fast)] == [True]
    assert [met for _, met in bench.goal_status(slow)] == [False]
    verify = bench.figure("ledger.verify", 1_200_000, "events/s", "hashlib.sha256", 3_000_000)
    assert sorted((g.on, met) for g, met in bench.goal_status(verify)) == [("ratio", False), ("value", True)]
    assert bench.goal_status(bench.figure("merkle.root", 1.0, "leaves/s", "p", 1.0)) == []


def test_progress_goes_to_stderr_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    figs = list(bench.run(quick=True, scale=TINY, only=["merkle.root"], progress=True, workdir=tmp_path))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "merkle.root" in captured.err
    assert "leaves/s" in captured.err
    assert len(figs) == 2


def test_run_script_prints_one_json_line_per_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--scale",
            str(TINY),
            "--only",
            "merkle.root",
            "checkpoint.prove",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    figs = [json.loads(line) for line in lines]
    assert [f["name"] for f in figs] == ["merkle.root", "merkle.tree_append", "checkpoint.prove_p50_ms"]
    for fig in figs:
        check_figure(fig)
    assert list(tmp_path.iterdir()) == []


def test_run_script_rejects_unknown_names(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "nope", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "no benchmark or figure named nope" in proc.stderr


def test_each_benchmark_declares_its_goals_and_lives_in_its_areas_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    area_of = {
        "checkpoint": "merkle",
        "sweep": "lake",
        "scenario": "scenarios",
    }  # figures whose area module has another name
    for b in bench.REGISTRY.values():
        assert {g.figure for g in b.goals} <= set(b.figures)
        prefix = b.name.split(".")[0]
        assert b.func.__module__ == f"grace_core.bench.{area_of.get(prefix, prefix)}"
    assert [g for b in bench.REGISTRY.values() for g in b.goals] == list(bench.GOALS)
    assert {g.figure for g in bench.GOALS} >= {"ledger.append", "mesh.publish_to_durable_p99_ms"}
    monkeypatch.setattr(bench.core, "REGISTRY", dict(bench.REGISTRY))
    with pytest.raises(BenchError, match=r"goals for figures it does not yield: other\.figure_ms"):
        bench.benchmark("extra.goal", figures=["extra.goal_ms"], goals=[bench.Goal("other.figure_ms", 1)])
