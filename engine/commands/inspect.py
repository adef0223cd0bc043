"""``corpusforge inspect``: quality metrics of a corpus (balance, duplicates, diversity, similarity, fidelity)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, EngineError

NAME = "inspect"
HELP = "quality metrics of a generated corpus: balance, duplicates, diversity, similarity to real, label fidelity"
DESCRIPTION = """\
Measure a corpus (a run directory, or a JSONL/CSV/Parquet file with text and label
columns) without training on it: label balance (counts, normalised entropy), exact
and near-duplicate rates, distinct-1/2/3, and, when the ONNX encoder is available,
remote-clique and chamfer diversity on embeddings. With real training data
(--task or --real-train) it adds the similarity to real examples (mean top-k
cosine) and label fidelity (a head trained on the real data agrees with the
synthetic label). Large corpora are sampled (--seed) to bound the cost."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from evaluators.encoder import DEFAULT_VARIANT, VARIANT_HELP, VARIANTS  # light: numpy only

    p.add_argument("path", metavar="FILE_OR_RUN_DIR", type=Path, help="a run directory or a data file")
    real = p.add_mutually_exclusive_group()
    real.add_argument("--task", help="task whose packaged real train split is the reference (also fixes the labels)")
    real.add_argument("--real-train", type=Path, help="real training data file (JSONL/CSV/Parquet)")
    p.add_argument("--out", type=Path, help="also write the full metrics as JSON here")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling large corpora")
    p.add_argument("--top-k", type=int, default=5, help="k of the top-k similarity to real examples")
    p.add_argument("--max-embed", type=int, default=2000, help="most synthetic examples to embed")
    p.add_argument("--variant", choices=VARIANTS, default=DEFAULT_VARIANT, help=VARIANT_HELP)
    p.add_argument("--no-embed", action="store_true", help="skip the embedding-based metrics")


def _read(path: Path, fields: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """Texts (the task's fields joined, or the detected text fields) and labels of a run directory or data file."""
    from evaluators.data import load_records, texts_and_labels

    return texts_and_labels(load_records(path), fields)


def _embedder(variant: str) -> Any:
    """The encoder's ``embed``, or ``None`` (with the reason) when it cannot be loaded here."""
    try:
        from evaluators.encoder import Encoder

        return Encoder.load(variant=variant).embed, ""
    except (EngineError, ImportError, OSError) as exc:
        return None, str(exc)


def _duplicate_ids(path: Path) -> int:
    """Lines of a data file (or a run's data.jsonl) whose id repeats an earlier line's: two writers were at work."""
    from engine.store import read_jsonl

    data = path / "data.jsonl" if path.is_dir() else path
    if data.suffix != ".jsonl" or not data.exists():
        return 0
    seen: set[str] = set()
    repeats = 0
    for row in read_jsonl(data):
        key = str(row.get("id", ""))
        if not key:
            continue
        if key in seen:
            repeats += 1
        seen.add(key)
    return repeats


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from evaluators.quality import corpus_quality, summary_rows
    from evaluators.report import fmt, write_json

    console = Console()
    classes: tuple[str, ...] | None = None
    fields: tuple[str, ...] | None = None
    real_texts: list[str] | None = None
    real_labels: list[str] | None = None
    if args.task:
        from engine.tasks import load_real, load_task
        from evaluators.encoder import join_fields

        task = load_task(args.task)
        classes, fields = tuple(task.labels), tuple(task.fields)
        real = load_real(task, "train")
        real_texts, real_labels = [join_fields(e.fields) for e in real], [e.label for e in real]
    elif args.real_train:
        real_texts, real_labels = _read(args.real_train, fields)
    texts, labels = _read(args.path, fields)
    if not texts:
        raise DataError(f"{args.path} holds no examples")
    if args.top_k < 1 or args.max_embed < 2:
        raise ConfigError("--top-k must be >= 1 and --max-embed >= 2")

    embed, why = (None, "--no-embed") if args.no_embed else _embedder(args.variant)
    with console.status(f"measuring {len(texts)} examples"):
        q = corpus_quality(
            texts,
            labels,
            embed=embed,
            real_texts=real_texts,
            real_labels=real_labels,
            seed=args.seed,
            classes=classes,
            k=args.top_k,
            max_embed=args.max_embed,
        )

    table = Table(title=f"quality of {args.path}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary_rows(q):
        table.add_row(name, fmt(value))
    console.print(table)
    counts = Table(title="labels", show_header=True)
    counts.add_column("label")
    counts.add_column("count", justify="right")
    fid = (q.get("label_fidelity") or {}).get("per_class", {})
    if fid:
        counts.add_column("fidelity", justify="right")
    for label, count in q["balance"]["counts"].items():
        counts.add_row(label, str(count), *([fmt(fid.get(label))] if fid else []))
    console.print(counts)
    repeats = _duplicate_ids(args.path)
    q["duplicate_ids"] = repeats
    if repeats:
        console.print(
            f"[bold red]{repeats} lines repeat the id of an earlier line[/bold red] (written twice, e.g. by two "
            "processes on one run directory): keep the first of each with `corpusforge dedup` or remove them"
        )
    if embed is None:
        console.print(f"[dim]embedding-based metrics skipped: {why}[/dim]")
    elif real_texts is None:
        console.print("[dim]pass --task or --real-train for similarity to real data and label fidelity[/dim]")
    if args.out:
        write_json(args.out, q)
        console.print(f"wrote {args.out}")
    return 0
