"""``corpusforge eval``: train a classifier on (synthetic) data, score it on real test data."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    from evaluators.embed_ray import RayEncoder
    from evaluators.encoder import Encoder

NAME = "eval"
HELP = "train a classifier on synthetic (+ some real) data and score it on real test data"
DESCRIPTION = (
    "Embed the training texts with the ONNX sentence encoder (all-MiniLM-L6-v2), fit a light head "
    "(logistic regression by default) and score it on --test: accuracy, macro-F1, per-class scores and the "
    "confusion matrix go to OUT/report.json, the classifier (one ONNX model) to OUT/model/. Inputs are JSONL, "
    "CSV or Parquet files with a `text` (or pair fields) and a `label` column, or `generate` run directories; "
    "a built-in task name (e.g. bbc-news) stands for its real data split. --real-train/--real-n mix N real "
    "examples (stratified, seeded) into the synthetic ones.\n\nWith --ray [ADDRESS] (else $RAY_ADDRESS, else a "
    "local instance on 127.0.0.1) the texts the embedding cache lacks are embedded on a Ray cluster by a pool of "
    "actors (--actors, default one per CPU) that each load the encoder once; the vectors come back here, where they "
    "are written to the cache (its only writer) and the head is trained and scored as without --ray."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from evaluators.encoder import DEFAULT_VARIANT, VARIANT_HELP, VARIANTS  # light: numpy only
    from evaluators.head import HEAD_KINDS

    parser.add_argument("--train", action="append", default=[], metavar="FILE", help="training data (repeatable)")
    parser.add_argument("--real-train", metavar="FILE", help="real labelled data to mix in (or a task)")
    parser.add_argument("--real-n", type=int, metavar="N", help="how many --real-train examples to mix in (all)")
    parser.add_argument(
        "--test", required=True, metavar="FILE", help="real test data (or a built-in task name or task YAML file)"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="where report.json and model/ go")
    parser.add_argument("--seed", type=int, default=0, help="seed for the real-data sample and the head")
    parser.add_argument("--variant", choices=VARIANTS, default=DEFAULT_VARIANT, help=VARIANT_HELP)
    parser.add_argument("--head", choices=HEAD_KINDS, default="logreg", help="classifier head")
    add_head_arguments(parser)
    add_clean_prior_arguments(parser)
    parser.add_argument("--fields", help="comma-separated text fields (default: `text`, or detected pair fields)")
    parser.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--no-save", action="store_true", help="do not save the classifier to OUT/model/")
    parser.add_argument(
        "--finetune",
        action="store_true",
        help="fine-tune the whole encoder (torch, slow) instead of fitting a head on embeddings; saves OUT/model/",
    )
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (with --finetune)")
    add_ray_arguments(parser)


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--actors``, ``--threads``, ``--num-cpus``: shared by ``eval`` and ``experiment``."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="embed the texts the embedding cache lacks on a Ray cluster (no ADDRESS: $RAY_ADDRESS, else a local "
        "instance); the rest runs here",
    )
    parser.add_argument("--actors", type=int, help="--ray: embedding actors (default: one per cluster CPU / --threads)")
    parser.add_argument("--threads", type=int, default=1, help="--ray: onnxruntime threads per actor")
    parser.add_argument(
        "--num-cpus", type=int, help="--ray without a cluster: CPUs of the local instance (default: all)"
    )


def check_ray_arguments(args: argparse.Namespace) -> None:
    """Refuse the Ray flags without --ray, and counts below one."""
    if args.ray is None:
        for flag in ("actors", "num_cpus"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --ray", hint="add --ray or drop the flag")
        if args.threads != 1:
            raise ConfigError("--threads needs --ray", hint="add --ray or drop the flag")
    for flag in ("actors", "threads", "num_cpus"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")


def ray_encoder(args: argparse.Namespace, encoder: Encoder) -> RayEncoder:
    """``encoder`` sending the texts its cache lacks to the cluster --ray names (already connected)."""
    from evaluators.embed_ray import RayEncoder

    return RayEncoder.attach(encoder, actors=args.actors, threads=args.threads)


def connect_ray(args: argparse.Namespace) -> None:
    """Join the cluster of --ray (imports ray); a bad address stops here, before any work."""
    from ..ray_cluster import connect

    connect(args.ray or None, num_cpus=args.num_cpus)


def add_head_arguments(parser: argparse.ArgumentParser, *, fixed_c: bool = True) -> None:
    """``--class-weight`` and (with ``fixed_c``) ``--C``: shared by ``eval``, ``experiment``, ``run`` and ``clean``."""
    parser.add_argument(
        "--class-weight",
        choices=("none", "balanced"),
        default="none",
        help="class weights of the head: none (best accuracy) or balanced (inverse class frequency: helps "
        "macro-F1 on imbalanced training data, usually costs accuracy)",
    )
    if not fixed_c:
        return
    parser.add_argument(
        "--C",
        type=float,
        metavar="C",
        help="inverse regularisation of the logistic head (default: chosen by stratified 5-fold "
        "cross-validation on the training data only, recorded in report.json)",
    )


def add_clean_prior_arguments(parser: argparse.ArgumentParser) -> None:
    """``--clean`` and the label-prior options: shared by ``eval`` and ``experiment``."""
    from evaluators.clean import CLEAN_RULE

    parser.add_argument(
        "--clean",
        action="store_true",
        help=f"before training, drop synthetic examples whose label the data disputes (out-of-fold, confident "
        f"learning): {CLEAN_RULE}; real examples are never dropped",
    )
    prior = parser.add_mutually_exclusive_group()
    prior.add_argument(
        "--prior",
        metavar="LABEL=SHARE,...",
        help="the real label shares: correct the classifier's probabilities by (these shares / the training "
        "shares); the corrected score is reported apart from the plain one",
    )
    prior.add_argument(
        "--prior-from", metavar="FILE", help="like --prior, with the shares of a (small) labelled real sample"
    )
    parser.add_argument(
        "--prior-em",
        action="store_true",
        help="also estimate the real label shares from the unlabelled test inputs (EM of Saerens et al., 2002) "
        "and report the score corrected by them",
    )


def eval_config(args: argparse.Namespace, *, labels: Sequence[str] = (), clean: bool | None = None) -> Any:
    """The ``EvalConfig`` the flags ask for; ``labels`` (the training labels) complete a --prior-from sample."""
    from evaluators.evaluate import EvalConfig
    from evaluators.prior import parse_prior

    prior: dict[str, float] | None = None
    source = "given"
    if getattr(args, "prior", None):
        prior = parse_prior(args.prior)
    elif getattr(args, "prior_from", None):
        from evaluators.data import texts_and_labels

        sample = texts_and_labels(load_input(args.prior_from, "train"))[1]
        if not sample:
            raise DataError(f"{args.prior_from}: no labelled examples", hint="pass a file with a `label` column")
        known = set(labels) or set(sample)
        unknown = len([label for label in sample if label not in known])
        # one pseudo-count per label, so a label missing from a small sample is rare, not impossible
        prior = {label: float(sample.count(label)) + 1.0 for label in sorted(known)}
        source = f"file {args.prior_from} ({len(sample) - unknown} examples, +1 per label"
        source += f"; {unknown} of labels the training data lacks left out)" if unknown else ")"
    return EvalConfig(
        head=getattr(args, "head", "logreg"),
        class_weight=args.class_weight,
        C=args.C,
        seed=args.seed,
        clean=bool(getattr(args, "clean", False)) if clean is None else clean,
        prior=prior,
        prior_source=source,
        prior_em=bool(getattr(args, "prior_em", False)),
    )


def load_input(value: str, split: str) -> list[dict[str, Any]]:
    """Records of a file or run directory, or a task's real ``split`` (a built-in name or a task YAML file)."""
    from evaluators.data import load_input as load

    return load(value, split)


