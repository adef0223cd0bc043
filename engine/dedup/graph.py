"""Numpy kernels of the distributed near-duplicate pass: one call per partition, never one per key.

Each function takes the rows of one hash partition (every row sharing a key
lands in the same partition, so a run of equal keys is never split) and
returns plain arrays. :mod:`engine.dedup.ray_dedup` runs them in Ray Data
``map_groups`` over a few coarse partitions; tests call them directly.

Documents are ``uint64`` ids whose order is the input order (file index in the
high bits, row in the low bits), so "the first in input order" is the minimum.

Connected components use the large-star / small-star alternation of Kiveris et
al. (2014, "Connected components in MapReduce and beyond"): edges only, no label
table, O(log n) rounds, ending in a star forest where every node points to the
minimum of its component.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "NONE",
    "band_pairs",
    "dedupe_pairs",
    "large_star",
    "partition_of",
    "resolve_drops",
    "small_star",
    "star_violations",
    "verified",
]

U64 = NDArray[np.uint64]
#: "No document": marks signature rows in the verification shuffles.
NONE = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: U64) -> U64:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def partition_of(ids: U64, partitions: int) -> NDArray[np.int64]:
    """A stable hash partition in ``0..partitions-1`` for each id (ids in input order would cluster otherwise)."""
    return (_mix(np.asarray(ids, dtype=np.uint64) * _GOLDEN) % np.uint64(partitions)).astype(np.int64)


def _runs(sorted_keys: NDArray[np.generic]) -> NDArray[np.intp]:
    """Start index of each run of equal values, plus ``len`` at the end."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(1, dtype=np.intp)
    cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return np.concatenate([[0], cuts, [n]]).astype(np.intp)


def dedupe_pairs(a: U64, b: U64) -> tuple[U64, U64]:
    """Distinct ``(a, b)`` pairs, sorted by ``a`` then ``b``."""
    if len(a) == 0:
        return a.astype(np.uint64), b.astype(np.uint64)
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def band_pairs(keys: U64, docs: U64, exact: U64, band: NDArray[np.integer]) -> tuple[U64, U64, U64, U64]:
    """Candidate pairs and exact duplicates from one partition of band rows.

    Rows are ``(band key, doc, exact key, band index)``. Exact copies share
    every band, so the first of each exact group (its *representative*) is
    found within any band's run; band 0's rows report the other members as
    ``(doc, representative)``. Candidate pairs ``(a, b)``, ``a < b``, join
    every two representatives that share a band key (what the index's
    ``candidates`` returns), deduplicated within the partition.

    Returns ``(pair_a, pair_b, exact_doc, exact_rep)``.
    """
    keys, docs, exact = (np.asarray(x, dtype=np.uint64) for x in (keys, docs, exact))
    band = np.asarray(band)
    # exact duplicates, from band 0 only (each document has exactly one band-0 row)
    first = band == 0
    e_docs, e_keys = docs[first], exact[first]
    order = np.lexsort((e_docs, e_keys))
    e_docs, e_keys = e_docs[order], e_keys[order]
    starts = _runs(e_keys)
    reps = np.repeat(e_docs[starts[:-1]], np.diff(starts))
    dup = e_docs != reps
    exact_doc, exact_rep = e_docs[dup], reps[dup]
    # representatives only, grouped by band key
    order = np.lexsort((docs, exact, keys))
    keys, docs, exact = keys[order], docs[order], exact[order]
    rep = np.ones(len(keys), dtype=bool)
    rep[1:] = (keys[1:] != keys[:-1]) | (exact[1:] != exact[:-1])
    keys, docs = keys[rep], docs[rep]
    starts = _runs(keys)
    lengths = np.diff(starts)
    # runs of two, the common case, vectorised; longer runs give all their pairs
    two = starts[:-1][lengths == 2]
    a_parts, b_parts = [docs[two]], [docs[two + 1]]
    for start, length in zip(starts[:-1][lengths > 2].tolist(), lengths[lengths > 2].tolist(), strict=True):
        i, j = np.triu_indices(length, k=1)
        a_parts.append(docs[start + i])
        b_parts.append(docs[start + j])
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pa, pb = dedupe_pairs(lo, hi)
    return pa, pb, exact_doc, exact_rep


def _lookup(sorted_docs: U64, wanted: U64) -> NDArray[np.intp]:
    """Positions of ``wanted`` in ``sorted_docs``; every wanted id must be present."""
    at = np.searchsorted(sorted_docs, wanted)
    if len(wanted) and (at.max(initial=0) >= len(sorted_docs) or np.any(sorted_docs[at] != wanted)):
        raise ValueError("a candidate pair names a document without a signature")
    return at


