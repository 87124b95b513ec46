"""The ledger: tamper evidence (hash chain + signed checkpoints), proofs, group commit, replay."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grace_core import (
    InclusionProof,
    LedgerError,
    Loop,
    ManualClock,
    Message,
    PermissionDenied,
    ProofError,
    SignatureError,
    Workspace,
    WorkspaceError,
    handling,
    merkle,
    open_workspace,
    projection_differences,
    replay,
    verify_inclusion_proof,
)
from grace_core.events import GENESIS_HASH, canonical_json

# -- random ledgers ------------------------------------------------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any Unicode but lone surrogates
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_payloads = st.dictionaries(_text, _json, max_size=5)
_names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=16)
_topics = st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z0-9_]{1,8}){0,3}", fullmatch=True)
# A new workspace starts with its genesis events: workspace.created, the policy pack, the rule pack and the
# shipped injection model.
GENESIS = 4

_event_specs = st.fixed_dictionaries(
    {
        "topic": _topics,
        "payload": _payloads,
        "actor": _names,
        "resource": st.none() | _names,
        "cause": st.none()
        | st.integers(0, 10_000),  # published while handling an earlier event (index mod n)
        "dt": st.floats(0, 3600),  # seconds the clock moves before this event
    }
)


def ledger_specs(min_size: int = 1, max_size: int = 37) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Specs for the events after genesis: the ledger then holds GENESIS + min_size..max_size events."""
    return st.lists(_event_specs, min_size=min_size, max_size=max_size)


@contextmanager
def built(specs: list[dict[str, Any]]) -> Iterator[Workspace]:
    clock = ManualClock()
    ws = open_workspace(":memory:", clock=clock, seed=7)
    try:
        published = [ws.ledger.at(1)]
        for spec in specs:
            clock.advance(spec["dt"])
            cause = None if spec["cause"] is None else published[spec["cause"] % len(published)]
            with handling(cause) if cause else contextlib.nullcontext():
                event = ws.publish(
                    spec["topic"], spec["payload"], actor=spec["actor"], resource=spec["resource"]
                )
            published.append(event)
        yield ws
    finally:
        ws.close()


def rows(ws: Workspace) -> dict[int, tuple[Any, ...]]:
    return {r[0]: r for r in ws.con.execute("SELECT * FROM events ORDER BY seq").fetchall()}


def flip(blob: bytes, bit: int) -> bytes:
    out = bytearray(blob)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def rehash_from(ws: Workspace, k: int) -> None:
    """What an attacker with write access does after editing row k: recompute every hash from k to the end."""
    prev = GENESIS_HASH if k == 1 else ws.ledger.chain_hash(k - 1)
    for event in ws.ledger.events(since=k - 1):
        digest = hashlib.sha256(prev + event.record()).digest()
        ws.con.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", [prev, digest, event.seq])
        prev = digest


def insert_row(ws: Workspace, seq: int, ev: Any, *, prev_hash: bytes, hash_: bytes) -> None:
    ws.con.execute(
        "INSERT INTO events VALUES (?, ?, make_timestamptz(?::BIGINT), ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            seq,
            ev.id,
            ev.ts_us,
            ev.topic,
            ev.actor,
            ev.resource,
            ev.payload_json,
            ev.parent_id,
            ev.correlation_id,
            prev_hash,
            hash_,
        ],
    )


# -- single tamperings: each edits the table with plain SQL and returns the seq verify must report -----------
Tamper = Callable[[Workspace, st.DataObject, int], int]


def _pick(data: st.DataObject, n: int, label: str, low: int = 1) -> int:
    return data.draw(st.integers(low, n), label=label)


def t_payload(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "payload of")
    old = ws.ledger.at(k).payload
    forged = data.draw(_payloads.filter(lambda p: p != old), label="forged payload")
    ws.con.execute("UPDATE events SET payload = ? WHERE seq = ?", [canonical_json(forged), k])
    return k


def t_topic(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "topic of")
    old = ws.ledger.at(k).topic
    ws.con.execute(
        "UPDATE events SET topic = ? WHERE seq = ?",
        [data.draw(_topics.filter(lambda t: t != old), label="forged topic"), k],
    )
    return k


