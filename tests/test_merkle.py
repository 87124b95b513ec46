"""Tests for grace_core.merkle: published RFC 6962 vectors, properties, and signed checkpoints."""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_core.errors import ProofError, SignatureError
from grace_core.merkle import (
    EMPTY_ROOT,
    Checkpoint,
    MerkleTree,
    SigningKey,
    _open_note,
    _sign_note,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    open_checkpoint,
    root,
    sign_checkpoint,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# --- published vectors ----------------------------------------------------------------------------
# Leaves, node hashes and roots: github.com/transparency-dev/merkle testonly/constants.go
# (LeafInputs, NodeHashes, RootHashes, EmptyRootHash), the same data as google/trillian's merkle tests.
LEAVES = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]
NODE_HASHES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
ROOTS = [  # indexed by tree size, 0..8
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# Proof vectors: github.com/transparency-dev/merkle proof/verify_test.go (inclusionProofs,
# consistencyProofs). The Go file numbers leaves from 1; here they are 0-based leaf indices.
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")  # from verify_test.go
LEAF_HASHES = [leaf_hash(d) for d in LEAVES]


# --- an independent, literally recursive RFC 6962 §2.1 reference ---------------------------------
def _ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _ref_k(len(d))
    return _ref_node(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = _ref_k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _ref_k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def flip(b: bytes, mask: int = 8) -> bytes:
    return bytes([b[0] ^ mask]) + b[1:]


# --- hashing and roots ---------------------------------------------------------------------------
def test_hasher_vectors() -> None:
    # transparency-dev/merkle rfc6962/rfc6962_test.go TestRFC6962Hasher
    assert root([]) == EMPTY_ROOT == h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    node = h("aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb")
    assert node_hash(b"N123", b"N456") == node


def test_node_hash_vectors() -> None:
    assert NODE_HASHES[0] == LEAF_HASHES
    for below, expected in itertools.pairwise(NODE_HASHES):
        assert [node_hash(below[i], below[i + 1]) for i in range(0, len(below), 2)] == expected


@pytest.mark.parametrize("size", range(9))
def test_root_vectors(size: int) -> None:
    assert root(LEAF_HASHES[:size]) == ROOTS[size]
    tree = MerkleTree()
    tree.extend(LEAVES)
    assert tree.root(size) == ROOTS[size]


def test_root_matches_recursive_reference_exhaustively() -> None:
    # The level-by-level "carry the odd node up" rule equals the RFC's split at the largest power of two.
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(300)]
    for n in range(301):
        assert root(hashes[:n]) == ref_mth(hashes[:n]), n


def test_root_of_a_million_leaves_is_fast() -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(1_000_000)]
    start = time.perf_counter()
    result = root(hashes)
    assert time.perf_counter() - start < 10  # typically well under a second; generous for slow CI
    tree = MerkleTree()
    tree.extend(i.to_bytes(4, "big") for i in range(1_000_000))
    assert tree.root() == result


