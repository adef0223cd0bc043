"""Corpus-scale near-duplicate removal on Ray Data: no process holds every signature, band key or pair.

The pass (components semantics, see :mod:`engine.dedup.components`)::

    parts ─► rows ─► normalise, exact key, MinHash (map_batches, the vectorised signatures)   [materialised]
          ─► band keys ─► shuffle by band key ─► candidate pairs + exact copies               (graph.band_pairs)
          ─► shuffle by a / by b with the signature rows ─► verified edges                   (graph.attach/verified)
          ─► large-star / small-star rounds until a star forest                              (graph.large_star...)
          ─► shuffle by node with the exact copies ─► every drop and its kept twin           (graph.resolve_drops)
          ─► [twin ids] ─► shuffle by part ─► each part filtered and written to a temp dir ─► renamed to OUT

Every shuffle is a ``groupby`` on a coarse partition number (a hash of the
key modulo ``partitions``) with a ``map_groups`` that does its numpy work on
the whole partition at once: all rows of one key meet in one call, and there
are only ``partitions`` Python calls per shuffle, not one per key.

Ids: a document is ``part index << 40 | row``; the part order is the input
order, so the first of a component is its minimum id.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from ..errors import DataError, EngineError
from ..staging import staged_dir
from . import graph
from .filter import EXACT, NEAR, DedupConfig, DedupFilter
from .index import DedupIndex
from .records import Part, iter_rows, text_of

__all__ = ["MANIFEST", "RayDedupResult", "ray_dedup"]

ROW_BITS = 40
ROW_MASK = np.uint64((1 << ROW_BITS) - 1)
#: Band rows per partition the default partition count aims for (about 100 MB of rows per group call).
ROWS_PER_PARTITION = 4_000_000
#: Band rows per band-key shuffle: a large corpus shuffles its bands a few at a time, in rounds, so the rows in
#: flight (33 bytes each) fit the object store instead of spilling the whole corpus's worth to disk.
BAND_ROWS_PER_ROUND = 60_000_000
#: Rows read from a part (and signed) at a time.
READ_CHUNK = 8192
#: Large-star/small-star rounds before giving up (O(log n) are needed; 30 covers any real corpus).
MAX_ROUNDS = 30
MANIFEST = "_manifest.json"
DROPPED = "dropped"

Batch = dict[str, NDArray[Any]]
U64 = graph.U64


@dataclass(frozen=True, slots=True)
class RayDedupResult:
    """Counts of one run, as written to the manifest."""

    rows: int
    kept: int
    exact: int
    near: int
    unchecked: int
    partitions: int
    rounds: int
    edges: int


@lru_cache(maxsize=4)
def _signer(config: DedupConfig) -> DedupFilter:
    return DedupFilter(config)


def _index(config: DedupConfig) -> DedupIndex:
    return _signer(config).index


def _u64(values: Any) -> NDArray[np.uint64]:
    return np.asarray(values, dtype=np.uint64)


# -- stage functions (run in Ray workers) ------------------------------------------------------------


def _sign_parts(batch: Batch, *, fields: Sequence[str], config: DedupConfig) -> Iterator[Batch]:
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
            yield {"doc": _u64(docs), "ekey": _u64(signed.keys), "sig": signed.signatures}


def _band_rows(batch: Batch, *, config: DedupConfig, partitions: int, lo: int, hi: int) -> Batch:
    """One row per document and band of ``lo..hi-1``: the band key, its partition, the document and its exact key."""
    keys = np.ascontiguousarray(_index(config).band_keys(batch["sig"])[:, lo:hi])
    n, bands = keys.shape
    flat = keys.reshape(-1)
    return {
        "p": (flat % np.uint64(partitions)).astype(np.int32),
        "key": flat,
        "doc": np.repeat(_u64(batch["doc"]), bands),
        "ekey": np.repeat(_u64(batch["ekey"]), bands),
        "band": np.tile(np.arange(lo, hi, dtype=np.uint8), n),
    }


def _pairs_group(batch: Batch) -> Batch:
    a, b, exact_doc, exact_rep = graph.band_pairs(batch["key"], batch["doc"], batch["ekey"], batch["band"])
    kind = np.concatenate([np.zeros(len(a), dtype=np.uint8), np.ones(len(exact_doc), dtype=np.uint8)])
    return {"kind": kind, "a": np.concatenate([a, exact_doc]), "b": np.concatenate([b, exact_rep])}


def _endpoints(batch: Batch) -> Batch:
    return {"doc": np.unique(np.concatenate([_u64(batch["a"]), _u64(batch["b"])]))}


def _pack(sigs: NDArray[Any]) -> NDArray[Any]:
    """Signatures as one ``bytes`` per row: a binary column, so pair rows can carry an empty one (not 512 zeros)."""
    return np.array([row.tobytes() for row in sigs], dtype=object)


def _unpack(packed: NDArray[Any], *, num_perm: int, dtype: str) -> NDArray[Any]:
    if not len(packed):
        return np.zeros((0, num_perm), dtype=dtype)
    return np.frombuffer(b"".join(packed.tolist()), dtype=dtype).reshape(len(packed), num_perm)


def _sig_rows(batch: Batch, *, partitions: int, needed: Any) -> Batch:
    """The signature rows of the documents some candidate pair names (``needed``: a sorted array in the object store)."""
    import ray

    wanted = ray.get(needed)
    docs = _u64(batch["doc"])
    at = np.searchsorted(wanted, docs)
    keep = (at < len(wanted)) & (wanted[np.minimum(at, len(wanted) - 1)] == docs) if len(wanted) else at < 0
    docs = docs[keep]
    return {
        "p": graph.partition_of(docs, partitions),
        "doc": docs,
        "other": np.full(len(docs), graph.NONE, dtype=np.uint64),
        "sig": _pack(batch["sig"][keep]),
    }


def _pair_rows(batch: Batch, *, partitions: int) -> Batch:
    a = _u64(batch["a"])
    return {
        "p": graph.partition_of(a, partitions),
        "doc": a,
        "other": _u64(batch["b"]),
        "sig": np.full(len(a), b"", dtype=object),
    }


def _split(batch: Batch, *, num_perm: int, dtype: str) -> tuple[U64, NDArray[Any], U64, U64, NDArray[Any]]:
    """A joined partition: the signature rows ``(doc, sig)``, and the other rows ``(doc, other, packed sig)``."""
    docs, other = _u64(batch["doc"]), _u64(batch["other"])
    is_sig = other == graph.NONE
    sigs = _unpack(np.asarray(batch["sig"])[is_sig], num_perm=num_perm, dtype=dtype)
    return docs[is_sig], sigs, docs[~is_sig], other[~is_sig], np.asarray(batch["sig"])[~is_sig]


def _attach_group(batch: Batch, *, partitions: int, num_perm: int, dtype: str) -> Batch:
    sig_docs, sigs, a, b, _ = _split(batch, num_perm=num_perm, dtype=dtype)
    b, a, sig_a = graph.attach(sig_docs, sigs, a, b)
    return {"p": graph.partition_of(b, partitions), "doc": b, "other": a, "sig": _pack(sig_a)}


def _verify_group(batch: Batch, *, threshold: float, num_perm: int, dtype: str) -> Batch:
    sig_docs, sigs, b, a, packed = _split(batch, num_perm=num_perm, dtype=dtype)
    sig_a = _unpack(packed, num_perm=num_perm, dtype=dtype)
    a, b = graph.verified(sig_docs, sigs, b, a, sig_a, threshold=threshold, num_perm=num_perm)
    return {"a": a, "b": b}


def _symmetric(batch: Batch, *, partitions: int) -> Batch:
    a, b = _u64(batch["a"]), _u64(batch["b"])
    u, v = np.concatenate([a, b]), np.concatenate([b, a])
    return {"p": graph.partition_of(u, partitions), "u": u, "v": v}


def _large_star_group(batch: Batch) -> Batch:
    u, v = _u64(batch["u"]), _u64(batch["v"])
    violations = graph.star_violations(u, v)
    big, small = graph.large_star(u, v)
    flag = np.zeros(len(big), dtype=np.int64)
    if violations:  # carried by one self-loop row, which small-star ignores
        big, small = np.append(big, u[:1]), np.append(small, u[:1])
        flag = np.append(flag, violations)
    return {"u": big, "v": small, "viol": flag}


def _oriented(batch: Batch, *, partitions: int) -> Batch:
    u = _u64(batch["u"])
    return {"p": graph.partition_of(u, partitions), "u": u, "v": _u64(batch["v"])}


def _small_star_group(batch: Batch) -> Batch:
    big, small = graph.small_star(_u64(batch["u"]), _u64(batch["v"]))
    return {"a": small, "b": big}


def _resolve_rows(batch: Batch, *, partitions: int, exact: bool) -> Batch:
    """Star edges keyed by their leaf, or exact copies keyed by their representative, in one schema."""
    a, b = _u64(batch["a"]), _u64(batch["b"])
    # keyed by b: a star edge is (root a, leaf b), an exact row (copy a, representative b)
    doc, other = (a, b) if exact else (b, a)
    return {
        "p": graph.partition_of(b, partitions),
        "doc": doc,
        "other": other,
        "exact": np.full(len(a), exact, dtype=bool),
    }


def _resolve_group(batch: Batch) -> Batch:
    is_exact = batch["exact"].astype(bool)
    docs, twins, same = graph.resolve_drops(
        _u64(batch["doc"])[~is_exact], _u64(batch["other"])[~is_exact],
        _u64(batch["doc"])[is_exact], _u64(batch["other"])[is_exact],
    )  # fmt: skip
    return {"doc": docs, "twin": twins, "exact": same}


def _by_part(batch: Batch, *, key: str) -> Batch:
    ids = _u64(batch[key])
    return {
        "part": (ids >> np.uint64(ROW_BITS)).astype(np.int64),
        "doc": _u64(batch["doc"]),
        "twin": _u64(batch["twin"]),
        "exact": batch["exact"].astype(bool),
        "twin_id": np.asarray(batch["twin_id"], dtype=object) if "twin_id" in batch else np.full(len(ids), "", object),
    }


def _markers(batch: Batch) -> Batch:
    n = len(batch["part"])
    return {
        "part": batch["part"].astype(np.int64),
        "doc": np.full(n, graph.NONE, dtype=np.uint64),
        "twin": np.full(n, graph.NONE, dtype=np.uint64),
        "exact": np.zeros(n, dtype=bool),
        "twin_id": np.full(n, "", dtype=object),
    }


def _twin_ids_group(batch: Batch, *, paths: Sequence[str], id_field: str) -> Batch:
    """Look up the ``id`` field of the kept twins that live in this group's part."""
    real = _u64(batch["doc"]) != graph.NONE
    twins = _u64(batch["twin"])[real]
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
    out["part"] = (_u64(out["doc"]) >> np.uint64(ROW_BITS)).astype(np.int64)
    return out