def t_actor(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "actor of")
    old = ws.ledger.at(k).actor
    ws.con.execute(
        "UPDATE events SET actor = ? WHERE seq = ?",
        [data.draw(_names.filter(lambda a: a != old), label="forged actor"), k],
    )
    return k


def t_resource(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "resource of")
    old = ws.ledger.at(k).resource
    # chr(30) is how the canonical record writes NULL: a NULL resource set to it hashes the same bytes,
    # so verification must reject the marker itself.
    choices = [None, "\x1e", *data.draw(st.lists(_names, min_size=1, max_size=2), label="forged resources")]
    new = data.draw(st.sampled_from([c for c in choices if c != old]), label="forged resource")
    ws.con.execute("UPDATE events SET resource = ? WHERE seq = ?", [new, k])
    return k


def t_ts(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "ts of")
    delta = data.draw(st.integers(-(10**12), 10**12).filter(bool), label="microseconds moved")
    ws.con.execute(
        "UPDATE events SET ts = make_timestamptz(epoch_us(ts) + ?::BIGINT) WHERE seq = ?", [delta, k]
    )
    return k


def t_parent(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "parent of")
    old = ws.ledger.at(k).parent_id
    other = ws.ledger.at(_pick(data, n, "forged parent")).id
    choices = [c for c in (None, "\x1e", other, "not-an-event") if c != old]
    ws.con.execute(
        "UPDATE events SET parent_id = ? WHERE seq = ?",
        [data.draw(st.sampled_from(choices), label="forged parent_id"), k],
    )
    return k


def t_correlation(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "correlation of")
    ws.con.execute("UPDATE events SET correlation_id = correlation_id || 'x' WHERE seq = ?", [k])
    return k


def t_hash(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "hash of")
    forged = flip(ws.ledger.at(k).hash, data.draw(st.integers(0, 255), label="bit"))
    ws.con.execute("UPDATE events SET hash = ? WHERE seq = ?", [forged, k])
    return k


def t_prev_hash(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "prev_hash of")
    forged = flip(ws.ledger.at(k).prev_hash, data.draw(st.integers(0, 255), label="bit"))
    ws.con.execute("UPDATE events SET prev_hash = ? WHERE seq = ?", [forged, k])
    return k


def t_delete(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "deleted")  # k == n: the deleted tail is caught against the committed head
    ws.con.execute("DELETE FROM events WHERE seq = ?", [k])
    return k


def t_insert(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "inserted at")
    # Another event's row, renumbered to k (a copy of event k itself would just be event k again).
    copy = ws.ledger.at(data.draw(st.integers(1, n).filter(lambda c: c != k), label="copied from"))
    ws.con.execute("UPDATE events SET seq = seq + 1 WHERE seq >= ?", [k])
    # The forged row claims to link to its predecessor but carries another event's hash.
    insert_row(ws, k, copy, prev_hash=ws.ledger.chain_hash(k - 1) if k > 1 else GENESIS_HASH, hash_=copy.hash)
    return k


def t_insert_hashed(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "inserted at")
    copy = ws.ledger.at(_pick(data, n, "copied from"))
    prev = ws.ledger.chain_hash(k - 1)
    ws.con.execute("UPDATE events SET seq = seq + 1 WHERE seq >= ?", [k])
    forged = copy._replace(seq=k)
    insert_row(ws, k, forged, prev_hash=prev, hash_=hashlib.sha256(prev + forged.record()).digest())
    # A correctly hashed forgery is itself a valid link; the event it displaced (now at k + 1) is not.
    return k + 1


def t_duplicate(ws: Workspace, data: st.DataObject, n: int) -> int:
    k = _pick(data, n, "duplicated")
    if data.draw(st.booleans(), label="altered copy"):
        ws.con.execute(
            "INSERT INTO events SELECT * REPLACE (payload || ' ' AS payload) FROM events WHERE seq = ?", [k]
        )
    else:
        ws.con.execute("INSERT INTO events SELECT * FROM events WHERE seq = ?", [k])
    return k


