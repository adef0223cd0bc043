"""Real (human-labelled) data for a task: read, clean, de-duplicate and split into train and test.

``load_real(task, "train")`` returns ``Example`` records with stable ids
(``real-train-000123``). Splits are fixed and deterministic across machines:

- exact duplicates (after whitespace/case normalisation) are kept once, and a text
  that appears with different labels is dropped;
- when the source has its own train and test splits they are used (a test text is
  removed from train);
- otherwise each label's rows are ordered by ``blake2b(seed:text)`` and the first
  ``test_fraction`` (20%) of them is the test split: stratified and seeded, never
  Python's ``hash()``;
- each split is ordered by the same hash and numbered.

Results are cached in memory per process.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from ..errors import DataError
from ..io import describe_columns, read_rows
from ..types import Example
from .packaged import RawRow, read_packaged
from .task import Task

__all__ = ["SPLITS", "clear_cache", "has_real_data", "load_real", "read_table", "stable_key"]

SPLITS = ("train", "test")
Split = Literal["train", "test"]

_CACHE: dict[tuple[Any, ...], dict[str, list[Example]]] = {}


def stable_key(seed: int, text: str) -> str:
    """A hash that is the same on every machine and Python version."""
    return hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=12).hexdigest()


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def clear_cache() -> None:
    _CACHE.clear()


def _missing_hint(task: Task) -> str:
    cols = ",".join([*task.fields, "label"])
    return (
        f"pass --data FILE (JSONL, CSV or Parquet with columns {cols}; labels {'/'.join(task.labels)}; "
        "an optional `split` column with train/test)"
        + (
            f", or install the `datasets` package and run online to fetch {task.source.describe()}"
            if task.source.kind == "hf"
            else ""
        )
    )


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL, JSON (list), CSV, TSV or Parquet file as dicts (see ``engine.io.read_rows``)."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist", hint="check the --data path")
    return list(read_rows(path))


def _cell_label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 from a Parquet column with nulls means class 1
    return str(value)


def _rows_from_table(
    task: Task, rows: Iterable[Mapping[str, Any]], *, split_name: str | None = None, where: str = "the data"
) -> list[RawRow]:
    """Map columns (ours first, then the task's ``source.columns``) to fields, label and split."""
    cols = task.source.columns
    out: list[RawRow] = []
    for i, row in enumerate(rows):

        def col(name: str, row: Mapping[str, Any] = row) -> Any:
            if name in row:
                return row[name]
            mapped = cols.get(name)
            return row.get(mapped) if mapped is not None else None

        missing = [f for f in (*task.fields, "label") if col(f) is None]
        if missing:
            raise DataError(
                f"{where}: row {i + 1} has no column {missing[0]!r} (columns: {describe_columns(row)})",
                hint=f"the data needs columns {', '.join([*task.fields, 'label'])}",
            )
        bad = next((f for f in task.fields if not isinstance(col(f), str)), None)
        if bad is not None:
            value = col(bad)
            raise DataError(
                f"{where}: row {i + 1} has a {type(value).__name__} in text field {bad!r} ({str(value)[:40]}), "
                "not a string",
                hint=f"map the text column with source.columns, or fix the file; fields are {', '.join(task.fields)}",
            )
        label = col("label")
        if isinstance(label, bool) or not isinstance(label, str | int | float):
            raise DataError(
                f"{where}: row {i + 1} has a {type(label).__name__} label ({str(label)[:40]})",
                hint=f"labels must be one of {', '.join(task.labels)} (or values mapped by source.labels)",
            )
        fields = {f: str(col(f)).strip() for f in task.fields}
        split = col("split")
        orig_id = col("id")
        out.append(
            (
                fields,
                _cell_label(label),
                str(split) if split is not None else split_name,
                str(orig_id) if orig_id is not None else f"row{i}",
            )
        )
    return out


def _read_hf(task: Task) -> list[RawRow]:
    src = task.source
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DataError(
            f"task {task.name!r} has no packaged data and the `datasets` package is not installed",
            hint=_missing_hint(task),
        ) from exc
    rows: list[RawRow] = []
    for ours in SPLITS:
        theirs = src.splits.get(ours, ours)
        try:
            ds = datasets.load_dataset(src.name, src.config, split=theirs)
        except Exception as exc:  # the hub raises many kinds; all mean "not available here"
            raise DataError(f"cannot load {src.describe()} split {theirs!r}: {exc}", hint=_missing_hint(task)) from exc
        rows.extend(_rows_from_table(task, ds, split_name=ours, where=f"{src.describe()} split {theirs!r}"))
    return rows


def _read_rows(task: Task, data_file: Path | None) -> tuple[list[RawRow], str]:
    if data_file is not None:
        return _rows_from_table(task, read_table(data_file), where=str(data_file)), f"file:{data_file}"
    src = task.source
    if src.kind == "packaged":
        return read_packaged(src.name), src.describe()
    if src.kind == "file":
        path = Path(src.name)
        if not path.is_absolute() and task.path is not None:
            path = task.path.parent / path
        return _rows_from_table(task, read_table(path), where=str(path)), f"file:{path}"
    if src.kind == "hf":
        return _read_hf(task), src.describe()
    raise DataError(f"task {task.name!r} names no real-data source", hint=_missing_hint(task))


def _map_label(task: Task, value: str) -> str | None:
    if value in task.label_descriptions:
        return value
    mapped = task.source.label_map.get(value)
    if mapped is None and value.strip().lower() in task.label_descriptions:
        mapped = value.strip().lower()
    return mapped if mapped in task.label_descriptions else None


def _clean(task: Task, rows: list[RawRow]) -> list[RawRow]:
    """Map labels, drop empty rows, keep each text once, drop texts seen with two labels."""
    by_text: dict[str, list[RawRow]] = defaultdict(list)
    unknown: set[str] = set()
    for fields, label, split, orig_id in rows:
        mapped = _map_label(task, label)
        if mapped is None:
            unknown.add(label)
            continue
        if any(not v for v in fields.values()):
            continue
        by_text[_norm("\n".join(fields.values()))].append((fields, mapped, split, orig_id))
    if unknown:
        raise DataError(
            f"unknown labels {sorted(unknown)[:5]} in the real data of task {task.name!r}",
            hint=f"labels must be one of {', '.join(task.labels)} (or map them with source.labels)",
        )
    out: list[RawRow] = []
    for group in by_text.values():
        if len({r[1] for r in group}) == 1:
            # Prefer the copy in the test split, so a text in both goes to test only.
            out.append(next((r for r in group if r[2] == "test"), group[0]))
    return out


def _split(task: Task, rows: list[RawRow], seed: int) -> dict[str, list[RawRow]]:
    keyed = [(stable_key(seed, "\n".join(r[0].values())), r) for r in rows]
    keyed.sort(key=lambda kr: kr[0])
    own = {r[2] for _, r in keyed}
    if "train" in own and "test" in own:
        return {s: [r for _, r in keyed if r[2] == s] for s in SPLITS}
    per_label: dict[str, list[RawRow]] = defaultdict(list)
    for _, r in keyed:
        per_label[r[1]].append(r)
    test_ids: set[int] = set()
    for group in per_label.values():
        n_test = max(1, round(len(group) * task.source.test_fraction)) if len(group) > 1 else 0
        test_ids.update(id(r) for r in group[:n_test])
    return {
        "train": [r for _, r in keyed if id(r) not in test_ids],
        "test": [r for _, r in keyed if id(r) in test_ids],
    }


def _to_examples(split: str, rows: list[RawRow], origin: str) -> list[Example]:
    return [
        Example(
            id=f"real-{split}-{i:06d}",
            fields=dict(fields),
            label=label,
            strategy="real",
            meta={"source": origin, "source_id": orig_id},
        )
        for i, (fields, label, _, orig_id) in enumerate(rows)
    ]


def load_real(task: Task, split: Split | str, *, data_file: str | Path | None = None, seed: int = 0) -> list[Example]:
    """The task's real examples of ``split`` ("train" or "test"); raises ``DataError`` when there are none.

    ``seed`` chooses the split itself: 0 is the canonical split that evaluation uses, so generation (the shots
    of one/few-shot prompts) should load the train split with the same seed 0, not the run's sampling seed,
    or test examples can leak into prompts.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", hint="use train or test")
    path = Path(data_file).resolve() if data_file is not None else None
    stamp = path.stat().st_mtime_ns if path is not None and path.exists() else None
    key = (task.name, task.source, task.path, tuple(task.fields), tuple(task.labels), path, stamp, seed)
    cached = _CACHE.get(key)
    if cached is None:
        rows, origin = _read_rows(task, path)
        splits = _split(task, _clean(task, rows), seed)
        if not splits["train"] or not splits["test"]:
            raise DataError(
                f"the real data of task {task.name!r} ({origin}) has too few rows to split",
                hint="provide at least two examples per label",
            )
        cached = {s: _to_examples(s, splits[s], origin) for s in SPLITS}
        _CACHE[key] = cached
    return list(cached[split])


def has_real_data(task: Task) -> bool:
    """Whether ``load_real`` can work for this task here without ``--data`` (cheap check, no reading)."""
    src = task.source
    if src.kind == "packaged":
        from .packaged import PACKAGED

        return src.name in PACKAGED
    if src.kind == "file":
        path = Path(src.name)
        if not path.is_absolute() and task.path is not None:
            path = task.path.parent / path
        return path.is_file()
    if src.kind == "hf":
        import importlib.util

        return importlib.util.find_spec("datasets") is not None
    return False
