"""``corpusforge clean``: drop the examples whose label the data itself disputes, keep the rest."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .eval import add_head_arguments

NAME = "clean"
HELP = "drop examples whose label the data disputes (out-of-fold, confident learning); write kept and dropped"


def _description() -> str:
    from evaluators.clean import CLEAN_RULE

    return f"""\
Judge every example of RUN (a generate run directory or a JSONL/CSV/Parquet
file) by out-of-fold predictions: the data is split into 5 stratified folds and
a logistic head on sentence embeddings, trained on the other folds (plus the
--real examples, if given), gives each example a probability for every label.
Rule: {CLEAN_RULE}. Labels with fewer than two examples are not judged. Writes
the kept rows to OUT/data.jsonl (a run directory `eval --train` reads), the
dropped rows with their reason to OUT/rejects.jsonl, and OUT/clean.json with
the label-fidelity estimate (the share of examples whose out-of-fold prediction
is their own label) before and after cleaning. --real examples only help train
the fold heads: they are never judged, written or used as test data."""


DESCRIPTION = _description()


def add_arguments(p: argparse.ArgumentParser) -> None:
    from evaluators.encoder import DEFAULT_VARIANT, VARIANT_HELP, VARIANTS  # light: numpy only
    from evaluators.head import CV_FOLDS

    p.add_argument("run", metavar="RUN", type=Path, help="run directory (with data.jsonl) or data file")
    p.add_argument("--out", required=True, type=Path, metavar="OUT", help="directory for data.jsonl, rejects.jsonl")
    p.add_argument("--real", metavar="FILE", help="real labelled examples to help train the fold heads (or a task)")
    p.add_argument("--real-n", type=int, metavar="N", help="use at most N --real examples (stratified, seeded)")
    p.add_argument("--folds", type=int, default=CV_FOLDS, help="out-of-fold splits")
    p.add_argument("--seed", type=int, default=0, help="seed for the folds and the real sample")
    p.add_argument("--variant", choices=VARIANTS, default=DEFAULT_VARIANT, help=VARIANT_HELP)
    p.add_argument("--fields", help="comma-separated text fields (default: `text`, or detected pair fields)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    add_head_arguments(p, fixed_c=False)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evaluators.clean import clean_labels
    from evaluators.data import load_input, load_records, stratified_sample, texts_and_labels
    from evaluators.encoder import Encoder

    from ..io import atomic_write_json, atomic_write_rows

    if args.folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {args.folds}")
    if args.real_n is not None and not args.real:
        raise ConfigError("--real-n needs --real", hint="pass the real data to sample from")
    if args.out.resolve() == (args.run if args.run.is_dir() else args.run.parent).resolve():
        raise ConfigError(f"--out {args.out} would overwrite the data being cleaned", hint="pass another directory")
    started = time.perf_counter()
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    records = load_records(args.run)
    texts, labels = texts_and_labels(records, fields)
    if not texts:
        raise DataError(f"{args.run}: no examples to clean")
    real_texts: list[str] = []
    real_labels: list[str] = []
    if args.real:
        real_texts, real_labels = texts_and_labels(load_input(args.real, "train"), fields)
        if args.real_n is not None:
            chosen = stratified_sample(real_labels, args.real_n, args.seed)
            real_texts, real_labels = [real_texts[i] for i in chosen], [real_labels[i] for i in chosen]
    console = Console(stderr=True, highlight=False)
    console.print(f"embedding {len(texts)} examples" + (f" and {len(real_texts)} real ones" if real_texts else ""))
    encoder = Encoder.load(args.variant, cache=not args.no_cache)
    try:
        X = encoder.embed(texts)
        X_real = encoder.embed(real_texts) if real_texts else None
    finally:
        encoder.close()
    result = clean_labels(
        X,
        labels,
        folds=args.folds,
        seed=args.seed,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        X_real=X_real,
        y_real=real_labels,
    )
    kept = [records[i] for i in range(len(records)) if result.keep[i]]
    index = {label: j for j, label in enumerate(result.labels)}
    dropped = []
    for i in result.dropped:
        p = result.proba[i]
        rival = max((j for j in range(len(p)) if j != index[labels[i]]), key=lambda j: p[j])
        dropped.append(
            {
                **records[i],
                "reason": "label_disputed",
                "detail": result.reasons[i],
                "p_label": round(float(p[index[labels[i]]]), 4),
                "threshold": round(result.thresholds[labels[i]], 4),
                "predicted": result.labels[rival],
                "p_predicted": round(float(p[rival]), 4),
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_rows(args.out / "data.jsonl", kept)
    atomic_write_rows(args.out / "rejects.jsonl", dropped)
    summary: dict[str, Any] = result.summary() | {
        "input": str(args.run),
        "real": {"file": args.real, "n": len(real_texts)} if args.real else None,
        "variant": args.variant,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(args.out / "clean.json", summary)
    _print(Console(highlight=False), summary, args.out)
    return 0


def _print(console: Any, summary: dict[str, Any], out: Path) -> None:
    before, after = summary["label_fidelity_before"], summary["label_fidelity_after"]
    console.print(
        f"kept {summary['kept']} of {summary['n']}, dropped {summary['dropped']} "
        f"({', '.join(f'{k} {v}' for k, v in summary['dropped_by_label'].items()) or 'none'})"
    )
    if before is not None:
        shown = f"{after:.3f} (new folds on the kept data)" if after is not None else "not measured (nothing kept)"
        console.print(f"label fidelity estimate (out-of-fold agreement): before {before:.3f}, after {shown}")
    else:
        console.print("too few examples per label to judge any")
    console.print(f"kept: {out / 'data.jsonl'}   dropped: {out / 'rejects.jsonl'}   summary: {out / 'clean.json'}")