def t_swap(ws: Workspace, data: st.DataObject, n: int) -> int:
    j = _pick(data, n - 1, "swapped first")
    k = _pick(data, n, "swapped with", low=j + 1)
    ws.con.execute(
        "UPDATE events SET seq = CASE seq WHEN ? THEN ? ELSE ? END WHERE seq IN (?, ?)", [j, k, j, j, k]
    )
    return j


TAMPERS: dict[str, Tamper] = {
    f.__name__.removeprefix("t_"): f
    for f in (
        t_payload,
        t_topic,
        t_actor,
        t_resource,
        t_ts,
        t_parent,
        t_correlation,
        t_hash,
        t_prev_hash,
        t_delete,
        t_insert,
        t_insert_hashed,
        t_duplicate,
        t_swap,
    )
}


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=ledger_specs(), data=st.data())
def test_untouched_ledger_verifies_and_any_single_tampering_is_caught_at_its_seq(
    specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    with built(specs) as ws:
        n = ws.ledger.head[0]
        assert n == len(specs) + GENESIS
        report = ws.verify()
        assert (report.ok, report.size, report.first_bad_seq) == (True, n, None), report
        ws.con.execute("CREATE TEMP TABLE pristine AS SELECT * FROM events")
        for name, tamper in TAMPERS.items():
            expected = tamper(ws, data, n)
            report = ws.verify()
            assert not report.ok, f"{name}: tampering not detected"
            assert report.first_bad_seq == expected, f"{name}: {report}"
            assert report.reason, report
            ws.con.execute("DELETE FROM events; INSERT INTO events SELECT * FROM pristine ORDER BY seq")
            assert ws.verify().ok, f"restoring after {name} failed"


def test_verify_report_says_what_is_wrong(ws: Workspace) -> None:
    for i in range(5):
        ws.publish("demo.tick", {"i": i}, actor="tester")
    a, b = GENESIS + 2, GENESIS + 3  # the events with i = 1 and i = 2
    ws.con.execute(f"UPDATE events SET payload = '{{\"i\":99}}' WHERE seq = {a}")
    assert str(ws.verify()) == f"ledger broken at seq {a}: contents do not match the hash"
    ws.con.execute(f"UPDATE events SET payload = '{{\"i\":1}}' WHERE seq = {a}")
    ws.con.execute(f"DELETE FROM events WHERE seq = {b}")
    assert str(ws.verify()) == f"ledger broken at seq {b}: event {b} is missing"


# -- checkpoints pin the chain -------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=ledger_specs(2, 15), after=st.lists(_event_specs, max_size=4), data=st.data())
def test_recomputed_chain_is_caught_by_a_checkpoint_signed_before(
    specs: list[dict[str, Any]], after: list[dict[str, Any]], data: st.DataObject
) -> None:
    with built(specs) as ws:
        cp = merkle.open_checkpoint(ws.checkpoint(), verifier_key=ws.verifier_keys[0])
        for spec in after:
            ws.publish(spec["topic"], spec["payload"], actor=spec["actor"], resource=spec["resource"])
        n = ws.ledger.head[0]
        ws.con.execute("CREATE TEMP TABLE pristine AS SELECT * FROM events")

        # Control: a row after the checkpoint, rewritten with a recomputed chain, is self-consistent (nothing
        # pins it yet), which shows the rehash below really produces a chain that links.
        k = data.draw(st.integers(cp.size + 1, n), label="rewritten after the checkpoint")
        ws.con.execute("UPDATE events SET actor = 'mallory' WHERE seq = ?", [k])
        rehash_from(ws, k)
        assert ws.verify().ok
        ws.con.execute("DELETE FROM events; INSERT INTO events SELECT * FROM pristine ORDER BY seq")

        k = data.draw(st.integers(1, cp.size), label="rewritten under the checkpoint")
        ws.con.execute(
            "UPDATE events SET payload = '{\"forged\":true}', actor = 'mallory' WHERE seq = ?", [k]
        )
        rehash_from(ws, k)
        report = ws.verify()
        assert not report.ok
        assert report.first_bad_seq == cp.size  # the checkpoint pins the chain at its size
        assert "differs from the checkpoint" in (report.reason or "")
        # A third party holding the signed note catches it too: the rewritten event is not in that tree.
        with pytest.raises(ProofError):
            ws.check_proof(ws.prove(k))


def test_checkpoint_table_rows_change_nothing_in_the_verdict(ws: Workspace) -> None:
    _publish_some(ws, 8)
    ws.checkpoint()
    _publish_some(ws, 5, start=8)
    ws.checkpoint()
    intact = ws.verify()
    assert (intact.ok, intact.checkpoints_checked) == (True, 2)

    def same_verdict() -> None:
        report = ws.verify()
        assert (report.ok, report.size, report.checkpoints_checked) == (True, intact.size, 2), report

    # The table is a projection: the verdict comes from the checkpoint events on the chain.
    ws.con.execute("UPDATE checkpoints SET size = size + 1000, chain_hash = sha256('x')::BLOB")
    same_verdict()
    ws.con.execute("UPDATE checkpoints SET note = 'not a note'")
    same_verdict()
    ws.con.execute("DELETE FROM checkpoints")
    same_verdict()
    ws.con.execute("DELETE FROM signing_keys")
    same_verdict()


def test_rewrite_under_a_checkpoint_is_caught_with_the_checkpoint_rows_deleted(ws: Workspace) -> None:
    _publish_some(ws, 12)
    ws.checkpoint()
    size, _ = ws.latest_checkpoint()
    ws.publish("demo.after", {}, actor="tester")
    ws.con.execute("UPDATE events SET actor = 'mallory' WHERE seq = 7")
    rehash_from(ws, 7)
    ws.con.execute("DELETE FROM checkpoints")  # what used to hide the rewrite
    report = ws.verify()
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == ("rewritten", size)
    assert report.reason == (
        f"the chain differs from the checkpoint of size {size} signed at seq {size + 1}: "
        f"rewritten from a seq in 1..{size}"
    )


def test_a_key_event_rewritten_under_a_checkpoint_is_reported_as_a_rewrite(ws: Workspace) -> None:
    _publish_some(ws, 6)
    ws.checkpoint()
    size, _ = ws.latest_checkpoint()
    [published] = ws.ledger.events(topic="ledger.key_published")
    assert published.seq == size  # the key is published just before the first checkpoint, which covers it
    mallory = merkle.SigningKey.generate(ws.origin)
    forged = canonical_json({"key_name": mallory.name, "verifier_key": mallory.verifier_key()})
    ws.con.execute("UPDATE events SET payload = ? WHERE seq = ?", [forged, published.seq])
    rehash_from(ws, published.seq)
    report = ws.verify()
    assert not report.ok, report
    # Not just "not signed by a published key": the checkpoint's own claim pins the chain at its size.
    assert (report.problem, report.first_bad_seq) == ("rewritten", size)


def test_checkpoint_events_removed_from_the_chain_break_it(ws: Workspace) -> None:
    _publish_some(ws, 6)
    ws.checkpoint()
    _publish_some(ws, 6, start=6)
    seq = int(ws.sql("SELECT seq FROM events WHERE topic = 'ledger.checkpoint'")["seq"][0])
    ws.con.execute("DELETE FROM events WHERE topic = 'ledger.checkpoint'")
    ws.con.execute("DELETE FROM checkpoints")
    report = ws.verify()
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq, report.reason) == (
        "altered",
        seq,
        f"event {seq} is missing",
    )


