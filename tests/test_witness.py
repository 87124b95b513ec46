"""Witnesses: a copy of each signed checkpoint outside the workspace catches an attacker who holds the file.

Each attack here is what someone with write access to the workspace file (and so to the signing key stored
with it) can do with plain SQL: rewrite history and recompute every hash, re-sign the checkpoint events, cut
the tail. The attacker works on a closed workspace; verification runs in a fresh open, as a new process would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import clean_env, grace

from grace_core import ManualClock, Message, VerifyReport, Workspace, merkle, open_workspace, replay
from grace_core.errors import WitnessError
from grace_core.events import canonical_json
from grace_core.witness import MARK_BYTES, WITNESS_ENV, Witness, witness_paths

WITNESSED_ON = "2026-01-01 00:00:00 UTC"  # the ManualClock's start: witness records take the workspace clock


def _events(ws: Workspace, n: int, start: int = 0) -> None:
    ws.publish_many([Message("demo.tick", {"i": i}) for i in range(start, start + n)], actor="tester")


def make(path: Path, *blocks: int) -> list[int]:
    """A workspace file with ``blocks[i]`` events before its i-th checkpoint; returns the checkpoint sizes."""
    sizes = []
    with open_workspace(path, clock=ManualClock(), seed=5) as ws:
        done = 0
        for n in blocks:
            _events(ws, n, done)
            done += n
            ws.checkpoint()
            sizes.append(int(ws.ledger.at(ws.ledger.head[0]).payload["size"]))
        _events(ws, 3, done)  # a few events after the last checkpoint, as in any live workspace
    return sizes


@contextmanager
def attacker(path: Path) -> Iterator[Workspace]:
    """The file, opened by someone with write access: plain SQL on its tables, and its signing key."""
    ws = open_workspace(path, clock=ManualClock(), seed=99)
    try:
        yield ws
    finally:
        ws.close()


def verify(path: Path) -> VerifyReport:
    with open_workspace(path, clock=ManualClock()) as ws:
        return ws.verify()


def rebuild_checkpoint_rows(ws: Workspace) -> None:
    """The ``checkpoints`` projection as the forged events say (what replay would build from them)."""
    ws.con.execute("DELETE FROM checkpoints")
    ws.con.execute(
        """INSERT INTO checkpoints
           SELECT CAST(payload->>'size' AS BIGINT), from_hex(payload->>'root'), from_hex(payload->>'chain_hash'),
                  payload->>'note', id, ts
           FROM events WHERE topic = 'ledger.checkpoint'"""
    )


def rehash(ws: Workspace, k: int, *, key: merkle.SigningKey | None = None) -> None:
    """Recompute every hash from seq k on; with ``key``, also re-sign every checkpoint event from k on over the
    rewritten history (new Merkle root and chain hash), as the holder of the stored signing key can."""
    prev = ws.ledger.chain_hash(k - 1)
    records = [e.record() for e in ws.ledger.events(until=k - 1)]
    hashes: dict[int, bytes] = {}
    for event in ws.ledger.events(since=k - 1):
        if key is not None and event.topic == "ledger.checkpoint":
            size = event.payload["size"]
            chain = hashes.get(size) or ws.ledger.chain_hash(size)
            cp = merkle.Checkpoint(
                origin=ws.origin,
                size=size,
                root=merkle.root([merkle.leaf_hash(r) for r in records[:size]]),
                extensions=(f"chain {chain.hex()}",),
            )
            payload = canonical_json(
                {
                    "size": size,
                    "root": cp.root.hex(),
                    "chain_hash": chain.hex(),
                    "note": merkle.sign_checkpoint(cp, key),
                }
            )
            ws.con.execute("UPDATE events SET payload = ? WHERE seq = ?", [payload, event.seq])
            event = event._replace(payload_json=payload)
        digest = hashlib.sha256(prev + event.record()).digest()
        ws.con.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", [prev, digest, event.seq])
        hashes[event.seq] = prev = digest
        records.append(event.record())
    rebuild_checkpoint_rows(ws)


def forge(path: Path, k: int) -> None:
    """Rewrite event k, recompute every later hash and re-sign every later checkpoint with the stored key."""
    with attacker(path) as ws:
        ws.con.execute(
            "UPDATE events SET payload = '{\"forged\":true}', actor = 'mallory' WHERE seq = ?", [k]
        )
        rehash(ws, k, key=ws._signing_key())


def truncate(path: Path, keep: int) -> None:
    """Cut every event after ``keep``, and the checkpoint rows that would give it away."""
    with attacker(path) as ws:
        ws.con.execute("DELETE FROM events WHERE seq > ?", [keep])
        rebuild_checkpoint_rows(ws)


def cli_verify(path: Path) -> subprocess.CompletedProcess[str]:
    return grace("ledger", "verify", "--workspace", path)


# -- the witness file ----------------------------------------------------------------------------------------
def test_each_checkpoint_is_kept_beside_the_workspace_as_a_signed_note(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_workspace(path, clock=ManualClock(), seed=5) as ws:
        _events(ws, 10)
        note = ws.checkpoint()
        [vkey] = ws.verifier_keys
        head = ws.ledger.head[0]
        hashes = [e.hash for e in ws.ledger.events(until=head - 1)]
    witness = Path(f"{path}.witness")
    assert stat.S_IMODE(witness.stat().st_mode) == 0o600
    key, checkpoint = (json.loads(line) for line in witness.read_text().splitlines())
    assert (key["kind"], key["verifier_key"]) == ("key", vkey)  # pinned at first use
    assert (checkpoint["kind"], checkpoint["note"]) == ("checkpoint", note)
    # One mark per event: the first bytes of its chain hash, so a later rewrite can be located exactly.
    marks = base64.b64decode(checkpoint["marks"]["prefixes"])
    assert marks == b"".join(h[:MARK_BYTES] for h in hashes)
    report = verify(path)
    assert report.ok, report
    assert (report.witnessed, report.witnesses) == (1, (str(witness),))
    assert (
        str(report)
        == f"ledger intact: {head} events, 1 signed checkpoint matches, 1 witnessed checkpoint matches"
    )


def test_in_memory_workspaces_have_no_witness(ws: Workspace) -> None:
    assert ws.witnesses == []
    ws.checkpoint()
    assert str(ws.verify()).endswith("1 signed checkpoint matches")


# -- attacks on the file -------------------------------------------------------------------------------------
def test_rewritten_history_resigned_with_the_stored_key_is_caught_at_the_changed_seq(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    sizes = make(path, 12, 9, 7)
    k = sizes[0] + 4  # an event between the first and the second checkpoint
    forge(path, k)
    # Without the witness the forgery is perfect: every hash links and every checkpoint event is validly signed.
    hidden = tmp_path / "copy.duckdb"
    shutil.copy(path, hidden)
    assert verify(hidden).ok
    report = verify(path)
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == ("rewritten", k)
    assert report.reason == (
        f"the chain was rewritten from seq {k}: it differs from the checkpoint of size {sizes[1]} "
        f"witnessed on {WITNESSED_ON} ({path}.witness)"
    )
    done = cli_verify(path)
    assert done.returncode == 1
    assert done.stdout == f"ledger broken at seq {k}: {report.reason}\n"


def test_history_rewritten_and_rehashed_without_the_checkpoint_rows_is_caught_at_the_changed_seq(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.duckdb"
    sizes = make(path, 30)
    k = 11
    with attacker(path) as ws:
        ws.con.execute("UPDATE events SET actor = 'mallory' WHERE seq = ?", [k])
        rehash(ws, k)
        ws.con.execute("DELETE FROM checkpoints")
    report = verify(path)
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == ("rewritten", k)
    assert f"differs from the checkpoint of size {sizes[0]} witnessed on {WITNESSED_ON}" in (
        report.reason or ""
    )


def test_a_cut_tail_is_reported_against_the_witness(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    sizes = make(path, 15, 10)
    keep = sizes[1] - 6
    truncate(path, keep)
    report = verify(path)
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq, report.size) == ("shortened", keep + 1, keep)
    assert report.reason == (
        f"ledger has {keep} events but a checkpoint of size {sizes[1]} was witnessed on {WITNESSED_ON} "
        f"({path}.witness)"
    )
    done = cli_verify(path)
    assert (done.returncode, done.stdout) == (1, f"ledger broken at seq {keep + 1}: {report.reason}\n")


def test_a_tail_cut_and_regrown_is_reported_at_the_first_replaced_event(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    sizes = make(path, 20)
    keep = sizes[0] - 8
    truncate(path, keep)
    with attacker(path) as ws:  # a fresh process: appends a new tail after the cut, longer than the old one
        _events(ws, 40, 1000)
    report = verify(path)
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == ("rewritten", keep + 1)


def test_a_key_swapped_forgery_is_checked_with_the_key_pinned_in_the_witness(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    sizes = make(path, 10, 10)
    with attacker(path) as ws:
        # A new key on the chain in place of the published one, and every checkpoint re-signed with it.
        mallory = merkle.SigningKey.generate(ws.origin)
        [published] = ws.ledger.events(topic="ledger.key_published")
        payload = canonical_json({"key_name": mallory.name, "verifier_key": mallory.verifier_key()})
        ws.con.execute("UPDATE events SET payload = ? WHERE seq = ?", [payload, published.seq])
        ws.con.execute("UPDATE signing_keys SET verifier_key = ?", [mallory.verifier_key()])
        rehash(ws, published.seq, key=mallory)
    forged = tmp_path / "forged.duckdb"
    shutil.copy(path, forged)
    assert verify(forged).ok  # consistent in itself: the workspace's own keys vouch for the forgery
    # The genuine witnessed notes still verify, with the key pinned at first use, and pin the original chain.
    report = verify(path)
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == ("rewritten", published.seq)
    assert f"checkpoint of size {sizes[0]} witnessed" in (report.reason or "")


def test_a_witness_never_accepts_a_new_key_silently(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    make(path, 10)
    witness = Witness(f"{path}.witness")
    with open_workspace(path, clock=ManualClock()) as ws:
        other = merkle.SigningKey.generate(ws.origin)
        cp = ws.ledger.make_checkpoint(origin=ws.origin)
        note = merkle.sign_checkpoint(cp, other)
        before = witness.path.read_bytes()
        with pytest.raises(WitnessError, match="never pinned"):
            witness.record(ws.ledger, cp, note, verifier_key=other.verifier_key(), at=ws.clock.now())
        assert witness.path.read_bytes() == before
        # Replaced on purpose: pinned explicitly, then accepted.
        assert witness.pin(origin=ws.origin, verifier_key=other.verifier_key(), at=ws.clock.now())
        witness.record(ws.ledger, cp, note, verifier_key=other.verifier_key(), at=ws.clock.now())
        assert ws.verify().ok
    # A note appended by anyone else, under a key the witness never pinned, makes the witness unacceptable.
    stranger = merkle.SigningKey.generate(other.name)
    record = {
        "kind": "checkpoint",
        "at": "2026-01-02T00:00:00+00:00",
        "note": merkle.sign_checkpoint(cp, stranger),
    }
    with witness.path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    report = verify(path)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "witness", None)
    assert "not signed by a key pinned in the witness" in str(report)


def test_a_replaced_key_is_pinned_on_purpose_from_the_shell(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    make(path, 5)
    with open_workspace(path, clock=ManualClock()) as ws:
        origin, [current] = ws.origin, ws.verifier_keys
    # A witness that pinned another key for this workspace: what a workspace whose key was replaced meets.
    external = tmp_path / "external.witness"
    Witness(external).pin(
        origin=origin, verifier_key=merkle.SigningKey.generate(origin).verifier_key(), at=ManualClock().now()
    )
    env = clean_env(**{WITNESS_ENV: str(external)})
    refused = grace("ledger", "checkpoint", "-w", path, env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith("grace: error: the checkpoint is signed by a key the witness")
    assert refused.stderr.count("\n") == 1
    pinned = grace("ledger", "pin-key", "-w", path, env=env)
    assert (pinned.returncode, pinned.stderr) == (0, "")
    assert pinned.stdout == f"already pinned in {path}.witness\npinned in {external}\n"
    assert grace("ledger", "checkpoint", "-w", path, env=env).returncode == 0
    assert current in {k.verifier_key for k in Witness(external).read().keys}
    verified = grace("ledger", "verify", "-w", path, env=env)
    assert verified.returncode == 0
    assert verified.stdout.endswith(
        ", 2 witnessed checkpoints match\n"
    )  # each once, though two witnesses hold it


def test_the_witness_refuses_to_cosign_a_fork_or_a_shortened_ledger(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    make(path, 10, 10)
    forge(path, 5)
    witness = Path(f"{path}.witness")
    before = witness.read_bytes()
    with open_workspace(path, clock=ManualClock()) as ws:
        head = ws.ledger.head
        with pytest.raises(WitnessError, match="does not extend the checkpoint of size"):
            ws.checkpoint()  # a consistency proof from the last witnessed tree fails
        assert ws.ledger.head == head  # nothing recorded
    done = grace("ledger", "checkpoint", "-w", path)
    assert done.returncode == 2
    assert done.stderr.startswith("grace: error: the ledger does not extend the checkpoint of size")
    assert done.stderr.count("\n") == 1
    assert witness.read_bytes() == before

    path = tmp_path / "short.duckdb"
    sizes = make(path, 10, 10)
    truncate(path, sizes[1] - 2)
    with open_workspace(path, clock=ManualClock()) as ws, pytest.raises(WitnessError, match="shortened"):
        ws.checkpoint()


def test_a_replaced_workspace_does_not_match_its_witness(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    make(path, 10)
    path.unlink()
    with open_workspace(path, clock=ManualClock(), seed=6) as ws:  # a new workspace at the same path
        _events(ws, 40)
        report = ws.verify()
        assert not report.ok, report
        assert report.problem == "witness"
        assert f"the witness {path}.witness belongs to workspace" in (report.reason or "")
        with pytest.raises(WitnessError, match="belongs to workspace"):
            ws.checkpoint()


def test_an_external_witness_catches_what_the_one_beside_the_file_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv(WITNESS_ENV, str(elsewhere))
    path = tmp_path / "ws" / "w.duckdb"
    path.parent.mkdir()
    [beside, external] = witness_paths(str(path))
    assert external.parent == elsewhere
    sizes = make(path, 12)
    forge(path, 7)
    beside.unlink()  # the attacker removes the witness next to the file too
    report = verify(path)
    assert not report.ok, report
    assert (report.problem, report.first_bad_seq) == ("rewritten", 7)
    assert report.reason == (
        f"the chain was rewritten from seq 7: it differs from the checkpoint of size {sizes[0]} witnessed on "
        f"{WITNESSED_ON} ({external})"
    )
    # A plain file path works as well.
    monkeypatch.setenv(WITNESS_ENV, str(tmp_path / "one.witness"))
    assert witness_paths(str(path))[1] == tmp_path / "one.witness"


def test_a_record_torn_by_a_crash_is_ignored_and_cut_before_the_next(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    make(path, 10)
    witness = Path(f"{path}.witness")
    whole = witness.read_bytes()
    with witness.open("ab") as f:
        f.write(b'{"kind":"checkpoint","at":"2026-01-01T00:0')  # the write a crash interrupted
    assert verify(path).ok
    with open_workspace(path, clock=ManualClock()) as ws:
        ws.checkpoint()
        assert ws.verify().witnessed == 2
    lines = witness.read_bytes().splitlines(keepends=True)
    assert b"".join(lines[:2]) == whole
    assert len(lines) == 3


def test_a_replay_starts_its_own_witness(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    make(path, 10, 5)
    with open_workspace(path, clock=ManualClock()) as ws, replay(ws, tmp_path / "r.duckdb") as copy:
        assert copy.verify().ok  # a new file: its witness starts empty; the chain's checkpoints still hold
        copy.checkpoint()  # a new key (secrets are not replayed), pinned at first use by the new witness
        report = copy.verify()
        assert (report.ok, report.witnessed, report.witnesses) == (
            True,
            1,
            (f"{tmp_path / 'r.duckdb'}.witness",),
        )


HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])  # holds the file's lock and never answers snapshot requests
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_an_older_snapshot_copy_may_be_behind_the_witness(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    sizes = make(path, 10)
    with open_workspace(path, clock=ManualClock()) as ws:
        older = ws.export_snapshot().read_bytes()
        _events(ws, 5)
        ws.checkpoint()
    Path(f"{path}.snapshot").write_bytes(older)  # the copy an owner that crashed would have left behind
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        # The owner does not answer within 10 s: the older (consistent) snapshot is opened instead.
        with open_workspace(path, snapshot=True) as snap:
            assert snap.snapshot_of == str(path)
            report = snap.verify()
    finally:
        holder.kill()
        holder.wait()
    assert (report.ok, report.witnessed) == (True, 1), report
    assert report.size < sizes[0] + 10
    assert verify(path).witnessed == 2


# -- property: every truncation and rewrite under a witnessed checkpoint is caught and located ------------------
@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d) / "w.duckdb"


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.integers(1, 25), min_size=1, max_size=3), data=st.data())
def test_any_cut_or_rewrite_under_a_witnessed_checkpoint_is_caught_and_located(
    blocks: list[int], data: st.DataObject
) -> None:
    with _scratch() as path:
        sizes = make(path, *blocks)
        attack = data.draw(st.sampled_from(["cut", "rewrite", "rewrite and re-sign", "cut and regrow"]))
        # From seq 2: a ledger cut to nothing is not a ledger (the next open starts a new one).
        point = data.draw(st.integers(2, sizes[-1]), label="first seq changed or lost")
        if attack == "cut":
            truncate(path, point - 1)
        elif attack == "cut and regrow":
            truncate(path, point - 1)
            with attacker(path) as ws:
                _events(ws, data.draw(st.integers(1, 60), label="regrown"), 1000)
        else:
            with attacker(path) as ws:
                ws.con.execute("UPDATE events SET actor = 'mallory' WHERE seq = ?", [point])
                rehash(ws, point, key=ws._signing_key() if attack.endswith("re-sign") else None)
                ws.con.execute("DELETE FROM checkpoints")
        with open_workspace(path, clock=ManualClock()) as ws:
            n = ws.ledger.head[0]
            report = ws.verify()
        assert not report.ok, (attack, point, report)
        expected = "shortened" if attack == "cut" else "rewritten"
        assert (report.problem, report.first_bad_seq) == (expected, point), (attack, n, report)
