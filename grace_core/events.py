"""Events: the one record type of the workspace, its validation and its canonical byte form."""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from .errors import EventError, PayloadError
from .times import to_datetime

__all__ = ["GENESIS_HASH", "MAX_PAYLOAD_BYTES", "Draft", "Event", "canonical_json", "record_bytes"]

GENESIS_HASH = bytes(32)
MAX_PAYLOAD_BYTES = 1 << 20

_TOPIC = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+){0,15}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _unserialisable(value: object) -> object:
    # The encoder's ``default`` hook: what it raises propagates out of the encoder as is.
    raise PayloadError(f"payload is not JSON-serialisable: it holds a {type(value).__name__}")


# One C encoder, reused: json.dumps with options builds a new encoder per call, which dominates small
# payloads. Without markers it does not look for cycles; a cycle ends in RecursionError, caught below.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_c_encode = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _unserialisable, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)
_valid_topics: set[str] = set()
_valid_names: set[str] = set()


def canonical_json(payload: Mapping[str, Any] | None, *, limit: int = MAX_PAYLOAD_BYTES) -> str:
    """The one serialisation that is stored and hashed: sorted keys, no spaces, UTF-8, no NaN."""
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        raise PayloadError(f"payload must be a JSON object (a dict), not {type(payload).__name__}")
    if not isinstance(payload, dict):
        payload = dict(payload)
    try:
        text = "".join(_c_encode(payload, 0)) if _c_encode is not None else _ENCODER.encode(payload)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"payload is not JSON-serialisable: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError("payload is circular or nested too deeply") from exc
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise PayloadError(f"payload holds a string that is not valid Unicode: {exc.reason}") from exc
    if size > limit:
        raise PayloadError(f"payload is {size} bytes; the limit is {limit} bytes")
    return text


def _shown(value: object, limit: int = 60) -> str:
    """repr() for an error message, cut short: a megabyte of bad input must not become a megabyte of error."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}...{size}"


def check_topic(topic: str) -> str:
    with contextlib.suppress(TypeError):  # unhashable input is not a topic; say so below
        if topic in _valid_topics:
            return topic
    if not isinstance(topic, str) or len(topic) > 200 or not _TOPIC.match(topic):
        raise EventError(
            f"bad topic {_shown(topic)}: use dot-separated lower-case words of letters, digits and '_' "
            "(e.g. 'chat.message.received'), at most 200 characters"
        )
    if len(_valid_topics) < 100_000:
        _valid_topics.add(topic)
    return topic


def check_name(kind: str, value: str | None, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise EventError(f"an event needs an {kind}")
        return None
    with contextlib.suppress(TypeError):  # unhashable input is not a name; say so below
        if value in _valid_names:
            return value
    if not isinstance(value, str) or not value or len(value) > 1000 or _CONTROL.search(value):
        raise EventError(
            f"bad {kind} {_shown(value)}: a non-empty string of at most 1000 characters, "
            "no control characters"
        )
    if len(_valid_names) < 100_000:
        _valid_names.add(value)
    return value


# The canonical record joins the fields with the unit separator (0x1f) and writes NULL as 0x1e. That is
# unambiguous because validation keeps every control character out of every field (canonical JSON escapes
# them), and DuckDB can build the same bytes for a whole table in one vectorised concat_ws (verification).
SEP = "\x1f"
NULL = "\x1e"


def record_bytes(
    seq: int,
    id: str,
    ts_us: int,
    topic: str,
    actor: str,
    resource: str | None,
    payload: str,
    parent_id: str | None,
    correlation_id: str,
) -> bytes:
    """Canonical bytes of one event: what the chain hashes and the Merkle tree takes as a leaf."""
    return (
        f"grace.event.v1\x1f{seq}\x1f{id}\x1f{ts_us}\x1f{topic}\x1f{actor}\x1f"
        f"{NULL if resource is None else resource}\x1f{NULL if parent_id is None else parent_id}\x1f"
        f"{correlation_id}\x1f{payload}"
    ).encode()


# The same bytes as record_bytes(), built by DuckDB for a whole table at once.
RECORD_SQL = (
    "encode(concat_ws(chr(31), 'grace.event.v1', seq, id, epoch_us(ts), topic, actor, coalesce(resource, chr(30)), "
    "coalesce(parent_id, chr(30)), correlation_id, payload))"
)


class Draft(NamedTuple):
    """An event before it is on the ledger: validated and serialised, without seq or hashes."""

    id: str
    ts_us: int
    topic: str
    actor: str
    resource: str | None
    payload_json: str
    parent_id: str | None
    correlation_id: str


class Event(NamedTuple):
    """An event as stored on the ledger (immutable)."""

    seq: int
    id: str
    ts_us: int
    topic: str
    actor: str
    resource: str | None
    payload_json: str
    parent_id: str | None
    correlation_id: str
    prev_hash: bytes
    hash: bytes

    @property
    def payload(self) -> dict[str, Any]:
        """The payload parsed from its canonical JSON (a fresh dict each time: mutate freely)."""
        value: dict[str, Any] = json.loads(self.payload_json)
        return value

    @property
    def ts(self) -> datetime:
        return to_datetime(self.ts_us)

    def record(self) -> bytes:
        return record_bytes(
            self.seq,
            self.id,
            self.ts_us,
            self.topic,
            self.actor,
            self.resource,
            self.payload_json,
            self.parent_id,
            self.correlation_id,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "ts": self.ts.isoformat(),
            "topic": self.topic,
            "actor": self.actor,
            "resource": self.resource,
            "payload": self.payload,
            "parent_id": self.parent_id,
            "correlation_id": self.correlation_id,
            "hash": self.hash.hex(),
        }

    def __repr__(self) -> str:
        return f"Event(seq={self.seq}, topic={self.topic!r}, actor={self.actor!r}, id={self.id!r})"


def is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
