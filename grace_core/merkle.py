"""RFC 6962 / RFC 9162 Merkle trees and C2SP signed checkpoints (pure functions, no database).

Leaves are hashed as ``SHA-256(0x00 || data)`` and interior nodes as ``SHA-256(0x01 || left || right)``,
so a leaf can never be passed off as a node. Checkpoints follow c2sp.org/tlog-checkpoint inside a
c2sp.org/signed-note signed with Ed25519 (signature type 0x01).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from grace_core.errors import ProofError, SignatureError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_SubtreeHash = Callable[[int, int], bytes]  # MTH of leaves [lo, hi)


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash over already leaf-hashed leaves; the empty tree hashes to SHA-256("")."""
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    sha256 = hashlib.sha256
    while len(level) > 1:
        # Pairing left to right and carrying an odd last node up unchanged builds exactly the
        # RFC 6962 tree (split at the largest power of two < n), without recursion.
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _split(n: int) -> int:
    """Largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _path(index: int, size: int, sub: _SubtreeHash) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), unrolled; siblings are collected top-down, returned bottom-up."""
    proof: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(sub(lo + k, hi))
            hi = lo + k
        else:
            proof.append(sub(lo, lo + k))
            lo += k
    proof.reverse()
    return proof


def _subproof(old_size: int, new_size: int, sub: _SubtreeHash) -> list[bytes]:
    """RFC 6962 SUBPROOF(old_size, D[0:new_size], true) for 0 < old_size < new_size, unrolled."""
    proof: list[bytes] = []
    lo, hi, complete = 0, new_size, True
    while old_size != hi:
        k = _split(hi - lo)
        if old_size <= lo + k:
            proof.append(sub(lo + k, hi))
            hi = lo + k
        else:
            proof.append(sub(lo, lo + k))
            lo += k
            complete = False
    if not complete:
        # The old tree's own subtree is only implied when it is a left-aligned complete prefix.
        proof.append(sub(lo, hi))
    proof.reverse()
    return proof


def _check_index(index: int, size: int, available: int) -> None:
    if not 0 <= size <= available:
        raise ProofError(f"tree size {size} outside 0..{available}")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside 0..{size - 1}")


def _check_sizes(old_size: int, new_size: int, available: int) -> None:
    if not 0 <= old_size <= new_size <= available:
        raise ProofError(f"need 0 <= old_size ({old_size}) <= new_size ({new_size}) <= {available}")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """RFC 6962 audit path for leaf ``index`` in the tree of the first ``size`` leaves."""
    n = len(leaf_hashes) if size is None else size
    _check_index(index, n, len(leaf_hashes))
    return _path(index, n, lambda lo, hi: root(leaf_hashes[lo:hi]))


