"""A small seccomp-BPF filter for sandboxed code: no namespaces, no ptrace, no kernel-facing extras.

The filter is classic BPF assembled here (no libseccomp needed). It returns ``EPERM`` for system calls that a
stdlib Python program never needs and that widen the kernel's attack surface or reach outside the process:
``ptrace`` and ``process_vm_*`` (reading other processes), ``unshare``/``setns`` and ``clone`` with a
namespace flag (nested namespaces, notably new user namespaces), ``mount`` and the new mount API, ``bpf``,
``perf_event_open``, ``userfaultfd``, ``io_uring_*``, keyrings, module loading and ``kexec``. ``clone3`` gets
``ENOSYS`` because a filter cannot read its flags from memory; the C library then falls back to ``clone``,
whose flags it can check. Calls of a foreign ABI (32-bit ``int 0x80``, x32) are refused too, so the syscall
numbers checked are the only ones that exist.
"""

from __future__ import annotations

import platform
import struct

from grace_core.errors import SandboxError

__all__ = ["SUPPORTED", "filter_program"]

_LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (and NEWTIME, 0x80)
_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80

_DENIED = [
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
]

# (audit arch, syscall numbers, whether numbers >= 0x40000000 are a second ABI to refuse)
_ARCHES: dict[str, tuple[int, dict[str, int], bool]] = {
    "x86_64": (
        0xC000003E,
        {
            "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "unshare": 272, "setns": 308,
            "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "keyctl": 250, "add_key": 248,
            "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
            "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246, "init_module": 175,
            "finit_module": 313, "delete_module": 176, "open_tree": 428, "move_mount": 429, "fsopen": 430,
            "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "clone": 56, "clone3": 435,
        },
        True,
    ),
    "aarch64": (
        0xC00000B7,
        {
            "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "unshare": 97, "setns": 268,
            "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "keyctl": 219, "add_key": 217,
            "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
            "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 104, "init_module": 105,
            "finit_module": 273, "delete_module": 106, "open_tree": 428, "move_mount": 429, "fsopen": 430,
            "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "clone": 220, "clone3": 435,
        },
        False,
    ),
}  # fmt: skip

SUPPORTED = platform.machine() in _ARCHES


def filter_program(machine: str | None = None) -> bytes:
    """The filter as packed ``struct sock_filter`` records (what ``bwrap --add-seccomp-fd`` reads)."""
    arch, numbers, second_abi = _ARCHES[machine or platform.machine()]
    # Instructions as (code, jump-if-true label, jump-if-false label, k); labels resolve to relative offsets.
    prog: list[tuple[int, str | None, str | None, int]] = [
        (_LD_ABS_W, None, None, 4),  # seccomp_data.arch
        (_JEQ, None, "eperm", arch),
        (_LD_ABS_W, None, None, 0),  # seccomp_data.nr
    ]
    if second_abi:
        prog.append((_JGE, "eperm", None, 0x40000000))
    prog += [(_JEQ, "eperm", None, numbers[name]) for name in _DENIED]
    prog += [
        (_JEQ, "enosys", None, numbers["clone3"]),
        (_JEQ, None, "allow", numbers["clone"]),
        (_LD_ABS_W, None, None, 16),  # low word of args[0]: the clone flags (little-endian)
        (_JSET, "eperm", "allow", _NS_FLAGS),
    ]
    labels = {"allow": len(prog), "eperm": len(prog) + 1, "enosys": len(prog) + 2}
    prog += [
        (_RET, None, None, _ALLOW),
        (_RET, None, None, _ERRNO | _EPERM),
        (_RET, None, None, _ERRNO | _ENOSYS),
    ]
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        t = 0 if jt is None else labels[jt] - i - 1
        f = 0 if jf is None else labels[jf] - i - 1
        if not (0 <= t < 256 and 0 <= f < 256):
            raise SandboxError("seccomp filter jump out of range")
        out += struct.pack("=HBBI", code, t, f, k)
    return bytes(out)