def _check(args: argparse.Namespace) -> None:
    if args.finetune and (args.clean or args.prior or args.prior_from or args.prior_em or args.C is not None):
        raise ConfigError(
            "--clean, --C and the prior options work with a head on embeddings, not --finetune",
            hint="drop --finetune, or those options",
        )
    if not args.train and not args.real_train:
        raise ConfigError("nothing to train on", hint="pass --train FILE and/or --real-train FILE")
    if args.real_n is not None and not args.real_train:
        raise ConfigError("--real-n needs --real-train", hint="pass the real data to sample from")
    if args.real_n is not None and args.real_n < 0:
        raise ConfigError("--real-n must be >= 0")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    if args.finetune and args.ray is not None:
        raise ConfigError("--ray embeds for a head on embeddings, not --finetune", hint="drop --ray or --finetune")
    check_ray_arguments(args)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluators.classifier import Classifier
    from evaluators.data import stratified_sample, texts_and_labels
    from evaluators.embed_ray import RayEncoder  # light: no ray until a pass runs
    from evaluators.encoder import Encoder
    from evaluators.evaluate import Labelled, evaluate_texts

    _check(args)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    console = Console(stderr=True, highlight=False)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    t = time.perf_counter()
    train_texts: list[str] = []
    train_labels: list[str] = []
    for path in args.train:
        texts, labels = texts_and_labels(load_input(path, "train"), fields)
        train_texts += texts
        train_labels += labels
    real = Labelled(texts=[], labels=[])
    if args.real_train:
        real_texts, real_labels = texts_and_labels(load_input(args.real_train, "train"), fields)
        n = len(real_labels) if args.real_n is None else args.real_n
        if n > len(real_labels):
            console.print(f"[yellow]--real-n {n}: only {len(real_labels)} real examples, using all[/yellow]")
        chosen = stratified_sample(real_labels, n, args.seed)
        real = Labelled(texts=[real_texts[i] for i in chosen], labels=[real_labels[i] for i in chosen])
    test_texts, test_labels = texts_and_labels(load_input(args.test, "test"), fields)
    if not train_texts and not real.texts:
        raise DataError("the training data is empty", hint="check --train / --real-train")
    if not test_texts:
        raise DataError(f"{args.test}: the test data is empty")
    config = eval_config(args, labels=train_labels + real.labels)
    t = lap("load_data", t)
    inputs = {"train": args.train, "real_train": args.real_train, "real_n": args.real_n, "test": args.test}
    if args.finetune:
        report = _finetune_and_score(
            args, train_texts + real.texts, train_labels + real.labels, test_texts, test_labels, lap, t
        )
        report.update({"n_train_synthetic": len(train_texts), "n_train_real": len(real.texts), "inputs": inputs})
        return _write_report(args.out, report, timings, started)

    if args.ray is not None:
        connect_ray(args)
    encoder = Encoder.load(args.variant, cache=not args.no_cache)
    if args.ray is not None:
        encoder = ray_encoder(args, encoder)
    t = lap("load_encoder", t)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:

        def embedder(what: str) -> Callable[[Sequence[str]], Any]:
            def embed(texts: Sequence[str]) -> Any:
                task_id = bar.add_task(f"embedding {what}", total=len(texts))
                return encoder.embed(
                    list(texts), args.batch_size, lambda done, total: bar.update(task_id, completed=done, total=total)
                )

            return embed

        embed_train, embed_test = embedder("train"), embedder("test")
        if args.ray is not None:  # one Ray pass for every split
            embed_train = embed_test = embed_once(embedder("on Ray"), train_texts + real.texts + test_texts)
        report, head = evaluate_texts(
            embed_train,
            Labelled(texts=train_texts, labels=train_labels),
            Labelled(texts=test_texts, labels=test_labels),
            config,
            real=real if real.texts else None,
            embed_test=embed_test,
        )
    t = lap("embed_train_and_score", t)
    if isinstance(encoder, RayEncoder):
        stats = encoder.stats
        report["ray"] = stats.as_dict()
        console.print(
            f"embedded {stats.embedded} texts on Ray with {stats.actors} actor(s); "
            f"{stats.asked - stats.embedded} from the cache or repeated"
        )
    report.update(
        {
            "n_train_synthetic": report["n_train"] - len(real.texts),
            "n_train_real": len(real.texts),
            "variant": args.variant,
            "inputs": inputs,
            "encoder": encoder.directory.name,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        }
    )
    encoder.close()

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_save:
        Classifier.from_head(encoder, head).save(args.out / "model")
        t = lap("save_model", t)
    return _write_report(args.out, report, timings, started)


