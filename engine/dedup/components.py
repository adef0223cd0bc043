"""Connected-components dedup on one machine: keep the first record of each group of near-duplicates.

The streaming filter (:class:`engine.dedup.filter.DedupFilter`, mode
``greedy``) compares each record with the records *kept* so far, so in a chain
A~B, B~C with A≁C it drops B (a copy of A) and keeps C, whose only near twin
was dropped. Here (mode ``components``) every record is compared with every
earlier one: near-duplicate pairs are the edges of a graph, and only the first
record (in input order) of each connected component is kept, so the chain keeps
A alone. This is what the distributed pass (:mod:`engine.dedup.ray_dedup`)
computes, and this module is its single-machine reference.

Candidates come from the same LSH index (every exact-unique record is added),
each is verified (estimated Jaccard >= threshold), and a union-find joins the
verified pairs. Exact copies drop on the way; an exact copy's kept twin is its
first copy's component root, and it counts as ``exact_duplicate`` only when
that root is its first copy itself (``near_duplicate`` otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .filter import EXACT, NEAR, DedupConfig, DedupFilter

__all__ = ["Drop", "components"]

BATCH = 4096


@dataclass(frozen=True, slots=True)
class Drop:
    """Why a record is dropped and which kept record it duplicates (positions in the input)."""

    reason: str
    twin: int


def _find(parent: dict[int, int], x: int) -> int:
    root = x
    while parent.get(root, root) != root:
        root = parent[root]
    while parent.get(x, x) != root:  # path compression
        parent[x], x = root, parent[x]
    return root


def components(texts: Sequence[str | None], config: DedupConfig | None = None) -> dict[int, Drop]:
    """The records (by position) that the components mode drops; ``None`` texts are never compared."""
    signer = DedupFilter(config)
    cfg = signer.config
    index = signer.index
    parent: dict[int, int] = {}
    first_of: dict[int, int] = {}
    copies: dict[int, int] = {}
    todo = [i for i, t in enumerate(texts) if t is not None]
    for start in range(0, len(todo), BATCH):
        chunk = todo[start : start + BATCH]
        signed = signer.sign([texts[i] or "" for i in chunk])
        bands = index.band_keys(signed.signatures)
        for doc, key, sig, row_bands in zip(chunk, signed.keys, signed.signatures, bands, strict=True):
            rep = first_of.setdefault(key, doc)
            if rep != doc:
                copies[doc] = rep
                continue
            for slot in index.candidates(sig, row_bands):
                similar = float(np.count_nonzero(index.signature(slot) == sig)) / cfg.num_perm
                if similar >= cfg.threshold:
                    a, b = _find(parent, doc), _find(parent, int(index.label(slot)))  # type: ignore[call-overload]
                    if a != b:
                        parent[max(a, b)] = min(a, b)
            index.add(doc, key, sig, row_bands)
    drops: dict[int, Drop] = {}
    for doc in list(parent):
        root = _find(parent, doc)
        if root != doc:
            drops[doc] = Drop(NEAR, root)
    for doc, rep in copies.items():
        root = _find(parent, rep)
        drops[doc] = Drop(EXACT if root == rep else NEAR, root)
    return dict(sorted(drops.items()))
