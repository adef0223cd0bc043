"""The near-duplicate index: an exact-key table plus a ``datasketch.MinHashLSH``.

LSH returns *candidates* whose signatures collide in at least one band; the
index then checks each candidate's estimated Jaccard similarity (the share of
equal signature values) against the threshold, which removes most of the
chance collisions that would otherwise drop distinct texts.

Entries carry a caller-chosen ``label`` (an example id, or a marker for a
reference text); the LSH itself is keyed by consecutive integers, so repeated
or odd labels never trip datasketch's duplicate-key check. The index can be
rebuilt from stored signatures with :meth:`DedupIndex.add_many`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from datasketch import LeanMinHash, MinHashLSH
from numpy.typing import NDArray

from .minhash import DEFAULT_NUM_PERM, DEFAULT_SCHEME, DEFAULT_SEED, Scheme

__all__ = ["DedupIndex", "Match"]

Match = tuple[Hashable, float]
"""What a query found: the stored label and the estimated Jaccard similarity (1.0 for exact)."""


class DedupIndex:
    """Exact keys and MinHash signatures of everything kept so far."""

    def __init__(
        self,
        *,
        threshold: float,
        num_perm: int = DEFAULT_NUM_PERM,
        seed: int = DEFAULT_SEED,
        scheme: Scheme = DEFAULT_SCHEME,
    ) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        self.seed = seed
        self.scheme: Scheme = scheme
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._exact: dict[int, int] = {}
        self._labels: list[Hashable] = []
        self._signatures: list[NDArray[np.unsignedinteger]] = []

    def __len__(self) -> int:
        return len(self._labels)

    def label(self, slot: int) -> Hashable:
        return self._labels[slot]

    def query_exact(self, key: int) -> Hashable | None:
        slot = self._exact.get(key)
        return None if slot is None else self._labels[slot]

    def query_near(self, signature: NDArray[np.unsignedinteger]) -> list[Match]:
        """Verified near-duplicates of ``signature``, most similar first."""
        lean = LeanMinHash(seed=self.seed, hashvalues=signature, scheme=self.scheme)
        found: list[tuple[float, int]] = []
        for slot in self.lsh.query(lean):
            similarity = float(np.count_nonzero(self._signatures[slot] == signature)) / self.num_perm
            if similarity >= self.threshold:
                found.append((similarity, -slot))
        found.sort(reverse=True)
        return [(self._labels[-neg_slot], similarity) for similarity, neg_slot in found]

    def add(self, label: Hashable, key: int, signature: NDArray[np.unsignedinteger]) -> None:
        slot = len(self._labels)
        self._labels.append(label)
        self._signatures.append(signature)
        self._exact.setdefault(key, slot)
        self.lsh.insert(
            slot, LeanMinHash(seed=self.seed, hashvalues=signature, scheme=self.scheme), check_duplication=False
        )

    def add_many(
        self, labels: Sequence[Hashable], keys: Sequence[int], signatures: NDArray[np.unsignedinteger]
    ) -> None:
        """Add stored entries without querying (``--resume``, reference texts, merging shards)."""
        if not len(labels) == len(keys) == len(signatures):
            raise ValueError("labels, keys and signatures must have the same length")
        for label, key, row in zip(labels, keys, signatures, strict=True):
            self.add(label, key, row)

    def query_and_add(self, label: Hashable, key: int, signature: NDArray[np.unsignedinteger]) -> Hashable | None:
        """The label of an existing exact or near duplicate, or None after adding this entry."""
        existing = self.query_exact(key)
        if existing is not None:
            return existing
        near = self.query_near(signature)
        if near:
            return near[0][0]
        self.add(label, key, signature)
        return None