def attach(
    sig_docs: U64, sigs: NDArray[np.unsignedinteger], a: U64, b: U64
) -> tuple[U64, U64, NDArray[np.unsignedinteger]]:
    """First verification step: pairs ``(a, b)`` get ``a``'s signature (``sig_docs``/``sigs``: the signature rows).

    Returns ``(b, a, signature of a)`` for every distinct pair, to be routed to ``b``'s partition.
    """
    order = np.argsort(sig_docs, kind="stable")
    sig_docs, sigs = sig_docs[order], sigs[order]
    a, b = dedupe_pairs(a, b)
    return b, a, sigs[_lookup(sig_docs, a)]


def verified(
    sig_docs: U64,
    sigs: NDArray[np.unsignedinteger],
    b: U64,
    a: U64,
    sig_a: NDArray[np.unsignedinteger],
    *,
    threshold: float,
    num_perm: int,
) -> tuple[U64, U64]:
    """Second verification step: pairs ``(b, a, signature of a)`` compared with ``b``'s signature.

    Keeps the pairs whose estimated Jaccard (equal values / ``num_perm``) is at
    least ``threshold``, the index's own test. Returns edges ``(a, b)``.
    """
    if len(b) == 0:
        return a, b
    order = np.argsort(sig_docs, kind="stable")
    sig_docs, sigs = sig_docs[order], sigs[order]
    equal = np.count_nonzero(sigs[_lookup(sig_docs, b)] == sig_a, axis=1)
    ok = equal / num_perm >= threshold
    return a[ok], b[ok]


def _segments(u: U64, v: U64) -> tuple[U64, U64, NDArray[np.intp]]:
    """Distinct ``(u, v)`` sorted by ``u``, and the start of each ``u``'s neighbours."""
    u, v = dedupe_pairs(u, v)
    return u, v, _runs(u)


def star_violations(u: U64, v: U64) -> int:
    """Nodes (among the ``u`` of a symmetric edge list) that keep the graph from being a finished star forest.

    Finished: no node has two smaller neighbours, and no node has both a
    smaller and a larger one; every edge then joins a component's minimum to
    one of its other members.
    """
    u, v, starts = _segments(u, v)
    if len(u) == 0:
        return 0
    smaller = np.add.reduceat((v < u).astype(np.int64), starts[:-1])
    larger = np.add.reduceat((v > u).astype(np.int64), starts[:-1])
    return int(np.count_nonzero((smaller > 1) | ((smaller > 0) & (larger > 0))))


def large_star(u: U64, v: U64) -> tuple[U64, U64]:
    """Large-star over a symmetric edge list: each larger neighbour of ``u`` is linked to min(u, neighbours of u).

    Returns oriented edges ``(larger, smaller)``.
    """
    u, v, starts = _segments(u, v)
    if len(u) == 0:
        return u, v
    lengths = np.diff(starts)
    low = np.minimum(u[starts[:-1]], np.minimum.reduceat(v, starts[:-1]))
    m = np.repeat(low, lengths)
    up = v > u
    return v[up], m[up]


def small_star(u: U64, v: U64) -> tuple[U64, U64]:
    """Small-star over oriented edges ``(u, v)``, ``v < u``: ``u`` and its neighbours are linked to the smallest.

    Returns oriented edges ``(larger, smaller)``.
    """
    keep = u != v
    u, v, starts = _segments(u[keep], v[keep])
    if len(u) == 0:
        return u, v
    lengths = np.diff(starts)
    low = np.minimum.reduceat(v, starts[:-1])
    m = np.repeat(low, lengths)
    others = v != m
    out_u = np.concatenate([u[starts[:-1]], v[others]])
    out_v = np.concatenate([low, m[others]])
    return dedupe_pairs(out_u, out_v)


def resolve_drops(leaf: U64, root: U64, exact_doc: U64, exact_rep: U64) -> tuple[U64, U64, NDArray[np.bool_]]:
    """Every dropped document, its kept twin and whether the drop is exact.

    ``(leaf, root)`` are the finished star edges (a near-duplicate and the
    first of its component); ``(exact_doc, exact_rep)`` exact copies and the
    first of their exact group, all of one partition by ``leaf``/``exact_rep``.
    An exact copy's twin is its representative's root; the drop is exact when
    that root is the representative itself. Returns ``(doc, twin, is_exact)``.
    """
    order = np.argsort(leaf, kind="stable")
    leaf, root = leaf[order], root[order]
    at = np.searchsorted(leaf, exact_rep)
    at_clip = np.minimum(at, max(len(leaf) - 1, 0))
    found = (at < len(leaf)) & (leaf[at_clip] == exact_rep) if len(leaf) else np.zeros(len(exact_rep), dtype=bool)
    twin_exact = np.where(found, root[at_clip] if len(leaf) else exact_rep, exact_rep)
    docs = np.concatenate([leaf, exact_doc])
    twins = np.concatenate([root, twin_exact])
    is_exact = np.concatenate([np.zeros(len(leaf), dtype=bool), ~found])
    return docs, twins, is_exact
