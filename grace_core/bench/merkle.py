"""Benchmarks of merkle trees and signed checkpoints: tree hashing and inclusion proofs."""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator

from grace_core.bench.core import REPEATS, Context, Figure, _best_rate, _percentile, _timed, benchmark, figure
from grace_core.errors import BenchError


@benchmark("merkle.root", figures=["merkle.root", "merkle.tree_append"])
def bench_merkle(ctx: Context) -> Iterator[Figure]:
    """RFC 6962 tree hashing of 32-byte leaves: ``merkle.root`` (leaf hashes, then the root in one pass) and
    ``MerkleTree.extend`` + ``root()`` (the incremental tree the ledger keeps for checkpoints and proofs)."""
    from grace_core import merkle

    n = ctx.size(1_000_000, 100_000, minimum=2)
    raw = random.Random(0).randbytes(32 * n)  # noqa: S311 - test data, not secrets
    leaves = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    del raw
    leaf_hash = merkle.leaf_hash
    sha256 = hashlib.sha256

    def hash_all() -> None:
        for leaf in leaves:
            sha256(leaf).digest()

    def root_once() -> bytes:
        return merkle.root([leaf_hash(leaf) for leaf in leaves])

    def tree_once() -> bytes:
        tree = merkle.MerkleTree()
        tree.extend(leaves)
        return tree.root()

    roots = [_timed(root_once) for _ in range(REPEATS)]
    trees = [_timed(tree_once) for _ in range(REPEATS)]
    if roots[0][1] != trees[0][1]:
        raise BenchError("merkle.root and MerkleTree disagree on the root")
    peer = _best_rate(n, [_timed(hash_all)[0] for _ in range(REPEATS)])
    yield figure("merkle.root", _best_rate(n, [s for s, _ in roots]), "leaves/s", "hashlib.sha256", peer)
    yield figure(
        "merkle.tree_append", _best_rate(n, [s for s, _ in trees]), "leaves/s", "hashlib.sha256", peer
    )


@benchmark("checkpoint.prove", figures=["checkpoint.prove_p50_ms"])
def bench_prove(ctx: Context) -> Iterator[Figure]:
    """Inclusion proof of a random event in a signed checkpoint of the benchmark ledger, generated and then
    checked standalone (signature + audit path) with only the public keys: median over many events."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from grace_core.workspace import verify_inclusion_proof

    ws = ctx.ledger()
    note = ws.checkpoint()  # builds the Merkle tree once; proofs then walk the cached tree
    size = ws.latest_checkpoint()[0]
    keys = ws.verifier_keys
    rng = random.Random(1)  # noqa: S311 - which events to prove, not secrets
    samples = ctx.size(300, 100, minimum=5)
    seqs = [rng.randint(1, size) for _ in range(samples)]

    def prove(seq: int) -> None:
        proof = ws.prove(seq)
        verify_inclusion_proof(proof, verifier_keys=keys)

    prove(seqs[0])  # warm up
    ours = sorted(_timed(functools.partial(prove, s))[0] for s in seqs)

    # Peer: the two steps a signed inclusion proof cannot skip: read the event, check one signature.
    key = Ed25519PrivateKey.generate()
    public, body = key.public_key(), note.encode("utf-8")
    signature = key.sign(body)
    reader = ws.ledger.reader()

    def floor(seq: int) -> None:
        row = reader.execute("SELECT * FROM events WHERE seq = ?", [seq]).fetchone()
        if row is None:
            raise BenchError(f"no event {seq}")
        public.verify(signature, body)

    floor(seqs[0])
    peer = sorted(_timed(functools.partial(floor, s))[0] for s in seqs)
    yield figure(
        "checkpoint.prove_p50_ms",
        _percentile(ours, 50) * 1e3,
        "ms",
        "duckdb.point_select+ed25519.verify",
        _percentile(peer, 50) * 1e3,
    )