# -- writing ------------------------------------------------------------------------------------------


def part_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{fmt}"


def _write_group(
    batch: Batch, *, paths: Sequence[str], labels: Sequence[str], fields: Sequence[str], out: str, fmt: str
) -> Batch:
    """Write one part's kept rows and its ``dropped`` rows; returns its counts."""
    part = int(batch["part"][0])
    real = _u64(batch["doc"]) != graph.NONE
    rows_of = (_u64(batch["doc"])[real] & ROW_MASK).tolist()
    drops = {
        r: (twin, bool(exact), twin_id)
        for r, twin, exact, twin_id in zip(
            rows_of,
            _u64(batch["twin"])[real].tolist(),
            batch["exact"][real].tolist(),
            np.asarray(batch["twin_id"])[real].tolist(),
            strict=True,
        )
    }
    src = Path(paths[part])
    target = Path(out) / part_name(part, fmt)
    dropped_path = Path(out) / DROPPED / part_name(part, "jsonl")
    counts = {"rows": 0, "kept": 0, "exact": 0, "near": 0, "unchecked": 0}
    kept_rows: list[dict[str, Any]] = []
    writer: Any = None
    jsonl_out = target.open("w", encoding="utf-8") if fmt == "jsonl" else nullcontext()
    with jsonl_out as out_fh, dropped_path.open("w", encoding="utf-8") as drop_fh:
        row = 0
        for rows, lines in iter_rows(src, READ_CHUNK):
            keep_mask = []
            for i, record in enumerate(rows):
                r = row + i
                hit = drops.get(r)
                if hit is None:
                    keep_mask.append(True)
                    counts["unchecked"] += text_of(record, fields) is None
                    continue
                keep_mask.append(False)
                twin, exact, twin_id = hit
                twin_name = twin_id or f"{labels[twin >> ROW_BITS]}#{twin & int(ROW_MASK)}"
                reason = EXACT if exact else NEAR
                counts["exact" if exact else "near"] += 1
                entry = {"reason": reason, "duplicate_of": twin_name, "record": record}
                drop_fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
            counts["rows"] += len(rows)
            counts["kept"] += sum(keep_mask)
            if out_fh is not None:
                for i, record in enumerate(rows):
                    if keep_mask[i]:
                        line = lines[i] if lines is not None else json.dumps(record, ensure_ascii=False, default=str)
                        out_fh.write(line + "\n")
            else:
                writer = _parquet_rows(writer, src, target, rows, keep_mask, kept_rows)
            row += len(rows)
    if fmt == "parquet":
        _finish_parquet(writer, src, target, kept_rows)
    return {k: np.array([v], dtype=np.int64) for k, v in counts.items()}