def test_a_checkpoint_event_must_record_what_its_note_signs(ws: Workspace) -> None:
    _publish_some(ws, 6)
    ws.checkpoint()
    [event] = ws.ledger.events(topic="ledger.checkpoint")
    forged = {**event.payload, "size": event.payload["size"] + 50}  # the projection would claim more
    ws.con.execute("UPDATE events SET payload = ? WHERE seq = ?", [canonical_json(forged), event.seq])
    rehash_from(ws, event.seq)
    report = ws.verify()
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == ("signature", event.seq)
    assert report.reason == f"the checkpoint at seq {event.seq} records other values than it signed"
    # A note signed by a key the chain never published is refused the same way.
    stranger = merkle.SigningKey.generate(ws.origin)
    cp = merkle.open_checkpoint(event.payload["note"], verifier_key=ws.verifier_keys[0])
    forged = {**event.payload, "note": merkle.sign_checkpoint(cp, stranger)}
    ws.con.execute("UPDATE events SET payload = ? WHERE seq = ?", [canonical_json(forged), event.seq])
    rehash_from(ws, event.seq)
    report = ws.verify()
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == ("signature", event.seq)
    assert "not signed by a key published on the ledger before it" in (report.reason or "")


def test_truncated_tail_is_caught_by_a_checkpoint_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    with open_workspace(path, clock=ManualClock(), seed=3) as ws:
        for i in range(20):
            ws.publish("demo.tick", {"i": i}, actor="tester")
        cp = merkle.open_checkpoint(ws.checkpoint(), verifier_key=ws.verifier_keys[0])
        ws.publish("demo.tick", {"i": "after"}, actor="tester")
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM events WHERE seq > ?", [cp.size - 5])
    con.close()
    with open_workspace(path, clock=ManualClock(), seed=3) as ws:
        assert ws.ledger.head[0] == cp.size - 5  # a fresh process cannot know the tail existed...
        report = ws.verify()
        assert not report.ok  # ...but the witness beside the file saw a checkpoint that covered more
        assert (report.problem, report.first_bad_seq, report.size) == ("shortened", cp.size - 4, cp.size - 5)
        assert report.reason == (
            f"ledger has {cp.size - 5} events but a checkpoint of size {cp.size} was witnessed on "
            f"2026-01-01 00:00:00 UTC ({path}.witness)"
        )


