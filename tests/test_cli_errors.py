"""Bad input to any command is one line on stderr, exit status 2, no traceback, and nothing lost.

Every case runs the real `grace` command in a subprocess (all at once: start-up dominates).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import GRACE, clean_env

from grace_core import open_workspace

NOT_UTF8 = os.fsdecode(b"\xff\xfe")  # what Python makes of bytes that are not UTF-8 on the command line


def run_all(
    cases: dict[str, tuple[list[str | Path], bytes | None]],
) -> dict[str, subprocess.CompletedProcess[bytes]]:
    procs = {
        name: (
            subprocess.Popen(
                [*GRACE, *map(str, args)],
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=clean_env(),
            ),
            stdin,
        )
        for name, (args, stdin) in cases.items()
    }
    results = {}
    for name, (proc, stdin) in procs.items():
        out, err = proc.communicate(stdin, timeout=180)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose memory holds /a and /a/b.md: a file and a folder of the same name."""
    path = tmp_path_factory.mktemp("bad-input") / "w.duckdb"
    with open_workspace(path) as ws:
        ws.memory.write("/a", "a file\n", actor="system")
        ws.memory.write("/a/b.md", "a file in the folder /a\n", actor="system")
    return path


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00data")
    (tmp_path / "broken.yaml").write_text("policies: [\n  - id: x\n bad")
    (tmp_path / "ok.py").write_text("print('hello')\n")
    (tmp_path / "a-file").write_text("not a folder\n")
    copies = {}

    def own(name: str) -> Path:  # commands that write need a workspace of their own (one writer per file)
        copies[name] = tmp_path / f"{name}.duckdb"
        shutil.copy(workspace, copies[name])
        shutil.copy(f"{workspace}.keys", f"{copies[name]}.keys")
        return copies[name]

    w = ["-w", str(workspace)]
    cases: dict[str, tuple[list[str | Path], bytes | None]] = {
        "sandbox: a missing file": ([*w, "sandbox", "run", tmp_path / "missing.py"], None),
        "sandbox: a directory": ([*w, "sandbox", "run", tmp_path], None),
        "sandbox: a binary file": ([*w, "sandbox", "run", tmp_path / "binary"], None),
        "sandbox: binary stdin": ([*w, "sandbox", "run", "-"], b"print(1)\xff\n"),
        "sandbox: --timeout 0": ([*w, "sandbox", "run", "--timeout", "0", tmp_path / "ok.py"], None),
        "sandbox: --timeout -1": ([*w, "sandbox", "run", "--timeout", "-1", tmp_path / "ok.py"], None),
        "sandbox: --cpu 0": ([*w, "sandbox", "run", "--cpu", "0", tmp_path / "ok.py"], None),
        "sandbox: --memory 0": ([*w, "sandbox", "run", "--memory", "0", tmp_path / "ok.py"], None),
        "policy: malformed YAML": (["-w", own("policy1"), "policy", "add", tmp_path / "broken.yaml"], None),
        "policy: a binary file": (["-w", own("policy2"), "policy", "add", tmp_path / "binary"], None),
        "a non-UTF-8 workspace path": (["-w", tmp_path / f"{NOT_UTF8}.duckdb", "init"], None),
        "a non-UTF-8 memory path": ([*w, "memory", "cat", f"/{NOT_UTF8}"], None),
        "a non-UTF-8 topic": ([*w, "events", "tail", "--topic", NOT_UTF8], None),
        "a non-UTF-8 password": (
            ["-w", own("user"), "user", "add", "carl", "--role", "admin", "--password-stdin"],
            b"pass\xffword-1\n",
        ),
        "memory export: a file and a folder": ([*w, "memory", "export", "/", tmp_path / "out"], None),
        "memory export: under a file": ([*w, "memory", "export", "/a/", tmp_path / "a-file" / "sub"], None),
        "sweep: a binary config": (["sweep", tmp_path / "binary"], None),
        "ledger prove: seq 0": ([*w, "ledger", "prove", "0"], None),
        "loops start: a bad duration": (["-w", own("loops"), "loops", "start", "--for", "soon"], None),
    }
    results = run_all(cases)
    problems = []
    for name, result in results.items():
        err = result.stderr.decode("utf-8", "replace")
        lines = err.splitlines()
        if (
            result.returncode != 2
            or "Traceback" in err
            or len(lines) != 1
            or not lines[0].startswith("grace: error: ")
        ):
            problems.append(f"{name}: exit {result.returncode}, stderr {err!r}")
    assert not problems, "\n".join(problems)
    assert not (tmp_path / "out").exists()  # the refused export wrote nothing
    assert "is not UTF-8 text: " in results["a non-UTF-8 memory path"].stderr.decode()
    assert b"\\xff\\xfe" in results["a non-UTF-8 workspace path"].stderr
    with open_workspace(copies["policy1"], snapshot=True) as ws:  # nothing was added by the refused commands
        assert "x" not in set(ws.governance.policies()["id"])
    with open_workspace(copies["user"], snapshot=True) as ws:
        assert ws.auth.users().empty
