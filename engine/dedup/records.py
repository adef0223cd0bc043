"""Tabular record files for ``corpusforge dedup``: JSONL, CSV or Parquet in, the same out.

Records are kept whole: a JSONL line is written back byte for byte when the
output is JSONL too, a Parquet row keeps its Arrow types when the output is
Parquet, and otherwise records go through plain Python dicts.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

__all__ = ["FORMATS", "Records", "format_of", "read_records", "write_records"]

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
    try:
        if fmt == "jsonl":
            return _read_jsonl(path)
        if fmt == "csv":
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                rows: list[dict[str, Any]] = list(reader)
                return Records(fmt, rows, list(reader.fieldnames or []))
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return Records(fmt, table.to_pylist(), list(table.column_names), table=table)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own ArrowInvalid family
        if type(exc).__module__.startswith("pyarrow"):
            raise DataError(f"cannot read {path} as Parquet: {exc}") from exc
        raise


def _read_jsonl(path: Path) -> Records:
    rows, lines, columns = [], [], {}
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: not valid JSON ({exc.msg})", hint="one JSON object per line"
                ) from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
            lines.append(line.rstrip("\r\n"))
            columns.update(dict.fromkeys(row))
    return Records("jsonl", rows, list(columns), lines=lines)


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
