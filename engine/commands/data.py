"""``corpusforge data``: list tasks and export a task's real data (fixed train/test splits) as JSONL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io import atomic_write_text

NAME = "data"
HELP = "list tasks, export a task's real data split as JSONL"
DESCRIPTION = (
    "Real (human-labelled) data for a task. `data list` shows every built-in task, its labels and whether real "
    "data is available here; `data export TASK --split train|test --out FILE` writes one split as JSONL "
    "(id, the task's text fields, label). Splits are fixed, stratified and the same on every machine."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="list tasks, their labels and whether real data is available")
    export = sub.add_parser(
        "export",
        help="write a task's real train or test split as JSONL",
        description="Write one split of a task's real data as JSONL: id, the task's text fields, label.",
        formatter_class=parser.formatter_class,  # the CLI's: shows defaults and marks required options
    )
    export.add_argument("task", help="built-in task name or task YAML file")
    export.add_argument("--split", choices=("train", "test"), default="train", help="which split")
    export.add_argument("--out", required=True, metavar="FILE", help="output JSONL file ('-' for stdout)")
    export.add_argument(
        "--data", metavar="FILE", help="JSONL/CSV/Parquet file with the real data (text fields + label)"
    )
    export.add_argument("--seed", type=int, default=0, help="split seed (0 is the canonical split)")


def _list() -> int:
    from ..tasks import has_real_data, list_builtin, load_task

    rows = []
    for name in list_builtin():
        task = load_task(name)
        available = "yes" if has_real_data(task) else "needs --data"
        rows.append((name, "+".join(task.fields), available, task.source.describe(), ", ".join(task.labels)))
    widths = [max(len(r[i]) for r in [*rows, ("task", "fields", "real data", "source", "")]) for i in range(4)]
    header = ("task", "fields", "real data", "source", "labels")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..tasks import load_real, load_task

    task = load_task(args.task)
    examples = load_real(task, args.split, data_file=args.data, seed=args.seed)
    lines = []
    for ex in examples:
        record: dict[str, str] = {"id": ex.id, **{f: ex.fields[f] for f in task.fields}, "label": ex.label}
        lines.append(json.dumps(record, ensure_ascii=False))
    payload = "\n".join(lines) + "\n"
    if args.out == "-":
        sys.stdout.write(payload)
    else:
        out = atomic_write_text(Path(args.out), payload)
        print(f"wrote {len(examples)} {args.split} examples of {task.name} to {out}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.data_command == "list":
        return _list()
    return _export(args)