# --- inclusion -----------------------------------------------------------------------------------
def _inclusion_probes(index: int, size: int, proof: list[bytes], rt: bytes, leaf: bytes) -> list[tuple]:
    # Ported from corruptInclusionProof in transparency-dev/merkle proof/verify_test.go.
    probes: list[tuple] = [
        (index - 1, size, rt, leaf, proof),
        (index + 1, size, rt, leaf, proof),
        (index ^ 2, size, rt, leaf, proof),
        (index, size * 2, rt, leaf, proof),
        (index, size // 2, rt, leaf, proof),
        (index, size, rt, b"WrongLeaf", proof),
        (index, size, EMPTY_ROOT, leaf, proof),
        (index, size, SOME_HASH, leaf, proof),
        (index, size, rt, leaf, [*proof, b""]),
        (index, size, rt, leaf, [*proof, rt]),
        (index, size, rt, leaf, [b"", *proof]),
        (index, size, rt, leaf, [rt, *proof]),
    ]
    for i in range(len(proof)):
        probes.append((index, size, rt, leaf, [*proof[:i], flip(proof[i]), *proof[i + 1 :]]))
    if proof:
        probes.append((index, size, rt, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append((index, size, rt, leaf, [proof[0], SOME_HASH, *proof[1:]]))
    return probes


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_VECTORS)
def test_inclusion_vectors(index: int, size: int, expected: list[bytes]) -> None:
    tree = MerkleTree()
    tree.extend(LEAVES)
    assert inclusion_proof(LEAF_HASHES, index, size) == expected
    assert tree.inclusion_proof(index, size) == expected
    verify_inclusion(leaf=LEAVES[index], index=index, size=size, proof=expected, root=ROOTS[size])
    for i, s, rt, leaf, proof in _inclusion_probes(index, size, expected, ROOTS[size], LEAVES[index]):
        with pytest.raises(ProofError):
            verify_inclusion(leaf=leaf, index=i, size=s, proof=proof, root=rt)


def test_inclusion_single_entry() -> None:
    # After TestVerifyInclusionSingleEntry / TestVerifyInclusion in proof/verify_test.go.
    rt = leaf_hash(b"data")
    verify_inclusion(leaf=b"data", index=0, size=1, proof=[], root=rt)
    for bad_root in (b"", EMPTY_ROOT):
        with pytest.raises(ProofError):
            verify_inclusion(leaf=b"data", index=0, size=1, proof=[], root=bad_root)
    for index, size in [(0, 0), (1, 0), (2, 1), (1, 1), (-1, 1)]:
        with pytest.raises(ProofError):
            verify_inclusion(leaf=b"data", index=index, size=size, proof=[], root=rt)


def test_proof_generation_rejects_bad_arguments() -> None:
    tree = MerkleTree()
    tree.extend(LEAVES)
    for index, size in [(0, 0), (8, 8), (-1, 8), (3, 3), (0, 9), (0, -1)]:
        with pytest.raises(ProofError):
            inclusion_proof(LEAF_HASHES, index, size)
        with pytest.raises(ProofError):
            tree.inclusion_proof(index, size)
    for old, new in [(5, 4), (-1, 3), (0, 9), (9, 9)]:
        with pytest.raises(ProofError):
            consistency_proof(LEAF_HASHES, old, new)
        with pytest.raises(ProofError):
            tree.consistency_proof(old, new)
    with pytest.raises(ProofError):
        tree.root(9)
    assert consistency_proof(LEAF_HASHES, 0) == consistency_proof(LEAF_HASHES, 8) == []
    assert inclusion_proof(LEAF_HASHES, 7) == ref_path(7, LEAF_HASHES)


# --- consistency ---------------------------------------------------------------------------------
def _consistency_probes(s1: int, s2: int, r1: bytes, r2: bytes, proof: list[bytes]) -> list[tuple]:
    # Ported from corruptConsistencyProof in transparency-dev/merkle proof/verify_test.go.
    probes: list[tuple] = [
        (s1 - 1, s2, r1, r2, proof),
        (s1 + 1, s2, r1, r2, proof),
        (s1 ^ 2, s2, r1, r2, proof),
        (s1, s2 * 2, r1, r2, proof),
        (s1, s2 // 2, r1, r2, proof),
        (s1, s2, b"WrongRoot", r2, proof),
        (s1, s2, r1, b"WrongRoot", proof),
        (s1, s2, SOME_HASH, r2, proof),
        (s1, s2, r1, SOME_HASH, proof),
        (s1, s2, r2, r1, proof),
        (s1, s2, r1, r2, []),
        (s1, s2, r1, r2, [*proof, b""]),
        (s1, s2, r1, r2, [*proof, r1]),
        (s1, s2, r1, r2, [*proof, r2]),
        (s1, s2, r1, r2, [b"", *proof]),
        (s1, s2, r1, r2, [r1, *proof]),
        (s1, s2, r1, r2, [r2, *proof]),
        (s1, s2, r1, r2, [proof[0], *proof]),
        (s1, s2, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        probes.append((s1, s2, r1, r2, [*proof[:i], flip(proof[i], 16), *proof[i + 1 :]]))
    return probes


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY_VECTORS)
def test_consistency_vectors(old: int, new: int, expected: list[bytes]) -> None:
    tree = MerkleTree()
    tree.extend(LEAVES)
    assert consistency_proof(LEAF_HASHES, old, new) == expected
    assert tree.consistency_proof(old, new) == expected
    verify_consistency(old_size=old, new_size=new, old_root=ROOTS[old], new_root=ROOTS[new], proof=expected)
    if not expected:
        return
    for s1, s2, r1, r2, proof in _consistency_probes(old, new, ROOTS[old], ROOTS[new], expected):
        with pytest.raises(ProofError):
            verify_consistency(old_size=s1, new_size=s2, old_root=r1, new_root=r2, proof=proof)


@pytest.mark.parametrize(
    ("old", "new", "old_root", "new_root", "proof", "ok"),
    [
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 3, EMPTY_ROOT, ROOTS[3], [], True),
        (1, 1, ROOTS[1], ROOTS[1], [], True),
        (1, 1, ROOTS[1], ROOTS[2], [], False),  # same size, different roots
        (0, 0, SOME_HASH, SOME_HASH, [], False),  # an empty tree has exactly one root
        (0, 3, SOME_HASH, ROOTS[3], [], False),
        (1, 0, ROOTS[1], EMPTY_ROOT, [], False),  # time travel to the past
        (2, 1, ROOTS[2], ROOTS[1], [], False),
        (1, 2, ROOTS[1], ROOTS[2], [], False),  # empty proof
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),  # roots match but the proof is not empty
        (0, 1, EMPTY_ROOT, ROOTS[1], [EMPTY_ROOT], False),
        (1, 1, ROOTS[1], ROOTS[1], [EMPTY_ROOT], False),
        (-1, 1, EMPTY_ROOT, ROOTS[1], [], False),
    ],
)
def test_consistency_edge_cases(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes], ok: bool
) -> None:
    kwargs = {"old_size": old, "new_size": new, "old_root": old_root, "new_root": new_root, "proof": proof}
    if ok:
        verify_consistency(**kwargs)
    else:
        with pytest.raises(ProofError):
            verify_consistency(**kwargs)


# --- properties ----------------------------------------------------------------------------------
# Unique leaves: with duplicates a proof for one position can honestly verify at another.
trees = st.lists(st.binary(max_size=12), min_size=1, max_size=200, unique=True)


@settings(max_examples=60, deadline=None)
@given(datas=st.lists(st.binary(max_size=12), max_size=200))
def test_root_matches_reference(datas: list[bytes]) -> None:
    hashes = [leaf_hash(d) for d in datas]
    assert root(hashes) == ref_mth(hashes)


@settings(max_examples=40, deadline=None)
@given(datas=trees, data=st.data())
def test_every_inclusion_proof_verifies_and_detects_tampering(
    datas: list[bytes], data: st.DataObject
) -> None:
    tree = MerkleTree()
    tree.extend(datas)
    hashes = [leaf_hash(d) for d in datas]
    n, rt = len(datas), root(hashes)
    probe = data.draw(st.integers(0, n - 1), label="probe")
    assert inclusion_proof(hashes, probe) == tree.inclusion_proof(probe) == ref_path(probe, hashes)
    for i, leaf in enumerate(datas):
        proof = tree.inclusion_proof(i)
        verify_inclusion(leaf=leaf, index=i, size=n, proof=proof, root=rt)
        bad = [(leaf + b"x", i, proof, rt), (leaf, i, proof, flip(rt))]
        if n > 1:
            bad.append((leaf, (i + data.draw(st.integers(1, n - 1), label="shift")) % n, proof, rt))
        bad += [(leaf, i, [*proof[:j], flip(proof[j]), *proof[j + 1 :]], rt) for j in range(len(proof))]
        for bad_leaf, bad_index, bad_proof, bad_root in bad:
            with pytest.raises(ProofError):
                verify_inclusion(leaf=bad_leaf, index=bad_index, size=n, proof=bad_proof, root=bad_root)


@settings(max_examples=40, deadline=None)
@given(datas=trees, data=st.data())
def test_every_consistency_proof_verifies_and_detects_altered_roots(
    datas: list[bytes], data: st.DataObject
) -> None:
    tree = MerkleTree()
    tree.extend(datas)
    hashes = [leaf_hash(d) for d in datas]
    n = len(datas)
    m = data.draw(st.integers(1, n), label="probe")
    assert consistency_proof(hashes, m) == tree.consistency_proof(m) == ref_subproof(m, hashes, True)
    new_root = tree.root()
    for old in range(n + 1):
        old_root = tree.root(old)
        proof = tree.consistency_proof(old)
        verify_consistency(old_size=old, new_size=n, old_root=old_root, new_root=new_root, proof=proof)
        with pytest.raises(ProofError):
            verify_consistency(
                old_size=old, new_size=n, old_root=flip(old_root), new_root=new_root, proof=proof
            )
        if old > 0:  # nothing about the new root can be checked against an empty old tree
            with pytest.raises(ProofError):
                verify_consistency(
                    old_size=old, new_size=n, old_root=old_root, new_root=flip(new_root), proof=proof
                )


@settings(max_examples=40, deadline=None)
@given(datas=st.lists(st.binary(max_size=12), max_size=150), data=st.data())
def test_incremental_tree_matches_batch(datas: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree()
    hashes: list[bytes] = []
    for d in datas:  # grow one leaf at a time, checking the current head after every append
        assert tree.append_leaf(d) == len(hashes)
        hashes.append(leaf_hash(d))
        assert tree.size == len(hashes)
        assert tree.root() == root(hashes)
    for size in range(len(datas) + 1):
        assert tree.root(size) == root(hashes[:size])
    if datas:
        size = data.draw(st.integers(1, len(datas)), label="size")
        index = data.draw(st.integers(0, size - 1), label="index")
        old = data.draw(st.integers(0, size), label="old")
        assert tree.inclusion_proof(index, size) == inclusion_proof(hashes, index, size)
        assert tree.consistency_proof(old, size) == consistency_proof(hashes, old, size)


# --- signed notes (vectors) ----------------------------------------------------------------------
# The worked example in the package documentation of golang.org/x/mod/sumdb/note (note.go).
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_SIG_LINE = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_COSIG_LINE = (
    "\u2014 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)


def _go_key() -> SigningKey:
    raw = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])
    assert raw[0] == 1
    return SigningKey.from_bytes("PeterNeumann", raw[1:])


def test_go_note_vector() -> None:
    key = _go_key()
    assert key.verifier_key() == GO_VERIFIER_KEY
    assert key.key_id().hex() == "c74f20a3"
    note = _sign_note(GO_TEXT, key)  # Ed25519 is deterministic, so the bytes must match exactly
    assert note == GO_TEXT + "\n" + GO_SIG_LINE
    assert _open_note(note, GO_VERIFIER_KEY) == GO_TEXT
    # An unknown cosigner's signature is ignored, before or after ours.
    assert _open_note(note + GO_COSIG_LINE, GO_VERIFIER_KEY) == GO_TEXT
    assert _open_note(GO_TEXT + "\n" + GO_COSIG_LINE + GO_SIG_LINE, GO_VERIFIER_KEY) == GO_TEXT
    with pytest.raises(SignatureError):  # a valid note, but its text is not a checkpoint
        open_checkpoint(note, verifier_key=GO_VERIFIER_KEY)


# --- checkpoints ---------------------------------------------------------------------------------
LOG_KEY = SigningKey.generate("example.com/log")
OTHER_KEY = SigningKey.generate("example.com/other")
SAME_NAME_KEY = SigningKey.generate("example.com/log")
CP = Checkpoint("example.com/log", 8, ROOTS[8])


def test_checkpoint_body_is_exact() -> None:
    cp = Checkpoint("example.com/log", 5, bytes(32), ("ext one", "two"))
    assert cp.body() == b"example.com/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next one\ntwo\n"
    assert Checkpoint("o", 0, EMPTY_ROOT).body() == b"o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"


def test_sign_checkpoint_format() -> None:
    note = sign_checkpoint(CP, LOG_KEY)
    body, sig_line = note.split("\n\n")
    assert (body + "\n").encode() == CP.body()
    assert sig_line.startswith("\u2014 example.com/log ")
    assert sig_line.endswith("\n")
    sig = base64.b64decode(sig_line.split(" ")[2])
    assert len(sig) == 68
    assert sig[:4] == LOG_KEY.key_id()
    LOG_KEY.private_key.public_key().verify(sig[4:], CP.body())
    assert open_checkpoint(note, verifier_key=LOG_KEY.verifier_key()) == CP


lines = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=30)
key_names = st.text(
    st.characters(min_codepoint=0x21, blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
    min_size=1,
    max_size=20,
).filter(lambda s: "+" not in s and not any(c.isspace() for c in s))


@settings(max_examples=80, deadline=None)
@given(
    origin=lines,
    size=st.integers(0, 2**64 - 1),
    rt=st.binary(min_size=32, max_size=32),
    extensions=st.lists(lines, max_size=4).map(tuple),
    name=key_names,
)
def test_checkpoint_round_trip(
    origin: str, size: int, rt: bytes, extensions: tuple[str, ...], name: str
) -> None:
    key = SigningKey.generate(name)
    cp = Checkpoint(origin, size, rt, extensions)
    note = sign_checkpoint(cp, key)
    assert open_checkpoint(note, verifier_key=key.verifier_key()) == cp
    with pytest.raises(SignatureError):
        open_checkpoint(note, verifier_key=OTHER_KEY.verifier_key())


def _tamper(note: str, old: str, new: str) -> str:
    assert old in note
    return note.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n8\n", "\n9\n"),  # size
        ("example.com/log\n", "example.com/lof\n"),  # origin
        ("=\n\n", "=\nextension\n\n"),  # an added extension line
        ("\n8\n", "\n08\n"),  # same number, different bytes
    ],
)
def test_tampered_body_is_refused(old: str, new: str) -> None:
    note = sign_checkpoint(CP, LOG_KEY)
    with pytest.raises(SignatureError):
        open_checkpoint(_tamper(note, old, new), verifier_key=LOG_KEY.verifier_key())


