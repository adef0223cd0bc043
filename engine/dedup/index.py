"""The near-duplicate index: an exact-key table plus MinHash LSH band tables, compact enough for millions.

LSH returns *candidates* whose signatures collide in at least one band; the
index then checks each candidate's estimated Jaccard similarity (the share of
equal signature values) against the threshold, which removes most of the
chance collisions that would otherwise drop distinct texts. The banding (how
many bands of how many rows) is datasketch's ``MinHashLSH`` choice for the
threshold and ``num_perm``, so candidates are what ``MinHashLSH.query`` would
return (tested against it).

Memory is what limits a streaming filter over a very large corpus, so nothing
is a Python object per band:

- each band of a signature is hashed to one 64-bit key (salted by band, so all
  bands share one key space); new keys go into a small dict, which is flushed
  into sorted numpy arrays (key, slot) once it holds ``fresh_limit`` keys, and
  arrays of similar size are merged up to ``max_merge_keys`` (a log-structured
  merge: a few levels, each searched with one ``searchsorted`` per query; the
  cap bounds the pause a merge causes);
- signatures live in fixed-size numpy blocks.

About 12 bytes per band and ``num_perm`` values per kept example, plus its
label and exact key: roughly 1 KB per example at the defaults, where
datasketch's own tables take about 5 KB. A 64-bit key collision between
different bands' values only adds a candidate, which the similarity check
then rejects.

Entries carry a caller-chosen ``label`` (an example id, or a marker for a
reference text), stored once per slot. The index can be rebuilt from stored
signatures with :meth:`DedupIndex.add_many`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from datasketch import MinHashLSH
from numpy.typing import NDArray

from .minhash import DEFAULT_NUM_PERM, DEFAULT_SCHEME, DEFAULT_SEED, Scheme

__all__ = ["DedupIndex", "Match"]

Match = tuple[Hashable, float]
"""What a query found: the stored label and the estimated Jaccard similarity (1.0 for exact)."""

#: Band keys held in the dict before it is flushed into a sorted level (about 10 MB of dict at most).
FRESH_LIMIT = 1 << 17
#: Levels are not merged past this many keys: a merge blocks the event loop (16M keys: about 1.2 s here),
#: so beyond it levels just accumulate (each adds two ``searchsorted`` calls per query, measured 3 us).
MAX_MERGE_KEYS = 1 << 24
#: Signatures per storage block.
_BLOCK = 1 << 14
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser, elementwise (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class DedupIndex:
    """Exact keys and MinHash signatures of everything kept so far."""

    def __init__(
        self,
        *,
        threshold: float,
        num_perm: int = DEFAULT_NUM_PERM,
        seed: int = DEFAULT_SEED,
        scheme: Scheme = DEFAULT_SCHEME,
        fresh_limit: int = FRESH_LIMIT,
        max_merge_keys: int = MAX_MERGE_KEYS,
    ) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        self.seed = seed
        self.scheme: Scheme = scheme
        self.fresh_limit = fresh_limit
        self.max_merge_keys = max_merge_keys
        # datasketch decides the banding for this threshold (its false positive/negative trade-off)
        self.bands: list[tuple[int, int]] = list(MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges)
        rows = {end - start for start, end in self.bands}
        if len(rows) != 1 or self.bands[0][0] != 0:
            raise ValueError(f"unexpected banding {self.bands}")  # pragma: no cover - datasketch always bands evenly
        self.rows = rows.pop()
        self._used = len(self.bands) * self.rows
        self._dtype = np.dtype(np.uint32 if scheme == "affine32" else np.uint64)
        # one salt per band: equal values in different bands must not share a key
        self._salts = _splitmix(np.arange(1, len(self.bands) + 1, dtype=np.uint64) * _GOLDEN)
        self._exact: dict[int, int] = {}
        self._labels: list[Hashable] = []
        self._blocks: list[NDArray[np.unsignedinteger]] = []
        #: band key -> slot (or a list of slots when several share it), for keys not yet in a level
        self._fresh: dict[int, int | list[int]] = {}
        #: sorted (keys, slots) arrays, largest first
        self._levels: list[tuple[NDArray[np.uint64], NDArray[np.uint32]]] = []

    def __len__(self) -> int:
        return len(self._labels)

    def label(self, slot: int) -> Hashable:
        return self._labels[slot]

    def signature(self, slot: int) -> NDArray[np.unsignedinteger]:
        row: NDArray[np.unsignedinteger] = self._blocks[slot // _BLOCK][slot % _BLOCK]
        return row

    @property
    def nbytes(self) -> int:
        """Bytes held in numpy arrays (signatures and levels); the dicts and labels come on top."""
        return sum(b.nbytes for b in self._blocks) + sum(k.nbytes + s.nbytes for k, s in self._levels)

    def query_exact(self, key: int) -> Hashable | None:
        slot = self._exact.get(key)
        return None if slot is None else self._labels[slot]

    # -- band keys ------------------------------------------------------------------------------

    def band_keys(self, signatures: NDArray[np.unsignedinteger], bands: slice = slice(None)) -> NDArray[np.uint64]:
        """``(n, bands)`` 64-bit keys of the bands of ``(n, num_perm)`` signatures, vectorised (``bands``: only those)."""
        sigs = np.asarray(signatures)
        if sigs.ndim != 2 or sigs.shape[1] != self.num_perm:
            raise ValueError(f"expected signatures of {self.num_perm} values, got shape {sigs.shape}")
        values = sigs[:, : self._used].reshape(len(sigs), len(self.bands), self.rows)[:, bands].astype(np.uint64)
        h = np.broadcast_to(self._salts[bands], values.shape[:2]).copy()
        for r in range(self.rows):
            h = _splitmix((h ^ values[:, :, r]) * _GOLDEN)
        return h

    def _keys_of(self, signature: NDArray[np.unsignedinteger], keys: NDArray[np.uint64] | None) -> NDArray[np.uint64]:
        """``signature``'s band keys: ``keys`` when the caller computed them with a batch, else computed here."""
        if len(signature) != self.num_perm:
            raise ValueError(f"expected a signature of {self.num_perm} values, got {len(signature)}")
        return self.band_keys(np.asarray(signature)[None, :])[0] if keys is None else keys

    # -- queries --------------------------------------------------------------------------------

    def candidates(self, signature: NDArray[np.unsignedinteger], keys: NDArray[np.uint64] | None = None) -> set[int]:
        """Slots sharing at least one band with ``signature`` (what ``MinHashLSH.query`` returns).

        ``keys`` are the signature's :meth:`band_keys` when already computed (a batch at a time is cheaper).
        """
        band_keys = self._keys_of(signature, keys)
        found: set[int] = set()
        fresh = self._fresh
        for key in band_keys.tolist():
            hit = fresh.get(key)
            if hit is None:
                continue
            if isinstance(hit, int):
                found.add(hit)
            else:
                found.update(hit)
        for level_keys, level_slots in self._levels:
            lo = np.searchsorted(level_keys, band_keys, "left")
            hi = np.searchsorted(level_keys, band_keys, "right")
            present = hi > lo
            for a, b in zip(lo[present].tolist(), hi[present].tolist(), strict=True):
                found.update(level_slots[a:b].tolist())
        return found

    def query_near(self, signature: NDArray[np.unsignedinteger], keys: NDArray[np.uint64] | None = None) -> list[Match]:
        """Verified near-duplicates of ``signature``, most similar first."""
        found: list[tuple[float, int]] = []
        for slot in self.candidates(signature, keys):
            similarity = float(np.count_nonzero(self.signature(slot) == signature)) / self.num_perm
            if similarity >= self.threshold:
                found.append((similarity, -slot))
        found.sort(reverse=True)
        return [(self._labels[-neg_slot], similarity) for similarity, neg_slot in found]

    # -- additions ------------------------------------------------------------------------------

    def add(
        self,
        label: Hashable,
        key: int,
        signature: NDArray[np.unsignedinteger],
        keys: NDArray[np.uint64] | None = None,
    ) -> None:
        band_keys = self._keys_of(signature, keys).tolist()
        slot = len(self._labels)
        self._labels.append(label)
        if slot % _BLOCK == 0:
            self._blocks.append(np.empty((_BLOCK, self.num_perm), dtype=self._dtype))
        self._blocks[-1][slot % _BLOCK] = signature
        self._exact.setdefault(key, slot)
        fresh = self._fresh
        for band_key in band_keys:
            hit = fresh.get(band_key)
            if hit is None:
                fresh[band_key] = slot
            elif isinstance(hit, int):
                fresh[band_key] = [hit, slot]
            else:
                hit.append(slot)
        if len(fresh) >= self.fresh_limit:
            self.flush()

    def add_many(
        self, labels: Sequence[Hashable], keys: Sequence[int], signatures: NDArray[np.unsignedinteger]
    ) -> None:
        """Add stored entries without querying (``--resume``, reference texts, merging shards)."""
        if not len(labels) == len(keys) == len(signatures):
            raise ValueError("labels, keys and signatures must have the same length")
        if not len(labels):
            return
        band_keys = self.band_keys(np.asarray(signatures))
        for label, key, row, row_keys in zip(labels, keys, signatures, band_keys, strict=True):
            self.add(label, key, row, row_keys)

    def query_and_add(
        self,
        label: Hashable,
        key: int,
        signature: NDArray[np.unsignedinteger],
        keys: NDArray[np.uint64] | None = None,
    ) -> Hashable | None:
        """The label of an existing exact or near duplicate, or None after adding this entry."""
        existing = self.query_exact(key)
        if existing is not None:
            return existing
        keys = self._keys_of(signature, keys)
        near = self.query_near(signature, keys)
        if near:
            return near[0][0]
        self.add(label, key, signature, keys)
        return None

    # -- levels ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Move the fresh keys into a sorted level, then merge levels of similar size."""
        if not self._fresh:
            return
        keys: list[int] = []
        slots: list[int] = []
        for band_key, hit in self._fresh.items():
            if isinstance(hit, int):
                keys.append(band_key)
                slots.append(hit)
            else:
                keys.extend([band_key] * len(hit))
                slots.extend(hit)
        self._fresh = {}
        self._levels.append(self._sorted(np.array(keys, dtype=np.uint64), np.array(slots, dtype=np.uint32)))
        # a binary-counter merge (about log2(n / fresh_limit) levels, each key merged O(log n) times), capped
        levels = self._levels
        while (
            len(levels) > 1
            and len(levels[-2][0]) <= 2 * len(levels[-1][0])
            and len(levels[-2][0]) + len(levels[-1][0]) <= self.max_merge_keys
        ):
            (k2, s2), (k1, s1) = levels.pop(), levels.pop()
            levels.append(self._sorted(np.concatenate([k1, k2]), np.concatenate([s1, s2])))

    @staticmethod
    def _sorted(keys: NDArray[np.uint64], slots: NDArray[np.uint32]) -> tuple[NDArray[np.uint64], NDArray[np.uint32]]:
        order = np.argsort(keys, kind="stable")
        return keys[order], slots[order]