def embed_once(embed: Callable[[Sequence[str]], Any], texts: list[str]) -> Callable[[Sequence[str]], Any]:
    """An embed function answering from one call of ``embed`` over all ``texts`` (asked for texts among them)."""
    vectors = embed(texts)
    row = {text: i for i, text in enumerate(texts)}
    return lambda asked: vectors[[row[text] for text in asked]]


def _finetune_and_score(
    args: argparse.Namespace,
    train_texts: list[str],
    train_labels: list[str],
    test_texts: list[str],
    test_labels: list[str],
    lap: Callable[[str, float], float],
    t: float,
) -> dict[str, Any]:
    """Fine-tune on the training texts, save to OUT/model/ and score the ONNX model on the test texts."""
    from collections import Counter

    from evaluators.evaluate import score_predictions
    from evaluators.finetune import FinetunedClassifier, finetune

    model_dir = finetune(
        train_texts,
        train_labels,
        epochs=args.epochs,
        seed=args.seed,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        out_dir=args.out / "model",
    )
    t = lap("finetune", t)
    classifier = FinetunedClassifier.load(model_dir)
    predictions = classifier.predict(test_texts)
    t = lap("score", t)
    return {
        **score_predictions(predictions, test_labels, classifier.labels),
        "n_train": len(train_labels),
        "train_label_counts": dict(sorted(Counter(train_labels).items())),
        "seed": args.seed,
        "head": "finetune",
        "head_choices": {"kind": "finetune", **classifier.meta},
        "variant": "finetuned",
        "finetuned": True,
        "epochs": args.epochs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def _write_report(out: Path, report: dict[str, Any], timings: dict[str, float], started: float) -> int:
    from rich.console import Console

    out.mkdir(parents=True, exist_ok=True)
    timings["total"] = round(time.perf_counter() - started, 3)
    report["timings_s"] = timings
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / "report.json")
    _print_report(Console(highlight=False), report, out)
    return 0