def test_truncated_tail_is_caught_in_the_writing_process_without_a_checkpoint(ws: Workspace) -> None:
    for i in range(10):
        ws.publish("demo.tick", {"i": i}, actor="tester")
    ws.con.execute("DELETE FROM events WHERE seq > 8")
    report = ws.verify()
    assert (report.ok, report.first_bad_seq) == (False, 9)
    assert "truncated" in (report.reason or "")


# -- checkpoints and inclusion / consistency proofs ----------------------------------------------------------
def _publish_some(ws: Workspace, n: int, start: int = 0) -> None:
    ws.publish_many(
        [Message("demo.tick", {"i": i, "text": f"ünïcødé {i}"}) for i in range(start, start + n)],
        actor="tester",
    )


def _rebuilt(proof: InclusionProof) -> InclusionProof:
    """What a third party reconstructs from the JSON it was sent."""
    d = json.loads(json.dumps(proof.as_dict()))
    return InclusionProof(
        seq=d["seq"],
        leaf=d["leaf"].encode("utf-8"),
        index=d["index"],
        size=d["size"],
        path=tuple(bytes.fromhex(h) for h in d["path"]),
        checkpoint=d["checkpoint"],
    )


def test_checkpoint_is_a_signed_note_over_the_merkle_root_of_the_events(ws: Workspace) -> None:
    _publish_some(ws, 12)
    note = ws.checkpoint()
    body, _, signature = note.partition("\n\n")
    origin, size, _root, chain = body.split("\n")
    assert origin == ws.origin
    assert signature.startswith(f"\u2014 {ws.origin} ")
    assert signature.endswith("\n")
    [vkey] = ws.verifier_keys
    cp = merkle.open_checkpoint(note, verifier_key=vkey)
    assert cp.size == int(size) == ws.ledger.head[0] - 1  # the checkpoint event itself comes after
    events = ws.ledger.events(until=cp.size)
    independent = merkle.root([merkle.leaf_hash(e.record()) for e in events])
    assert cp.root == independent
    assert chain == f"chain {events[-1].hash.hex()}"
    recorded = ws.ledger.at(ws.ledger.head[0])
    assert recorded.topic == "ledger.checkpoint"
    assert recorded.payload["note"] == note
    assert ws.verify().checkpoints_checked == 1


