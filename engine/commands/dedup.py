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
HELP = "drop exact and near-duplicate records from JSONL, CSV or Parquet files (one machine or a Ray cluster)"
DESCRIPTION = """\
Read IN (.jsonl, .csv or .parquet), compare the text fields given by --field
(default: `text` if present, else every string column except id and label),
keep the first record of each group of exact or near-duplicates (MinHash LSH
over normalised shingles, estimated Jaccard >= --threshold) and write the kept
records whole, in input order, to --out (format by extension). Prints the
counts and a few dropped texts next to the text they duplicate.

Two meanings of "group" (--mode): greedy (the default on one machine, what
`generate` does while it runs) compares each record with the records kept so
far; components compares every pair and keeps only the first record of each
connected group. In a chain A~B, B~C with A and C not similar, greedy keeps A
and C (C's only twin, B, was dropped) and components keeps A alone.

--ray [ADDRESS] runs the components pass on a Ray cluster (ADDRESS, else
$RAY_ADDRESS, else a private local instance bound to 127.0.0.1 with the
dashboard off): IN may then be several files, folders or globs of parts with
the same columns, --out is a folder that gets one part per input part
(part-NNNNN.jsonl or .parquet), dropped/part-NNNNN.jsonl with every dropped
record, its reason and its kept twin, and _manifest.json. Output is written to
a temporary folder and renamed at the end; a rerun gives the same parts."""

BATCH = 4096
SAMPLE_GROUPS = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import DEFAULT_DEDUP_THRESHOLD, DEFAULT_NUM_PERM

    p.add_argument(
        "inputs",
        metavar="IN",
        nargs="+",
        help="input file (.jsonl, .csv or .parquet); with --ray also folders and globs of parts",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output file (.jsonl, .csv or .parquet); with --ray an output folder"
    )
    p.add_argument(
        "--mode",
        choices=("greedy", "components"),
        help="greedy: drop what nears a kept record; components: keep the first of each connected group "
        "(default: greedy, components with --ray)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on a Ray cluster (no ADDRESS: $RAY_ADDRESS, else a local instance)",
    )
    p.add_argument("--format", choices=("jsonl", "parquet"), help="--ray output parts (default: like the input)")
    p.add_argument("--num-cpus", type=int, help="--ray without a cluster: CPUs of the local instance (default: all)")
    p.add_argument("--partitions", type=int, help="--ray: shuffle partitions (default: from the corpus size)")
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