def test_tampered_root_is_refused() -> None:
    note = sign_checkpoint(CP, LOG_KEY)
    b64 = base64.b64encode(CP.root).decode()
    forged = base64.b64encode(flip(CP.root)).decode()
    with pytest.raises(SignatureError):
        open_checkpoint(_tamper(note, b64, forged), verifier_key=LOG_KEY.verifier_key())


def test_wrong_key_is_refused() -> None:
    note = sign_checkpoint(CP, OTHER_KEY)
    with pytest.raises(SignatureError):
        open_checkpoint(note, verifier_key=LOG_KEY.verifier_key())


def test_same_name_other_key_is_refused() -> None:
    # Another key using the log's name: its key ID differs, so the line is ignored and nothing verifies.
    note = sign_checkpoint(CP, SAME_NAME_KEY)
    with pytest.raises(SignatureError, match="no signature"):
        open_checkpoint(note, verifier_key=LOG_KEY.verifier_key())
    # Relabelling that signature with the log key's ID makes it a known key whose signature fails.
    name, encoded = note.split("\n\n")[1].removeprefix("\u2014 ").split(" ")
    sig = LOG_KEY.key_id() + base64.b64decode(encoded)[4:]
    forged = f"{CP.body().decode()}\n\u2014 {name} {base64.b64encode(sig).decode()}\n"
    with pytest.raises(SignatureError, match="does not verify"):
        open_checkpoint(forged, verifier_key=LOG_KEY.verifier_key())
    # A good signature does not excuse a bad one from the same key.
    both = sign_checkpoint(CP, LOG_KEY) + forged.split("\n\n")[1]
    with pytest.raises(SignatureError):
        open_checkpoint(both, verifier_key=LOG_KEY.verifier_key())
    # ...but an unknown cosigner's signature is ignored.
    cosigned = sign_checkpoint(CP, LOG_KEY) + sign_checkpoint(CP, OTHER_KEY).split("\n\n")[1]
    assert open_checkpoint(cosigned, verifier_key=LOG_KEY.verifier_key()) == CP


