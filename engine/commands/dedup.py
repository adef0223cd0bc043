"""``corpusforge dedup``: drop exact and near-duplicate records from a JSONL, CSV or Parquet file."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ConfigError

NAME = "dedup"
HELP = "drop exact and near-duplicate records from a JSONL, CSV or Parquet file"
DESCRIPTION = """\
Read IN (.jsonl, .csv or .parquet), compare the text fields given by --field
(default: `text` if present, else every string column except id and label),
keep the first record of each group of exact or near-duplicates (MinHash LSH
over normalised shingles, estimated Jaccard >= --threshold) and write the kept
records whole, in input order, to --out (format by extension). Prints the
counts and a few dropped texts next to the text they duplicate."""

BATCH = 4096
SAMPLE_GROUPS = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import DEFAULT_DEDUP_THRESHOLD, DEFAULT_NUM_PERM

    p.add_argument("input", metavar="IN", type=Path, help="input file: .jsonl, .csv or .parquet")
    p.add_argument("--out", type=Path, required=True, help="output file: .jsonl, .csv or .parquet")
    p.add_argument(
        "--threshold", type=float, default=DEFAULT_DEDUP_THRESHOLD, help="Jaccard similarity of near-duplicates"
    )
    p.add_argument(
        "--field",
        action="append",
        dest="fields",
        metavar="NAME",
        help="text field to compare (repeat for several; joined)",
    )
    p.add_argument("--num-perm", type=int, default=DEFAULT_NUM_PERM, help="MinHash permutations")
    p.add_argument(
        "--shingles",
        choices=("auto", "char", "word"),
        default="auto",
        help="auto: character 5-grams for short texts, word 3-grams for long ones",
    )
    p.add_argument("--rejects", type=Path, help="write dropped records here as JSONL, with reason and duplicate_of")
    p.add_argument("--quiet", action="store_true", help="print only the counts")


def _pick_fields(records: Any, wanted: list[str] | None, path: Path) -> list[str]:
    if wanted:
        missing = [f for f in wanted if f not in records.columns]
        if missing:
            raise ConfigError(
                f"field {missing[0]!r} not found in {path}",
                hint=f"columns are: {', '.join(records.columns) or '(none)'}",
            )
        return wanted
    if "text" in records.columns:
        return ["text"]
    fields = [c for c in records.string_columns() if c not in ("id", "label")]
    if not fields:
        raise ConfigError(f"no text column found in {path}", hint="name the text column(s) with --field")
    return fields


def _text(row: dict[str, Any], fields: list[str]) -> str | None:
    values = [row.get(f) for f in fields]
    present = ["" if v is None else str(v) for v in values]
    if all(v is None for v in values):
        return None
    return present[0] if len(present) == 1 else "\n".join(present)


def _short(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return json.dumps(flat if len(flat) <= width else flat[: width - 1] + "…", ensure_ascii=False)


class _Collect:
    """Reject sink remembering each drop's reason and what it duplicated."""

    def __init__(self, dedup: Any) -> None:
        self.dedup = dedup
        self.dropped: dict[int, tuple[str, Any]] = {}

    def reject(self, record: Any, reason: str) -> None:
        self.dropped[int(record.id)] = (reason, self.dedup.last_match)


def run(args: argparse.Namespace) -> int:
    from ..dedup.filter import DedupConfig, DedupFilter, Reference
    from ..dedup.records import format_of, read_records, write_records
    from ..types import Example

    format_of(args.out)  # fail on a bad output name before reading anything
    config = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, shingle_mode=args.shingles)
    records = read_records(args.input)
    fields = _pick_fields(records, args.fields, args.input)
    dedup = DedupFilter(config)
    sink = _Collect(dedup)
    dedup.rejects = sink

    texts = [_text(row, fields) for row in records.rows]
    todo = [i for i, t in enumerate(texts) if t is not None]
    progress = sys.stderr.isatty() and len(todo) > BATCH
    for start in range(0, len(todo), BATCH):
        chunk = todo[start : start + BATCH]
        dedup.check_batch([Example(id=str(i), fields={"text": texts[i] or ""}, label="") for i in chunk])
        if progress:
            print(f"\rdedup: {start + len(chunk)}/{len(todo)} records", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)

    keep = [i for i in range(len(records.rows)) if i not in sink.dropped]
    write_records(records, keep, args.out)

    def name(i: Any) -> str:
        if isinstance(i, Reference):
            return f"reference {i.index}"
        row = records.rows[int(i)]
        return f"id {row['id']}" if "id" in row else f"record {int(i) + 1}"

    if args.rejects:
        args.rejects.parent.mkdir(parents=True, exist_ok=True)
        with args.rejects.open("w", encoding="utf-8") as fh:
            for i, (reason, match) in sorted(sink.dropped.items()):
                dup_of = records.rows[int(match)].get("id", int(match)) if match is not None else None
                entry = {"reason": reason, "duplicate_of": dup_of, "record": records.rows[i]}
                fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")

    reasons = Counter(reason for reason, _ in sink.dropped.values())
    detail = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
    print(f"read {len(records.rows)} records from {args.input} (compared: {', '.join(fields)})")
    print(f"kept {len(keep)}, dropped {len(sink.dropped)}" + (f" ({detail})" if detail else ""))
    if len(todo) < len(records.rows):
        print(f"kept unchecked {len(records.rows) - len(todo)} records without any of the compared fields")
    print(f"wrote {args.out}" + (f"; rejects in {args.rejects}" if args.rejects else ""))
    if sink.dropped and not args.quiet:
        print(f"\nsample of dropped records (first {min(SAMPLE_GROUPS, len(sink.dropped))}):")
        for i, (reason, match) in sorted(sink.dropped.items())[:SAMPLE_GROUPS]:
            print(f"  dropped {name(i)} ({reason}): {_short(texts[i] or '')}")
            print(f"     same as {name(match)}: {_short(texts[int(match)] or '')}")
    return 0
