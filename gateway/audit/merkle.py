"""RFC 6962 Merkle tree hashes, appended to one leaf at a time.

leaf = SHA-256(0x00 ‖ record), node = SHA-256(0x01 ‖ left ‖ right); a tree of n leaves
splits at the largest power of two below n. The distinct prefixes keep a leaf from passing
for a node. Only the roots of the perfect subtrees (one per set bit of n) are kept, so a
chain of any length costs O(log n) memory.
"""

from __future__ import annotations

import hashlib

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(record: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + record).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[tuple[int, bytes]] = []
        """(leaves, hash) of perfect subtrees, largest (leftmost) first."""

    def append(self, record: bytes) -> None:
        size, digest = 1, leaf_hash(record)
        peaks = self._peaks
        while peaks and peaks[-1][0] == size:
            left_size, left = peaks.pop()
            size, digest = left_size + size, node_hash(left, digest)
        peaks.append((size, digest))
        self.size += 1

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        # RFC 6962 splits at the largest power of two: the right side is folded first.
        digest = self._peaks[-1][1]
        for _, left in reversed(self._peaks[:-1]):
            digest = node_hash(left, digest)
        return digest

    def copy(self) -> MerkleTree:
        twin = MerkleTree()
        twin.size, twin._peaks = self.size, list(self._peaks)
        return twin


def root_of(records: list[bytes]) -> bytes:
    """MTH as RFC 6962 section 2.1 defines it, recursively: the reference for the tests."""
    if not records:
        return EMPTY_ROOT
    if len(records) == 1:
        return leaf_hash(records[0])
    k = 1
    while k * 2 < len(records):
        k *= 2
    return node_hash(root_of(records[:k]), root_of(records[k:]))
