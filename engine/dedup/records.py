"""Tabular record files for ``corpusforge dedup``: JSONL, CSV or Parquet in, the same out.

Records are kept whole: a JSONL line is written back byte for byte when the
output is JSONL too, a Parquet row keeps its Arrow types when the output is
Parquet, and otherwise records go through plain Python dicts.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from .. import io
from ..errors import ConfigError, DataError

__all__ = [
    "FORMATS",
    "Part",
    "Records",
    "expand_inputs",
    "format_of",
    "inspect_parts",
    "iter_rows",
    "pick_fields",
    "read_records",
    "text_of",
    "write_records",
]

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"unknown file format {path.suffix or '(no extension)'!r} for {path}",
            hint="use a .jsonl, .csv or .parquet file",
        )
    return fmt


@dataclass(slots=True)
class Records:
    """The rows of one input file, plus what is needed to write a subset back faithfully."""

    fmt: str
    rows: list[dict[str, Any]]
    columns: list[str]
    lines: list[str] | None = None  # raw JSONL lines
    table: Any = None  # pyarrow.Table for Parquet input

    def string_columns(self) -> list[str]:
        sample = self.rows[:1000]
        return [c for c in self.columns if any(isinstance(r.get(c), str) for r in sample)]


def read_records(path: Path) -> Records:
    fmt = format_of(path)
    if not path.is_file():
        raise DataError(f"input file {path} does not exist", hint="check the path")
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid family
            if type(exc).__module__.startswith("pyarrow") or isinstance(exc, OSError):
                raise DataError(f"cannot read {path} as Parquet: {exc}") from exc
            raise
        return Records(fmt, table.to_pylist(), list(table.column_names), table=table)
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    columns: dict[str, None] = {}
    for chunk_rows, chunk_lines in iter_rows(path):
        rows += chunk_rows
        lines += chunk_lines or []
        for row in chunk_rows[:1] if fmt == "csv" else chunk_rows:
            columns.update(dict.fromkeys(row))
    return Records(fmt, rows, list(columns), lines=lines if fmt == "jsonl" else None)


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def write_records(records: Records, keep: Sequence[int], path: Path) -> None:
    """Write the rows at indices ``keep`` (in that order) to ``path``, format by extension."""
    fmt = format_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for i in keep:
                line = records.lines[i] if records.lines is not None else None
                fh.write((line or json.dumps(records.rows[i], ensure_ascii=False, default=str)) + "\n")
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=records.columns, extrasaction="ignore")
            writer.writeheader()
            for i in keep:
                writer.writerow({k: _cell(v) for k, v in records.rows[i].items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if records.table is not None:
            table = records.table.take(pa.array(keep, type=pa.int64()))
        else:
            try:
                table = pa.Table.from_pylist([{c: records.rows[i].get(c) for c in records.columns} for i in keep])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise DataError(f"records do not fit one Parquet schema: {exc}", hint="write .jsonl instead") from exc
        pq.write_table(table, path)


# -- many parts (the distributed pass) --------------------------------------------------------------


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files named by ``inputs`` (files, folders of parts, or globs), each once, sorted within an argument.

    The order of the result is the input order: the first argument's files
    first. Folders contribute their ``.jsonl``/``.csv``/``.parquet`` files.
    """
    import glob

    found: dict[Path, None] = {}
    for arg in inputs:
        path = Path(arg)
        if any(ch in arg for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
            files = [m for m in matches if m.is_file() and m.suffix.lower() in FORMATS]
            if not files:
                raise DataError(f"no .jsonl, .csv or .parquet file matches {arg}", hint="check the pattern")
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
            if not files:
                raise DataError(f"folder {path} holds no .jsonl, .csv or .parquet file", hint="check the path")
        elif path.is_file():
            format_of(path)
            files = [path]
        else:
            raise DataError(f"input {path} does not exist", hint="check the path")
        for f in files:
            found.setdefault(f.resolve(), None)
    return list(found)


@dataclass(frozen=True, slots=True)
class Part:
    """One input file of a multi-part input: its format and columns, read from the header or first record."""

    path: Path
    fmt: str
    columns: tuple[str, ...]


def _part(path: Path) -> Part:
    fmt = format_of(path)
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
        except Exception as exc:
            if type(exc).__module__.startswith("pyarrow") or isinstance(exc, OSError):
                raise DataError(f"cannot read {path} as Parquet: {exc}") from exc
            raise
        if meta.metadata.num_rows == 0:
            raise DataError(f"input part {path} holds no records", hint="remove the empty part")
        return Part(path, fmt, tuple(meta.schema_arrow.names))
    first = next(io.read_csv(path) if fmt == "csv" else (row for row, _ in io.iter_jsonl(path)), None)
    if first is None:
        raise DataError(f"input part {path} holds no records", hint="remove the empty part")
    return Part(path, fmt, tuple(first))


def inspect_parts(paths: Sequence[Path]) -> list[Part]:
    """Check that the parts share one format and one set of columns (read cheaply, before any work)."""
    parts = [_part(p) for p in paths]
    first = parts[0]
    for part in parts[1:]:
        if part.fmt != first.fmt:
            raise DataError(
                f"mixed formats: {first.path} is {first.fmt}, {part.path} is {part.fmt}",
                hint="convert the parts to one format",
            )
        if set(part.columns) != set(first.columns):
            extra = sorted(set(part.columns) ^ set(first.columns))
            raise DataError(
                f"mixed schemas: {part.path} and {first.path} differ in column(s) {', '.join(extra)}",
                hint="give parts with the same columns",
            )
    return parts


def pick_fields(
    columns: Sequence[str], wanted: Sequence[str] | None, where: object, sample: Records | None
) -> list[str]:
    """The text fields to compare: ``wanted``, else ``text``, else every string column but id and label."""
    if wanted:
        missing = [f for f in wanted if f not in columns]
        if missing:
            raise ConfigError(
                f"field {missing[0]!r} not found in {where}", hint=f"columns are: {', '.join(columns) or '(none)'}"
            )
        return list(wanted)
    if "text" in columns:
        return ["text"]
    strings = sample.string_columns() if sample is not None else []
    fields = [c for c in strings if c not in ("id", "label")]
    if not fields:
        raise ConfigError(f"no text column found in {where}", hint="name the text column(s) with --field")
    return fields


def text_of(row: dict[str, Any], fields: Sequence[str]) -> str | None:
    """The compared text of a row: its fields joined by newlines, or None when it has none of them."""
    values = [row.get(f) for f in fields]
    if all(v is None for v in values):
        return None
    present = ["" if v is None else str(v) for v in values]
    return present[0] if len(present) == 1 else "\n".join(present)


def iter_rows(path: Path, chunk: int = 8192) -> Iterator[tuple[list[dict[str, Any]], list[str] | None]]:
    """The rows of one part, ``chunk`` at a time, with the raw lines of a JSONL part (blank lines skipped)."""
    fmt = format_of(path)
    if fmt == "jsonl":
        rows: list[dict[str, Any]] = []
        lines: list[str] = []
        for row, line in io.iter_jsonl(path):
            rows.append(row)
            lines.append(line)
            if len(rows) == chunk:
                yield rows, lines
                rows, lines = [], []
        if rows:
            yield rows, lines
        return
    source = io.read_csv(path) if fmt == "csv" else io.read_parquet(path)
    while batch := list(islice(source, chunk)):
        yield batch, None
