"""The last stage of the Ray Data dedup pass: each input part's kept rows, and its dropped rows with their twins."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from . import graph
from .filter import EXACT, NEAR
from .ray_stages import READ_CHUNK, ROW_BITS, ROW_MASK, Batch, u64
from .records import iter_rows, text_of

__all__ = ["DROPPED", "part_name", "write_group"]

#: The folder of dropped rows, beside the kept parts.
DROPPED = "dropped"


def part_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{fmt}"


def write_group(
    batch: Batch, *, paths: Sequence[str], labels: Sequence[str], fields: Sequence[str], out: str, fmt: str
) -> Batch:
    """Write one part's kept rows and its ``dropped`` rows; returns its counts."""
    part = int(batch["part"][0])
    real = u64(batch["doc"]) != graph.NONE
    rows_of = (u64(batch["doc"])[real] & ROW_MASK).tolist()
    drops = {
        r: (twin, bool(exact), twin_id)
        for r, twin, exact, twin_id in zip(
            rows_of,
            u64(batch["twin"])[real].tolist(),
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
