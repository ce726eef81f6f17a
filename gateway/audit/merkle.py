"""RFC 6962 / RFC 9162 Merkle tree hashing: leaf and node hashes, roots, inclusion and consistency proofs.

Why a Merkle tree on top of the hash chain: the chain lets :meth:`AuditLog.verify` find the first bad
record in one pass, but proving that *one* record is in the log would need every record before it. A
tree root in each signed checkpoint lets anyone check a single record (inclusion proof, log2(n) hashes)
or that a newer checkpoint extends an older one (consistency proof) without the whole log.

The domain-separation bytes (0x00 for leaves, 0x01 for nodes) are what RFC 6962 uses to stop a node
being passed off as a leaf. All hashes here are raw 32-byte SHA-256 digests; callers hex-encode.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

EMPTY_ROOT: bytes = sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry."""
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node."""
    return sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes (not raw data). Linear time via :class:`Frontier`."""
    f = Frontier()
    for h in leaves:
        f.push(h)
    return f.root()


class Frontier:
    """The roots of the perfect subtrees that make up a tree of ``size`` leaves (a "compact range").

    Appending a leaf costs one hash amortised and the root of the current size is available at any
    time in O(log n), so :meth:`AuditLog.verify` gets roots for every checkpoint size in the same pass
    that checks the chain. A checkpoint stores its frontier, so the next checkpoint hashes only the
    records added since, not the whole log again.
    """

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        if size < 0 or len(subtrees) != size.bit_count():
            raise ValueError(
                f"a frontier of size {size} has {size.bit_count()} subtrees, not {len(subtrees)}"
            )
        self.size = size
        self._stack = list(subtrees)

    def push(self, leaf: bytes) -> None:
        h, n, stack = leaf, self.size, self._stack
        while n & 1:
            h = sha256(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            r = node_hash(h, r)
        return r

    @property
    def subtrees(self) -> tuple[bytes, ...]:
        """Subtree roots, largest (leftmost) first."""
        return tuple(self._stack)

    def copy(self) -> Frontier:
        return Frontier(self.size, self._stack)


class Tree:
    """All levels of the tree over ``leaves`` (about 2n hashes once), so any RFC 6962 range root,
    inclusion proof or consistency proof costs O(log^2 n) instead of rehashing the range.

    Why: verifying a log against many witnessed heads needs a consistency proof between each pair of
    consecutive heads; with the slice-based functions above that is O(n) per proof.
    """

    __slots__ = ("levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        levels = [list(leaves)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
        self.levels = levels

    def range_root(self, start: int, end: int) -> bytes:
        """MTH of leaves[start:end] (RFC 6962 split: the left part is the largest power of two)."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            return self.levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self.range_root(start, start + k), self.range_root(start + k, end))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size:
            raise IndexError(f"leaf {index} is not in a tree of {size}")
        return self._path(index, 0, size)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self._path(m, lo, lo + k), self.range_root(lo + k, hi)]
        return [*self._path(m - k, lo + k, hi), self.range_root(lo, lo + k)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        if not 0 < old_size <= new_size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
        return self._sub(old_size, 0, new_size, True)

    def _sub(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self.range_root(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self._sub(m, lo, lo + k, complete), self.range_root(lo + k, hi)]
        return [*self._sub(m - k, lo + k, hi, False), self.range_root(lo, lo + k)]


def subtree_starts(size: int) -> list[int]:
    """0-based index of the first leaf of each frontier subtree of a tree of ``size`` leaves."""
    starts, offset = [], 0
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            starts.append(offset)
            offset += 1 << bit
    return starts


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) from RFC 6962 section 2.1.1: sibling hashes from the leaf up."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(leaves[:k], index), root(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), root(leaves[:k])]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2: does ``proof`` place ``leaf`` at ``index`` of the tree with this root?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) from RFC 6962 section 2.1.2: the tree of ``old_size`` leaves is a prefix of this one."""
    if not 0 < old_size <= len(leaves):
        raise ValueError(f"no consistency proof from size {old_size} to {len(leaves)}")
    return _subproof(old_size, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree (old_size, old_root) a prefix of (new_size, new_root)?"""
    if old_size == new_size:
        return not proof and old_root == new_root
    if not 0 < old_size < new_size or not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is itself a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "Tree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "subtree_starts",
    "verify_consistency",
    "verify_inclusion",
]
