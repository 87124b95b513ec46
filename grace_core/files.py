"""Files beside a workspace are private to their owner: mode 0600, checked at open.

A workspace file holds everything a local user must not read: password hashes, every message, every note. So
the workspace file, its DuckDB write-ahead log (``.wal``), its key file (``.keys``) and every file Grace writes
beside it (``.owner``, ``.snapshot``, snapshot requests, loop stop requests) are created readable and writable
by their owner only:

* While a process holds a workspace open for writing, its umask includes 077 (held by a reference count and
  restored when the last workspace closes). DuckDB creates the ``.wal`` lazily at the first write after each
  checkpoint and deletes it at the next, so a mode set once would not last: the umask covers every one.
* Files Grace writes itself are created with mode 0600 from the start (``write_private``), atomically.
* At open, a workspace file (or a companion) readable by group or others is repaired to 0600 with a one-line
  warning on stderr, or refused with a ``WorkspaceError`` naming the file and the fix when it cannot be.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import WorkspaceError

__all__ = [
    "COMPANION_SUFFIXES",
    "PRIVATE_MODE",
    "check_private",
    "companions",
    "hold_private_umask",
    "private_umask",
    "release_private_umask",
    "remove_workspace_files",
    "write_private",
]

PRIVATE_MODE = 0o600
_PRIVATE_UMASK = 0o077
# Every file Grace keeps beside a workspace file named PATH: PATH + suffix.
COMPANION_SUFFIXES = (
    ".wal",
    ".keys",
    ".owner",
    ".snapshot",
    ".snapshot-request",
    ".snapshot-error",
    ".loops-stop",
    ".witness",
)
log = logging.getLogger("grace_core")

_umask_lock = threading.Lock()
_umask_holders = 0
_umask_saved = 0


def hold_private_umask() -> None:
    """Add 077 to the process umask until the matching ``release_private_umask`` (calls nest)."""
    global _umask_holders, _umask_saved
    with _umask_lock:
        if _umask_holders == 0:
            old = os.umask(_PRIVATE_UMASK)
            if old | _PRIVATE_UMASK != _PRIVATE_UMASK:
                os.umask(old | _PRIVATE_UMASK)  # keep any stricter owner bits the process asked for
            _umask_saved = old
        _umask_holders += 1


def release_private_umask() -> None:
    global _umask_holders
    with _umask_lock:
        if _umask_holders == 0:
            return
        _umask_holders -= 1
        if _umask_holders == 0:
            os.umask(_umask_saved)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside the block (by this process, any thread) are private to their owner."""
    hold_private_umask()
    try:
        yield
    finally:
        release_private_umask()


def write_private(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically, in a file that is mode 0600 from its creation."""
    target = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), PRIVATE_MODE)  # O_TRUNC kept the mode of a leftover temporary file
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(
        OSError
    ):  # make the rename durable (not every file system lets a directory sync)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def check_private(path: str | os.PathLike[str]) -> None:
    """Make sure ``path`` (when it exists) is readable by its owner only: repair it, or refuse clearly."""
    file = Path(path)
    try:
        mode = stat.S_IMODE(file.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(file, PRIVATE_MODE)
    except OSError as exc:
        raise WorkspaceError(
            f"{file} is readable by other users (mode {mode:04o}) and cannot be made private "
            f"({exc.strerror or exc}): run `chmod 600 {file}` as its owner"
        ) from exc
    log.warning("grace: %s was readable by other users (mode %04o); made it private (0600)", file, mode)


def companions(path: str) -> list[Path]:
    """The files Grace may keep beside the workspace file ``path``."""
    return [Path(path + suffix) for suffix in COMPANION_SUFFIXES]


def remove_workspace_files(path: str | os.PathLike[str]) -> None:
    """Delete a workspace file and everything beside it (a half-built copy that must start again)."""
    text = os.fspath(path)
    for file in [Path(text), *companions(text)]:
        with contextlib.suppress(OSError):
            file.unlink()