def test_inclusion_proofs_verify_standalone_for_every_event(ws: Workspace) -> None:
    _publish_some(ws, 9)
    ws.checkpoint()
    size, _ = ws.latest_checkpoint()
    keys = list(ws.verifier_keys)
    for seq in range(1, size + 1):
        proof = _rebuilt(ws.prove(seq))
        cp = verify_inclusion_proof(proof, verifier_keys=keys)
        assert cp.size == size
        assert proof.leaf == ws.ledger.at(seq).record()


def test_inclusion_proof_fails_for_changed_leaf_path_or_foreign_key(ws: Workspace) -> None:
    _publish_some(ws, 9)
    ws.checkpoint()
    keys = ws.verifier_keys
    proof = ws.prove(GENESIS + 3)  # the event with i = 2
    verify_inclusion_proof(proof, verifier_keys=keys)

    forged_leaf = proof.leaf.replace(b'"i":2', b'"i":7')
    assert forged_leaf != proof.leaf
    with pytest.raises(ProofError):
        verify_inclusion_proof(
            InclusionProof(proof.seq, forged_leaf, proof.index, proof.size, proof.path, proof.checkpoint),
            verifier_keys=keys,
        )
    other_leaf = ws.ledger.at(5).record()
    with pytest.raises(ProofError):
        verify_inclusion_proof(
            InclusionProof(proof.seq, other_leaf, proof.index, proof.size, proof.path, proof.checkpoint),
            verifier_keys=keys,
        )
    for i in range(len(proof.path)):
        path = list(proof.path)
        path[i] = flip(path[i], 0)
        with pytest.raises(ProofError):
            verify_inclusion_proof(
                InclusionProof(proof.seq, proof.leaf, proof.index, proof.size, tuple(path), proof.checkpoint),
                verifier_keys=keys,
            )
    with pytest.raises(ProofError):  # the right path for another position
        verify_inclusion_proof(
            InclusionProof(proof.seq, proof.leaf, proof.index + 1, proof.size, proof.path, proof.checkpoint),
            verifier_keys=keys,
        )

    with open_workspace(":memory:", clock=ManualClock(), seed=99) as other:
        _publish_some(other, 9)
        other.checkpoint()
        with pytest.raises(SignatureError):
            verify_inclusion_proof(proof, verifier_keys=other.verifier_keys)
        with pytest.raises(SignatureError):
            other.check_proof(proof)
    forged_note = proof.checkpoint.replace(f"\n{proof.size}\n", f"\n{proof.size + 1}\n", 1)
    with pytest.raises(SignatureError):
        verify_inclusion_proof(
            InclusionProof(proof.seq, proof.leaf, proof.index, proof.size, proof.path, forged_note),
            verifier_keys=keys,
        )


def test_prove_needs_a_checkpoint_that_covers_the_event(ws: Workspace) -> None:
    _publish_some(ws, 3)
    with pytest.raises(LedgerError, match="no signed checkpoint"):
        ws.prove(2)
    ws.checkpoint()
    size, _ = ws.latest_checkpoint()
    ws.check_proof(ws.prove(size))
    with pytest.raises(LedgerError, match="no signed checkpoint covers seq"):
        ws.prove(size + 1)  # the checkpoint event itself is after the checkpoint


def test_consistency_proof_between_two_checkpoints(ws: Workspace) -> None:
    _publish_some(ws, 6)
    old_note = ws.checkpoint()
    _publish_some(ws, 11, start=6)
    new_note = ws.checkpoint()
    vkey = ws.verifier_keys[0]
    old = merkle.open_checkpoint(old_note, verifier_key=vkey)
    new = merkle.open_checkpoint(new_note, verifier_key=vkey)
    assert old.size < new.size
    proof = ws.ledger.consistency_proof(old.size, new.size)
    merkle.verify_consistency(
        old_size=old.size, new_size=new.size, old_root=old.root, new_root=new.root, proof=proof
    )
    with pytest.raises(ProofError):
        merkle.verify_consistency(
            old_size=old.size,
            new_size=new.size,
            old_root=old.root,
            new_root=new.root,
            proof=[flip(proof[0], 3), *proof[1:]],
        )
    with pytest.raises(ProofError):  # a history where the old tree differs
        merkle.verify_consistency(
            old_size=old.size, new_size=new.size, old_root=flip(old.root, 0), new_root=new.root, proof=proof
        )


