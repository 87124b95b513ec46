"""Running one program in isolation: the layers, how each is set up, and how a run is watched and ended.

Layers (each recorded by name on every run; a missing one is recorded with the reason under ``missing``):

* ``bwrap`` — bubblewrap namespaces: a private mount tree holding only read-only system directories and the
  interpreter, a size-capped tmpfs ``/work`` (the throwaway working directory) and ``/tmp``, no ``/etc``, a new
  PID namespace (the host's processes are invisible; when its first process ends, every process in it ends),
  no network (a new network namespace with only a downed loopback), new IPC and UTS namespaces, a new
  session (no terminal injection), and death with the parent.
* ``uid`` — the program runs as uid/gid 65534 (``nobody``) with no supplementary groups, no capabilities
  (bounding set emptied) and ``no_new_privs``; under bubblewrap via ``setpriv`` inside the sandbox, otherwise
  by dropping privileges before ``exec``.
* ``seccomp`` — the filter of :mod:`grace_core.sandbox.seccomp` (no ptrace, no nested namespaces, no mounts).
* ``rlimits`` — CPU seconds, address space, file size, open files, processes.
* ``cgroup`` — a per-run cgroup (v2, or the v1 ``pids`` and ``memory`` hierarchies) capping processes and
  memory; also how every process of a run is found and killed at the end.
* ``netns`` (fallback only) — without bubblewrap, a new network namespace still cuts the network when the
  host process is root.
* ``env`` — a scrubbed environment (``PATH``, ``HOME``, ``LANG`` and nothing inherited).
* ``pdeathsig`` (fallback only) — the program is killed if the host process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import platform
import resource
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grace_core.errors import SandboxError

from . import seccomp

__all__ = ["Host", "Limits", "RawResult", "detect", "run_isolated"]

NOBODY = 65534
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "LANG": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
}
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 1, 38, 22, 2
_CLONE_NEWNET, _CLONE_NEWIPC, _CLONE_NEWUTS = 0x40000000, 0x08000000, 0x04000000
_cgroup_counter = iter(range(1, 1 << 62))
_cgroup_lock = threading.Lock()


@dataclass(frozen=True)
class Limits:
    """What one run may use. Sizes in MiB (output in KiB per stream), times in seconds."""

    timeout_s: float = 10.0  # wall clock; the whole run is killed when it passes
    cpu_s: int = 10  # CPU seconds (RLIMIT_CPU)
    memory_mb: int = 512  # address space (RLIMIT_AS) and the cgroup memory cap
    file_size_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    disk_mb: int = 64  # size of the /work and /tmp tmpfs each (bubblewrap only)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 32  # RLIMIT_NPROC and the cgroup pids cap
    output_kb: int = 256  # stdout and stderr captured each; more kills the run

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise SandboxError(f"Limits.{name} must be a positive number, not {value!r}")
        if self.processes < 4:
            raise SandboxError("Limits.processes must be at least 4 (the sandbox's own helpers count)")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class RawResult:
    """What the isolation layer observed; the engine turns it into an ``Execution``."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None
    signal: int | None
    duration_s: float
    peak_memory_kb: int
    limit_hit: str | None
    stdout_truncated: bool
    stderr_truncated: bool
    isolation: tuple[str, ...]
    missing: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Host:
    """What this machine offers the sandbox (detected once per process)."""

    bwrap: str | None
    setpriv: str | None
    root: bool
    python: str
    python_root: str  # the interpreter's installation prefix, bound read-only into the sandbox
    cgroup: str | None  # "v2" | "v1" | None
    cgroup_parent: dict[str, str]  # controller ("v2" or "pids"/"memory") -> directory new cgroups go under
    seccomp: bool
    reasons: dict[str, str]


def _own_cgroups() -> dict[str, str]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else ["v2"]:
                out[c] = path
    return out


def _writable_dir(path: Path) -> bool:
    probe = path / f"grace-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


