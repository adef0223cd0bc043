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
order, so the first of a component is its minimum id. This module is the
driver: the functions the workers run are in :mod:`.ray_stages`, the writing
of the parts in :mod:`.ray_write`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import DataError, EngineError
from ..staging import staged_dir
from . import ray_stages as st
from . import ray_write as wr
from .filter import EXACT, NEAR, DedupConfig
from .ray_write import DROPPED, part_name
from .records import Part

__all__ = ["DROPPED", "MANIFEST", "RayDedupResult", "part_name", "ray_dedup"]

#: Band rows per partition the default partition count aims for (about 100 MB of rows per group call).
ROWS_PER_PARTITION = 4_000_000
#: Band rows per band-key shuffle: a large corpus shuffles its bands a few at a time, in rounds, so the rows in
#: flight (33 bytes each) fit the object store instead of spilling the whole corpus's worth to disk.
BAND_ROWS_PER_ROUND = 60_000_000
#: Large-star/small-star rounds before giving up (O(log n) are needed; 30 covers any real corpus).
MAX_ROUNDS = 30
MANIFEST = "_manifest.json"


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
        cast(Any, st.sign_parts),
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={"fields": list(fields), "config": config},
    )
    signed = signed.materialize()
    done("read and sign")
    index = st.index_of(config)
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
                st.band_rows,
                fn_kwargs={"config": config, "partitions": p_round, "lo": lo, "hi": hi},
                batch_format="numpy",
            )
            .groupby("p", num_partitions=p_round)
            .map_groups(st.pairs_group, batch_format="numpy")
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

    ends = pairs.map_batches(st.endpoints, batch_format="numpy")
    needed = ray.put(
        np.unique(np.concatenate([st.u64(b["doc"]) for b in ends.iter_batches(batch_format="numpy")] or [st.u64([])]))
    )
    # read once (both joins use them), after which the whole corpus's signatures can go
    sig_rows = signed.map_batches(
        st.sig_rows, fn_kwargs={"partitions": p, "needed": needed}, batch_format="numpy"
    ).materialize()
    del signed, needed
    pair_rows = pairs.map_batches(st.pair_rows, fn_kwargs={"partitions": p}, batch_format="numpy")
    shape = {"num_perm": config.num_perm, "dtype": dtype}
    halfway = (
        sig_rows.union(pair_rows)
        .groupby("p", num_partitions=p)
        .map_groups(st.attach_group, fn_kwargs={"partitions": p, **shape}, batch_format="numpy")
        .materialize()  # the second join's shuffle reads it whole, once
    )
    edges = (
        sig_rows.union(halfway)
        .groupby("p", num_partitions=p)
        .map_groups(st.verify_group, fn_kwargs={"threshold": config.threshold, **shape}, batch_format="numpy")
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
            edges.map_batches(st.symmetric, fn_kwargs={"partitions": p}, batch_format="numpy")
            .groupby("p", num_partitions=p)
            .map_groups(st.large_star_group, batch_format="numpy")
            .materialize()
        )
        if not large.sum("viol"):
            break
        edges = (
            large.map_batches(st.oriented, fn_kwargs={"partitions": p}, batch_format="numpy")
            .groupby("p", num_partitions=p)
            .map_groups(st.small_star_group, batch_format="numpy")
            .materialize()
        )

    done(f"connected components ({rounds} rounds)")

    # every drop and its kept twin
    stars = edges.map_batches(st.resolve_rows, fn_kwargs={"partitions": p, "exact": False}, batch_format="numpy")
    copies = exact.map_batches(st.resolve_rows, fn_kwargs={"partitions": p, "exact": True}, batch_format="numpy")
    drops = stars.union(copies).groupby("p", num_partitions=p).map_groups(st.resolve_group, batch_format="numpy")

    id_field = "id" if "id" in parts[0].columns else None
    markers = rd.from_items([{"part": i} for i in range(len(paths))]).map_batches(st.markers, batch_format="numpy")
    groups = min(len(paths), max(p, 1))
    if id_field is not None:
        drops = (
            drops.map_batches(st.by_part, fn_kwargs={"key": "twin"}, batch_format="numpy")
            .groupby("part", num_partitions=groups)
            .map_groups(st.twin_ids_group, fn_kwargs={"paths": paths, "id_field": id_field}, batch_format="numpy")
        )
    else:
        drops = drops.map_batches(st.by_part, fn_kwargs={"key": "doc"}, batch_format="numpy")
    written = (
        drops.union(markers)
        .groupby("part", num_partitions=groups)
        .map_groups(
            wr.write_group,
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
