"""The near-duplicate index: an exact-key table plus a ``datasketch.MinHashLSH``.

LSH returns *candidates* whose signatures collide in at least one band; the
index then checks each candidate's estimated Jaccard similarity (the share of
equal signature values) against the threshold, which removes most of the
chance collisions that would otherwise drop distinct texts.

Entries carry a caller-chosen ``label`` (an example id, or a marker for a
reference text); the LSH itself is keyed by consecutive integers, so repeated
or odd labels never trip datasketch's duplicate-key check. The index can be
rebuilt from stored signatures with :meth:`DedupIndex.add_many`.

Speed: datasketch's ``insert``/``query`` build each band key with a numpy
``byteswap`` per band, which costs more than computing the signature. The
index computes the very same band keys from one ``byteswap`` of the whole
signature and talks to the LSH's own band tables, so ``self.lsh`` stays a
regular ``MinHashLSH``: ``self.lsh.query(LeanMinHash)`` finds what was added
here (tested), and it can be merged or pickled as usual.
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
        # Bands as byte ranges of the big-endian signature: what MinHashLSH._byteswap produces per band.
        size = np.dtype(np.uint32 if scheme == "affine32" else np.uint64).itemsize
        self._bands = [(start * size, end * size) for start, end in self.lsh.hashranges]
        self._tables = [getattr(t, "_dict", None) for t in self.lsh.hashtables]
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

    def _band_keys(self, signature: NDArray[np.unsignedinteger]) -> list[bytes]:
        raw = signature.byteswap().tobytes()
        return [raw[start:end] for start, end in self._bands]

    def candidates(self, signature: NDArray[np.unsignedinteger]) -> set[int]:
        """Slots sharing at least one band with ``signature`` (what ``MinHashLSH.query`` returns)."""
        if len(signature) != self.num_perm:
            raise ValueError(f"expected a signature of {self.num_perm} values, got {len(signature)}")
        found: set[int] = set()
        for key, table, storage in zip(self._band_keys(signature), self._tables, self.lsh.hashtables, strict=True):
            hit = table.get(key) if table is not None else storage.get(key)
            if hit:
                found.update(hit)
        return found

    def query_near(self, signature: NDArray[np.unsignedinteger]) -> list[Match]:
        """Verified near-duplicates of ``signature``, most similar first."""
        found: list[tuple[float, int]] = []
        for slot in self.candidates(signature):
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
        if slot == 0:  # the documented path once, so the LSH learns the scheme and checks the length
            self.lsh.insert(slot, LeanMinHash(seed=self.seed, hashvalues=signature, scheme=self.scheme))
            return
        keys = self._band_keys(signature)
        self.lsh.keys.insert(slot, *keys)
        for band_key, table, storage in zip(keys, self._tables, self.lsh.hashtables, strict=True):
            if table is None:
                storage.insert(band_key, slot)
                continue
            # Memory: a band bucket is almost always a singleton, and a one-item tuple takes 48 bytes where
            # datasketch's set takes 216; with 25 bands that is ~4 KB per kept example. ``lsh.query``
            # only iterates buckets, so it works the same. Buckets that collide become sets.
            bucket = table.get(band_key)
            if bucket is None:
                table[band_key] = (slot,)
            elif isinstance(bucket, set):
                bucket.add(slot)
            else:
                table[band_key] = {*bucket, slot}

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