def _print_report(console: Any, report: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}", title_justify="left")
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, s in report["per_class"].items():
        mark = " [yellow](unseen in train)[/yellow]" if label in report["unseen_test_labels"] else ""
        table.add_row(label + mark, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]))
    console.print(table)
    console.print(
        f"train {report['n_train']} ({report['n_train_synthetic']} from --train + {report['n_train_real']} real), "
        f"test {report['n_test']}, variant {report['variant']}, head {report['head']}, seed {report['seed']}, "
        f"{report['timings_s']['total']:.1f}s"
    )
    for line in summary_lines(report):
        console.print(line)
    if report["unseen_test_labels"]:
        names = ", ".join(f"{k} ({v})" for k, v in report["unseen_test_labels"].items())
        console.print(f"[yellow]test labels never seen in training, always wrong: {names}[/yellow]")
    console.print(f"report: {out / 'report.json'}")


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The majority baseline, the head's choices, cleaning and prior-corrected scores of a report, one per line."""
    lines = []
    base = report.get("majority_baseline")
    if base:
        lines.append(
            f"majority-class baseline (always {base['label']}): accuracy {base['accuracy']:.4f}, "
            f"macro-F1 {base['macro_f1']:.4f}"
        )
    choices = report.get("head_choices") or {}
    if "C" in choices:
        how = f"{choices['cv']['folds']}-fold CV on the training data" if choices.get("C_chosen_by") == "cv" else None
        lines.append(
            f"head: C={choices['C']:g} ({how or choices.get('C_chosen_by')}), class weight {choices['class_weight']}"
        )
    elif choices.get("early_stopping"):
        stop = choices["early_stopping"]
        lines.append(f"head: MLP, early stopping at epoch {stop['best_epoch']} on {stop['holdout']} held-out examples")
    cleaning = report.get("cleaning")
    if cleaning:
        before, after = cleaning["label_fidelity_before"], cleaning["label_fidelity_after"]
        fid = f"{before:.3f} -> {after:.3f}" if before is not None and after is not None else "not measured"
        lines.append(
            f"cleaning: kept {cleaning['kept']} of {cleaning['n']} synthetic examples (label fidelity estimate {fid})"
        )
    for name, corrected in (report.get("prior_corrected") or {}).items():
        lines.append(
            f"prior-corrected ({name}: {corrected['source']}): accuracy {corrected['accuracy']:.4f}, "
            f"macro-F1 {corrected['macro_f1']:.4f}"
        )
    return lines