def _greedy(texts: list[str | None], config: Any) -> dict[int, tuple[str, Any]]:
    from ..dedup.filter import DedupFilter
    from ..types import Example

    dedup = DedupFilter(config)
    sink = _Collect(dedup)
    dedup.rejects = sink
    todo = [i for i, t in enumerate(texts) if t is not None]
    progress = sys.stderr.isatty() and len(todo) > BATCH
    for start in range(0, len(todo), BATCH):
        chunk = todo[start : start + BATCH]
        dedup.check_batch([Example(id=str(i), fields={"text": texts[i] or ""}, label="") for i in chunk])
        if progress:
            print(f"\rdedup: {start + len(chunk)}/{len(todo)} records", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return sink.dropped


def run(args: argparse.Namespace) -> int:
    from ..dedup.filter import DedupConfig

    config = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, shingle_mode=args.shingles)
    if args.ray is not None:
        return _run_ray(args, config)
    for flag in ("format", "num_cpus", "partitions"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')} needs --ray", hint="add --ray or drop the flag")
    if len(args.inputs) != 1:
        raise ConfigError("several inputs need --ray", hint="merge them into one file, or add --ray")
    return _run_local(args, config, Path(args.inputs[0]))


def _run_local(args: argparse.Namespace, config: Any, source: Path) -> int:
    from ..dedup.components import components
    from ..dedup.filter import Reference
    from ..dedup.records import format_of, pick_fields, read_records, text_of, write_records

    format_of(args.out)  # fail on a bad output name before reading anything
    records = read_records(source)
    fields = pick_fields(records.columns, args.fields, source, records)
    texts = [text_of(row, fields) for row in records.rows]
    todo = [i for i, t in enumerate(texts) if t is not None]
    if args.mode == "components":
        dropped: dict[int, tuple[str, Any]] = {i: (d.reason, d.twin) for i, d in components(texts, config).items()}
    else:
        dropped = _greedy(texts, config)

    keep = [i for i in range(len(records.rows)) if i not in dropped]
    write_records(records, keep, args.out)

    def name(i: Any) -> str:
        if isinstance(i, Reference):
            return f"reference {i.index}"
        row = records.rows[int(i)]
        return f"id {row['id']}" if "id" in row else f"record {int(i) + 1}"

    if args.rejects:
        args.rejects.parent.mkdir(parents=True, exist_ok=True)
        with args.rejects.open("w", encoding="utf-8") as fh:
            for i, (reason, match) in sorted(dropped.items()):
                dup_of = records.rows[int(match)].get("id", int(match)) if match is not None else None
                entry = {"reason": reason, "duplicate_of": dup_of, "record": records.rows[i]}
                fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")

    reasons = Counter(reason for reason, _ in dropped.values())
    detail = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
    print(f"read {len(records.rows)} records from {source} (compared: {', '.join(fields)})")
    print(f"kept {len(keep)}, dropped {len(dropped)}" + (f" ({detail})" if detail else ""))
    if len(todo) < len(records.rows):
        print(f"kept unchecked {len(records.rows) - len(todo)} records without any of the compared fields")
    print(f"wrote {args.out}" + (f"; rejects in {args.rejects}" if args.rejects else ""))
    if dropped and not args.quiet:
        print(f"\nsample of dropped records (first {min(SAMPLE_GROUPS, len(dropped))}):")
        for i, (reason, match) in sorted(dropped.items())[:SAMPLE_GROUPS]:
            print(f"  dropped {name(i)} ({reason}): {_short(texts[i] or '')}")
            print(f"     same as {name(match)}: {_short(texts[int(match)] or '')}")
    return 0


def _run_ray(args: argparse.Namespace, config: Any) -> int:
    from ..dedup.records import Records, expand_inputs, format_of, inspect_parts, iter_rows, pick_fields

    if args.mode == "greedy":
        raise ConfigError(
            "--ray keeps the first record of each connected group only",
            hint="use --mode components (or drop --ray for the greedy filter)",
        )
    if args.rejects is not None:
        raise ConfigError("--ray writes dropped records to OUT/dropped/", hint="drop --rejects")
    for flag in ("num_cpus", "partitions"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.out.suffix.lower() in (".jsonl", ".csv", ".parquet", ".ndjson"):
        raise ConfigError(f"with --ray, --out is a folder, got {args.out}", hint="name a folder, e.g. --out deduped/")
    parts = inspect_parts(expand_inputs(args.inputs))
    first = parts[0]
    sample_rows, _ = next(iter_rows(first.path, 1000))
    sample = Records(first.fmt, sample_rows, list(first.columns))
    fields = pick_fields(list(first.columns), args.fields, first.path, sample)
    fmt = args.format or ("parquet" if first.fmt == "parquet" else "jsonl")
    format_of(Path(f"x.{fmt}"))

    from ..dedup.ray_dedup import ray_dedup
    from ..ray_cluster import connect

    connect(args.ray or None, num_cpus=args.num_cpus)
    result = ray_dedup(parts, fields=fields, out=args.out, fmt=fmt, config=config, partitions=args.partitions)
    print(f"read {result.rows} records from {len(parts)} part(s) (compared: {', '.join(fields)})")
    dropped = result.exact + result.near
    detail = f" (exact_duplicate {result.exact}, near_duplicate {result.near})" if dropped else ""
    print(f"kept {result.kept}, dropped {dropped}{detail}")
    if result.unchecked:
        print(f"kept unchecked {result.unchecked} records without any of the compared fields")
    print(
        f"wrote {args.out} ({len(parts)} part(s), dropped records in {args.out / 'dropped'}; "
        f"{result.edges} near-duplicate pairs, {result.rounds} component round(s), {result.partitions} partitions)"
    )
    return 0