# -- group commit --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_burst_of_100k_events_takes_a_handful_of_transactions(ws: Workspace) -> None:
    before_tx, (before_seq, _) = ws.ledger.transactions, ws.ledger.head
    events = ws.publish_many((Message("burst.item", {"i": i}) for i in range(100_000)), actor="bulk")
    assert len(events) == 100_000
    assert ws.ledger.transactions - before_tx <= 3
    assert [events[0].seq, events[-1].seq] == [before_seq + 1, before_seq + 100_000]
    count = ws.sql("SELECT count(*) AS n FROM events WHERE topic = 'burst.item'")["n"][0]
    assert count == 100_000
    assert ws.verify().ok


@pytest.mark.slow
def test_concurrent_publishers_share_transactions_and_get_durable_contiguous_seqs(file_ws: Any) -> None:
    ws = file_ws("concurrent.duckdb")  # SystemClock: live
    assert ws.live

    # A projection that takes a little time per batch widens the window in which other publishers queue
    # up behind the writing leader; group commit must fold them into its next transaction.
    ws.projections.register("slow", "burst.*", lambda con, events: time.sleep(0.002), tables=[])
    threads_n, per_thread = 8, 200
    start_seq, start_tx = ws.ledger.head[0], ws.ledger.transactions
    barrier = threading.Barrier(threads_n)
    results: list[list[Any]] = [[] for _ in range(threads_n)]
    not_durable: list[int] = []
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            reader = ws.con.cursor()  # a separate connection: sees only committed rows
            barrier.wait()
            for j in range(per_thread):
                event = ws.publish("burst.item", {"thread": t, "j": j}, actor=f"worker-{t}")
                results[t].append(event)
                if j % 10 == 0:
                    row = reader.execute("SELECT id FROM events WHERE seq = ?", [event.seq]).fetchone()
                    if row is None or row[0] != event.id:
                        not_durable.append(event.seq)
            reader.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors
    assert not not_durable
    events = [e for r in results for e in r]
    assert len(events) == threads_n * per_thread
    seqs = sorted(e.seq for e in events)
    assert seqs == list(range(start_seq + 1, start_seq + 1 + threads_n * per_thread))
    for r in results:  # each publisher's own events are in its publish order
        assert [e.payload["j"] for e in sorted(r, key=lambda e: e.seq)] == list(range(per_thread))
    stored = dict(ws.con.execute("SELECT seq, id FROM events WHERE seq > ?", [start_seq]).fetchall())
    assert stored == {e.seq: e.id for e in events}
    assert ws.verify().ok
    transactions = ws.ledger.transactions - start_tx
    assert transactions <= threads_n * per_thread // 2, f"{transactions} transactions: no sharing"


# -- replay --------------------------------------------------------------------------------------------------
class _Tuner(Loop):
    name = "tuner"
    topics = ("demo.*",)
    params: ClassVar[dict[str, Any]] = {"interval": 5.0, "gain": 1.0}

    def process(self, events: list[Any], scheduler: Any) -> dict[str, Any]:
        return {"seen": len(events)}


