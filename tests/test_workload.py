"""The seeded workload: users, attacks that trip Hunter, flaky tasks, loops driven, same seed same ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import grace

from grace_core import ManualClock, open_workspace
from grace_core.errors import GraceError
from grace_core.workload import FLAKY_KIND, simulate


def _sim(seed: int, hours: float = 0.5, **kw: object) -> tuple[str, dict[str, int], dict[str, int]]:
    with open_workspace(":memory:", clock=ManualClock(), seed=seed) as ws:
        summary = simulate(ws, hours=hours, seed=seed, users=4, **kw)  # type: ignore[arg-type]
        return summary.head_hash, summary.counts, summary.topics


def test_same_seed_same_ledger_head_and_a_different_seed_differs() -> None:
    first, second = _sim(3), _sim(3)
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert _sim(4)[0] != first[0]


def test_attacks_trip_hunter_and_flaky_tasks_fail_and_loops_run() -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=9) as ws:
        summary = simulate(ws, hours=1, seed=9, users=4, attack_share=0.5, failure_share=1.0)
        c = summary.counts
        assert c["messages"] > 0
        assert c["replies"] > 0
        assert c["alerts"] > 0  # secrets and injections are caught...
        assert c["refusals"] > 0  # ...and high-severity ones are refused
        sim_tasks = ws.tasks.list(kind=FLAKY_KIND)
        assert len(sim_tasks) > 0
        assert set(sim_tasks["state"]) <= {"failed", "done", "pending", "running"}
        for task_id in sim_tasks["id"]:  # every task of this run fails at least once
            task = ws.tasks.get(task_id)
            assert task.state == "failed" or task.result["rows"] >= 200, task  # done on a retry
        assert c["loop_ticks"] > 0
        assert "reflection" in summary.loops
        roles = dict(zip(ws.auth.users()["name"], ws.auth.users()["role"], strict=True))
        assert {"researcher", "viewer"} <= set(roles.values())
        # the loops got their own intervals back at the end
        assert ws.loops.param("reflection", "interval") == 10.0
        assert "simulated 1 h" in str(summary)


def test_simulate_needs_a_manual_clock_and_sane_shares() -> None:
    with open_workspace(":memory:") as ws, pytest.raises(GraceError, match="ManualClock"):
        simulate(ws, hours=1, seed=1)
    with open_workspace(":memory:", clock=ManualClock(), seed=1) as ws, pytest.raises(GraceError):
        simulate(ws, hours=1, seed=1, attack_share=2.0)


@pytest.mark.slow
def test_cli_simulate_in_two_processes_gives_the_same_head(tmp_path: Path) -> None:
    heads = []
    for i in range(2):
        result = grace("simulate", "--hours", "0.25", "--seed", "7", "--users", "3", "--json",
                       "--workspace", tmp_path / f"sim{i}.duckdb")  # fmt: skip
        assert result.returncode == 0, result.stderr
        heads.append(json.loads(result.stdout)["head_hash"])
    assert heads[0] == heads[1]
    text = grace("simulate", "--hours", "0.1", "--seed", "7", "--users", "2", "--no-progress")
    assert text.returncode == 0
    assert "head" in text.stdout
    assert "messages" in text.stdout


def _day_part(seed: int, hours: float) -> tuple[str, int, list[str], list[tuple[str, str, float, str]]]:
    with open_workspace(":memory:", clock=ManualClock(), seed=seed) as ws:
        summary = simulate(ws, hours=hours, seed=seed)
        dead = ws.mesh.dead_letters()
        changes = ws.meta.changes()
        decisions = list(
            zip(changes["loop"], changes["key"], changes["new_value"], changes["status"], strict=True)
        )
        return (
            summary.head_hash,
            len(dead),
            sorted(set(ws.sql("SELECT topic FROM events")["topic"])),
            decisions,
        )


@pytest.mark.slow
def test_six_simulated_hours_twice_give_the_same_ledger_and_no_dead_letters() -> None:
    first = _day_part(7, hours=6)
    second = _day_part(7, hours=6)
    assert first[0] == second[0]  # the same head hash: every event, id and timestamp equal
    assert first[1] == second[1] == 0  # no subscriber raised
    assert "mesh.delivery_failed" not in first[2]
    assert first[3] == second[3]
    assert len(first[3]) >= 10  # the meta-loop took part (and decided the same way both times)
    assert {"kept", "reverted"} <= {d[3] for d in first[3]}


@pytest.mark.slow
def test_a_meta_decision_reaches_back_to_the_raw_events_behind_what_it_measured() -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=5) as ws:
        simulate(ws, hours=2, seed=5, users=6)
        decisions = [
            e for e in ws.ledger.events(topic="meta.change_applied") if e.payload["loop"] == "reflection"
        ]
        assert decisions, ws.meta.changes()
        decision = decisions[0]
        lineage = ws.causal.lineage(decision.id)
        topics = set(lineage["topic"])
        assert decision.payload["evidence"] in set(lineage["id"])
        assert any(t.startswith("reflection.insight") for t in topics), topics  # what the objective measured
        assert topics & {"chat.message.received", "hunter.alert", "task.state_changed"}, topics  # raw events