def _parquet_rows(
    writer: Any, src: Path, target: Path, rows: list[dict[str, Any]], keep: list[bool], kept_rows: list[dict[str, Any]]
) -> Any:
    """Parquet in: stream kept rows with the part's own schema; other formats: collect them for one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if src.suffix.lower() != ".parquet":
        kept_rows.extend(r for r, k in zip(rows, keep, strict=True) if k)
        return writer
    schema = pq.ParquetFile(src).schema_arrow
    if writer is None:
        writer = pq.ParquetWriter(target, schema)
    kept = [r for r, k in zip(rows, keep, strict=True) if k]
    if kept:
        writer.write_table(pa.Table.from_pylist(kept, schema=schema))
    return writer


def _finish_parquet(writer: Any, src: Path, target: Path, kept_rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if src.suffix.lower() == ".parquet":
        if writer is None:
            writer = pq.ParquetWriter(target, pq.ParquetFile(src).schema_arrow)
        writer.close()
        return
    try:
        table = pa.Table.from_pylist(kept_rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"rows of {src} do not fit one Parquet schema: {exc}", hint="write --format jsonl") from exc
    pq.write_table(table, target)


# -- the driver --------------------------------------------------------------------------------------


def _first_engine_error(exc: BaseException) -> EngineError | None:
    """The engine error a worker raised, unwrapped from Ray's task errors (whose text holds the traceback)."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, EngineError) and not isinstance(e, RayError):
            return e
        todo.extend([e.__context__, e.__cause__, getattr(e, "cause", None)])
    return None


