"""Reading train and test inputs: JSONL, CSV or Parquet files, or a ``generate`` run directory.

A record is a dict with a ``label`` and either a ``text`` or the task's pair
fields (``premise``/``hypothesis``...). A run directory is read through its
``data.jsonl``. Text fields are found automatically (``text`` if present,
otherwise every string column that is not bookkeeping) unless named with
``fields``; several fields are joined with :func:`evaluators.encoder.join_fields`.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import DataError

from .encoder import join_fields

__all__ = ["load_records", "record_texts", "stratified_sample", "text_fields", "texts_and_labels"]

#: Columns that are never text to classify.
BOOKKEEPING = frozenset(
    {"id", "label", "strategy", "request_id", "model", "meta", "pred", "probs", "split", "source", "seed", "topic"}
)
SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet")


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL/CSV/Parquet file, or of ``data.jsonl`` in a run directory."""
    p = Path(path)
    if p.is_dir():
        data = p / "data.jsonl"
        if not data.exists():
            raise DataError(f"{p} is a directory without data.jsonl", hint="pass a generate run directory or a file")
        p = data
    if not p.exists():
        raise DataError(f"{p}: no such file", hint="check the path")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(p)
    if suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            return [dict(row) for row in csv.DictReader(f)]
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            rows: list[dict[str, Any]] = pq.read_table(p).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"{p}: not a readable Parquet file ({exc})") from exc
        return rows
    raise DataError(f"{p}: unknown file type {suffix or '(none)'}", hint=f"use one of {', '.join(SUFFIXES)}")


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{p}:{n}: expected a JSON object per line")
            records.append(obj)
    return records


def text_fields(records: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> list[str]:
    """The text columns: ``fields`` if given, else ``text``, else the non-bookkeeping string columns."""
    if not records:
        return list(fields or ["text"])
    if fields:
        missing = [f for f in fields if f not in records[0]]
        if missing:
            raise DataError(f"no column {', '.join(missing)}", hint=f"columns are {', '.join(records[0])}")
        return list(fields)
    first = records[0]
    if "text" in first:
        return ["text"]
    found = [k for k, v in first.items() if k not in BOOKKEEPING and isinstance(v, str)]
    if not found:
        raise DataError("no text column (expected `text` or pair fields)", hint=f"columns are {', '.join(first)}")
    return found


def record_texts(records: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> list[str]:
    """One string per record for the encoder (missing fields read as empty)."""
    names = text_fields(records, fields)
    return [join_fields({n: str(r.get(n) or "") for n in names}) for r in records]


def texts_and_labels(
    records: Sequence[dict[str, Any]], fields: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """``(texts, labels)``; a record without a label is a ``DataError`` naming its position."""
    texts = record_texts(records, fields)
    labels: list[str] = []
    for i, r in enumerate(records):
        label = r.get("label")
        if label is None or str(label) == "":
            hint = "every training and test record needs a `label` column"
            raise DataError(f"record {i + 1} (id {r.get('id', '?')}) has no label", hint=hint)
        labels.append(str(label))
    return texts, labels


def stratified_sample(labels: Sequence[str], n: int, seed: int) -> list[int]:
    """Indices of ``n`` items whose label mix follows ``labels`` (largest remainder per label), seeded.

    Every label gets at least one item when ``n`` allows it.
    """
    if n >= len(labels):
        return list(range(len(labels)))
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    names = sorted(by_label)
    exact = {k: n * len(by_label[k]) / len(labels) for k in names}
    take = {k: int(exact[k]) for k in names}
    if n >= len(names):
        for k in names:
            take[k] = max(take[k], 1)
    while sum(take.values()) > n:
        k = max((k for k in names if take[k] > 1), key=lambda k: take[k] - exact[k])
        take[k] -= 1
    for k in sorted(names, key=lambda k: (-(exact[k] - take[k]), k)):
        if sum(take.values()) >= n:
            break
        if take[k] < len(by_label[k]):
            take[k] += 1
    chosen: list[int] = []
    for k in names:
        pool = by_label[k][:]
        rng.shuffle(pool)
        chosen.extend(pool[: take[k]])
    return sorted(chosen)
