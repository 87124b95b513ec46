"""The hostile battery: programs that try to hurt the host. Each must be contained, the host unharmed, and the
next run must work. The limits are tight so the battery stays fast."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.sandbox import Execution, Limits
from grace_core.sandbox.isolation import NOBODY, detect

HOST = detect()
needs_bwrap = pytest.mark.skipif(HOST.bwrap is None, reason="bubblewrap is not usable here")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the uid layer needs a root host process")
TIGHT = Limits(timeout_s=5, cpu_s=3, memory_mb=192, file_size_mb=1, disk_mb=8, processes=16, output_kb=64)


def _nobody_pids() -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
            if uid_line.split()[1:2] == [str(NOBODY)]:
                out.add(int(entry.name))
    return out


@pytest.fixture(scope="module")
def hws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    path = tmp_path_factory.mktemp("hostile") / "hostile.duckdb"
    ws = open_workspace(path, clock=ManualClock(), seed=7)
    yield ws
    ws.close()


@pytest.fixture
def run(hws: Workspace) -> Iterator[object]:
    """Run hostile code as an admin (no policy stops it: the isolation must), then check the host."""
    before = _nobody_pids()
    head = hws.ledger.head[0]

    def go(code: str, limits: Limits = TIGHT, **kwargs: object) -> Execution:
        return hws.sandbox.run(code, actor="system", limits=limits, **kwargs)  # type: ignore[arg-type]

    yield go
    # The host is unharmed: this process lives, the ledger is intact, nothing the run started is left over,
    # and the next run works.
    assert hws.ledger.head[0] > head
    assert hws.verify().ok
    assert _nobody_pids() - before == set()
    nxt = hws.sandbox.run("print('next')", actor="system", limits=TIGHT)
    assert nxt.ok
    assert nxt.stdout == "next\n"


def test_infinite_loop_is_stopped_by_the_wall_clock(run) -> None:  # type: ignore[no-untyped-def]
    ex = run("import time\nwhile True:\n    time.sleep(0.01)\n", Limits(timeout_s=1))
    assert ex.limit_hit == "wall_time"
    assert 1 <= ex.duration_s < 3


def test_cpu_burn_is_stopped_by_the_cpu_limit(run) -> None:  # type: ignore[no-untyped-def]
    ex = run("while True:\n    pass\n", Limits(timeout_s=10, cpu_s=1))
    assert ex.limit_hit == "cpu"
    assert ex.duration_s < 5


def test_memory_bomb_is_stopped(run) -> None:  # type: ignore[no-untyped-def]
    ex = run("blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))\n")
    assert ex.limit_hit == "memory"
    assert not ex.ok


def test_fork_bomb_is_capped_and_every_process_killed(run) -> None:  # type: ignore[no-untyped-def]
    ex = run(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        Limits(timeout_s=2, processes=16),
    )
    assert ex.limit_hit in ("processes", "wall_time")
    assert not ex.ok


def test_huge_output_is_capped_and_the_run_killed(run) -> None:  # type: ignore[no-untyped-def]
    ex = run("while True:\n    print('y' * 1000)\n")
    assert ex.limit_hit == "output"
    assert ex.stdout_truncated
    assert len(ex.stdout) == 64 * 1024


def test_huge_file_is_stopped_by_the_file_size_limit(run) -> None:  # type: ignore[no-untyped-def]
    ex = run("with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * 2**20)\n")
    assert ex.limit_hit == "file_size"
    assert "File too large" in ex.stderr


@needs_bwrap
def test_many_files_fill_only_the_private_work_dir(run) -> None:  # type: ignore[no-untyped-def]
    code = "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'0' * 1000000)\n    i += 1\n"
    ex = run(code, Limits(timeout_s=5, file_size_mb=1, disk_mb=4))
    assert ex.exit_code == 1
    assert "No space left on device" in ex.stderr


def test_reading_etc_shadow_fails(run) -> None:  # type: ignore[no-untyped-def]
    ex = run("print(open('/etc/shadow').read())\n")
    assert ex.exit_code == 1
    assert ("FileNotFoundError" in ex.stderr) or ("PermissionError" in ex.stderr)
    assert "root:" not in ex.stdout


@needs_bwrap
def test_reading_the_workspace_file_fails(run, hws: Workspace) -> None:  # type: ignore[no-untyped-def]
    ex = run(f"print(open({hws.path!r}, 'rb').read(64))\n")
    assert ex.exit_code == 1
    assert "FileNotFoundError" in ex.stderr


def test_writing_outside_the_work_dir_fails(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "escaped.txt"
    code = (
        "import os\nhits = []\n"
        f"for p in ['/usr/escaped', '/escaped', {str(target)!r}, '/proc/escaped']:\n"
        "    try:\n        open(p, 'w').write('x')\n        hits.append(p)\n    except OSError:\n        pass\n"
        "print(hits)\n"
    )
    ex = run(code)
    assert ex.stdout.strip() == "[]"
    assert not target.exists()
    assert not Path("/usr/escaped").exists()


def test_network_connect_to_a_host_listener_gets_nowhere(run) -> None:  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(listener.accept())

    code = (
        "import socket\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\n"
        "except OSError as e:\n    print('blocked', type(e).__name__)\n"
    )
    ex = run(code)
    thread = threading.Thread(target=accept)
    thread.start()
    thread.join()
    listener.close()
    assert ex.stdout.startswith("blocked")
    assert accepted == []


def test_environment_secrets_do_not_reach_the_program(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    secret = "hostile-battery-secret-5f2c"
    monkeypatch.setenv("GRACE_TEST_SECRET", secret)
    code = (
        "import os\nprint(dict(os.environ))\n"
        "for p in ('/proc/self/environ', '/proc/1/environ'):\n"
        "    try:\n        print(open(p, 'rb').read())\n    except OSError as e:\n        print(type(e).__name__)\n"
    )
    ex = run(code)
    assert secret not in ex.stdout
    assert "GRACE_TEST_SECRET" not in ex.stdout


def test_host_processes_are_out_of_reach(run) -> None:  # type: ignore[no-untyped-def]
    code = (
        f"import os\ntry:\n    print(open('/proc/{os.getpid()}/environ', 'rb').read()[:20])\n"
        "except OSError as e:\n    print('unreachable', type(e).__name__)\n"
    )
    ex = run(code)
    assert ex.stdout.startswith("unreachable")


def test_killing_the_parent_and_everyone_fails_harmlessly(run) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import os, signal\n"
        "for target in (os.getppid(), 1, -1):\n"
        "    try:\n        os.kill(target, signal.SIGKILL)\n    except OSError as e:\n        print(type(e).__name__)\n"
        "print('survived')\n"
    )
    ex = run(code)
    assert os.getpid() > 0  # still here
    assert not ex.ok or "survived" in ex.stdout


@needs_root
def test_a_spawned_shell_is_as_confined_as_the_program(run) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import subprocess\n"
        "print(subprocess.run(['/bin/sh', '-c', 'id -u; cat /etc/shadow; ls /root/.ssh'], "
        "capture_output=True, text=True).stdout)\n"
    )
    ex = run(code)
    assert ex.stdout.split()[0] == str(NOBODY)
    assert "root:" not in ex.stdout


def test_nested_namespaces_are_refused(run) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import ctypes, subprocess\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.unshare(0x10000000), libc.unshare(0x40000000))\n"  # CLONE_NEWUSER, CLONE_NEWNET
        "print(subprocess.run(['unshare', '-r', 'id'], capture_output=True).returncode != 0)\n"
    )
    ex = run(code)
    assert ex.stdout.split() == ["-1", "-1", "True"]


def test_ptrace_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    import time; time.sleep(2); os._exit(0)\n"
        "print(libc.ptrace(16, pid, 0, 0), libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"  # PTRACE_ATTACH
        "os.kill(pid, 9)\n"
    )
    ex = run(code)
    first, second, errno = ex.stdout.split()
    assert (first, second) == ("-1", "-1")
    assert errno == "1"  # EPERM


def test_symlink_and_proc_root_escapes_find_nothing(run) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import os\nos.symlink('/proc/1/root/etc/shadow', 'link')\n"
        "for p in ('link', '/proc/1/root/etc/shadow', '/proc/1/cwd'):\n"
        "    try:\n        print(len(open(p).read()))\n    except OSError as e:\n        print(type(e).__name__)\n"
    )
    ex = run(code)
    assert all(not line.isdigit() for line in ex.stdout.split())


@needs_root
def test_becoming_root_again_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import os\nfor f in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setgroups([0])):\n"
        "    try:\n        f(); print('became root')\n    except OSError as e:\n        print(type(e).__name__)\n"
        "print(os.getuid())\n"
    )
    ex = run(code)
    assert "became root" not in ex.stdout
    assert ex.stdout.split()[-1] == str(NOBODY)


def test_a_detached_daemon_does_not_outlive_its_run(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    ex = run(code)
    assert ex.stdout == "parent done\n"
    # the fixture checks that no process of the sandbox user is left


def test_ignoring_sigterm_does_not_help(run) -> None:  # type: ignore[no-untyped-def]
    ex = run(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n",
        Limits(timeout_s=1),
    )
    assert ex.limit_hit == "wall_time"