def _resign(note: str, change: Callable[[bytes], bytes]) -> str:
    """Replace the (single) signature of ``note`` by ``change(signature bytes)``."""
    text, line = note.split("\n\n")
    prefix, encoded = line.rstrip("\n").rsplit(" ", 1)
    return f"{text}\n\n{prefix} {base64.b64encode(change(base64.b64decode(encoded))).decode()}\n"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.split("\n\n")[0] + "\n",  # no signature block
        lambda n: n.split("\n\n")[0] + "\n\n",  # blank line but no signature lines
        lambda n: n[:-1],  # last signature line not newline-terminated
        lambda n: n.replace("\u2014 ", "- "),  # not an em dash
        lambda n: n.replace("\u2014 ", "\u2014"),
        lambda n: n.replace("=\n\n", "=\n\n\n"),  # an extra blank line moves the split
        lambda n: n[:-3] + "!=\n",  # base64 garbage
        lambda n: _resign(n, lambda sig: sig[:-4]),  # truncated signature
        lambda n: _resign(n, lambda sig: sig + b"\x00"),  # overlong signature
        lambda n: _resign(n, lambda sig: sig[:4]),  # key ID only
        lambda n: n.replace("example.com/log ", "example.com/log  "),  # double space
        lambda n: n.replace("\n8\n", "\n8\r\n"),  # control character
        lambda n: n + "\u2014 x AAAA\n",  # too-short signature from anyone
        lambda n: n + "\u2014 bad+name " + n.split(" ")[-1],
    ],
)
def test_malformed_notes_are_refused(mangle: object) -> None:
    assert callable(mangle)
    note = mangle(sign_checkpoint(CP, LOG_KEY))
    with pytest.raises(SignatureError):
        open_checkpoint(note, verifier_key=LOG_KEY.verifier_key())


