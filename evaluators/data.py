"""Reading train and test inputs: JSONL, CSV or Parquet files, or a ``generate`` run directory.

A record is a dict with a ``label`` and either a ``text`` or the task's pair
fields (``premise``/``hypothesis``...). A run directory is read through its
``data.jsonl``. Text fields are found automatically (``text`` if present,
otherwise every string column that is not bookkeeping) unless named with
``fields``; several fields are joined with :func:`evaluators.encoder.join_fields`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import DataError
from engine.io import read_jsonl, read_rows

from .encoder import join_fields

__all__ = ["load_input", "load_records", "record_texts", "stratified_sample", "text_fields", "texts_and_labels"]

#: Columns that are never text to classify.
BOOKKEEPING = frozenset(
    {"id", "label", "strategy", "request_id", "model", "meta", "pred", "probs", "split", "source", "seed", "topic"}
)
#: Up to this many distinct labels are always accepted; past it, at most one label per two rows.
MIN_LABELS_CHECKED = 50


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL/CSV/Parquet file, or of ``data.jsonl`` in a run directory.

    A ``text`` column must hold strings and a ``label`` column strings or integers of a
    small set (a class, not a measurement); anything else is a ``DataError`` naming the
    file and the row. A run directory's torn last line (a killed run) is skipped.
    """
    p = Path(path)
    if p.is_dir():
        data = p / "data.jsonl"
        if not data.exists():
            raise DataError(f"{p} is a directory without data.jsonl", hint="pass a generate run directory or a file")
        records = list(read_jsonl(data, tolerate_torn_tail=True))
        p = data
    else:
        records = list(read_rows(p))
    _check_types(p, records)
    return records


def _check_types(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Fail on a numeric ``text`` column or on ``label`` values that are not classes."""
    labels: set[Any] = set()
    for i, r in enumerate(records, 1):
        text = r.get("text")
        if text is not None and not isinstance(text, str):
            raise DataError(
                f"{path}: row {i} has a {type(text).__name__} `text` ({str(text)[:40]}), not a string",
                hint="the text column must hold the texts to classify; pass the right file or rename the column",
            )
        label = r.get("label")
        if isinstance(label, float) and label.is_integer():
            label = r["label"] = int(label)  # 1.0 from a Parquet column with nulls means class 1
        if label is not None and (isinstance(label, bool) or not isinstance(label, str | int)):
            raise DataError(
                f"{path}: row {i} has a {type(label).__name__} label ({str(label)[:40]})",
                hint="labels must be class names (strings) or class numbers (integers)",
            )
        labels.add(label)
    labels.discard(None)
    if len(labels) > max(MIN_LABELS_CHECKED, len(records) // 2):
        raise DataError(
            f"{path}: {len(labels)} different labels in {len(records)} rows: the label column does not look like "
            "classes",
            hint="labels must come from a small set of classes; check that `label` is the right column",
        )


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
    for i, r in enumerate(records, 1):
        for n in names:
            value = r.get(n)
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"record {i} (id {r.get('id', '?')}) has a {type(value).__name__} in text field {n!r}: "
                    f"{str(value)[:40]}",
                    hint="text fields must hold strings; name the text columns with --fields",
                )
    return [join_fields({n: r.get(n) or "" for n in names}) for r in records]


def load_input(value: str | Path, split: str) -> list[dict[str, Any]]:
    """Records of a file or run directory, or the real ``split`` of a task named by a built-in name or a YAML file."""
    from engine.tasks import list_builtin, load_real, load_task

    p = Path(value)
    is_task = p.suffix.lower() in (".yaml", ".yml") or (not p.exists() and str(value) in list_builtin())
    if is_task:
        task = load_task(p if p.exists() else str(value))
        return [{"id": ex.id, **ex.fields, "label": ex.label} for ex in load_real(task, split)]
    if not p.exists():
        raise DataError(
            f"{p}: no such file",
            hint=f"check the path, or name a task: a YAML file or one of {', '.join(list_builtin())}",
        )
    return load_records(p)


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
