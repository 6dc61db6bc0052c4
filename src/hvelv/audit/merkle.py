"""RFC 6962 Merkle tree hashing over audit events, kept as a compact frontier.

Leaf hash ``H(0x00 || d)`` and node hash ``H(0x01 || left || right)`` with SHA-256, where
``d`` is the event's chain hash. The frontier is the list of roots of the perfect subtrees
covering the events so far (largest first); folding it from the right gives exactly the
RFC 6962 tree head for any size, so appending is O(log n) and never re-reads old events.
"""

from __future__ import annotations

import hashlib
import json

Frontier = list[tuple[int, bytes]]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def push(frontier: Frontier, data: bytes) -> None:
    """Append one leaf (in place)."""
    frontier.append((1, leaf_hash(data)))
    while len(frontier) >= 2 and frontier[-1][0] == frontier[-2][0]:
        size, right = frontier.pop()
        _, left = frontier.pop()
        frontier.append((2 * size, node_hash(left, right)))


def root(frontier: Frontier) -> bytes:
    """The RFC 6962 tree head of everything pushed so far."""
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1][1]
    for _, subtree in reversed(frontier[:-1]):
        acc = node_hash(subtree, acc)
    return acc


def size(frontier: Frontier) -> int:
    return sum(s for s, _ in frontier)


def dumps(frontier: Frontier) -> str:
    return json.dumps([[s, h.hex()] for s, h in frontier])


def loads(text: str) -> Frontier:
    return [(int(s), bytes.fromhex(h)) for s, h in json.loads(text)]


def tree_root(leaves: list[bytes]) -> bytes:
    """Reference recursive definition from RFC 6962 §2.1 (for tests)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(tree_root(leaves[:k]), tree_root(leaves[k:]))