ROOT_B64 = base64.b64encode(CP.root).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"example.com/log\n+8\n{ROOT_B64}\n",
        f"example.com/log\n08\n{ROOT_B64}\n",
        f"example.com/log\n-1\n{ROOT_B64}\n",
        f"example.com/log\n 8\n{ROOT_B64}\n",
        f"example.com/log\n8 \n{ROOT_B64}\n",
        f"example.com/log\n1_0\n{ROOT_B64}\n",
        f"example.com/log\n\u0668\n{ROOT_B64}\n",  # ARABIC-INDIC DIGIT EIGHT
        f"example.com/log\n\n{ROOT_B64}\n",
        f"example.com/log\n{2**64}\n{ROOT_B64}\n",
        f"example.com/log\n{'9' * 5000}\n{ROOT_B64}\n",
        "example.com/log\n8\nnot base64!\n",
        f"example.com/log\n8\n{base64.b64encode(CP.root[:31]).decode()}\n",  # 31-byte root
        f"example.com/log\n8\n{ROOT_B64[:-2]}\n",  # unpadded
        f"example.com/log\n8\n{ROOT_B64[:-2]}9=\n",  # non-canonical trailing bits
        f"example.com/log\n8\n{ROOT_B64}\n\nextension\n",  # empty extension line
        "example.com/log\n8\n",  # too few lines
        f"\n8\n{ROOT_B64}\n",  # empty origin
    ],
)
def test_malformed_checkpoint_bodies_are_refused_even_when_signed(text: str) -> None:
    note = _sign_note(text, LOG_KEY)
    with pytest.raises(SignatureError):
        open_checkpoint(note, verifier_key=LOG_KEY.verifier_key())


