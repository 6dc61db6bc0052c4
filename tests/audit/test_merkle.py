"""The Merkle frontier gives the RFC 6962 tree head for every size."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.audit import merkle

leaves_st = st.lists(st.binary(min_size=0, max_size=40), min_size=0, max_size=300)
bounded = settings(max_examples=150, deadline=None)


def frontier_of(leaves: list[bytes]) -> merkle.Frontier:
    frontier: merkle.Frontier = []
    for leaf in leaves:
        merkle.push(frontier, leaf)
    return frontier


def test_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle.root([]) == merkle.tree_root([]) == hashlib.sha256(b"").digest()
    assert merkle.size([]) == 0


def test_one_leaf_root_is_its_leaf_hash() -> None:
    for leaf in (b"", b"event-1", bytes(32)):
        assert merkle.root(frontier_of([leaf])) == merkle.leaf_hash(leaf)
        assert merkle.tree_root([leaf]) == merkle.leaf_hash(leaf)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    left, right = b"L" * 32, b"R" * 32
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # an inner node can never pass for a leaf
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


def test_small_trees_by_hand() -> None:
    a, b, c = (merkle.leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert merkle.root(frontier_of([b"a", b"b"])) == merkle.node_hash(a, b)
    # RFC 6962: the left subtree is the largest power of two smaller than n
    assert merkle.root(frontier_of([b"a", b"b", b"c"])) == merkle.node_hash(
        merkle.node_hash(a, b), c
    )


def test_rfc_6962_reference_vectors() -> None:
    """Tree heads of the certificate-transparency test leaves (RFC 6962 §2.1)."""
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    expected = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    frontier: merkle.Frontier = []
    for n, leaf in enumerate(leaves, start=1):
        merkle.push(frontier, leaf)
        assert merkle.root(frontier).hex() == expected[n - 1], n
        assert merkle.tree_root(leaves[:n]).hex() == expected[n - 1], n


@bounded
@given(leaves_st)
def test_frontier_root_equals_the_rfc_6962_tree_head(leaves: list[bytes]) -> None:
    frontier = frontier_of(leaves)
    assert merkle.root(frontier) == merkle.tree_root(leaves)
    assert merkle.size(frontier) == len(leaves)


@bounded
@given(leaves_st)
def test_frontier_is_the_binary_decomposition_of_the_size(leaves: list[bytes]) -> None:
    frontier = frontier_of(leaves)
    sizes = [s for s, _ in frontier]
    assert sizes == sorted(sizes, reverse=True)
    assert len(set(sizes)) == len(sizes)
    assert all(s & (s - 1) == 0 for s in sizes)
    assert len(frontier) == bin(len(leaves)).count("1")


@bounded
@given(leaves_st, leaves_st)
def test_appending_continues_from_a_stored_frontier(first: list[bytes], then: list[bytes]) -> None:
    frontier = merkle.loads(merkle.dumps(frontier_of(first)))
    for leaf in then:
        merkle.push(frontier, leaf)
    assert merkle.root(frontier) == merkle.tree_root(first + then)


@bounded
@given(leaves_st)
def test_dumps_loads_round_trip(leaves: list[bytes]) -> None:
    frontier = frontier_of(leaves)
    text = merkle.dumps(frontier)
    assert merkle.loads(text) == frontier
    assert json.loads(text) == [[s, h.hex()] for s, h in frontier]


@bounded
@given(leaves_st.filter(bool), st.data())
def test_changing_any_leaf_changes_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    changed = [*leaves]
    changed[index] = leaves[index] + b"!"
    assert merkle.root(frontier_of(changed)) != merkle.root(frontier_of(leaves))


@bounded
@given(leaves_st.filter(bool))
def test_dropping_the_last_leaf_changes_the_root(leaves: list[bytes]) -> None:
    assert merkle.root(frontier_of(leaves[:-1])) != merkle.root(frontier_of(leaves))


def test_every_size_up_to_300() -> None:
    leaves = [n.to_bytes(4, "big") for n in range(300)]
    frontier: merkle.Frontier = []
    roots = {merkle.root(frontier)}
    for n, leaf in enumerate(leaves, start=1):
        merkle.push(frontier, leaf)
        assert merkle.size(frontier) == n
        assert merkle.root(frontier) == merkle.tree_root(leaves[:n]), n
        roots.add(merkle.root(frontier))
    assert len(roots) == 301