def one_line(exc: BaseException) -> BaseException:
    """What to raise for ``exc``: the engine error a worker raised, else a one-line DataError."""
    found = _first_engine_error(exc)
    if found is not None or isinstance(exc, KeyboardInterrupt | SystemExit):
        return found if found is not None else exc
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return DataError(
        f"the Ray pass failed: {type(exc).__name__}: {lines[-1] if lines else ''}",
        hint="see the Ray logs under /tmp/ray/session_latest/logs",
    )


def default_partitions(rows: int, bands: int, cpus: int) -> int:
    return max(2 * cpus, math.ceil(rows * bands / ROWS_PER_PARTITION))


def ray_dedup(
    parts: Sequence[Part],
    *,
    fields: Sequence[str],
    out: Path,
    fmt: str,
    config: DedupConfig,
    partitions: int | None = None,
    note: Callable[[str], None] | None = None,
) -> RayDedupResult:
    """Run the pass on the connected Ray cluster and write ``out`` (see the module doc).

    ``note`` receives one line per finished stage, with its seconds (progress and benchmarks).
    """
    try:
        with staged_dir(out, marker=MANIFEST, what="dedup") as tmp:
            (tmp / DROPPED).mkdir()
            result = _run(parts, fields=fields, tmp=tmp, fmt=fmt, config=config, partitions=partitions, note=note)
            manifest = {
                "inputs": [str(p.path) for p in parts],
                "fields": list(fields),
                "mode": "components",
                "threshold": config.threshold,
                "num_perm": config.num_perm,
                "shingles": config.shingle_mode,
                "format": fmt,
                "rows": result.rows,
                "kept": result.kept,
                "dropped": {EXACT: result.exact, NEAR: result.near},
                "unchecked": result.unchecked,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return result
    except BaseException as exc:
        err = one_line(exc)
        if err is exc:
            raise
        raise err from exc


def _run(
    parts: Sequence[Part],
    *,
    fields: Sequence[str],
    tmp: Path,
    fmt: str,
    config: DedupConfig,
    partitions: int | None,
    note: Callable[[str], None] | None,
) -> RayDedupResult:
    import ray.data as rd
    from ray.data.context import ShuffleStrategy
    from ray.data.expressions import col

    from ..ray_cluster import cluster_cpus

    # the task-based sort shuffle: measured 0.1-0.5 s per shuffle here where the actor-based default took 5-10 s
    rd.DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED

    clock = [time.perf_counter()]

    def done(stage: str) -> None:
        now = time.perf_counter()
        if note is not None:
            note(f"{stage}: {now - clock[0]:.2f} s")
        clock[0] = now

    paths = [str(p.path) for p in parts]
    common = os.path.commonpath([os.path.dirname(p) for p in paths])
    labels = [os.path.relpath(p, common) for p in paths]
    files = rd.from_items([{"part": i, "path": p} for i, p in enumerate(paths)], override_num_blocks=len(paths))
    signed = files.map_batches(
        cast(Any, _sign_parts), batch_size=1, batch_format="numpy", fn_kwargs={"fields": list(fields), "config": config}
    )
    signed = signed.materialize()
    done("read and sign")
    index = _index(config)
    docs = signed.count()
    p = partitions or default_partitions(docs, len(index.bands), cluster_cpus())
    dtype = str(np.dtype(np.uint32 if config.scheme == "affine32" else np.uint64))

    # candidate pairs and exact copies, by band key, a few bands per round (exact copies come from band 0's round;
    # a pair found in several rounds is counted once at verification, which dedupes the pairs of each document)
    bands = len(index.bands)
    per_round = max(1, min(bands, BAND_ROWS_PER_ROUND // max(docs, 1)))
    found = []
    for lo in range(0, bands, per_round):
        hi = min(bands, lo + per_round)
        p_round = partitions or default_partitions(docs, hi - lo, cluster_cpus())
        found.append(
            signed.map_batches(
                _band_rows,
                fn_kwargs={"config": config, "partitions": p_round, "lo": lo, "hi": hi},
                batch_format="numpy",
            )
            .groupby("p", num_partitions=p_round)
            .map_groups(_pairs_group, batch_format="numpy")
            .materialize()
        )
    cand = found[0].union(*found[1:]).materialize() if len(found) > 1 else found[0]
    del found
    done(f"band keys and candidate pairs ({math.ceil(bands / per_round)} round(s))")
    pairs = cand.filter(expr=col("kind") == 0)
    exact = cand.filter(expr=col("kind") == 1)

    # verification: a's signature joins the pair, then b's. Only the signatures of documents in some candidate pair
    # take part: the ids they name (8 bytes each, a few per duplicate) are broadcast through the object store, so the
    # shuffles move a signature per candidate, not one per document (at 10M texts, 5 GB of signatures twice)
    import ray

    ends = pairs.map_batches(_endpoints, batch_format="numpy")
    needed = ray.put(
        np.unique(np.concatenate([_u64(b["doc"]) for b in ends.iter_batches(batch_format="numpy")] or [_u64([])]))
    )
    # read once (both joins use them), after which the whole corpus's signatures can go
    sig_rows = signed.map_batches(
        _sig_rows, fn_kwargs={"partitions": p, "needed": needed}, batch_format="numpy"
    ).materialize()
    del signed, needed
    pair_rows = pairs.map_batches(_pair_rows, fn_kwargs={"partitions": p}, batch_format="numpy")
    shape = {"num_perm": config.num_perm, "dtype": dtype}
    halfway = (
        sig_rows.union(pair_rows)
        .groupby("p", num_partitions=p)
        .map_groups(_attach_group, fn_kwargs={"partitions": p, **shape}, batch_format="numpy")
        .materialize()  # the second join's shuffle reads it whole, once
    )
    edges = (
        sig_rows.union(halfway)
        .groupby("p", num_partitions=p)
        .map_groups(_verify_group, fn_kwargs={"threshold": config.threshold, **shape}, batch_format="numpy")
        .materialize()
    )
    edge_count = edges.count()
    del sig_rows, pair_rows, halfway  # the signatures are done with: their blocks can go
    done(f"verification ({edge_count} edges)")

    # connected components: large-star / small-star until a star forest
    rounds = 0
    while edge_count:
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise DataError(f"connected components did not converge in {MAX_ROUNDS} rounds")
        large = (
            edges.map_batches(_symmetric, fn_kwargs={"partitions": p}, batch_format="numpy")
            .groupby("p", num_partitions=p)
            .map_groups(_large_star_group, batch_format="numpy")
            .materialize()
        )
        if not large.sum("viol"):
            break
        edges = (
            large.map_batches(_oriented, fn_kwargs={"partitions": p}, batch_format="numpy")
            .groupby("p", num_partitions=p)
            .map_groups(_small_star_group, batch_format="numpy")
            .materialize()
        )

    done(f"connected components ({rounds} rounds)")

    # every drop and its kept twin
    stars = edges.map_batches(_resolve_rows, fn_kwargs={"partitions": p, "exact": False}, batch_format="numpy")
    copies = exact.map_batches(_resolve_rows, fn_kwargs={"partitions": p, "exact": True}, batch_format="numpy")
    drops = stars.union(copies).groupby("p", num_partitions=p).map_groups(_resolve_group, batch_format="numpy")

    id_field = "id" if "id" in parts[0].columns else None
    markers = rd.from_items([{"part": i} for i in range(len(paths))]).map_batches(_markers, batch_format="numpy")
    groups = min(len(paths), max(p, 1))
    if id_field is not None:
        drops = (
            drops.map_batches(_by_part, fn_kwargs={"key": "twin"}, batch_format="numpy")
            .groupby("part", num_partitions=groups)
            .map_groups(_twin_ids_group, fn_kwargs={"paths": paths, "id_field": id_field}, batch_format="numpy")
        )
    else:
        drops = drops.map_batches(_by_part, fn_kwargs={"key": "doc"}, batch_format="numpy")
    written = (
        drops.union(markers)
        .groupby("part", num_partitions=groups)
        .map_groups(
            _write_group,
            fn_kwargs={"paths": paths, "labels": labels, "fields": list(fields), "out": str(tmp), "fmt": fmt},
            batch_format="numpy",
        )
        .take_all()
    )
    done("twins and writing")
    total = {k: sum(int(w[k]) for w in written) for k in ("rows", "kept", "exact", "near", "unchecked")}
    if len(written) != len(paths):  # pragma: no cover - every part has a marker row
        raise DataError(f"wrote {len(written)} of {len(paths)} parts")
    return RayDedupResult(partitions=p, rounds=rounds, edges=edge_count, **total)
