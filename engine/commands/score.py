"""``corpusforge score``: label a corpus with a classifier saved by ``corpusforge eval``."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

NAME = "score"
HELP = "label a corpus (JSONL/CSV/Parquet) with a saved classifier"
DESCRIPTION = (
    "Run a classifier saved by `corpusforge eval` (the DIR/model/ directory: one ONNX model, its tokenizer and "
    "labels.json) over every record of IN and write them to OUT with two more columns: `pred`, the most likely "
    "label, and `probs`, the probability of each label. OUT is JSONL, or CSV (with `probs` as a JSON object) when "
    "it ends in .csv."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="records to label (JSONL, CSV, Parquet or a run directory)")
    parser.add_argument("--model", required=True, type=Path, metavar="DIR", help="saved classifier directory")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT", help="output file (.jsonl or .csv)")
    parser.add_argument("--fields", help="comma-separated text fields (default: `text`, or detected pair fields)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size")


def run(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluators.classifier import Classifier
    from evaluators.data import load_records, record_texts
    from evaluators.finetune import FinetunedClassifier

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    suffix = args.out.suffix.lower()
    if suffix not in (".jsonl", ".json", ".ndjson", ".csv"):
        raise ConfigError(f"--out {args.out}: unknown file type", hint="end it in .jsonl or .csv")
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    finetuned = (Path(args.model) / "finetune.json").exists()  # written by `eval --finetune`
    classifier: Any = FinetunedClassifier.load(args.model) if finetuned else Classifier.load(args.model)
    records = load_records(args.input)
    texts = record_texts(records, fields)
    console = Console(stderr=True, highlight=False)
    started = time.perf_counter()
    with Progress(
        TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task_id = bar.add_task("scoring", total=len(texts))
        if finetuned:
            probs = classifier.predict_proba(texts, args.batch_size)
            bar.update(task_id, completed=len(texts))
        else:
            probs = classifier.predict_proba(
                texts, args.batch_size, lambda done, total: bar.update(task_id, completed=done, total=total)
            )
    elapsed = time.perf_counter() - started
    labels = classifier.labels
    out_records: list[dict[str, Any]] = []
    for record, p in zip(records, probs, strict=True):
        row = dict(record)
        row["pred"] = labels[int(p.argmax())] if len(p) else ""
        row["probs"] = {label: round(float(v), 6) for label, v in zip(labels, p, strict=True)}
        out_records.append(row)
    _write(args.out, out_records, csv_out=suffix == ".csv")
    rate = len(records) / elapsed if elapsed > 0 else 0.0
    console.print(f"scored {len(records)} records ({rate:,.0f}/s) -> {args.out}")
    return 0


def _write(path: Path, records: list[dict[str, Any]], *, csv_out: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        if csv_out:
            columns = list(dict.fromkeys(k for r in records for k in r))
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for r in records:
                writer.writerow({k: _cell(v) for k, v in r.items()})
        else:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
