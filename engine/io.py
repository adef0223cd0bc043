"""Reading rows from data files and writing files atomically, with one-line errors that name the file, the line and the fix.

Reading: ``read_rows(path)`` yields one dict per row of a JSONL, JSON (an array),
CSV, TSV or Parquet file; ``read_jsonl(path)`` reads JSONL only and, with
``tolerate_torn_tail``, stops quietly at a last line a killed writer left half
written. Text files must be UTF-8 (a BOM is allowed); a stray byte, a binary
file, a malformed line or a ragged CSV row is a ``DataError`` naming the file,
the line (and byte offset) and what to do.

Writing: ``atomic_write_text``/``atomic_write_json``/``atomic_write_rows`` write
a temporary file in the same directory, fsync it, then ``os.replace`` it over
the target, so a reader sees the old file or the new one, never half of one.
When writing fails (a full disk, no permission) the temporary file is removed,
the old file is left as it was, and a ``DataError`` says what to do.

Task and grid files are YAML: ``read_yaml(path)`` rejects a key given twice in
one mapping and reports syntax errors with their line and column.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, DataError

__all__ = [
    "JSONL_SUFFIXES",
    "ROW_SUFFIXES",
    "atomic_write_json",
    "atomic_write_rows",
    "atomic_write_text",
    "describe_columns",
    "iter_jsonl",
    "parse_yaml",
    "read_csv",
    "read_jsonl",
    "read_parquet",
    "read_rows",
    "read_yaml",
]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
#: File types ``read_rows`` reads (``.json``: an array of objects, or JSONL).
ROW_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".csv", ".tsv", ".parquet")

_REENCODE = "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
#: Rows per Parquet batch: bounded memory for large files.
_PARQUET_BATCH = 8192
_MAX_SHOWN_COLUMNS = 8
_MAX_COLUMN_CHARS = 24


# -- reading -----------------------------------------------------------------------------------------


def describe_columns(columns: Iterable[Any]) -> str:
    """A short, printable list of column names for an error message (never a wall of binary)."""
    names = [str(c) for c in columns]
    shown = []
    for name in names[:_MAX_SHOWN_COLUMNS]:
        clean = "".join(ch if ch.isprintable() else "?" for ch in name)
        shown.append(clean if len(clean) <= _MAX_COLUMN_CHARS else clean[: _MAX_COLUMN_CHARS - 3] + "...")
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return (", ".join(shown) or "(none)") + more


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file", hint="pass a JSONL, CSV or Parquet file")
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="check the path")


def _lines(path: Path, fh: IO[bytes]) -> Iterator[tuple[int, str, bool]]:
    """``(line number, text, ended by a newline)`` of a UTF-8 text file, failing on the first non-UTF-8 byte."""
    offset = 0
    for number, raw in enumerate(fh, 1):
        if b"\x00" in raw:
            at = offset + raw.index(b"\x00")
            raise DataError(
                f"{path}:{number}: a NUL byte (at byte {at}): this is a binary file, not UTF-8 text",
                hint="export the data as UTF-8 CSV or JSONL; a Parquet file needs the .parquet suffix",
            )
        bom = 3 if number == 1 and raw.startswith(b"\xef\xbb\xbf") else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[bom + exc.start : bom + exc.start + 1].hex()
            raise DataError(
                f"{path}:{number}: byte 0x{bad} (at byte {offset + bom + exc.start}) is not UTF-8", hint=_REENCODE
            ) from None
        offset += len(raw)
        yield number, text, text.endswith("\n")


def _json_error(path: Path, number: int, exc: json.JSONDecodeError) -> DataError:
    return DataError(
        f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})",
        hint=f"fix or delete line {number}; each line must be one JSON object",
    )


def iter_jsonl(path: str | Path, *, tolerate_torn_tail: bool = False) -> Iterator[tuple[dict[str, Any], str]]:
    """``(object, line)`` for each non-blank line of ``path``: the JSON object and its text, newline stripped.

    With ``tolerate_torn_tail`` an unparseable *last* line without a final newline
    (what a killed writer leaves) ends the file quietly instead of failing.
    """
    p = Path(path)
    _check_file(p)
    with p.open("rb") as fh:
        for number, line, ended in _lines(p, fh):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if tolerate_torn_tail and not ended:
                    return
                raise _json_error(p, number, exc) from None
            if not isinstance(obj, dict):
                raise DataError(
                    f"{p}:{number}: a JSON {type(obj).__name__}, not an object",
                    hint='each line must be one JSON object such as {"text": "...", "label": "..."}',
                )
            yield obj, line.rstrip("\r\n")


def read_jsonl(path: str | Path, *, tolerate_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """The JSON object on each non-blank line of ``path`` (see :func:`iter_jsonl`)."""
    for obj, _ in iter_jsonl(path, tolerate_torn_tail=tolerate_torn_tail):
        yield obj


def _read_json(path: Path) -> Iterator[dict[str, Any]]:
    """A ``.json`` file: an array of objects, or JSONL under another name."""
    with path.open("rb") as fh:
        text = "".join(line for _, line, _ in _lines(path, fh))
    if not text.lstrip().startswith("["):
        yield from read_jsonl(path)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc.lineno, exc) from None
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: item {i} of the array is a JSON {type(obj).__name__}, not an object")
        yield obj


def read_csv(path: Path, delimiter: str = ",") -> Iterator[dict[str, Any]]:
    """The rows of a CSV (or, with ``delimiter="\\t"``, TSV) file as dicts of strings, keyed by the header row."""
    kind = "TSV" if delimiter == "\t" else "CSV"
    with path.open("rb") as fh:
        reader = csv.reader((line for _, line, _ in _lines(path, fh)), delimiter=delimiter)
        try:
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise DataError(f"{path}: no header row", hint=f"the first line of a {kind} file names its columns")
            header = [h.strip() for h in header]
            if len(set(header)) != len(header):
                twice = sorted({h for h in header if header.count(h) > 1})
                raise DataError(
                    f"{path}:1: the header names column(s) {describe_columns(twice)} twice", hint="rename the columns"
                )
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{path}:{reader.line_num}: {len(row)} fields, but the header has {len(header)}",
                        hint=f'quote fields that contain a {"tab" if delimiter == chr(9) else "comma"} ("a, b")',
                    )
                yield dict(zip(header, row, strict=True))
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: {exc}", hint=f"fix the {kind} quoting") from None


def read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file, a batch at a time (bounded memory)."""
    try:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
    except ImportError as exc:
        raise DataError("reading Parquet needs pyarrow", hint="pip install pyarrow, or pass JSONL/CSV") from exc
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable Parquet file ({first})", hint="check the file or its suffix") from None
    with contextlib.closing(parquet):
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
            yield from batch.to_pylist()