def _detect_cgroup(reasons: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    own = _own_cgroups()
    base = Path("/sys/fs/cgroup")
    for v2root in (base, base / "unified"):
        controllers = v2root / "cgroup.controllers"
        if not controllers.exists():
            continue
        available = controllers.read_text().split()
        if {"pids", "memory"} <= set(available):
            parent = v2root / own.get("v2", "/").lstrip("/")
            if _writable_dir(parent):
                return "v2", {"v2": str(parent)}
            reasons["cgroup"] = f"cgroup v2 at {v2root} is not writable here"
            break
    pids, memory = base / "pids", base / "memory"
    if (pids / "cgroup.procs").exists() and (memory / "cgroup.procs").exists():
        parents = {
            "pids": str(pids / own.get("pids", "/").lstrip("/")),
            "memory": str(memory / own.get("memory", "/").lstrip("/")),
        }
        if all(_writable_dir(Path(p)) for p in parents.values()):
            return "v1", parents
        reasons["cgroup"] = "the cgroup v1 pids/memory hierarchies are not writable here"
    reasons.setdefault("cgroup", "no cgroup hierarchy with the pids and memory controllers is mounted")
    return None, {}


@functools.cache
def detect() -> Host:
    """Probe the machine once: bubblewrap, setpriv, root, cgroups, seccomp, the interpreter to run."""
    reasons: dict[str, str] = {}
    root = os.geteuid() == 0
    bwrap = shutil.which("bwrap")
    setpriv = shutil.which("setpriv")
    python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    python_root = os.path.realpath(sys.base_prefix)
    if bwrap is None:
        reasons["bwrap"] = "bubblewrap (bwrap) is not installed"
    elif not _bwrap_works(bwrap):
        reasons["bwrap"] = "bubblewrap cannot create namespaces here"
        bwrap = None
    if not root:
        reasons["uid"] = "the host process is not root, so it cannot switch the program to another user"
    elif setpriv is None and bwrap is not None:
        reasons["uid"] = "setpriv (util-linux) is missing, so the program keeps the sandbox's uid"
    cgroup, parents = _detect_cgroup(reasons) if root else (None, {})
    if not root:
        reasons["cgroup"] = "creating cgroups needs root (or a delegated cgroup)"
    if not seccomp.SUPPORTED:
        reasons["seccomp"] = f"no seccomp filter for {platform.machine()}"
    return Host(bwrap, setpriv, root, python, python_root, cgroup, parents, seccomp.SUPPORTED, reasons)


def _bwrap_works(bwrap: str) -> bool:
    try:
        done = subprocess.run(  # noqa: S603 - a fixed probe command
            [bwrap, "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


# -- cgroups -------------------------------------------------------------------------------------------------
class _Cgroup:
    """A per-run cgroup (v2 or v1 pids+memory); every process of the run is in it, so it can kill them all."""

    def __init__(self, host: Host, limits: Limits) -> None:
        with _cgroup_lock:
            name = f"grace-sandbox-{os.getpid()}-{next(_cgroup_counter)}"
        self.kind = host.cgroup
        self.dirs: dict[str, Path] = {}
        try:
            if self.kind == "v2":
                d = Path(host.cgroup_parent["v2"]) / name
                d.mkdir()
                self.dirs["v2"] = d
                (d / "pids.max").write_text(str(limits.processes))
                (d / "memory.max").write_text(str(int(limits.memory_mb * 2**20)))
                with contextlib.suppress(OSError):
                    (d / "memory.swap.max").write_text("0")
            elif self.kind == "v1":
                for c in ("pids", "memory"):
                    d = Path(host.cgroup_parent[c]) / name
                    d.mkdir()
                    self.dirs[c] = d
                (self.dirs["pids"] / "pids.max").write_text(str(limits.processes))
                mem = self.dirs["memory"]
                (mem / "memory.limit_in_bytes").write_text(str(int(limits.memory_mb * 2**20)))
                with contextlib.suppress(OSError):  # absent without swap accounting
                    (mem / "memory.memsw.limit_in_bytes").write_text(str(int(limits.memory_mb * 2**20)))
        except OSError:
            self.remove()
            raise

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return sorted(out)

    def kill_all(self) -> None:
        v2 = self.dirs.get("v2")
        if v2 is not None and (v2 / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (v2 / "cgroup.kill").write_text("1")
        for _ in range(200):  # a fork between reading the list and the kill: go round again
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def hit(self) -> tuple[bool, bool, int]:
        """(pids cap reached, memory cap reached, peak memory bytes or 0)."""
        pids_hit = mem_hit = False
        peak = 0
        with contextlib.suppress(OSError, ValueError):
            if self.kind == "v2":
                d = self.dirs["v2"]
                pids_hit = _events(d / "pids.events").get("max", 0) > 0
                ev = _events(d / "memory.events")
                mem_hit = ev.get("oom_kill", 0) > 0 or ev.get("max", 0) > 0
                if (d / "memory.peak").exists():
                    peak = int((d / "memory.peak").read_text())
            elif self.kind == "v1":
                pids_hit = _events(self.dirs["pids"] / "pids.events").get("max", 0) > 0
                mem = self.dirs["memory"]
                mem_hit = int((mem / "memory.failcnt").read_text()) > 0 and (
                    _events(mem / "memory.oom_control").get("oom_kill", 0) > 0
                )
                peak = int((mem / "memory.max_usage_in_bytes").read_text())
        return pids_hit, mem_hit, peak

    def remove(self) -> None:
        for d in self.dirs.values():
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill_all()
                    time.sleep(0.01)


def _events(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


# -- the child's setup before exec ---------------------------------------------------------------------------
_libc: Any = None


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        # Pointers must pass as 64-bit values: without argtypes ctypes would truncate them to a C int.
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.unshare.argtypes = [ctypes.c_int]
        _libc = libc
    return _libc


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _rlimits(limits: Limits) -> list[tuple[int, int]]:
    mb = 2**20
    cpu = max(1, int(limits.cpu_s))
    return [
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, int(limits.memory_mb * mb)),
        (resource.RLIMIT_FSIZE, int(limits.file_size_mb * mb)),
        (resource.RLIMIT_NOFILE, int(limits.open_files)),
        (resource.RLIMIT_NPROC, int(limits.processes)),
        (resource.RLIMIT_CORE, 0),
    ]


def _preexec(
    procs_files: list[str],
    rlimits: list[tuple[int, int]],
    *,
    drop: bool,
    unshare_flags: int,
    seccomp_prog: Any,
) -> Callable[[], None]:
    """The function run in the child between fork and exec (only simple system calls: no imports, no locks)."""
    libc = _load_libc() if (drop or unshare_flags or seccomp_prog is not None) else None
    cpu_soft_hard = [(r, (v, v + 1) if r == resource.RLIMIT_CPU else (v, v)) for r, v in rlimits]

    def setup() -> None:
        pid = str(os.getpid()).encode()
        for p in procs_files:  # first, so that every process the run starts is counted and capped
            fd = os.open(p, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        for res, pair in cpu_soft_hard:
            resource.setrlimit(res, pair)  # SIGXCPU at the soft limit, SIGKILL one second later
        if libc is not None:
            if unshare_flags and libc.unshare(unshare_flags) != 0:
                raise SandboxError(f"unshare failed: {os.strerror(ctypes.get_errno())}")
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if drop:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if seccomp_prog is not None and libc.prctl(
                _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(seccomp_prog), 0, 0
            ):
                raise SandboxError(f"seccomp failed: {os.strerror(ctypes.get_errno())}")

    return setup


# -- command lines ------------------------------------------------------------------------------------------
def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _bwrap_argv(
    host: Host, limits: Limits, script: str, seccomp_fd: int | None, program: list[str]
) -> list[str]:
    assert host.bwrap is not None
    disk = str(int(limits.disk_mb * 2**20))
    argv = [
        host.bwrap,
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--hostname", "sandbox",
    ]  # fmt: skip
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    root = host.python_root
    if not any(root == d or root.startswith(d + "/") for d in _SYSTEM_DIRS):
        for a in _ancestors(root + "/x"):
            if a != root:
                argv += ["--perms", "0755", "--dir", a]  # not the host's modes: /root is 0700
        argv += ["--ro-bind", root, root]
    argv += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", disk, "--perms", "1777", "--tmpfs", "/tmp",  # noqa: S108 - the sandbox's own private /tmp
        "--size", disk, "--perms", "0777", "--tmpfs", "/work",
        "--ro-bind", script, "/work/" + os.path.basename(script),
        "--chdir", "/work",
    ]  # fmt: skip
    if seccomp_fd is not None:
        argv += ["--add-seccomp-fd", str(seccomp_fd)]
    if host.root and host.setpriv:
        # Namespaces are set up as root; setpriv then drops to nobody for good (inside, before the program).
        argv += [
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
        ]
        argv += [host.setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs"]
        argv += ["--inh-caps=-all", "--bounding-set=-all", "--"]
    else:
        argv += ["--cap-drop", "ALL"]
    return argv + program


def _others_can_run(path: str) -> bool:
    """Whether uid nobody could execute ``path`` (every ancestor searchable, the file executable, by others)."""
    real = os.path.realpath(path)
    try:
        for a in [*_ancestors(real + "/x")]:
            if not os.stat(a).st_mode & 0o001:
                return False
    except OSError:
        return False
    return True


def program_argv(language: str, python: str, script_path: str) -> list[str]:
    if language == "python":
        # -I: no environment variables, no user site, no script directory magic; -S: no site-packages;
        # -B: no .pyc writes. The program gets the standard library only.
        return [python, "-I", "-S", "-B", script_path]
    if language == "sh":
        return ["/bin/sh", script_path]
    raise SandboxError(f"unknown language {language!r}; the sandbox runs 'python' or 'sh'")


# -- running -------------------------------------------------------------------------------------------------
def run_isolated(
    code: str,
    *,
    language: str,
    limits: Limits,
    stdin: bytes | None = None,
    use_bwrap: bool = True,
    host: Host | None = None,
) -> RawResult:
    """Run ``code`` under every layer the machine offers and watch it until it ends or a limit stops it."""
    host = host or detect()
    missing = dict(host.reasons)
    bwrap = host.bwrap is not None and use_bwrap
    if not bwrap and "bwrap" not in missing:
        missing["bwrap"] = "bubblewrap was switched off for this sandbox"
    layers = ["env", "rlimits"]
    suffix = ".py" if language == "python" else ".sh"
    hostdir = tempfile.mkdtemp(prefix="grace-sandbox-")
    cgroup: _Cgroup | None = None
    seccomp_fd: int | None = None
    try:
        script = os.path.join(hostdir, "main" + suffix)
        Path(script).write_text(code, encoding="utf-8")
        os.chmod(script, 0o644)
        if host.cgroup is not None:
            try:
                cgroup = _Cgroup(host, limits)
                layers.append(f"cgroup_{host.cgroup}")
            except OSError as exc:
                missing["cgroup"] = f"could not create a cgroup: {exc}"
        seccomp_prog = None
        if host.seccomp and bwrap:
            seccomp_fd = os.memfd_create("grace-seccomp", 0)
            os.write(seccomp_fd, seccomp.filter_program())
            os.lseek(seccomp_fd, 0, os.SEEK_SET)
        elif host.seccomp:
            raw = seccomp.filter_program()
            buf = ctypes.create_string_buffer(raw, len(raw))
            seccomp_prog = _SockFprog(len(raw) // 8, ctypes.addressof(buf))
            seccomp_prog._keep = buf  # keeps the filter's memory alive until exec
        if host.seccomp:
            layers.append("seccomp")
        unshare_flags = 0
        if bwrap:
            argv = _bwrap_argv(
                host, limits, script, seccomp_fd, program_argv(language, host.python, "/work/main" + suffix)
            )
            layers.insert(0, "bwrap")
            if host.root and host.setpriv:
                layers.append("uid")
            drop = False
            cwd = "/"
        else:
            workdir = os.path.join(hostdir, "work")
            os.mkdir(workdir)
            if host.root:
                os.chown(workdir, NOBODY, NOBODY)
                os.chmod(hostdir, 0o755)  # noqa: S103 - nobody must reach its work dir inside
                unshare_flags = _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
                layers += ["uid", "netns", "pdeathsig"]
                missing.setdefault(
                    "filesystem", "without bubblewrap the program sees the host's files (as nobody)"
                )
            python = next(
                (
                    p
                    for p in (host.python, "/usr/bin/python3", "/usr/local/bin/python3")
                    if _others_can_run(p)
                ),
                host.python,
            )
            drop = host.root and _others_can_run(python)
            if host.root and not drop:
                layers.remove("uid")
                missing["uid"] = f"{python} is not executable by uid {NOBODY}, so the program runs as root"
            argv = program_argv(language, python, script)
            cwd = workdir
        env = dict(_ENV)
        if not bwrap:
            env["HOME"] = cwd
        if bwrap:
            # No preexec_fn (it forces a full fork of this large process, ~30 ms): bubblewrap reports its
            # sandbox's first pid on --info-fd and waits on --block-fd; meanwhile the pids are put into the
            # cgroup and given their rlimits, and only then is the program released.
            block_r, block_w = os.pipe()
            info_r, info_w = os.pipe()
            fds = [block_r, info_w] + ([seccomp_fd] if seccomp_fd is not None else [])
            argv = [argv[0], "--info-fd", str(info_w), "--block-fd", str(block_r), *argv[1:]]
            gate = _Gate(block_w, info_r, cgroup, _rlimits(limits))
            try:
                result = _watch(argv, env, cwd, None, limits, stdin, cgroup, bwrap, fds, gate)
            finally:
                for fd in (block_r, block_w, info_r, info_w):
                    with contextlib.suppress(OSError):
                        os.close(fd)
        else:
            preexec = _preexec(
                cgroup.procs_files if cgroup else [],
                _rlimits(limits),
                drop=drop,
                unshare_flags=unshare_flags,
                seccomp_prog=seccomp_prog,
            )
            result = _watch(
                argv, env, cwd, preexec, limits, stdin, cgroup, bwrap, [seccomp_fd] if seccomp_fd else []
            )
        result.isolation = tuple(layers)
        result.missing = {k: v for k, v in missing.items() if not any(k in layer for layer in layers)}
        return result
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)
        if cgroup is not None:
            cgroup.kill_all()
            cgroup.remove()
        shutil.rmtree(hostdir, ignore_errors=True)


def _watch(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    preexec: Callable[[], None] | None,
    limits: Limits,
    stdin: bytes | None,
    cgroup: _Cgroup | None,
    bwrap: bool,
    pass_fds: list[int],
    gate: _Gate | None = None,
) -> RawResult:
    cap = int(limits.output_kb * 1024)
    started = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603 - the argv is built here, not by the caller
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        preexec_fn=preexec,
        start_new_session=True,
        pass_fds=pass_fds,
        close_fds=True,
    )
    deadline = started + limits.timeout_s
    if gate is not None:
        gate.open(proc, deadline)
    if stdin is not None:
        assert proc.stdin is not None
        writer = threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True)
        writer.start()
    bufs = {"stdout": bytearray(), "stderr": bytearray()}
    truncated = {"stdout": False, "stderr": False}
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    assert proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    limit_hit: str | None = None
    status: int | None = None
    rusage: Any = None
    exited_at: float | None = None
    try:
        while True:
            now = time.perf_counter()
            if status is None:
                pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status, rusage, exited_at = st, ru, now
            if status is not None and (not sel.get_map() or now - (exited_at or now) > 0.2):
                break  # ended, and its pipes are drained (or a leftover holds them: it is killed below)
            if now >= deadline:
                limit_hit = "wall_time"
                break
            if not sel.get_map():
                time.sleep(0.002)
                continue
            for key, _ in sel.select(timeout=min(0.05, max(0.0, deadline - now))):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.data]
                room = cap - len(buf)
                buf += chunk[: max(0, room)]
                if len(chunk) > room:
                    truncated[key.data] = True
                    limit_hit = limit_hit or "output"
            if limit_hit == "output":
                break
    finally:
        duration = time.perf_counter() - started
        if status is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if cgroup is not None:
            cgroup.kill_all()
        if status is None:
            _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = 0  # reaped above; keep Popen from waiting again
        sel.close()
        for f in (proc.stdout, proc.stderr, proc.stdin):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
    exit_code: int | None = None
    sig: int | None = None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
    else:
        exit_code = os.WEXITSTATUS(status)
        if (
            bwrap and exit_code > 128 and exit_code - 128 < 65
        ):  # bwrap reports a killed program as 128 + signal
            sig, exit_code = exit_code - 128, None
    peak_kb = int(rusage.ru_maxrss) if rusage is not None else 0
    pids_hit = mem_hit = False
    if cgroup is not None:
        pids_hit, mem_hit, peak = cgroup.hit()
        if peak:  # the whole run's peak; a forked child's ru_maxrss starts at this (large) process's RSS
            peak_kb = peak // 1024
    err = bytes(bufs["stderr"])
    if limit_hit is None:
        limit_hit = _which_limit(sig, err, pids_hit, mem_hit)
    return RawResult(
        stdout=bytes(bufs["stdout"]),
        stderr=err,
        exit_code=exit_code,
        signal=sig,
        duration_s=duration,
        peak_memory_kb=peak_kb,
        limit_hit=limit_hit,
        stdout_truncated=truncated["stdout"],
        stderr_truncated=truncated["stderr"],
        isolation=(),
    )


class _Gate:
    """Holds a bubblewrap sandbox at --block-fd until its pids are in the cgroup and have their rlimits."""

    def __init__(
        self, block_w: int, info_r: int, cgroup: _Cgroup | None, rlimits: list[tuple[int, int]]
    ) -> None:
        self.block_w, self.info_r, self.cgroup, self.rlimits = block_w, info_r, cgroup, rlimits

    def open(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        pids = [proc.pid]
        info = b""
        while b"child-pid" not in info or not info.rstrip().endswith(b"}"):
            ready, _, _ = select.select([self.info_r], [], [], max(0.0, deadline - time.perf_counter()))
            if not ready:
                break
            chunk = os.read(self.info_r, 4096)
            if not chunk:
                break  # bubblewrap failed before the sandbox existed; its exit status tells why
            info += chunk
        with contextlib.suppress(ValueError):
            pids.append(int(json.loads(info.decode())["child-pid"]))
        for pid in pids:
            with contextlib.suppress(OSError):
                for path in self.cgroup.procs_files if self.cgroup else []:
                    Path(path).write_text(str(pid))
                for res, value in self.rlimits:
                    resource.prlimit(
                        pid, res, (value, value + 1) if res == resource.RLIMIT_CPU else (value, value)
                    )
        with contextlib.suppress(OSError):
            os.write(self.block_w, b"1")


def _feed(pipe: Any, data: bytes) -> None:
    with contextlib.suppress(OSError):
        pipe.write(data)
    with contextlib.suppress(OSError):
        pipe.close()


def _which_limit(sig: int | None, stderr: bytes, pids_hit: bool, mem_hit: bool) -> str | None:
    """Name the limit that stopped the program, from how it ended and what the kernel counted."""
    if sig in (signal.SIGXCPU,):
        return "cpu"
    if sig == signal.SIGXFSZ:
        return "file_size"
    if mem_hit and sig == signal.SIGKILL:
        return "memory"
    if sig == signal.SIGKILL and stderr == b"":
        return "cpu"  # the hard CPU limit (one second after SIGXCPU was ignored)
    tail = stderr[-2000:]
    if b"MemoryError" in tail or mem_hit:
        return "memory"
    if b"File too large" in tail:
        return "file_size"
    if b"Too many open files" in tail:
        return "open_files"
    if pids_hit or (b"Resource temporarily unavailable" in tail and b"fork" in tail.lower()):
        return "processes"
    if b"BlockingIOError" in tail and b"Errno 11" in tail:
        return "processes"
    return None
