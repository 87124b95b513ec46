"""The governed sandbox: results, limits, governance, Hunter, events, the projection, the CLI, each layer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from grace_core import Workspace
from grace_core.errors import DegradedModeError, PermissionDenied, SandboxError
from grace_core.sandbox import Limits
from grace_core.sandbox.isolation import detect, run_isolated
from grace_core.sandbox.seccomp import filter_program
from tests.support import count_scans, grace

PASSWORD = "correct horse battery staple 42"
needs_bwrap = pytest.mark.skipif(detect().bwrap is None, reason="bubblewrap is not usable here")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uid and cgroups need root")


@pytest.fixture
def sws(ws: Workspace) -> Workspace:
    ws.auth.register("ada", PASSWORD, role="admin", by="system")
    ws.auth.register("rita", PASSWORD, role="researcher", by="ada")
    ws.auth.register("vic", PASSWORD, role="viewer", by="ada")
    return ws


def test_a_run_returns_output_status_and_measurements(sws: Workspace) -> None:
    ex = sws.sandbox.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\n", actor="rita")
    assert ex.ok
    assert ex.status == "completed"
    assert (ex.stdout, ex.stderr, ex.exit_code, ex.signal, ex.limit_hit) == ("out\n", "err\n", 0, None, None)
    assert 0 < ex.duration_s < 10
    assert ex.peak_memory_kb > 0
    assert not ex.stdout_truncated
    assert not ex.stderr_truncated


def test_exit_status_and_stdin_reach_the_caller(sws: Workspace) -> None:
    ex = sws.sandbox.run("import sys\ndata = sys.stdin.read()\nprint(data.upper())\nsys.exit(3)\n", actor="rita",
                         stdin="hello")  # fmt: skip
    assert ex.exit_code == 3
    assert ex.stdout == "HELLO\n"
    assert ex.status == "failed"
    assert not ex.ok


def test_shell_language_runs_too(sws: Workspace) -> None:
    ex = sws.sandbox.run("echo $((6 * 7))", actor="rita", language="sh")
    assert ex.ok
    assert ex.stdout == "42\n"


def test_the_program_never_runs_in_this_process(sws: Workspace) -> None:
    ex = sws.sandbox.run("import os\nprint(os.getpid(), os.getppid())\n", actor="rita")
    pid, _ppid = map(int, ex.stdout.split())
    assert pid != os.getpid()


def test_events_carry_digest_excerpts_limits_layers_and_are_caused_by_the_request(sws: Workspace) -> None:
    limits = Limits(timeout_s=5, memory_mb=256)
    ex = sws.sandbox.run("print('x' * 10000)\n", actor="rita", limits=limits)
    done = sws.ledger.get(ex.event_id)
    assert done is not None
    assert done.topic == "sandbox.execution_completed"
    p = done.payload
    assert p["execution"] == ex.id
    assert p["code_digest"] == ex.code_digest
    assert len(p["code_digest"]) == 64
    assert len(p["stdout"]) == 4096
    assert p["stdout_truncated"] is True
    assert len(ex.stdout) == 10001
    assert not ex.stdout_truncated
    assert p["limits"] == limits.as_dict()
    assert p["isolation"] == list(ex.isolation)
    assert p["duration_s"] > 0
    assert done.parent_id == ex.id
    decision = sws.events(topic="governance.decision").iloc[-1]
    assert decision["parent_id"] == ex.id


def test_a_failed_run_is_a_failed_event_and_a_projection_row(sws: Workspace) -> None:
    ex = sws.sandbox.run("raise SystemExit('boom')\n", actor="rita")
    assert sws.ledger.get(ex.event_id).topic == "sandbox.execution_failed"  # type: ignore[union-attr]
    row = sws.sandbox.execution(ex.id)
    assert row["status"] == "failed"
    assert row["exit_code"] == 1
    assert "boom" in row["stderr"]
    assert row["code"] == "raise SystemExit('boom')\n"
    assert row["isolation"] == list(ex.isolation)
    assert sws.sandbox.executions(status="failed")["id"].tolist()[0] == ex.id


def test_secrets_in_code_and_output_are_masked_on_the_ledger(sws: Workspace) -> None:
    key = "AKIAIOSFODNN7EXAMPLE"
    ex = sws.sandbox.run(f"print('{key}')\n", actor="rita")
    assert ex.stdout == key + "\n"  # the caller sees its own output
    assert (
        key
        not in sws.sql("SELECT string_agg(payload, '') AS p FROM events WHERE topic LIKE 'sandbox.%'")["p"][0]
    )
    assert sws.sandbox.execution(ex.id)["masked"]
    assert len(sws.events(topic="hunter.alert")) >= 1


def test_code_is_scanned_once_for_masking_alerts_and_governance(sws: Workspace) -> None:
    scans = count_scans(sws)
    code = "import os\nos.system('ls ' + 'x')\n"
    sws.sandbox.run(code, actor="rita")
    assert [t for target, t in scans if target == "code"] == [code]
    assert "code-shell-exec" in json.dumps(sws.events(topic="hunter.alert")["payload"].tolist())


def test_a_viewer_is_refused_and_the_refusal_recorded(sws: Workspace) -> None:
    with pytest.raises(PermissionDenied, match="vic"):
        sws.sandbox.run("print(1)\n", actor="vic")
    refused = sws.events(topic="sandbox.execution_refused")
    assert len(refused) == 1
    assert "sandbox.execute" in refused["payload"][0]["reason"]
    assert sws.sandbox.executions()["status"].tolist() == ["refused"]
    assert sws.events(topic="sandbox.execution_completed").empty


def test_a_long_run_waits_for_approval_then_runs(sws: Workspace) -> None:
    limits = Limits(timeout_s=400)
    with pytest.raises(PermissionDenied, match="approval") as info:
        sws.sandbox.run("print('long')\n", actor="rita", limits=limits)
    approval = info.value.decision.approval_id  # type: ignore[union-attr]
    assert sws.sandbox.executions()["status"].tolist() == ["refused"]
    sws.governance.approve(approval, by="ada")
    ex = sws.sandbox.run("print('long')\n", actor="rita", limits=limits, approval_id=approval)
    assert ex.ok
    assert ex.stdout == "long\n"


def test_a_hunter_finding_is_screened_and_passed_to_governance(sws: Workspace) -> None:
    sws.sandbox.run("import os\nos.system('ls ' + 'x')\n", actor="rita")
    alerts = sws.events(topic="hunter.alert")
    assert "code-shell-exec" in json.dumps(alerts["payload"].tolist())
    context = sws.events(topic="governance.decision")["payload"].iloc[-1]
    assert "findings" in json.dumps(context)
    assert "max_severity" in json.dumps(context)


def test_disabled_mode_refuses_before_anything_is_recorded(sws: Workspace) -> None:
    sws.modes.enter("sandbox_disabled", actor="ada", reason="kernel update")
    before = sws.ledger.head[0]
    with pytest.raises(DegradedModeError, match="kernel update"):
        sws.sandbox.run("print(1)\n", actor="rita")
    assert sws.ledger.head[0] == before


def test_bad_requests_are_refused_with_a_clear_error(sws: Workspace) -> None:
    with pytest.raises(SandboxError, match="language"):
        sws.sandbox.run("print(1)", actor="rita", language="cobol")
    with pytest.raises(SandboxError, match="actor"):
        sws.sandbox.run("print(1)", actor="")
    with pytest.raises(SandboxError, match="timeout_s"):
        Limits(timeout_s=0)


def test_duration_metric_is_derived_from_the_runs(sws: Workspace) -> None:
    sws.sandbox.run("print(1)\n", actor="rita")
    sws.sandbox.run("raise ValueError\n", actor="rita")
    summary = sws.metrics.summary()
    rows = summary[summary["metric"] == "grace_sandbox_duration_seconds"]
    assert sorted(r["status"] for r in rows["labels"]) == ["completed", "failed"]


def test_same_seed_and_clock_give_the_same_ledger_apart_from_measurements(sws: Workspace) -> None:
    # Durations are measurements; everything else about a run is deterministic.
    a = sws.sandbox.run("print(1)\n", actor="rita")
    b = sws.sandbox.run("print(1)\n", actor="rita")
    assert a.code_digest == b.code_digest
    assert a.id != b.id
    assert a.stdout == b.stdout


# -- each layer, seen from inside ------------------------------------------------------------------------------
@needs_bwrap
def test_bwrap_layer_private_filesystem_and_pid_namespace(sws: Workspace) -> None:
    ex = sws.sandbox.run(
        "import os\nprint(os.getpid(), sorted(os.listdir('/')), os.getcwd())\n", actor="rita"
    )
    assert "bwrap" in ex.isolation
    pid, rest = ex.stdout.split(" ", 1)
    assert int(pid) <= 3  # a fresh PID namespace
    assert "'etc'" not in rest
    assert "'home'" not in rest
    assert rest.strip().endswith("/work")


@needs_root
def test_uid_layer_runs_as_nobody_without_capabilities(sws: Workspace) -> None:
    code = (
        "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())\n"
        "print([l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapBnd', 'NoNewPrivs'))])\n"
    )
    ex = sws.sandbox.run(code, actor="rita")
    first, caps = ex.stdout.splitlines()
    assert first == "65534 65534 65534 []"
    assert "CapEff:\\t0000000000000000" in caps
    assert "CapBnd:\\t0000000000000000" in caps
    assert "NoNewPrivs:\\t1" in caps
    assert "uid" in ex.isolation


def test_rlimits_layer_is_visible_inside(sws: Workspace) -> None:
    code = "import resource as r\nprint([r.getrlimit(x)[0] for x in (r.RLIMIT_CPU, r.RLIMIT_FSIZE, r.RLIMIT_NOFILE)])\n"
    ex = sws.sandbox.run(code, actor="rita", limits=Limits(cpu_s=7, file_size_mb=2, open_files=40))
    assert ex.stdout.strip() == f"[7, {2 * 2**20}, 40]"
    assert "rlimits" in ex.isolation


def test_environment_is_scrubbed(sws: Workspace) -> None:
    ex = sws.sandbox.run("import os\nprint(sorted(os.environ))\n", actor="rita")
    assert set(eval(ex.stdout)) <= {"PATH", "HOME", "LANG", "PYTHONIOENCODING", "PWD", "LC_CTYPE"}


def test_work_dir_is_thrown_away_between_runs(sws: Workspace) -> None:
    sws.sandbox.run("open('left.txt', 'w').write('x')\n", actor="rita")
    ex = sws.sandbox.run(
        "import os\nprint(os.path.exists('left.txt'), os.path.exists('/tmp/left.txt'))\n", actor="rita"
    )
    assert ex.stdout.strip() == "False False"


def test_cgroup_layer_or_its_absence_is_recorded(sws: Workspace) -> None:
    ex = sws.sandbox.run("pass\n", actor="rita")
    host = detect()
    if host.cgroup is None:
        assert "cgroup" in ex.missing_layers
    else:
        assert f"cgroup_{host.cgroup}" in ex.isolation


def test_layers_reports_what_this_machine_offers(sws: Workspace) -> None:
    report = sws.sandbox.layers()
    assert "rlimits" in report["layers"]
    assert "env" in report["layers"]
    assert all(isinstance(v, str) and v for v in report["missing"].values())


@needs_root
def test_fallback_without_bwrap_still_cuts_network_and_drops_uid(sws: Workspace) -> None:
    sws.sandbox.use_bwrap = False
    code = "import os, socket\nprint(os.getuid())\ntry:\n    socket.create_connection(('127.0.0.1', 9), 1)\n" \
           "except OSError as e:\n    print(type(e).__name__)\n"  # fmt: skip
    ex = sws.sandbox.run(code, actor="rita")
    assert "bwrap" not in ex.isolation
    assert "bwrap" in ex.missing_layers
    assert "filesystem" in ex.missing_layers
    uid, err = ex.stdout.split()
    if "uid" in ex.isolation:
        assert uid == "65534"
    assert "netns" in ex.isolation
    assert err == "OSError"


def test_seccomp_filter_is_well_formed() -> None:
    prog = filter_program("x86_64")
    assert len(prog) % 8 == 0
    assert 10 < len(prog) // 8 < 256
    assert filter_program("aarch64") != prog


def test_run_isolated_direct_use_reports_missing_layers_as_reasons() -> None:
    raw = run_isolated("print(2 + 2)", language="python", limits=Limits(), use_bwrap=False)
    assert raw.stdout == b"4\n"
    assert raw.missing["bwrap"]


# -- the command line -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_runs_a_file_prints_output_and_exits_with_its_status(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    assert grace("init", "-w", path).returncode == 0
    (tmp_path / "ok.py").write_text("print('hello from the sandbox')\n")
    (tmp_path / "bad.py").write_text("import sys\nprint('partial')\nsys.exit(4)\n")
    ok = grace("sandbox", "run", tmp_path / "ok.py", "-w", path)
    assert ok.returncode == 0
    assert ok.stdout == "hello from the sandbox\n"
    assert "exit status 0" in ok.stderr
    bad = grace("sandbox", "run", tmp_path / "bad.py", "--timeout", "5", "-w", path)
    assert bad.returncode == 4
    assert bad.stdout == "partial\n"
    assert "exit status 4" in bad.stderr
    listed = grace("sandbox", "ls", "--json", "-w", path)
    assert [json.loads(line)["status"] for line in listed.stdout.splitlines()] == ["failed", "completed"]
