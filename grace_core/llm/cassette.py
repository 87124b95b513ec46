"""Cassettes: recorded model calls keyed by prompt hash, so re-running an experiment replays them exactly.

A cassette is a JSON Lines file, one recorded call per line::

    {"prompt_hash": "…", "topic": "llm.completed", "call": {prompt, version, backend, model, messages, params,
     schema}, "result": {response, finish_reason, usage, latency_ms, attempts, waited_s, details}}

``topic`` is ``llm.failed`` for a recorded failure (its result holds ``error`` and ``error_kind``), so a replay
fails where the original run failed. Modes: ``record`` calls the model and appends every call; ``replay`` must
find every call (a miss is an error naming the prompt and its hash); ``auto`` replays what it holds and records
the rest. The n-th call with a given hash replays the n-th recording of it (the last one once they run out), so
a non-deterministic model asked the same thing twice replays both answers in order.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grace_core.errors import CassetteError
from grace_core.events import canonical_json

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = ["CALL_KEYS", "MODES", "Cassette", "Recording"]

MODES = ("record", "replay", "auto")
#: What decides a call (its part of an event's payload); the rest of a payload is the recorded outcome.
CALL_KEYS = ("prompt", "version", "backend", "model", "messages", "params", "schema")
#: Payload keys that belong to neither: why this call was made (they come from the caller, not the recording).
CALLER_KEYS = ("purpose", "prompt_hash")
TOPICS = ("llm.completed", "llm.failed")


@dataclass(frozen=True)
class Recording:
    """One recorded call: what was asked (``call``) and what came back (``result``)."""

    prompt_hash: str
    topic: str  # llm.completed or llm.failed
    call: Mapping[str, Any]
    result: Mapping[str, Any]

    def line(self) -> str:
        return canonical_json(
            {"prompt_hash": self.prompt_hash, "topic": self.topic, "call": self.call, "result": self.result},
            limit=1 << 30,
        )

    @classmethod
    def from_payload(cls, topic: str, payload: Mapping[str, Any]) -> Recording:
        """A recording from an ``llm.completed`` or ``llm.failed`` event's payload."""
        call = {k: payload[k] for k in CALL_KEYS if k in payload}
        result = {k: v for k, v in payload.items() if k not in CALL_KEYS and k not in CALLER_KEYS}
        return cls(str(payload["prompt_hash"]), topic, call, result)


class Cassette:
    """Recorded calls by prompt hash; optionally backed by a JSONL file that records append to."""

    def __init__(
        self,
        recordings: Iterable[Recording] = (),
        *,
        mode: str = "replay",
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise CassetteError(f"unknown cassette mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode
        self.path = Path(path) if path is not None else None
        self._by_hash: dict[str, list[Recording]] = {}
        self._played: dict[str, int] = {}
        self._lock = threading.Lock()
        for recording in recordings:
            self._by_hash.setdefault(recording.prompt_hash, []).append(recording)

    # -- building ----------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, mode: str = "replay") -> Cassette:
        """A cassette file (created empty for ``record``/``auto`` when missing); records append to it."""
        file = Path(path)
        if not file.exists():
            if mode == "replay":
                raise CassetteError(f"no cassette at {file}; record one first (mode record or auto)")
            return cls(mode=mode, path=file)
        return cls(cls._read(file), mode=mode, path=file)

    @staticmethod
    def _read(file: Path) -> list[Recording]:
        recordings = []
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CassetteError(f"cannot read cassette {file}: {exc.strerror or exc}") from exc
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                topic = raw["topic"]
                if topic not in TOPICS:
                    raise ValueError(f"topic {topic!r} is not one of {', '.join(TOPICS)}")
                recordings.append(
                    Recording(str(raw["prompt_hash"]), topic, dict(raw["call"]), dict(raw["result"]))
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise CassetteError(f"cassette {file} line {n} is not a recorded call: {exc}") from exc
        return recordings

    @classmethod
    def from_workspace(
        cls,
        ws: Workspace,
        *,
        mode: str = "replay",
        since: int = 0,
        path: str | os.PathLike[str] | None = None,
    ) -> Cassette:
        """Every call this workspace's ledger recorded (``llm.completed`` and ``llm.failed``), in ledger order."""
        rows = (
            ws.ledger.reader()
            .execute(
                "SELECT topic, payload FROM events WHERE seq > ? AND topic IN ('llm.completed', 'llm.failed') "
                "ORDER BY seq",
                [since],
            )
            .fetchall()
        )
        return cls((Recording.from_payload(t, json.loads(p)) for t, p in rows), mode=mode, path=path)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write every recording to ``path`` as JSON Lines (replacing the file); returns the path."""
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text("".join(r.line() + "\n" for r in self), encoding="utf-8")
        os.replace(tmp, file)
        return file

    # -- playing -----------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Recording]:
        for recordings in self._by_hash.values():
            yield from recordings

    def __len__(self) -> int:
        return sum(len(r) for r in self._by_hash.values())

    def __contains__(self, prompt_hash: object) -> bool:
        return prompt_hash in self._by_hash

    @property
    def replays(self) -> bool:
        return self.mode in ("replay", "auto")

    @property
    def records(self) -> bool:
        return self.mode in ("record", "auto")

    def take(self, prompt_hash: str) -> Recording | None:
        """The next recording for this hash (the last one again once all were played), or None."""
        with self._lock:
            recordings = self._by_hash.get(prompt_hash)
            if not recordings:
                return None
            n = self._played.get(prompt_hash, 0)
            self._played[prompt_hash] = n + 1
            return recordings[min(n, len(recordings) - 1)]

    def add(self, recording: Recording) -> None:
        """Keep a new recording (and append it to the file, if there is one)."""
        with self._lock:
            self._by_hash.setdefault(recording.prompt_hash, []).append(recording)
            # A recording made live has been played already: a later identical call replays the next one.
            self._played[recording.prompt_hash] = len(self._by_hash[recording.prompt_hash])
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(recording.line() + "\n")

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"<Cassette{where} mode={self.mode} recordings={len(self)}>"