def consistency_proof(
    leaf_hashes: Sequence[bytes], old_size: int, new_size: int | None = None
) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[new_size]); empty when old_size is 0 or equals new_size."""
    n = len(leaf_hashes) if new_size is None else new_size
    _check_sizes(old_size, n, len(leaf_hashes))
    if old_size in (0, n):
        return []
    return _subproof(old_size, n, lambda lo, hi: root(leaf_hashes[lo:hi]))


def _check_hashes(*hashes: bytes) -> None:
    for h in hashes:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ProofError(f"expected {HASH_SIZE}-byte hashes")


def verify_inclusion(*, leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` (raw data) sits at ``index`` of the tree ``root`` (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside 0..{size - 1}")
    _check_hashes(root, *proof)
    fn, sn, r = index, size - 1, leaf_hash(leaf)
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:  # skip the levels where this node was carried up alone
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    *, old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``new_root`` extends the tree ``old_root`` (RFC 9162 §2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"need 0 <= old_size ({old_size}) <= new_size ({new_size})")
    _check_hashes(old_root, new_root, *proof)
    if old_size in (0, new_size):
        if proof:
            raise ProofError("expected an empty consistency proof")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the root of an empty tree must be SHA-256 of the empty string")
        if old_size == new_size and old_root != new_root:
            raise ProofError("equal tree sizes with different roots")
        return  # every tree extends the empty tree
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)  # a complete old tree is its own first node and is not sent
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise ProofError("consistency proof does not lead to the roots")


class MerkleTree:
    """A growing log: append leaves, then ask for roots and proofs at any past size."""

    def __init__(self) -> None:
        # _levels[h][i] is the hash of the complete subtree of 2**h leaves starting at leaf i * 2**h;
        # every non-complete subtree the RFC needs splits into O(log n) of these.
        self._levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append_leaf(self, data: bytes) -> int:
        """Append one leaf (raw data) and return its index."""
        levels = self._levels
        levels[0].append(leaf_hash(data))
        h = 0
        while len(levels[h]) % 2 == 0:
            if h + 1 == len(levels):
                levels.append([])
            levels[h + 1].append(node_hash(levels[h][-2], levels[h][-1]))
            h += 1
        return self.size - 1

    def extend(self, datas: Iterable[bytes]) -> None:
        """Append several leaves (raw data) in order."""
        for data in datas:
            self.append_leaf(data)

    def _subtree(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self._levels[n.bit_length() - 1][lo // n]
        k = _split(n)
        return node_hash(self._subtree(lo, lo + k), self._subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """Root of the tree of the first ``size`` leaves (default: all)."""
        n = self.size if size is None else size
        _check_sizes(n, n, self.size)
        return EMPTY_ROOT if n == 0 else self._subtree(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Same as the module-level ``inclusion_proof`` over this tree's leaves."""
        n = self.size if size is None else size
        _check_index(index, n, self.size)
        return _path(index, n, self._subtree)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Same as the module-level ``consistency_proof`` over this tree's leaves."""
        n = self.size if new_size is None else new_size
        _check_sizes(old_size, n, self.size)
        return [] if old_size in (0, n) else _subproof(old_size, n, self._subtree)


# --- signed notes and checkpoints ---------------------------------------------------------------

_ED25519 = b"\x01"  # signed-note signature type byte for Ed25519
_SIG_PREFIX = "\u2014 "  # em dash, space
_MAX_SIGNATURES = 100  # the spec asks for at least 16; bound the work an untrusted note can cause
_HEX = frozenset("0123456789abcdefABCDEF")


def _check_line(line: str, what: str) -> None:
    # Notes must be UTF-8 without ASCII control characters, and checkpoint lines must be non-empty.
    if not isinstance(line, str) or not line or any(ord(c) < 0x20 for c in line):
        raise SignatureError(f"{what} must be a non-empty line without control characters")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SignatureError(f"{what} is not valid UTF-8") from exc


def _check_key_name(name: str) -> None:
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name):
        raise SignatureError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
    _check_line(name, "key name")


