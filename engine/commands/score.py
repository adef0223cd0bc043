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
    "it ends in .csv.\n\nWith --ray [ADDRESS] (else $RAY_ADDRESS, else a local instance on 127.0.0.1) the corpus is "
    "scored on a Ray cluster by a pool of actors (--actors, default one per CPU) that each load the model once: IN "
    "may be several files, folders or globs of parts with the same columns, and OUT is a folder that gets one "
    "JSONL part per input part (part-NNNNN.jsonl, the same rows and predictions as without --ray) and "
    "_manifest.json, written to a temporary folder and renamed at the end."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        metavar="IN",
        nargs="+",
        help="records to label (JSONL, CSV, Parquet or a run directory); with --ray also folders and globs of parts",
    )
    parser.add_argument("--model", required=True, type=Path, metavar="DIR", help="saved classifier directory")
    parser.add_argument(
        "--out", required=True, type=Path, metavar="OUT", help="output file (.jsonl or .csv); with --ray a folder"
    )
    parser.add_argument("--fields", help="comma-separated text fields (default: `text`, or detected pair fields)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="score on a Ray cluster (no ADDRESS: $RAY_ADDRESS or local)",
    )
    parser.add_argument("--actors", type=int, help="--ray: scoring actors (default: one per cluster CPU / --threads)")
    parser.add_argument("--threads", type=int, default=1, help="--ray: onnxruntime threads per actor")


def run(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluators.classifier import Classifier
    from evaluators.data import load_records, record_texts
    from evaluators.finetune import FinetunedClassifier

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.ray is not None:
        return _run_ray(args)
    if args.actors is not None:
        raise ConfigError("--actors needs --ray", hint="add --ray or drop --actors")
    if len(args.inputs) != 1:
        raise ConfigError("several inputs need --ray", hint="merge them into one file, or add --ray")
    args.input = args.inputs[0]
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


def _run_ray(args: argparse.Namespace) -> int:
    import time

    from evaluators.data import text_fields

    from ..dedup.records import expand_inputs, inspect_parts, iter_rows

    if args.out.suffix.lower() in (".jsonl", ".json", ".ndjson", ".csv"):
        raise ConfigError(f"with --ray, --out is a folder, got {args.out}", hint="name a folder, e.g. --out scored/")
    if args.actors is not None and args.actors < 1 or args.threads < 1:
        raise ConfigError("--actors and --threads must be >= 1")
    parts = inspect_parts(expand_inputs(args.inputs))
    sample, _ = next(iter_rows(parts[0].path, 100))
    wanted = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    fields = text_fields(sample, wanted)

    from ..ray_cluster import connect
    from ..scoring_ray import ray_score

    connect(args.ray or None)
    started = time.perf_counter()
    result = ray_score(
        parts,
        model=args.model,
        fields=fields,
        out=args.out,
        batch_size=args.batch_size,
        actors=args.actors,
        threads=args.threads,
    )
    elapsed = time.perf_counter() - started
    rate = result.rows / elapsed if elapsed > 0 else 0.0
    print(f"scored {result.rows} records from {result.parts} part(s) with {result.actors} actor(s) ({rate:,.0f}/s)")
    print(f"wrote {args.out}")
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