def _vkey(name: str, key_id: str, key: bytes) -> str:
    return f"{name}+{key_id}+{base64.b64encode(key).decode()}"


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "example.com/log",
        LOG_KEY.verifier_key().replace("example.com/log+", "example.com/lof+"),  # hash no longer matches
        _vkey("example.com/log", "00000000", b"\x01" + LOG_KEY.public_bytes()),
        _vkey("example.com/log", LOG_KEY.key_id().hex(), b"\x02" + LOG_KEY.public_bytes()),
        _vkey("example.com/log", LOG_KEY.key_id().hex(), b"\x01" + LOG_KEY.public_bytes()[:31]),
        _vkey("example.com/log", LOG_KEY.key_id().hex()[:7], b"\x01" + LOG_KEY.public_bytes()),
        _vkey("example.com/log", "c74f20ag", b"\x01" + LOG_KEY.public_bytes()),
        _vkey("example.com log", LOG_KEY.key_id().hex(), b"\x01" + LOG_KEY.public_bytes()),
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    note = sign_checkpoint(CP, LOG_KEY)
    with pytest.raises(SignatureError):
        open_checkpoint(note, verifier_key=vkey)


def test_verifier_key_format_and_uppercase_hex() -> None:
    name, key_id, encoded = LOG_KEY.verifier_key().split("+", 2)
    assert name == "example.com/log"
    pub = LOG_KEY.public_bytes()
    assert key_id == hashlib.sha256(b"example.com/log\n\x01" + pub).digest()[:4].hex()
    assert base64.b64decode(encoded) == b"\x01" + pub
    note = sign_checkpoint(CP, LOG_KEY)
    assert open_checkpoint(note, verifier_key=_vkey(name, key_id.upper(), b"\x01" + pub)) == CP


