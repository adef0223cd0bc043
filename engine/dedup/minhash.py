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

The batch is processed a block of permutations at a time, so memory stays
bounded (``block_cells``) however many shingles the batch holds.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, Literal

import numpy as np
from datasketch import LeanMinHash, MinHash
from numpy.typing import NDArray

from ..config import DEFAULT_NUM_PERM
from .shingle import ShingleBatch

__all__ = ["DEFAULT_NUM_PERM", "DEFAULT_SCHEME", "DEFAULT_SEED", "Scheme", "permutations", "signatures", "to_lean"]

DEFAULT_SEED = 1
DEFAULT_SCHEME: Final = "affine32"
#: Cells (permutations x shingles) per numpy step: small enough to stay in cache.
DEFAULT_BLOCK_CELLS = 1 << 20

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


def _permuted(
    hv: NDArray[np.unsignedinteger], a: NDArray[np.unsignedinteger], b: NDArray[np.unsignedinteger], scheme: Scheme
) -> NDArray[np.unsignedinteger]:
    """Permutations ``a``/``b`` (one per row) applied to the pre-mixed shingle hashes ``hv`` (one per column)."""
    if scheme == "affine32":
        return a[:, None] * hv[None, :] + b[:, None]  # type: ignore[no-any-return]
    return ((a[:, None] * hv[None, :] + b[:, None]) % _MERSENNE) & _MAX32  # type: ignore[no-any-return]


def signatures(
    batch: ShingleBatch,
    *,
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = DEFAULT_SEED,
    scheme: Scheme = DEFAULT_SCHEME,
    block_cells: int = DEFAULT_BLOCK_CELLS,
) -> NDArray[np.unsignedinteger]:
    """MinHash signatures, one row of ``num_perm`` values per document in ``batch``.

    Works a block of permutations at a time over all shingles of the batch
    (permutations x shingles, shingles contiguous), so each
    ``np.minimum.reduceat`` runs along contiguous memory and a block stays
    near ``block_cells`` cells whatever the batch size.
    """
    a, b = permutations(num_perm, seed, scheme)
    hv = _fmix32(batch.hashes) if scheme == "affine32" else batch.hashes.astype(np.uint64)
    starts = batch.offsets[:-1]
    out = np.empty((num_perm, len(batch)), dtype=a.dtype)
    if len(batch) == 0:
        return out.T
    step = min(num_perm, max(1, block_cells // max(1, len(hv))))
    for j in range(0, num_perm, step):
        out[j : j + step] = np.minimum.reduceat(_permuted(hv, a[j : j + step], b[j : j + step], scheme), starts, axis=1)
    return np.ascontiguousarray(out.T)


def to_lean(
    row: NDArray[np.unsignedinteger], *, seed: int = DEFAULT_SEED, scheme: Scheme = DEFAULT_SCHEME
) -> LeanMinHash:
    """One signature row as a datasketch ``LeanMinHash``."""
    return LeanMinHash(seed=seed, hashvalues=row, scheme=scheme)
