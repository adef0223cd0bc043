"""Vectorised MinHash: signatures for a whole batch of documents in a few numpy calls.

The permutations are datasketch's own (taken from ``datasketch.MinHash`` with
the same ``num_perm``, ``seed`` and ``scheme``), and the arithmetic repeats
``MinHash.update`` exactly, so a row of :func:`signatures` equals the
``hashvalues`` of a datasketch ``MinHash(num_perm, seed, scheme, hashfunc=...)``
fed the same 32-bit shingle hashes, and :func:`to_lean` turns it into a
``LeanMinHash`` that ``datasketch.MinHashLSH`` accepts.

Schemes: ``"affine32"`` (datasketch 2.x's default: MurmurHash3 pre-mix, then
``a*h + b mod 2^32``; uint32 signatures) and ``"legacy"`` (datasketch 1.x:
``(a*h + b) mod (2^61 - 1)`` masked to 32 bits; uint64 signatures).

The batch is processed in chunks of whole documents so the
``shingles x num_perm`` matrix stays around ``chunk_cells`` cells.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, Literal

import numpy as np
from datasketch import LeanMinHash, MinHash
from numpy.typing import NDArray

from .shingle import ShingleBatch

__all__ = ["DEFAULT_NUM_PERM", "DEFAULT_SCHEME", "DEFAULT_SEED", "Scheme", "permutations", "signatures", "to_lean"]

DEFAULT_NUM_PERM = 128
DEFAULT_SEED = 1
DEFAULT_SCHEME: Final = "affine32"
#: Upper bound on shingles x permutations per numpy step (~32 MiB of uint32).
DEFAULT_CHUNK_CELLS = 1 << 23

Scheme = Literal["affine32", "legacy"]

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int, scheme: Scheme) -> tuple[NDArray[np.unsignedinteger], ...]:
    """datasketch's permutation parameters ``(a, b)`` as column-ready arrays."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
    dtype = np.uint32 if scheme == "affine32" else np.uint64
    return np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)


def _fmix32(h: NDArray[np.uint32]) -> NDArray[np.uint32]:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _permuted(hv: NDArray[np.uint32], a: NDArray[np.unsignedinteger], b: NDArray[np.unsignedinteger], scheme: Scheme):  # type: ignore[no-untyped-def]
    if scheme == "affine32":
        return _fmix32(hv)[:, None] * a[None, :] + b[None, :]
    wide = hv.astype(np.uint64)[:, None]
    return ((wide * a[None, :] + b[None, :]) % _MERSENNE) & _MAX32


def signatures(
    batch: ShingleBatch,
    *,
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = DEFAULT_SEED,
    scheme: Scheme = DEFAULT_SCHEME,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
) -> NDArray[np.unsignedinteger]:
    """MinHash signatures, one row of ``num_perm`` values per document in ``batch``."""
    a, b = permutations(num_perm, seed, scheme)
    n = len(batch)
    out = np.empty((n, num_perm), dtype=a.dtype)
    offsets = batch.offsets
    max_shingles = max(1, chunk_cells // num_perm)
    start = 0
    while start < n:
        # Take whole documents until the chunk holds max_shingles shingles (at least one document).
        stop = int(np.searchsorted(offsets, offsets[start] + max_shingles, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        lo, hi = int(offsets[start]), int(offsets[stop])
        permuted = _permuted(batch.hashes[lo:hi], a, b, scheme)
        out[start:stop] = np.minimum.reduceat(permuted, offsets[start:stop] - lo, axis=0)
        start = stop
    return out


def to_lean(
    row: NDArray[np.unsignedinteger], *, seed: int = DEFAULT_SEED, scheme: Scheme = DEFAULT_SCHEME
) -> LeanMinHash:
    """One signature row as a datasketch ``LeanMinHash``."""
    return LeanMinHash(seed=seed, hashvalues=row, scheme=scheme)