def _rich_workspace(ws: Workspace) -> None:
    """Several event kinds that feed projections: metrics, loop params, dead letters, checkpoints."""
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    ws.loops.add(_Tuner())

    def always_fails(event: Any) -> None:
        raise RuntimeError(f"cannot handle {event.topic}")

    ws.subscribe("demo.fragile", always_fails, name="fragile")
    ws.publish("demo.fragile", {"x": 1}, actor="tester")
    for _ in range(ws.mesh.max_attempts + 1):  # retries back off on the workspace clock
        clock.advance(5)
        ws.mesh.pump()
    ws.metrics.record("queue_depth", 3.5, labels={"queue": "a"})
    ws.metrics.record_many([("latency_ms", 12.0, {}), ("latency_ms", 30.0, {})], kind="histogram")
    ws.loops.set_param("tuner", "gain", 2.5, actor="system", reason="test")
    ws.checkpoint()
    ws.loops.set_param("tuner", "interval", 7.0, actor="system")
    ws.loops.step("tuner")
    clock.advance(60)
    ws.publish("demo.note", {"text": "naïve café ☕", "nested": {"a": [1, None, 2.5]}}, actor="tester")
    ws.checkpoint()


def test_replay_rebuilds_the_same_state(ws: Workspace, tmp_path: Path) -> None:
    _rich_workspace(ws)
    counts = {t: int(ws.sql(f'SELECT count(*) AS n FROM "{t}"')["n"][0]) for t in ws.projections.tables}
    for table in ("dead_letters", "loop_params", "metric_samples", "checkpoints", "signing_keys"):
        assert counts[table] > 0, f"{table} is empty: the comparison would prove nothing"
    replayed = replay(ws, tmp_path / "r.duckdb")
    try:
        assert projection_differences(ws, replayed) == {}
        assert replayed.ledger.head == ws.ledger.head
        assert replayed.origin == ws.origin
        report = replayed.verify()
        assert report.ok
        assert report.checkpoints_checked == 2
        # The replayed copy carries the same public keys, so old proofs still check there.
        replayed.check_proof(ws.prove(3))
        # The comparison is not vacuous: one changed projection row shows up.
        replayed.con.execute("UPDATE loop_params SET value = '9.9' WHERE name = 'gain'")
        assert projection_differences(ws, replayed) == {"loop_params": 2}
    finally:
        replayed.close()


def test_replay_refuses_an_existing_file(ws: Workspace, tmp_path: Path) -> None:
    target = tmp_path / "exists.duckdb"
    target.write_bytes(b"")
    with pytest.raises(WorkspaceError, match="exists already"):
        replay(ws, target)
    assert target.read_bytes() == b""


def test_replay_refuses_a_tampered_ledger(ws: Workspace, tmp_path: Path) -> None:
    _publish_some(ws, 10)
    seq = GENESIS + 3
    ws.con.execute("UPDATE events SET actor = 'mallory' WHERE seq = ?", [seq])
    with pytest.raises(LedgerError, match=f"broken at seq {seq}"):
        replay(ws, tmp_path / "r.duckdb")
    assert list(tmp_path.iterdir()) == []  # no half-built copy left to block a retry
    ws.con.execute("UPDATE events SET actor = 'tester' WHERE seq = ?", [seq])
    with replay(ws, tmp_path / "r.duckdb") as replayed:
        assert replayed.ledger.head == ws.ledger.head


def test_checkpoint_is_governed_a_refusal_signs_nothing_and_is_recorded(ws: Workspace) -> None:
    ws.auth.register("ada", "a long enough admin password", role="admin", by="system")
    ws.auth.register("vic", "a long enough viewer password", role="viewer", by="system")
    _publish_some(ws, 3)
    head = ws.ledger.head
    for who in ("vic", "nobody-we-know"):
        with pytest.raises(PermissionDenied, match="sign checkpoints"):
            ws.checkpoint(actor=who)
        refusal = ws.ledger.at(ws.ledger.head[0])
        assert (refusal.topic, refusal.actor) == ("governance.decision", who)
        assert (refusal.payload["action"], refusal.payload["effect"]) == ("ledger.checkpoint", "deny")
    assert ws.checkpoints().empty
    assert ws.ledger.head[0] == head[0] + 2  # the two refusals, and no ledger.checkpoint event
    for who in ("ada", "system"):
        ws.checkpoint(actor=who)
        assert (ws.ledger.at(ws.ledger.head[0]).topic, ws.ledger.at(ws.ledger.head[0]).actor) == (
            "ledger.checkpoint",
            who,
        )
    assert len(ws.checkpoints()) == 2
