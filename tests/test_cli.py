"""The `grace` command, run as a user runs it: real subprocesses on real workspace files."""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from support import GRACE, clean_env, free_port, grace

from grace_core import InclusionProof, __version__, open_workspace, verify_inclusion_proof
from grace_core.errors import ProofError


def grace_all(*commands: tuple[str | Path, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at the same time (start-up dominates; this keeps the suite fast)."""
    procs = [
        subprocess.Popen(
            [*GRACE, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def assert_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """One line on stderr starting `grace: error:`, exit status 2, nothing on stdout, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("grace: error: "), lines[0]
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    result = grace("--workspace", path, "init", "--demo")
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def ws_file(demo_file: Path, tmp_path: Path) -> Path:
    """A private copy of the demo workspace, free to change."""
    path = tmp_path / "ws.duckdb"
    shutil.copy(demo_file, path)
    return path


def copies(path: Path, n: int) -> list[Path]:
    """Copies of a workspace for commands run at the same time (one process may open a file read-write)."""
    out = []
    for i in range(n):
        out.append(path.with_name(f"{path.stem}-{i}{path.suffix}"))
        shutil.copy(path, out[-1])
    return out


def topics(path: Path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return [r[0] for r in con.execute("SELECT topic FROM events ORDER BY seq").fetchall()]


# -- init ----------------------------------------------------------------------------------------------------
def test_version_from_the_installed_script_and_the_module() -> None:
    assert grace("--version").stdout.strip() == f"grace {__version__}"
    script = Path(sys.executable).with_name("grace")
    if not script.exists():
        pytest.skip("the `grace` console script is not installed in this environment")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, f"grace {__version__}")


def test_init_creates_then_demo_is_added_once(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    first = grace("init", "--workspace", path)
    assert first.returncode == 0, first.stderr
    assert f"workspace  {path}" in first.stdout
    assert "origin     grace-workbench/" in first.stdout
    # genesis: the workspace, the default policy pack, the rule pack, the shipped injection model
    assert "events     4" in first.stdout
    assert topics(path) == [
        "workspace.created",
        "governance.pack_loaded",
        "hunter.pack_loaded",
        "mldl.model_installed",
    ]

    demo = grace("init", "--demo", "--workspace", path)
    assert demo.returncode == 0, demo.stderr
    assert "demo       added" in demo.stdout
    seeded = topics(path)
    again = grace("init", "--demo", "--workspace", path)
    assert "demo       already present" in again.stdout
    assert topics(path) == seeded  # nothing duplicated
    assert seeded.count("demo.chat.message_received") == 3
    assert seeded.count("workspace.demo_seeded") == 1
    assert "ledger.checkpoint" in seeded
    assert "metrics.sampled" in seeded

    with open_workspace(path, snapshot=True) as ws:
        # Replies are causal children of the messages; the memory index is a grandchild.
        responded = ws.ledger.events(topic="demo.chat.message_responded")
        assert all(ws.ledger.get(e.parent_id).topic == "demo.chat.message_received" for e in responded)
        indexed = ws.ledger.events(topic="demo.memory.item_indexed")[0]
        assert ws.causal.lineage(indexed.id)["depth"].max() == 2
        assert set(ws.metrics.names) >= {"demo_response_seconds", "demo_memory_items"}
        assert (
            ws.verify().checkpoints_checked == 2
        )  # the ledger demo's, and one after the demo users' content


def test_workspace_from_env_default_file_and_subcommand_option(tmp_path: Path, demo_file: Path) -> None:
    # No option: ./grace.duckdb in the current directory.
    assert grace("init", cwd=tmp_path).returncode == 0
    assert (tmp_path / "grace.duckdb").exists()
    # $GRACE_WORKSPACE names it when no option does.
    result = grace("ledger", "verify", cwd=tmp_path, env=clean_env(GRACE_WORKSPACE=str(demo_file)))
    assert result.returncode == 0
    assert f"{len(topics(demo_file))} events" in result.stdout
    # The subcommand's --workspace wins over the group's.
    result = grace("--workspace", tmp_path / "grace.duckdb", "ledger", "verify", "--workspace", demo_file)
    assert f"{len(topics(demo_file))} events" in result.stdout


# -- ledger --------------------------------------------------------------------------------------------------
def test_verify_intact_then_tampered_row_exits_1_naming_the_seq(ws_file: Path) -> None:
    ok = grace("-w", ws_file, "ledger", "verify")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ledger intact: ")

    with duckdb.connect(str(ws_file)) as con:
        forged = '{"text":"forged","turn":0,"user":"user:ada"}'
        con.execute("UPDATE events SET payload = ? WHERE seq = 2", [forged])
    broken = grace("-w", ws_file, "ledger", "verify")
    assert broken.returncode == 1
    assert broken.stdout.strip() == "ledger broken at seq 2: contents do not match the hash"
    report = json.loads(grace("-w", ws_file, "ledger", "verify", "--json").stdout)
    assert (report["ok"], report["first_bad_seq"]) == (False, 2)


def test_checkpoint_then_prove_verifies_standalone(ws_file: Path) -> None:
    cp = grace("-w", ws_file, "ledger", "checkpoint")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].startswith("grace-workbench/")  # C2SP note: origin, size, root, then a signature line
    size = int(lines[1])
    assert lines[-1].startswith("— grace-workbench/")

    with open_workspace(ws_file, snapshot=True) as ws:  # the first demo reply (its responder is "offline")
        seq = int(
            ws.sql("SELECT min(seq) FROM events WHERE topic = 'demo.chat.message_responded'").iloc[0, 0]
        )
    result = grace("-w", ws_file, "ledger", "prove", str(seq), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # a checkpoint covers the event already: none is made
    d = json.loads(result.stdout)
    assert (d["seq"], d["size"]) == (seq, size)
    proof = InclusionProof(
        d["seq"],
        d["leaf"].encode(),
        d["index"],
        d["size"],
        tuple(bytes.fromhex(h) for h in d["path"]),
        d["checkpoint"],
    )
    with open_workspace(ws_file, snapshot=True) as ws:
        keys = ws.verifier_keys
    assert verify_inclusion_proof(proof, verifier_keys=keys).size == size
    leaf = d["leaf"].replace("offline", "online")
    assert leaf != d["leaf"]
    forged = InclusionProof(seq, leaf.encode(), d["index"], d["size"], proof.path, proof.checkpoint)
    with pytest.raises(ProofError, match="does not lead to the root"):
        verify_inclusion_proof(forged, verifier_keys=keys)

    human = grace("-w", ws_file, "ledger", "prove", str(seq))
    assert f"event {seq} (demo.chat.message_responded) is in the signed checkpoint" in human.stdout
    assert "the proof verifies" in human.stdout


def test_prove_past_the_last_checkpoint_signs_one_first(ws_file: Path) -> None:
    head = len(topics(ws_file))  # the demo's checkpoint covers all but its last event
    snap = grace("-w", ws_file, "--snapshot", "ledger", "prove", str(head))
    assert_error(snap, f"no signed checkpoint covers seq {head}")
    result = grace("-w", ws_file, "ledger", "prove", str(head), "--json")
    assert result.returncode == 0, result.stderr
    assert f"no signed checkpoint covers seq {head}; signing one now" in result.stderr
    assert json.loads(result.stdout)["size"] >= head
    assert topics(ws_file)[-1] == "ledger.checkpoint"


def test_prove_bad_seq_is_one_line_exit_2(ws_file: Path) -> None:
    cases = {
        "9999": "no event at seq 9999 (the ledger holds 1..",
        "abc": "'abc' is not a valid integer",
        "0": "numbered from 1, not 0",
    }  # only the first opens the workspace
    results = grace_all(*(("-w", ws_file, "ledger", "prove", seq) for seq in cases))
    for result, fragment in zip(results, cases.values(), strict=True):
        assert_error(result, fragment)


# -- events --------------------------------------------------------------------------------------------------
def test_events_tail_text_topic_filter_and_json(ws_file: Path) -> None:
    a, b, c = copies(ws_file, 3)
    text, every, newest_json = grace_all(
        ("-w", a, "events", "tail", "--topic", "demo.chat.*", "-n", "2"),
        ("-w", b, "events", "tail", "--json", "-n", "100"),
        ("-w", c, "events", "tail", "--json", "-n", "3", "--topic", "demo.*"),
    )
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    assert [line.split()[3] for line in lines] == [
        "demo.chat.message_received",
        "demo.chat.message_responded",
    ]
    assert lines[0].index("demo.chat") == lines[1].index("demo.chat")  # aligned columns
    assert lines[1].index("assistant:grace") == lines[0].index("user:ada")
    assert lines[1].endswith('{"responder":"offline","text":"The weekly review is on Frid…')  # shortened

    rows = [json.loads(line) for line in every.stdout.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, len(topics(ws_file)) + 1))
    newest = [json.loads(line) for line in newest_json.stdout.splitlines()]
    assert [r["topic"] for r in newest] == [
        "demo.memory.item_indexed",
        "demo.chat.message_received",
        "demo.chat.message_responded",
    ]
    assert newest[-1]["payload"] == {
        "responder": "offline",
        "text": "The weekly review is on Fridays.",
        "turn": 2,
    }
    assert newest[-1]["parent_id"] == newest[-2]["id"]


def _reader(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)


def _follow(ws_file: Path, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [*GRACE, "-w", str(ws_file), "--snapshot", "events", "tail", "-n", "1", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        **popen,
    )


def _stop_and_wait(follower: subprocess.Popen[str], how: signal.Signals) -> int:
    """Send ``how``, wait for the follower to end; a follower that does not end is killed (never leaked)."""
    try:
        follower.send_signal(how)
        return follower.wait(30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)


@pytest.mark.parametrize(
    ("how", "sigint_ignored"),
    [
        (signal.SIGINT, False),  # Ctrl-C in a terminal
        (signal.SIGTERM, True),  # a background job (SIGINT ignored), stopped with `kill`
    ],
)
def test_events_tail_follow_beside_the_owning_process(
    ws_file: Path, how: signal.Signals, sigint_ignored: bool
) -> None:
    owner = open_workspace(ws_file)  # this process owns the file, as a notebook kernel would
    try:
        head = owner.ledger.head[0]

        def ignore_sigint() -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        follower = _follow(ws_file, preexec_fn=ignore_sigint if sigint_ignored else None)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_reader, args=(follower.stdout, lines), daemon=True).start()
        try:
            first = json.loads(lines.get(timeout=30))
            assert first["seq"] == head
            owner.publish("demo.follow.ping", {"n": 1}, actor="test")
            seen = json.loads(lines.get(timeout=30))
            assert (seen["topic"], seen["payload"]) == ("demo.follow.ping", {"n": 1})
        finally:
            code = _stop_and_wait(follower, how)
        assert code == 0, follower.stderr.read() if follower.stderr else ""
    finally:
        owner.close()


def test_a_snapshot_of_a_workspace_whose_path_has_a_quote(tmp_path: Path) -> None:
    folder = tmp_path / "it's here"
    folder.mkdir()
    path = folder / "w.duckdb"
    owner = open_workspace(path)  # another process owns it: the snapshot is a copy the owner writes
    try:
        owner.publish("demo.quote", {"n": 1}, actor="tester")
        result = grace("-w", path, "--snapshot", "events", "tail", "-n", "1", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["topic"] == "demo.quote"
    finally:
        owner.close()


def test_sandbox_run_prints_the_programs_control_characters_escaped(ws_file: Path, tmp_path: Path) -> None:
    program = tmp_path / "colours.py"
    program.write_text(
        "import sys\n"
        "print('\\x1b[2J\\x1b[31mred\\rover')\n"
        "print('\\x1b]0;a new title\\x07done', file=sys.stderr)\n"
    )
    shown, as_json = grace_all(
        ("-w", ws_file, "sandbox", "run", program),
        ("-w", copies(ws_file, 1)[0], "sandbox", "run", program, "--json"),
    )
    assert shown.returncode == 0, shown.stderr
    assert (
        shown.stdout == "\\x1b[2J\\x1b[31mred\\rover\n"
    )  # the terminal is not cleared, coloured or rewritten
    assert "\x1b" not in shown.stderr
    assert shown.stderr.startswith("\\x1b]0;a new title\\x07done\n")
    assert json.loads(as_json.stdout)["stdout"] == "\x1b[2J\x1b[31mred\rover\n"  # JSON keeps the exact output


# -- replay, metrics, loops, bench ---------------------------------------------------------------------------
def test_replay_into_a_new_file(ws_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "replayed.duckdb"
    result = grace("-w", ws_file, "replay", "--into", target)
    assert result.returncode == 0, result.stderr
    assert f"replayed {len(topics(ws_file))} events into {target}" in result.stdout
    assert "projections equal" in result.stdout
    assert topics(target) == topics(ws_file)
    assert_error(grace("-w", ws_file, "replay", "--into", target), "exists already")


def test_replay_exits_1_when_a_projection_was_altered(ws_file: Path, tmp_path: Path) -> None:
    with duckdb.connect(str(ws_file)) as con:
        con.execute("DELETE FROM metric_samples WHERE name = 'demo_memory_items'")  # not through the ledger
    result = grace("-w", ws_file, "replay", "--into", tmp_path / "replayed.duckdb")
    assert result.returncode == 1
    assert "projections differ: metric_samples (1 rows)" in result.stdout


def test_metrics_table_prometheus_and_json(ws_file: Path) -> None:
    a, b, c = copies(ws_file, 3)
    table, prometheus, as_json, both = grace_all(
        ("-w", a, "metrics"),
        ("-w", b, "metrics", "--prometheus"),
        ("-w", c, "metrics", "--json"),
        ("-w", ws_file, "metrics", "--json", "--prometheus"),
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["metric", "kind", "labels", "value", "count", "sum", "p50", "p99"]
    row = next(line for line in lines if line.startswith("demo_response_seconds"))
    assert row.split()[1:] == ["histogram", "responder=offline", "0.223333", "3", "0.67", "0.21", "0.3374"]
    assert any(
        line.split()[:4] == ["grace_events_total", "counter", "topic=demo.chat.message_received", "3"]
        for line in lines
    )

    prom = prometheus.stdout
    assert "# TYPE grace_events_total counter" in prom
    assert 'grace_events_total{topic="demo.chat.message_received"} 3' in prom
    assert 'demo_response_seconds_count{responder="offline"} 3' in prom
    assert "# TYPE demo_memory_items gauge" in prom

    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    gauge = next(r for r in rows if r["metric"] == "demo_memory_items")
    assert (gauge["kind"], gauge["value"], gauge["p50"]) == ("gauge", 1.0, None)
    assert_error(both, "--prometheus")


def test_loops_status_lists_the_engines_loops_stopped(ws_file: Path) -> None:
    a, b = copies(ws_file, 2)
    text, as_json = grace_all(("-w", a, "loops", "status"), ("-w", b, "loops", "status", "--json"))
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].split()[:3] == ["loop", "state", "cursor"]
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {"reflection", "learning", "executor", "healing", "meta"} <= {r["loop"] for r in rows}
    assert {r["state"] for r in rows} == {"stopped"}  # a CLI process runs loops only under `loops start`


def test_bench_prints_one_json_line_per_figure() -> None:
    if importlib.util.find_spec("grace_core.bench") is None:
        pytest.skip("grace_core.bench is not in this checkout yet")
    result = grace("bench", "--quick", "--only", "merkle.root", "--scale", "0.02")
    assert result.returncode == 0, result.stderr
    figures = [json.loads(line) for line in result.stdout.splitlines()]
    assert {f["name"] for f in figures} == {"merkle.root", "merkle.tree_append"}
    assert all(set(f) == {"name", "value", "unit", "peer", "peer_value", "ratio"} for f in figures)
    assert all(f["value"] > 0 for f in figures)
    assert_error(grace("bench", "--only", "no.such.figure"), "no benchmark or figure named no.such.figure")


# -- errors --------------------------------------------------------------------------------------------------
def test_errors_are_one_line_and_exit_2(tmp_path: Path, ws_file: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    cases = {
        ("--snapshot", "-w", missing, "ledger", "verify"): f"no workspace at {missing}",
        ("-w", missing, "events", "tail"): "create one with `grace init`",
        ("-w", ws_file, "no-such-command"): "No such command",
        ("-w", ws_file, "events", "tail", "-n", "many"): "'many' is not a valid",
        ("--snapshot", "-w", ws_file, "init"): "drop --snapshot",
        ("-w", ws_file, "ledger", "checkpoint", "--snapshot"): "drop --snapshot",
        ("--snapshot", "-w", ws_file, "lab"): "drop --snapshot",
    }
    for result, fragment in zip(grace_all(*cases), cases.values(), strict=True):
        assert_error(result, fragment)
    assert not missing.exists()  # a read command does not create a workspace by accident


def test_locked_workspace_names_the_owner_and_snapshot_still_reads(ws_file: Path) -> None:
    owner = open_workspace(ws_file)
    try:
        line = assert_error(grace("-w", ws_file, "ledger", "verify"), "--snapshot")
        assert f"process {os.getpid()}" in line
        result = grace("-w", ws_file, "--snapshot", "ledger", "verify")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ledger intact:")
    finally:
        owner.close()


# -- lab -----------------------------------------------------------------------------------------------------


@pytest.fixture
def lab_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("JupyterLab is not installed")
    port, path = free_port(), tmp_path / "lab.duckdb"
    log = (tmp_path / "lab.log").open("wb")
    proc = subprocess.Popen(
        [*GRACE, "-w", str(path), "lab", "--no-browser", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_env(JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime")),
    )
    try:
        yield proc, port, path
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.mark.slow
def test_lab_seeds_a_new_workspace_and_serves_jupyterlab(
    lab_process: tuple[subprocess.Popen[bytes], int, Path], tmp_path: Path
) -> None:
    proc, port, path = lab_process
    deadline = time.monotonic() + 90
    answer = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2) as response:
                answer = json.loads(response.read())
                break
        except OSError:
            time.sleep(0.5)
    log = (tmp_path / "lab.log").read_text(errors="replace")
    assert answer is not None, log
    assert "version" in answer
    assert f"JupyterLab on http://127.0.0.1:{port}/lab for workspace {path}" in log
    assert "workspace.demo_seeded" in topics(path)  # the lab process released the file before JupyterLab ran


# -- serve -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_init_demo_then_serve_starts_and_prints_each_demo_users_password(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    init = grace("init", "--demo", "-w", path, env=clean_env(GRACE_DEMO_PASSWORD=""))
    assert init.returncode == 0, init.stderr
    at_init = [line.split() for line in init.stdout.splitlines() if line.startswith("demo user")]
    assert [(w[2], w[3]) for w in at_init] == [
        ("ada", "(admin):"),
        ("bob", "(researcher):"),
        ("vic", "(viewer):"),
    ]
    port = free_port()
    server = subprocess.Popen(
        [*GRACE, "serve", "-w", str(path), "--port", str(port), "--no-loops"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(PYTHONUNBUFFERED="1", GRACE_DEMO_PASSWORD=""),
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(server.stdout, lines), daemon=True).start()
    printed: list[str] = []
    try:
        while not any(line.startswith("Grace Workbench on http://") for line in printed):
            printed.append(lines.get(timeout=90))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    logins = {w[2]: w[-1] for w in (line.split() for line in printed if line.startswith("demo user"))}
    assert logins == {w[2]: w[-1] for w in at_init}  # the same passwords at every start
    assert len(set(logins.values())) == 3  # one each
    with open_workspace(path) as ws:
        for name, password in logins.items():
            assert ws.auth.login(name, password).name == name


def test_ledger_checkpoint_signs_as_by_and_refuses_a_viewer(ws_file: Path) -> None:
    def checkpoints() -> int:
        with duckdb.connect(str(ws_file), read_only=True) as con:
            return int(con.execute("SELECT count(*) FROM checkpoints").fetchone()[0])

    before = checkpoints()
    assert_error(grace("-w", ws_file, "ledger", "checkpoint", "--by", "vic"), "vic", "sign checkpoints")
    assert checkpoints() == before
    assert topics(ws_file)[-1] == "governance.decision"  # the refusal is on the record
    signed = grace("-w", ws_file, "ledger", "checkpoint", "--by", "ada")
    assert signed.returncode == 0, signed.stderr
    assert checkpoints() == before + 1
    with duckdb.connect(str(ws_file), read_only=True) as con:
        last = con.execute("SELECT topic, actor FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    assert last == ("ledger.checkpoint", "ada")
