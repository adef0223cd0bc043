"""The stage functions of the Ray Data dedup pass (:mod:`.ray_dedup` runs them): each runs in a Ray worker.

A ``map_batches`` function gets a batch of rows and returns (or yields) rows; a
``map_groups`` function gets one shuffle partition whole and does its numpy work
on all of it at once (:mod:`.graph` holds that work). Documents are ids
``part index << ROW_BITS | row``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import graph
from .filter import DedupConfig, DedupFilter
from .index import DedupIndex
from .records import iter_rows, text_of

__all__ = [
    "READ_CHUNK",
    "ROW_BITS",
    "ROW_MASK",
    "Batch",
    "U64",
    "attach_group",
    "band_rows",
    "by_part",
    "endpoints",
    "index_of",
    "large_star_group",
    "markers",
    "oriented",
    "pair_rows",
    "pairs_group",
    "resolve_group",
    "resolve_rows",
    "sig_rows",
    "sign_parts",
    "small_star_group",
    "symmetric",
    "twin_ids_group",
    "u64",
    "verify_group",
]

ROW_BITS = 40
ROW_MASK = np.uint64((1 << ROW_BITS) - 1)
#: Rows read from a part (and signed) at a time.
READ_CHUNK = 8192

Batch = dict[str, NDArray[Any]]
U64 = graph.U64


@lru_cache(maxsize=4)
def _signer(config: DedupConfig) -> DedupFilter:
    return DedupFilter(config)


def index_of(config: DedupConfig) -> DedupIndex:
    return _signer(config).index


def u64(values: Any) -> NDArray[np.uint64]:
    return np.asarray(values, dtype=np.uint64)


# -- stage functions (run in Ray workers) ------------------------------------------------------------


def sign_parts(batch: Batch, *, fields: Sequence[str], config: DedupConfig) -> Iterator[Batch]:
    """Read parts and sign their rows: ``doc``, exact key ``ekey`` and the ``sig`` tensor; rows without text skipped."""
    signer = _signer(config)
    for index, path in zip(batch["part"].tolist(), batch["path"].tolist(), strict=True):
        row = 0
        for rows, _ in iter_rows(Path(path), READ_CHUNK):
            texts = [text_of(r, fields) for r in rows]
            docs = [(index << ROW_BITS) | (row + i) for i, t in enumerate(texts) if t is not None]
            row += len(rows)
            present = [t for t in texts if t is not None]
            if not present:
                continue
            signed = signer.sign(present)
            yield {"doc": u64(docs), "ekey": u64(signed.keys), "sig": signed.signatures}


def band_rows(batch: Batch, *, config: DedupConfig, partitions: int, lo: int, hi: int) -> Batch:
    """One row per document and band of ``lo..hi-1``: the band key, its partition, the document and its exact key."""
    keys = index_of(config).band_keys(batch["sig"], slice(lo, hi))
    n, bands = keys.shape
    flat = keys.reshape(-1)
    return {
        "p": (flat % np.uint64(partitions)).astype(np.int32),
        "key": flat,
        "doc": np.repeat(u64(batch["doc"]), bands),
        "ekey": np.repeat(u64(batch["ekey"]), bands),
        "band": np.tile(np.arange(lo, hi, dtype=np.uint8), n),
    }


def pairs_group(batch: Batch) -> Batch:
    a, b, exact_doc, exact_rep = graph.band_pairs(batch["key"], batch["doc"], batch["ekey"], batch["band"])
    kind = np.concatenate([np.zeros(len(a), dtype=np.uint8), np.ones(len(exact_doc), dtype=np.uint8)])
    return {"kind": kind, "a": np.concatenate([a, exact_doc]), "b": np.concatenate([b, exact_rep])}


def endpoints(batch: Batch) -> Batch:
    return {"doc": np.unique(np.concatenate([u64(batch["a"]), u64(batch["b"])]))}


def _pack(sigs: NDArray[Any]) -> NDArray[Any]:
    """Signatures as one ``bytes`` per row: a binary column, so pair rows can carry an empty one (not 512 zeros)."""
    return np.array([row.tobytes() for row in sigs], dtype=object)


def _unpack(packed: NDArray[Any], *, num_perm: int, dtype: str) -> NDArray[Any]:
    if not len(packed):
        return np.zeros((0, num_perm), dtype=dtype)
    return np.frombuffer(b"".join(packed.tolist()), dtype=dtype).reshape(len(packed), num_perm)


def sig_rows(batch: Batch, *, partitions: int, needed: Any) -> Batch:
    """The signature rows of the documents some candidate pair names (``needed``: a sorted array in the object store)."""
    import ray

    wanted = ray.get(needed)
    docs = u64(batch["doc"])
    keep = np.isin(docs, wanted)
    docs = docs[keep]
    return {
        "p": graph.partition_of(docs, partitions),
        "doc": docs,
        "other": np.full(len(docs), graph.NONE, dtype=np.uint64),
        "sig": _pack(batch["sig"][keep]),
    }


def pair_rows(batch: Batch, *, partitions: int) -> Batch:
    a = u64(batch["a"])
    return {
        "p": graph.partition_of(a, partitions),
        "doc": a,
        "other": u64(batch["b"]),
        "sig": np.full(len(a), b"", dtype=object),
    }


def _split(batch: Batch, *, num_perm: int, dtype: str) -> tuple[U64, NDArray[Any], U64, U64, NDArray[Any]]:
    """A joined partition: the signature rows ``(doc, sig)``, and the other rows ``(doc, other, packed sig)``."""
    docs, other = u64(batch["doc"]), u64(batch["other"])
    is_sig = other == graph.NONE
    sigs = _unpack(np.asarray(batch["sig"])[is_sig], num_perm=num_perm, dtype=dtype)
    return docs[is_sig], sigs, docs[~is_sig], other[~is_sig], np.asarray(batch["sig"])[~is_sig]


def attach_group(batch: Batch, *, partitions: int, num_perm: int, dtype: str) -> Batch:
    sig_docs, sigs, a, b, _ = _split(batch, num_perm=num_perm, dtype=dtype)
    b, a, sig_a = graph.attach(sig_docs, sigs, a, b)
    return {"p": graph.partition_of(b, partitions), "doc": b, "other": a, "sig": _pack(sig_a)}


def verify_group(batch: Batch, *, threshold: float, num_perm: int, dtype: str) -> Batch:
    sig_docs, sigs, b, a, packed = _split(batch, num_perm=num_perm, dtype=dtype)
    sig_a = _unpack(packed, num_perm=num_perm, dtype=dtype)
    a, b = graph.verified(sig_docs, sigs, b, a, sig_a, threshold=threshold, num_perm=num_perm)
    return {"a": a, "b": b}


def symmetric(batch: Batch, *, partitions: int) -> Batch:
    a, b = u64(batch["a"]), u64(batch["b"])
    u, v = np.concatenate([a, b]), np.concatenate([b, a])
    return {"p": graph.partition_of(u, partitions), "u": u, "v": v}


def large_star_group(batch: Batch) -> Batch:
    u, v = u64(batch["u"]), u64(batch["v"])
    violations = graph.star_violations(u, v)
    big, small = graph.large_star(u, v)
    flag = np.zeros(len(big), dtype=np.int64)
    if violations:  # carried by one self-loop row, which small-star ignores
        big, small = np.append(big, u[:1]), np.append(small, u[:1])
        flag = np.append(flag, violations)
    return {"u": big, "v": small, "viol": flag}


def oriented(batch: Batch, *, partitions: int) -> Batch:
    u = u64(batch["u"])
    return {"p": graph.partition_of(u, partitions), "u": u, "v": u64(batch["v"])}


def small_star_group(batch: Batch) -> Batch:
    big, small = graph.small_star(u64(batch["u"]), u64(batch["v"]))
    return {"a": small, "b": big}


def resolve_rows(batch: Batch, *, partitions: int, exact: bool) -> Batch:
    """Star edges keyed by their leaf, or exact copies keyed by their representative, in one schema."""
    a, b = u64(batch["a"]), u64(batch["b"])
    # keyed by b: a star edge is (root a, leaf b), an exact row (copy a, representative b)
    doc, other = (a, b) if exact else (b, a)
    return {
        "p": graph.partition_of(b, partitions),
        "doc": doc,
        "other": other,
        "exact": np.full(len(a), exact, dtype=bool),
    }


def resolve_group(batch: Batch) -> Batch:
    is_exact = batch["exact"].astype(bool)
    docs, twins, same = graph.resolve_drops(
        u64(batch["doc"])[~is_exact], u64(batch["other"])[~is_exact],
        u64(batch["doc"])[is_exact], u64(batch["other"])[is_exact],
    )  # fmt: skip
    return {"doc": docs, "twin": twins, "exact": same}


def by_part(batch: Batch, *, key: str) -> Batch:
    ids = u64(batch[key])
    return {
        "part": (ids >> np.uint64(ROW_BITS)).astype(np.int64),
        "doc": u64(batch["doc"]),
        "twin": u64(batch["twin"]),
        "exact": batch["exact"].astype(bool),
        "twin_id": np.asarray(batch["twin_id"], dtype=object) if "twin_id" in batch else np.full(len(ids), "", object),
    }


def markers(batch: Batch) -> Batch:
    n = len(batch["part"])
    return {
        "part": batch["part"].astype(np.int64),
        "doc": np.full(n, graph.NONE, dtype=np.uint64),
        "twin": np.full(n, graph.NONE, dtype=np.uint64),
        "exact": np.zeros(n, dtype=bool),
        "twin_id": np.full(n, "", dtype=object),
    }


def twin_ids_group(batch: Batch, *, paths: Sequence[str], id_field: str) -> Batch:
    """Look up the ``id`` field of the kept twins that live in this group's part."""
    real = u64(batch["doc"]) != graph.NONE
    twins = u64(batch["twin"])[real]
    out = {k: np.asarray(v)[real] for k, v in batch.items()}
    if not len(twins):
        return out
    part = int(twins[0] >> np.uint64(ROW_BITS))
    wanted = np.unique(twins & ROW_MASK)
    found: dict[int, str] = {}
    row = 0
    for rows, _ in iter_rows(Path(paths[part]), READ_CHUNK):
        lo, hi = np.searchsorted(wanted, [row, row + len(rows)])
        for r in wanted[lo:hi].tolist():
            value = rows[r - row].get(id_field)
            found[r] = "" if value is None else str(value)
        row += len(rows)
    out["twin_id"] = np.array([found.get(int(t & ROW_MASK), "") for t in twins], dtype=object)
    out["part"] = (u64(out["doc"]) >> np.uint64(ROW_BITS)).astype(np.int64)
    return out