def _b64decode(text: str) -> bytes:
    # Only canonical standard base64: a second spelling of the same bytes would make notes malleable.
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise SignatureError("malformed base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise SignatureError("non-canonical base64")
    return raw


def _key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519 + public_key).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin line, tree size, root hash and optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        _check_line(self.origin, "origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size < 2**64:
            raise SignatureError(f"tree size must be an integer in 0..2**64-1, got {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise SignatureError(f"root must be {HASH_SIZE} bytes")
        for ext in self.extensions:
            _check_line(ext, "extension line")

    def body(self) -> bytes:
        """The exact C2SP checkpoint note text (every line newline-terminated)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")


@dataclass(frozen=True, eq=False)
class SigningKey:
    """An Ed25519 note-signing key and its key name (usually the log origin)."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_key_name(self.name)

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, name: str, raw32: bytes) -> SigningKey:
        if not isinstance(raw32, bytes) or len(raw32) != 32:
            raise SignatureError("an Ed25519 private key is 32 raw bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(raw32))

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes_raw()

    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    def key_id(self) -> bytes:
        """The 4-byte signed-note key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
        return _key_id(self.name, self.public_bytes())

    def verifier_key(self) -> str:
        """The signed-note verifier key ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        encoded = base64.b64encode(_ED25519 + self.public_bytes()).decode("ascii")
        return f"{self.name}+{self.key_id().hex()}+{encoded}"


def _parse_verifier_key(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    name, _, rest = vkey.partition("+")
    hex_id, _, encoded = rest.partition("+")  # base64 may itself contain '+', so split twice only
    _check_key_name(name)
    if len(hex_id) != 8 or not set(hex_id) <= _HEX:
        raise SignatureError("malformed verifier key ID")
    key = _b64decode(encoded)
    if len(key) != 33 or key[:1] != _ED25519:
        raise SignatureError("verifier key is not an Ed25519 key")
    key_id = bytes.fromhex(hex_id)
    if key_id != _key_id(name, key[1:]):
        raise SignatureError("verifier key ID does not match its name and public key")
    return name, key_id, Ed25519PublicKey.from_public_bytes(key[1:])


def _sign_note(text: str, key: SigningKey) -> str:
    """Sign note text (which must end in a newline) and return the signed note."""
    if not text.endswith("\n"):
        raise SignatureError("note text must end with a newline")
    sig = key.private_key.sign(text.encode("utf-8"))
    return f"{text}\n{_SIG_PREFIX}{key.name} {base64.b64encode(key.key_id() + sig).decode('ascii')}\n"


def _open_note(note: str, verifier_key: str) -> str:
    """Return the text of ``note`` after checking it carries a valid signature by ``verifier_key``."""
    name, key_id, public_key = _parse_verifier_key(verifier_key)
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise SignatureError("note contains control characters")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SignatureError("note is not valid UTF-8") from exc
    split = note.rfind("\n\n")  # the last blank line separates the text from the signatures
    if split < 0:
        raise SignatureError("note has no signature block")
    text, sigs = note[: split + 1], note[split + 2 :]
    if not sigs.endswith("\n"):
        raise SignatureError("note has no signature lines")
    lines = sigs[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise SignatureError("note has too many signatures")
    verified = False
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise SignatureError("malformed signature line")
        sig_name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        _check_key_name(sig_name)
        sig = _b64decode(encoded)
        if len(sig) < 5:
            raise SignatureError("signature too short")
        if sig_name != name or sig[:4] != key_id:
            continue  # other keys (cosigners, rotated keys) must be ignored, not rejected
        try:
            public_key.verify(sig[4:], text.encode("utf-8"))
        except InvalidSignature as exc:
            raise SignatureError(f"signature by {name} does not verify") from exc
        verified = True
    if not verified:
        raise SignatureError(f"note carries no signature by {name}+{key_id.hex()}")
    return text


def sign_checkpoint(cp: Checkpoint, key: SigningKey) -> str:
    """Return ``cp`` as a signed note: body, blank line, one Ed25519 signature line by ``key``."""
    return _sign_note(cp.body().decode("utf-8"), key)


def open_checkpoint(note: str, *, verifier_key: str) -> Checkpoint:
    """Verify a signed checkpoint note against ``verifier_key`` and parse its body."""
    lines = _open_note(note, verifier_key)[:-1].split("\n")
    if len(lines) < 3:
        raise SignatureError("a checkpoint has at least origin, size and root lines")
    origin, size_text, root_text, *extensions = lines
    # Strict ASCII decimal without leading zeros: int() alone accepts "+5", " 5", "5_0", non-ASCII digits.
    if not (size_text.isascii() and size_text.isdigit() and len(size_text) <= 20):
        raise SignatureError(f"malformed tree size {size_text[:32]!r}")
    if size_text != "0" and size_text.startswith("0"):
        raise SignatureError(f"tree size {size_text!r} has leading zeros")
    return Checkpoint(origin, int(size_text), _b64decode(root_text), tuple(extensions))
