"""Witnesses: copies of the signed checkpoints kept outside the workspace, so a rewritten file is caught.

Whoever can write the workspace file also holds its signing key, so the checkpoints recorded inside it prove
nothing against them: they can rewrite history, recompute every hash and re-sign. A witness is an append-only
JSONL file elsewhere (by default ``<workspace>.witness`` beside it, plus ``$GRACE_WITNESS``) that keeps each
signed checkpoint as it was signed. Before it accepts a new checkpoint it checks, with an RFC 6962 consistency
proof, that the ledger still extends the last one it holds, so it never cosigns a fork. The public key that
signs the checkpoints is pinned in the witness at first use: notes are checked against that key, never against
keys stored in the workspace, and a checkpoint signed by another key is refused until the new key is pinned on
purpose (``Workspace.pin_signing_key``).

Each checkpoint record also carries *marks*: the first bytes of the chain hash of every event since the
previous witnessed checkpoint (of every ``step``-th event when more than ``MAX_MARKS`` came in between). Chain
hashes pin everything before them, so verification can name the first event that differs from the witnessed
history.

Records (one JSON object per line, UTF-8)::

    {"at": "...", "kind": "key", "origin": "...", "verifier_key": "..."}
    {"at": "...", "kind": "checkpoint", "marks": {"from": 0, "prefixes": "<base64>", "step": 1}, "note": "..."}
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import merkle, settings
from .errors import ProofError, SignatureError, WitnessError
from .ledger import Ledger, checkpoint_chain_hash, open_signed_checkpoint

__all__ = [
    "MARK_BYTES",
    "MAX_MARKS",
    "WITNESS_ENV",
    "PinnedKey",
    "Witness",
    "WitnessLog",
    "Witnessed",
    "witness_paths",
]

# A witness file, or a directory (one that exists, or a path ending in "/") that keeps one per workspace.
WITNESS_ENV = str(settings.WITNESS.env)
SUFFIX = ".witness"
MARK_BYTES = 8  # a mark only locates a change; the verdict rests on the full chain hash at each checkpoint
MAX_MARKS = 65_536  # per record (~700 KB of base64): denser history is marked every ``step`` events


def witness_paths(workspace: str) -> list[Path]:
    """Where the checkpoints of the workspace file ``workspace`` (an absolute path) are witnessed.

    Always ``<workspace>.witness``; also ``$GRACE_WITNESS`` when set: a file used as is, or a directory (an
    existing one, or a path ending in "/") holding ``<name>-<hash of the workspace path>.witness``. Neither
    depends on anything inside the workspace, which an attacker could change. In-memory workspaces have none.
    """
    if workspace == ":memory:":
        return []
    paths = [Path(workspace + SUFFIX)]
    configured = (settings.resolve(settings.WITNESS) or "").strip()
    if configured:
        target = Path(configured).expanduser()
        if configured.endswith(("/", os.sep)) or target.is_dir():
            digest = hashlib.sha256(os.fsencode(workspace)).hexdigest()[:12]
            target = target / f"{Path(workspace).name}-{digest}{SUFFIX}"
        target = target.resolve()
        if target not in paths:
            paths.append(target)
    return paths


@dataclass(frozen=True)
class PinnedKey:
    """A note verifier key the witness accepts, and when it was pinned."""

    verifier_key: str
    at: datetime


@dataclass(frozen=True)
class Witnessed:
    """One checkpoint as a witness holds it: its signed note (checked against a pinned key) and its marks."""

    size: int
    root: bytes = field(repr=False)
    chain_hash: bytes = field(repr=False)
    note: str = field(repr=False)
    at: datetime
    line: int
    marks_from: int = 0
    marks_step: int = 1
    marks_base64: str = field(default="", repr=False)  # decoded only to locate a change

    def marks(self) -> Iterator[tuple[int, bytes]]:
        """(seq, first MARK_BYTES of its chain hash) for the marked events, in seq order."""
        try:
            prefixes = base64.b64decode(self.marks_base64, validate=True)
        except binascii.Error:
            return  # malformed marks only make a change harder to locate, never hide one
        for i in range(len(prefixes) // MARK_BYTES):
            seq = self.marks_from + (i + 1) * self.marks_step
            yield seq, prefixes[i * MARK_BYTES : (i + 1) * MARK_BYTES]

    @property
    def when(self) -> str:
        return self.at.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class WitnessLog:
    """What one witness file holds, read and checked. ``problem`` names the first record that is not acceptable
    (unreadable, not signed by a pinned key, another workspace's); the records before it are kept."""

    path: str
    exists: bool = False
    origin: str | None = None
    keys: tuple[PinnedKey, ...] = ()
    checkpoints: tuple[Witnessed, ...] = ()
    problem: str | None = None

    @property
    def latest(self) -> Witnessed | None:
        return max(self.checkpoints, key=lambda w: w.size, default=None)


class Witness:
    """One witness file: read it, and append checkpoints (and pinned keys) to it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Witness({str(self.path)!r})"

    # -- reading -----------------------------------------------------------------------------------------------
    def read(self) -> WitnessLog:
        """The witness's records, each checked; a missing file is an empty witness."""
        where = str(self.path)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return WitnessLog(where)
        except OSError as exc:
            return WitnessLog(
                where, True, problem=f"the witness {where} cannot be read: {exc.strerror or exc}"
            )
        lines = raw.split(b"\n")
        lines.pop()  # the text after the last newline: empty, or a record torn by a crash (never completed)
        origin: str | None = None
        keys: list[PinnedKey] = []
        checkpoints: list[Witnessed] = []

        def stop(number: int, why: str) -> WitnessLog:
            problem = f"the witness {where} is not acceptable at line {number}: {why}"
            return WitnessLog(where, True, origin, tuple(keys), tuple(checkpoints), problem)

        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                kind, at = record.get("kind"), datetime.fromisoformat(str(record.get("at")))
            except (UnicodeDecodeError, ValueError) as exc:
                return stop(number, f"not a witness record ({exc})")
            if kind == "key":
                key_origin, vkey = record.get("origin"), record.get("verifier_key")
                if not isinstance(key_origin, str) or not isinstance(vkey, str):
                    return stop(number, "a key record needs an origin and a verifier_key")
                if origin is not None and key_origin != origin:
                    return stop(number, f"a key for {key_origin}, but the witness belongs to {origin}")
                origin = key_origin
                keys.append(PinnedKey(vkey, at))
            elif kind == "checkpoint":
                try:
                    checkpoints.append(_witnessed(record, at, number, keys, origin))
                except (SignatureError, WitnessError, ValueError, TypeError, KeyError) as exc:
                    return stop(number, str(exc))
            else:
                return stop(number, f"unknown record kind {kind!r}")
        return WitnessLog(where, True, origin, tuple(keys), tuple(checkpoints))

    # -- writing -----------------------------------------------------------------------------------------------
    def record(
        self, ledger: Ledger, checkpoint: merkle.Checkpoint, note: str, *, verifier_key: str, at: datetime
    ) -> None:
        """Append a signed checkpoint of ``ledger``, after checking that the ledger extends what the witness holds.

        The first checkpoint pins ``verifier_key``. Refused (``WitnessError``, nothing written) when the witness is
        another workspace's or unreadable, when the key is not pinned, or when the ledger is shorter than, or not
        an extension of, the latest witnessed checkpoint (checked with an RFC 6962 consistency proof).
        """
        log = self.read()
        where = str(self.path)
        if log.problem:
            raise WitnessError(f"cannot witness the checkpoint: {log.problem}")
        if log.origin is not None and log.origin != checkpoint.origin:
            raise WitnessError(
                f"the witness {where} belongs to workspace {log.origin}, not to {checkpoint.origin}; if this "
                "workspace replaced that one on purpose, move the old witness away"
            )
        if log.keys and verifier_key not in {k.verifier_key for k in log.keys}:
            pinned = log.keys[-1]
            raise WitnessError(
                f"the checkpoint is signed by a key the witness {where} never pinned (it pinned "
                f"{pinned.verifier_key} on {pinned.at:%Y-%m-%d}); if the signing key was replaced on purpose, "
                "pin the new one with `grace ledger pin-key`"
            )
        last = log.latest
        if last is not None:
            _check_extends(ledger, checkpoint, last, where)
        start = last.size if last is not None else 0
        records = []
        if not log.keys:
            records.append(_key_record(checkpoint.origin, verifier_key, at))
        records.append(
            {
                "kind": "checkpoint",
                "at": at.isoformat(),
                "note": note,
                "marks": _marks(ledger, start, checkpoint.size),
            }
        )
        self._append(records)

    def pin(self, *, origin: str, verifier_key: str, at: datetime) -> bool:
        """Pin another signing key (after replacing the workspace's key on purpose); False if already pinned."""
        log = self.read()
        if log.problem:
            raise WitnessError(f"cannot pin a key: {log.problem}")
        if log.origin is not None and log.origin != origin:
            raise WitnessError(f"the witness {self.path} belongs to workspace {log.origin}, not to {origin}")
        if verifier_key in {k.verifier_key for k in log.keys}:
            return False
        self._append([_key_record(origin, verifier_key, at)])
        return True

    def _append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append whole lines, owner-only (0600), and make them durable before returning."""
        data = "".join(_line(r) for r in records).encode("utf-8")
        if not self.path.parent.is_dir():
            raise WitnessError(f"the witness directory {self.path.parent} does not exist")
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise WitnessError(f"cannot open the witness {self.path}: {exc.strerror or exc}") from exc
        try:
            _drop_torn_tail(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            raise WitnessError(f"cannot write the witness {self.path}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        if created:  # the new directory entry must survive a crash too
            with contextlib.suppress(OSError):
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def _key_record(origin: str, verifier_key: str, at: datetime) -> dict[str, Any]:
    return {"kind": "key", "at": at.isoformat(), "origin": origin, "verifier_key": verifier_key}


def _witnessed(
    record: Mapping[str, Any], at: datetime, line: int, keys: Sequence[PinnedKey], origin: str | None
) -> Witnessed:
    """A checkpoint record, its note checked against the keys pinned before it."""
    note = record["note"]
    if not isinstance(note, str):
        raise WitnessError("a checkpoint record needs a note")
    cp = open_signed_checkpoint(note, (key.verifier_key for key in keys))
    if cp is None:
        raise SignatureError("its checkpoint is not signed by a key pinned in the witness before it")
    if cp.origin != origin:
        raise SignatureError(f"its checkpoint is of {cp.origin}, but the witness belongs to {origin}")
    chain = checkpoint_chain_hash(cp)
    if chain is None:
        raise SignatureError(f"its checkpoint of size {cp.size} has no chain line")
    marks = record.get("marks") or {"from": 0, "step": 1, "prefixes": ""}
    start, step, encoded = int(marks["from"]), int(marks["step"]), str(marks["prefixes"])
    # The size of the decoded marks, without decoding them (verification decodes them only to locate a change).
    padding = len(encoded) - len(encoded.rstrip("="))
    count = (len(encoded) // 4 * 3 - padding) // MARK_BYTES
    if start < 0 or step < 1 or len(encoded) % 4 or start + count * step > cp.size:
        raise WitnessError(f"marks outside the checkpoint of size {cp.size}")
    return Witnessed(cp.size, cp.root, chain, note, at, line, start, step, encoded)


def _check_extends(ledger: Ledger, checkpoint: merkle.Checkpoint, last: Witnessed, where: str) -> None:
    """Refuse to witness a ledger that is shorter than, or forked from, the latest witnessed checkpoint."""
    if checkpoint.size < last.size:
        raise WitnessError(
            f"the ledger has {checkpoint.size} events but a checkpoint of size {last.size} was witnessed on "
            f"{last.when} ({where}); refusing to witness a shortened ledger (run `grace ledger verify`)"
        )
    proof = ledger.consistency_proof(last.size, checkpoint.size)
    try:
        merkle.verify_consistency(
            old_size=last.size,
            new_size=checkpoint.size,
            old_root=last.root,
            new_root=checkpoint.root,
            proof=proof,
        )
        if ledger.chain_hashes([last.size]).get(last.size) != last.chain_hash:
            raise ProofError("the chain hash differs")
    except ProofError as exc:
        raise WitnessError(
            f"the ledger does not extend the checkpoint of size {last.size} witnessed on {last.when} ({where}): "
            f"its history was rewritten ({exc}); refusing to witness a fork (run `grace ledger verify`)"
        ) from exc


def _marks(ledger: Ledger, start: int, size: int) -> dict[str, Any]:
    """Chain-hash prefixes of the events in (start, size]: every one, or every ``step``-th past MAX_MARKS."""
    step = max(1, -(-(size - start) // MAX_MARKS))
    seqs = range(start + step, size + 1, step)
    hashes = ledger.chain_hashes(seqs)
    prefixes = b"".join(hashes[s][:MARK_BYTES] for s in seqs)
    return {"from": start, "step": step, "prefixes": base64.b64encode(prefixes).decode("ascii")}


def _drop_torn_tail(fd: int) -> None:
    """Cut a record a crash left without its newline (it never counted), so the next line starts clean."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    text = os.pread(fd, end, 0)
    os.ftruncate(fd, text.rfind(b"\n") + 1)
