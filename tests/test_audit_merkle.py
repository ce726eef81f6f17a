"""RFC 6962 hashing, proofs and canonical JSON, checked against a literal reading of the RFC."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import merkle
from gateway.audit.canonical import canonical_bytes, canonical_json
from gateway.audit.verify import envelope_bytes


def mth(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1 (recursive, leaves are raw data)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def data(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def test_known_answer_for_the_empty_and_one_leaf_trees() -> None:
    assert merkle.root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert merkle.root([merkle.leaf_hash(b"x")]) == merkle.leaf_hash(b"x")


@given(st.integers(min_value=0, max_value=70))
@settings(max_examples=40, deadline=None)
def test_frontier_root_equals_the_rfc_definition_at_every_size(n: int) -> None:
    raw = data(n)
    assert merkle.root([merkle.leaf_hash(d) for d in raw]) == mth(raw)


def test_frontier_extends_from_its_subtrees_like_a_checkpoint_does() -> None:
    leaves = [merkle.leaf_hash(d) for d in data(23)]
    f = merkle.Frontier()
    for h in leaves[:13]:
        f.push(h)
    resumed = merkle.Frontier(f.size, f.subtrees)  # what a signed checkpoint stores
    for h in leaves[13:]:
        resumed.push(h)
    assert resumed.root() == merkle.root(leaves)
    assert merkle.subtree_starts(13) == [0, 8, 12]
    with pytest.raises(ValueError, match="subtrees"):
        merkle.Frontier(5, f.subtrees[:1])


@given(st.integers(min_value=1, max_value=40), st.data())
@settings(max_examples=60, deadline=None)
def test_inclusion_proofs_verify_and_reject_the_wrong_leaf(n: int, draw: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(d) for d in data(n)]
    root = merkle.root(leaves)
    i = draw.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle.inclusion_proof(leaves, i)
    assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"forged"), i, n, proof, root)
    if n > 1:
        assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, proof, root)
    assert not merkle.verify_inclusion(leaves[i], n, n, proof, root)


@given(st.integers(min_value=1, max_value=40), st.data())
@settings(max_examples=60, deadline=None)
def test_consistency_proofs_verify_and_reject_a_rewritten_prefix(n: int, draw: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(d) for d in data(n)]
    m = draw.draw(st.integers(min_value=1, max_value=n))
    proof = merkle.consistency_proof(leaves, m)
    old_root, new_root = merkle.root(leaves[:m]), merkle.root(leaves)
    assert merkle.verify_consistency(m, n, old_root, new_root, proof)
    forged = [merkle.leaf_hash(b"forged"), *leaves[1:m]]
    if m < n:
        assert not merkle.verify_consistency(m, n, merkle.root(forged), new_root, proof)
        assert not merkle.verify_consistency(m, n, old_root, new_root, proof[:-1])


def test_consistency_proof_rejects_sizes_out_of_range() -> None:
    leaves = [merkle.leaf_hash(d) for d in data(4)]
    with pytest.raises(ValueError):
        merkle.consistency_proof(leaves, 0)
    assert not merkle.verify_consistency(0, 4, b"", merkle.root(leaves), [b"x"])


def test_canonical_json_sorts_keys_is_compact_and_keeps_money_exact() -> None:
    value = {
        "b": 1,
        "a": {"z": Decimal("0.040"), "y": [1, 2]},
        "t": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "s": {"q", "p"},
        "m": MappingProxyType({"k": (1, 2)}),
        "u": "ü",
    }
    text = canonical_json(value)
    assert text == (
        '{"a":{"y":[1,2],"z":"0.040"},"b":1,"m":{"k":[1,2]},"s":["p","q"],'
        '"t":"2026-01-02T03:04:05+00:00","u":"ü"}'
    )
    assert canonical_bytes(value) == text.encode("utf-8")
    assert canonical_json(json.loads(text)) == text  # re-canonicalising an export gives the same bytes


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), Decimal("NaN"), object(), b"bytes"])
def test_canonical_json_refuses_what_json_cannot_spell(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical_json({"x": bad})


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=12),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=6,
    ),
    st.integers(min_value=1, max_value=10**12),
)
@settings(max_examples=80, deadline=None)
def test_stored_bytes_are_the_canonical_json_of_the_envelope(record: dict[str, object], seq: int) -> None:
    prev, ts = "ab" * 32, "2026-11-25T17:00:00.000001Z"
    stored = envelope_bytes(prev, canonical_bytes(record), seq, ts)
    assert stored == canonical_bytes({"prev_hash": prev, "record": record, "seq": seq, "ts": ts})
    assert stored.startswith(b'{"prev_hash":"' + prev.encode() + b'","record":')


def test_tree_levels_give_the_same_roots_and_proofs_as_the_slice_functions() -> None:
    from hashlib import sha256 as _h

    from gateway.audit.merkle import Tree, consistency_proof, inclusion_proof, root

    leaves = [_h(bytes([i])).digest() for i in range(37)]
    tree = Tree(leaves)
    for n in range(1, 38):
        assert tree.range_root(0, n) == root(leaves[:n])
        for m in range(1, n + 1):
            assert tree.consistency_proof(m, n) == consistency_proof(leaves[:n], m)
        for i in (0, n // 2, n - 1):
            assert tree.inclusion_proof(i, n) == inclusion_proof(leaves[:n], i)