def read_rows(path: str | Path, *, fields: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Each row of a JSONL/JSON/CSV/TSV/Parquet file as a dict (CSV values are strings).

    ``fields``: columns every row must have; a row without one is a ``DataError``
    naming the file, the row and the columns it has.
    """
    p = Path(path)
    _check_file(p)
    suffix = p.suffix.lower()
    rows: Iterator[dict[str, Any]]
    if suffix in JSONL_SUFFIXES:
        rows = read_jsonl(p)
    elif suffix == ".json":
        rows = _read_json(p)
    elif suffix in (".csv", ".tsv"):
        rows = read_csv(p, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        rows = read_parquet(p)
    else:
        raise DataError(f"{p}: unknown file type {suffix or '(none)'}", hint=f"use one of {', '.join(ROW_SUFFIXES)}")
    if not fields:
        yield from rows
        return
    for number, row in enumerate(rows, 1):
        missing = [f for f in fields if f not in row]
        if missing:
            raise DataError(
                f"{p}: row {number} has no column {missing[0]!r} (columns: {describe_columns(row)})",
                hint=f"the data needs the columns {', '.join(fields)}",
            )
        yield row


# -- YAML ----------------------------------------------------------------------------------------------


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse YAML (safe types only); a duplicate key or a syntax error is a ``ConfigError`` with line and column."""
    import yaml

    visited: set[int] = set()

    def check_unique(node: Any) -> None:
        if id(node) in visited:  # an alias of a node already checked
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = (key_node.tag, key_node.value)
                    if key in seen:
                        mark = key_node.start_mark
                        raise ConfigError(
                            f"{source}:{mark.line + 1}:{mark.column + 1}: duplicate key {key_node.value!r}",
                            hint="each key may appear once in a mapping; remove or rename the second one",
                        )
                    seen.add(key)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            for child in node.value:
                for sub in child if isinstance(child, tuple) else (child,):
                    check_unique(sub)

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_unique(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise ConfigError(f"{where}: not valid YAML: {problem}", hint="fix the YAML at that line and column") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise ConfigError(f"{source}: not valid YAML: {first}", hint="fix the YAML file") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """``parse_yaml`` of a UTF-8 file; a missing or non-UTF-8 file is a ``ConfigError``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}", hint="check the path") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise ConfigError(f"{p}:{line}: byte 0x{bad} (at byte {exc.start}) is not UTF-8", hint=_REENCODE) from None
    return parse_yaml(text, source=str(p))


# -- atomic writes -------------------------------------------------------------------------------------


def _write_hint(exc: OSError, path: Path) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free disk space on the filesystem of {path.parent} and rerun; the previous {path.name} is unchanged"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"check that you can write to {path.parent}"
    if exc.errno == errno.EFBIG:
        return f"{path.name} is larger than this filesystem or a ulimit allows"
    return f"check {path.parent}; the previous {path.name} is unchanged"


def _atomic_write(path: str | Path, write: Any, *, newline: str | None = None) -> Path:
    """Call ``write(fh)`` on a temporary text file beside ``path``, fsync it, and move it over ``path``."""
    target = Path(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
        with contextlib.suppress(OSError):  # make the rename itself durable where directories can be fsynced
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        raise DataError(f"cannot write {target}: {exc.strerror or exc}", hint=_write_hint(exc, target)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    return _atomic_write(path, lambda fh: fh.write(text))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Replace ``path`` with ``obj`` as JSON (a trailing newline; non-ASCII kept as is) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def _csv_cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, Mapping | list | tuple) else value


def atomic_write_rows(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Replace ``path`` with ``rows``: JSONL, or CSV when it ends in .csv (dict/list cells as JSON). Returns the count.

    CSV columns are the union of the rows' keys, in first-seen order, so the rows are held in memory;
    JSONL streams.
    """
    p = Path(path)
    count = 0
    if p.suffix.lower() == ".csv":
        held = [dict(r) for r in rows]
        columns = list(dict.fromkeys(k for r in held for k in r))

        def write_csv(fh: IO[str]) -> None:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for r in held:
                writer.writerow({k: _csv_cell(v) for k, v in r.items()})

        _atomic_write(p, write_csv, newline="")
        return len(held)

    def write_jsonl(fh: IO[str]) -> None:
        nonlocal count
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            count += 1

    _atomic_write(p, write_jsonl)
    return count
