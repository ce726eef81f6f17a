"""Verify a local log against what its witnesses hold.

The local log must *reproduce* every witnessed head: for each head (size n, root r) the Merkle root of
the first n local entries must be r. A witnessed size beyond the local log is truncation; a different
root is rewriting, located after the largest head that still matched. The heads themselves are
checked for consistency (RFC 6962 consistency proofs between consecutive witnessed sizes, built from
the local entries and checked against the witnessed roots) and the last one for inclusion of its last
entry, so the verdict rests on proofs an auditor can re-run, not on our say-so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..merkle import Frontier, Tree, verify_consistency, verify_inclusion
from ..note import NoteError, open_note
from ..signers import PublicKey
from .base import Witness, WitnessedHead, WitnessError


@dataclass(frozen=True)
class WitnessFinding:
    """The first problem found against one witness (or None), plus what it holds."""

    witness: str
    heads: int
    latest_size: int | None
    problem: str | None = None  # "truncated" | "rewritten" | "witness" (bad evidence) | None
    seq: int | None = None
    detail: str = ""
    warning: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "witness": self.witness,
            "heads": self.heads,
            "latest_size": self.latest_size,
            "problem": self.problem,
            "seq": self.seq,
            "detail": self.detail,
            "warning": self.warning,
        }


@dataclass
class WitnessCheck:
    findings: list[WitnessFinding] = field(default_factory=list)

    @property
    def first(self) -> WitnessFinding | None:
        bad = [f for f in self.findings if f.problem]
        return min(bad, key=lambda f: f.seq or 0) if bad else None


def check_against_witnesses(
    leaves_iter: Iterable[bytes],
    count: int,
    witnesses: Sequence[Witness],
    origin: str,
    trusted: Mapping[str, PublicKey],
) -> WitnessCheck:
    """Compare ``count`` local entry hashes (``leaves_iter``, in seq order) with every witness."""
    verifiers = [(origin, key) for key in trusted.values()]
    held: dict[str, list[WitnessedHead]] = {}
    result = WitnessCheck()
    for w in witnesses:
        try:
            heads = [h for h in w.heads(origin)]
        except WitnessError as exc:
            from .tsa import WitnessEvidenceError

            if isinstance(exc, WitnessEvidenceError):
                result.findings.append(WitnessFinding(w.name, 0, None, "witness", None, str(exc)))
            else:
                result.findings.append(WitnessFinding(w.name, 0, None, warning=f"unreadable: {exc}"))
            continue
        bad_note = None
        for h in heads:
            try:
                open_note(h.note, verifiers)
            except NoteError as exc:
                bad_note = WitnessFinding(
                    w.name,
                    len(heads),
                    None,
                    "witness",
                    h.size,
                    f"{w.name} holds a head of size {h.size} that no trusted key signed ({exc})",
                )
                break
        if bad_note:
            result.findings.append(bad_note)
            continue
        held[w.name] = sorted(heads, key=lambda h: h.size)
    sizes = sorted({h.size for heads in held.values() for h in heads if 0 < h.size <= count})
    leaves: list[bytes] = []
    roots: dict[int, bytes] = {}
    frontier = Frontier()
    want = iter(sizes)
    nxt = next(want, None)
    for leaf in leaves_iter:
        leaves.append(leaf)
        frontier.push(leaf)
        while nxt is not None and frontier.size == nxt:
            roots[nxt] = frontier.root()
            nxt = next(want, None)
        if len(leaves) >= count:
            break
    tree = Tree(leaves) if sizes else None
    for name, heads in held.items():
        result.findings.append(_check_one(name, heads, leaves, roots, count, tree))
    return result


def _check_one(
    name: str,
    heads: list[WitnessedHead],
    leaves: list[bytes],
    roots: dict[int, bytes],
    count: int,
    tree: Tree | None,
) -> WitnessFinding:
    latest = heads[-1].size if heads else None
    matched = 0
    prev: WitnessedHead | None = None
    for h in heads:
        if h.size == 0:
            continue
        if h.size > count:
            return WitnessFinding(
                name,
                len(heads),
                latest,
                "truncated",
                count + 1,
                f"{name} holds a signed head of size {h.size} (received {h.received or '?'}) but the local "
                f"log ends at seq {count}: records {count + 1}..{h.size} were removed",
            )
        if roots.get(h.size) != h.root:
            return WitnessFinding(
                name,
                len(heads),
                latest,
                "rewritten",
                matched + 1,
                f"{name} holds a different root for size {h.size} (received {h.received or '?'}): "
                f"records after seq {matched} were rewritten (the first {matched} still match)",
            )
        if prev is not None and prev.size < h.size and tree is not None:
            proof = tree.consistency_proof(prev.size, h.size)
            if not verify_consistency(prev.size, h.size, prev.root, h.root, proof):
                return WitnessFinding(
                    name,
                    len(heads),
                    latest,
                    "rewritten",
                    prev.size + 1,
                    f"{name}: heads of size {prev.size} and {h.size} are not consistent",
                )
        matched, prev = h.size, h
    if prev is not None and tree is not None:
        path = tree.inclusion_proof(prev.size - 1, prev.size)
        if not verify_inclusion(leaves[prev.size - 1], prev.size - 1, prev.size, path, prev.root):
            return WitnessFinding(
                name,
                len(heads),
                latest,
                "rewritten",
                prev.size,
                f"{name}: record {prev.size} is not included in the witnessed head",
            )
    return WitnessFinding(name, len(heads), latest)


__all__ = ["WitnessCheck", "WitnessFinding", "check_against_witnesses"]