@pytest.mark.parametrize(
    "make",
    [
        lambda: Checkpoint("", 1, EMPTY_ROOT),
        lambda: Checkpoint("a\nb", 1, EMPTY_ROOT),
        lambda: Checkpoint("a\x00", 1, EMPTY_ROOT),
        lambda: Checkpoint("\ud800", 1, EMPTY_ROOT),  # lone surrogate: not encodable as UTF-8
        lambda: Checkpoint("o", -1, EMPTY_ROOT),
        lambda: Checkpoint("o", 2**64, EMPTY_ROOT),
        lambda: Checkpoint("o", True, EMPTY_ROOT),
        lambda: Checkpoint("o", 1, EMPTY_ROOT[:31]),
        lambda: Checkpoint("o", 1, EMPTY_ROOT, ("",)),
        lambda: Checkpoint("o", 1, EMPTY_ROOT, ("a\nb",)),
        lambda: SigningKey.generate(""),
        lambda: SigningKey.generate("a b"),
        lambda: SigningKey.generate("a+b"),
        lambda: SigningKey.generate("a\u00a0b"),  # a Unicode space
        lambda: SigningKey.from_bytes("ok", b"\x00" * 31),
        lambda: _sign_note("no final newline", LOG_KEY),
    ],
)
def test_invalid_values_are_refused(make: object) -> None:
    assert callable(make)
    with pytest.raises(SignatureError):
        make()


def test_signing_key_bytes_round_trip() -> None:
    copy = SigningKey.from_bytes(LOG_KEY.name, LOG_KEY.private_bytes())
    assert len(LOG_KEY.private_bytes()) == 32
    assert copy.verifier_key() == LOG_KEY.verifier_key()
    assert "private_key" not in repr(LOG_KEY)
    assert sign_checkpoint(CP, copy) == sign_checkpoint(CP, LOG_KEY)
