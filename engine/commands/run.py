"""``corpusforge run``: the whole method on one task, end to end, with the packaged local model by default.

generate (few-shot, filtered as it streams) → train the ONNX classifier on the synthetic data → score it on
the task's real test split next to real-data baselines → ``OUT/report.json``. Running it again resumes the
generation where it stopped and re-scores (embeddings are cached).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .. import aio
from .eval import add_head_arguments, eval_config
from .generate import STRATEGIES, add_provider_arguments

NAME = "run"
HELP = "the demo: generate with the local LLM, filter, train the ONNX classifier, score on real data"
DESCRIPTION = """\
Run the whole method on TASK (default bbc-news): generate --n examples with the
chosen approach (default few-shot) from the packaged local model (or any
OpenAI-compatible --base-url), filter exact and near-duplicates as they stream,
train the ONNX classifier on the synthetic data, and score it on the task's real
test split next to two real-data baselines (the same number of real examples,
and the whole real train split). Writes OUT/data.jsonl and OUT/report.json.
Running it again continues the same run instead of starting over."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="bbc-news", help="a built-in task with packaged real data, or a task YAML")
    p.add_argument("--strategy", choices=STRATEGIES, default="few-shot", help="prompting approach")
    p.add_argument("--n", type=int, default=200, help="synthetic examples to generate")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory")
    p.add_argument("--shots", type=int, default=2, help="real examples per few-shot prompt")
    p.add_argument("--max-tokens", type=int, default=480, help="completion tokens per request")
    p.add_argument("--per-request", type=int, default=3, help="examples asked for in one request (shares the prompt)")
    p.add_argument("--seed", type=int, default=0, help="seed of the request plan and of the real-data sample")
    p.add_argument("--concurrency", type=int, default=8, help="most requests in flight")
    p.add_argument("--data", type=Path, help="real data file for tasks without packaged data")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no live panel: a status line on stderr every few seconds; the final tables still print on stdout",
    )
    add_head_arguments(p)
    add_provider_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..config import RateLimit, RetryPolicy, RunConfig
    from ..dedup import DedupConfig
    from ..generate import GenerateOptions
    from ..store import atomic_write_json
    from ._launch import print_final, run_with_provider

    run_cfg = RunConfig(
        task=args.task,
        strategy=args.strategy,
        n=args.n,
        seed=args.seed,
        max_tokens=args.max_tokens,
        temperature=1.0,
        shots=1 if args.strategy == "one-shot" else args.shots,
        per_request=args.per_request,
    )
    options = GenerateOptions(
        out_dir=args.out, resume=True, progress=not args.no_progress, data_file=args.data, dedup=DedupConfig()
    )

    print(f"[1/2] generating {args.n} {args.task} examples ({args.strategy}) into {args.out}", file=sys.stderr)
    limit = RateLimit(max_in_flight=args.concurrency)
    final = aio.run(run_with_provider(args, run_cfg, limit, RetryPolicy(), options))
    print_final(final, sys.stdout)
    print("[2/2] training the ONNX classifier and scoring it on real test data", file=sys.stderr)
    report = evaluate_run(args.out, args.task, data_file=args.data, config=eval_config(args, clean=False))
    report["generation"] = {
        k: final.get(k) for k in ("requests", "accepted", "rejected", "failed", "retries", "elapsed_s", "phase")
    }
    atomic_write_json(args.out / "report.json", report)
    _print_report(report, args.out)
    return 0 if final.get("phase") == "done" else 1


def evaluate_run(out: Path, task_name: str, *, data_file: Path | None, config: Any) -> dict[str, Any]:
    """Score the run's synthetic data and two real baselines on the task's real test split (one ``EvalConfig``)."""
    from evaluators.data import stratified_sample
    from evaluators.encoder import DEFAULT_VARIANT, Encoder
    from evaluators.evaluate import evaluate

    from ..errors import DataError
    from ..store import read_jsonl
    from ..tasks import load_real, load_task

    task = load_task(task_name)
    synthetic = list(read_jsonl(out / "data.jsonl"))
    if not synthetic:
        raise DataError(f"{out / 'data.jsonl'} holds no examples", hint="check the generation summary above")
    syn_texts = ["\n".join(str(r.get(f, "")) for f in task.fields) for r in synthetic]
    syn_labels = [str(r["label"]) for r in synthetic]
    train = load_real(task, "train", data_file=data_file)
    test = load_real(task, "test", data_file=data_file)
    real_texts, real_labels = [ex.text for ex in train], [ex.label for ex in train]
    encoder = Encoder.load(DEFAULT_VARIANT)
    try:
        X_syn = encoder.embed(syn_texts)
        X_real = encoder.embed(real_texts)
        X_test = encoder.embed([ex.text for ex in test])
    finally:
        encoder.close()
    test_labels = [ex.label for ex in test]
    report, _ = evaluate(X_syn, syn_labels, X_test, test_labels, config)
    same = stratified_sample(real_labels, len(syn_labels), config.seed)
    same_report, _ = evaluate(X_real[same], [real_labels[i] for i in same], X_test, test_labels, config)
    full_report, _ = evaluate(X_real, real_labels, X_test, test_labels, config)
    report.update(
        {
            "task": task.name,
            "variant": DEFAULT_VARIANT,
            "train": "synthetic",
            "baselines": {
                "real_same_size": _brief(same_report),
                "real_full": _brief(full_report),
            },
        }
    )
    return report


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("accuracy", "macro_f1", "n_train", "per_class", "head_choices")}


def _print_report(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from .eval import summary_lines

    table = Table(title=f"{report['task']}: scored on {report['n_test']} real test examples", title_justify="left")
    for column in ("trained on", "examples", "accuracy", "macro-F1"):
        table.add_column(column, justify="left" if column == "trained on" else "right")
    rows = [
        ("synthetic (this run)", report),
        ("real, same size", report["baselines"]["real_same_size"]),
        ("real, whole train split", report["baselines"]["real_full"]),
    ]
    for name, r in rows:
        table.add_row(name, str(r["n_train"]), f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}")
    base = report["majority_baseline"]
    table.add_row(f"none: always {base['label']} (majority)", "0", f"{base['accuracy']:.4f}", f"{base['macro_f1']:.4f}")
    console = Console(highlight=False)
    console.print(table)
    for line in summary_lines(report)[1:]:
        console.print(line)
    console.print(f"report: {out / 'report.json'}   data: {out / 'data.jsonl'}")
    if os.environ.get("CORPUSFORGE_DEBUG"):
        console.print_json(json.dumps(report))
