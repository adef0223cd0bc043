"""Evaluation heads: the old head (C=10, balanced) against the new defaults, cleaning and prior correction.

Per task, on the same synthetic data, the same real test split and the same seeds:

* ``a_old``: logistic regression with ``C=10`` and balanced class weights (the head before issue 13);
* ``b_default``: the new default (``C`` by stratified 5-fold cross-validation on the training data, no
  class weights);
* ``c_clean``: ``b`` after dropping the synthetic examples whose label the data disputes (``--clean``);
* ``d_prior_em``: ``c`` with its output corrected by the EM estimate of the test prior (``--prior-em``);
* ``d_prior_known``: ``c`` corrected by the label shares of a separate 100-example real sample (``--prior-from``).

Training sets: synthetic only, and synthetic + 20 / + 100 real train examples (stratified, one sample per
seed; real examples are never cleaned). Scores are means over ``SEEDS``. Also measured: the seconds the
cross-validation of ``C`` costs on a few thousand real examples.

The synthetic data is a ``corpusforge generate TASK --strategy few-shot --per-request 3`` run with the
packaged local model (SmolLM2-135M); pass its directory with ``--synthetic TASK=DIR`` (default
``runs/bench-eval/TASK``). tweet-sentiment's test split is a fixed stratified sample of ``TWEET_TEST``.

Run: ``python -m benchmarks.bench_eval [--synthetic TASK=DIR ...]``; writes ``benchmarks/results/eval.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .markdown import Headline, fmt, get, headline_generic, table
from .record import write_results

TASKS = ("bbc-news", "tweet-sentiment")
REAL_MIX = (0, 20, 100)
SEEDS = (0, 1, 2)
#: tweet-sentiment's test split (7,430) is sampled to this many, stratified, so the benchmark runs in minutes.
TWEET_TEST = 2000
#: Real examples whose label shares ``d_prior_known`` uses (drawn apart from the mixed-in ones).
PRIOR_SAMPLE = 100
#: Training-set sizes at which the cross-validation of C is timed (real train examples).
CV_SIZES = (500, 1000, 3000)
VARIANTS = ("a_old", "b_default", "c_clean", "d_prior_em", "d_prior_known")
DEFAULT_DIR = Path("runs") / "bench-eval"
#: run_all's time budget: embedding the test splits and 3,000 tweets once, then about 60 small fits.
TIMEOUT_S = 1800


def _stratified(labels: list[str], n: int, seed: int) -> list[int]:
    from sklearn.model_selection import train_test_split

    if n >= len(labels):
        return list(range(len(labels)))
    picked, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return sorted(int(i) for i in picked)


def _scores(report: dict[str, Any], variant: str) -> dict[str, float]:
    if variant.startswith("d_prior"):
        corrected = report["prior_corrected"]["em" if variant == "d_prior_em" else "known"]
        return {"accuracy": corrected["accuracy"], "macro_f1": corrected["macro_f1"]}
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def bench_task(task_name: str, synthetic_dir: Path, encoder: Any) -> dict[str, Any]:
    from engine.tasks import load_real, load_task
    from evaluators.data import load_records, texts_and_labels
    from evaluators.evaluate import EvalConfig, evaluate

    task = load_task(task_name)
    syn_texts, syn_labels = texts_and_labels(load_records(synthetic_dir), list(task.fields))
    if len(set(syn_labels)) < 2 or min(Counter(syn_labels).values()) < 2:
        print(f"{task_name}: too little synthetic data ({dict(Counter(syn_labels))}); skipped", file=sys.stderr)
        return {"skipped": f"too little synthetic data: {dict(Counter(syn_labels))}"}
    train = load_real(task, "train")
    test = load_real(task, "test")
    real_texts, real_labels = [e.text for e in train], [e.label for e in train]
    test_texts, test_labels = [e.text for e in test], [e.label for e in test]
    if task_name == "tweet-sentiment":
        keep = _stratified(test_labels, TWEET_TEST, 0)
        test_texts, test_labels = [test_texts[i] for i in keep], [test_labels[i] for i in keep]
    t = time.perf_counter()
    X_syn = encoder.embed(syn_texts)
    X_test = encoder.embed(test_texts)
    embed_s = time.perf_counter() - t
    print(
        f"{task_name}: {len(syn_texts)} synthetic, {len(test_texts)} test embedded in {embed_s:.0f}s", file=sys.stderr
    )
    # the prior sample is drawn from the second half of a fixed permutation, the mixed-in examples from the first
    order = np.random.default_rng(123).permutation(len(real_texts))
    pool, prior_pool = order[: len(order) // 2], order[len(order) // 2 :]
    prior_idx = [int(prior_pool[i]) for i in _stratified([real_labels[j] for j in prior_pool], PRIOR_SAMPLE, 0)]
    prior_counts = Counter(real_labels[i] for i in prior_idx)
    prior = {label: prior_counts.get(label, 0) + 1.0 for label in task.labels}
    settings: dict[str, Any] = {}
    for r in REAL_MIX:
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for seed in SEEDS:
            X_real, y_real = None, []
            if r:
                chosen = [int(pool[i]) for i in _stratified([real_labels[j] for j in pool], r, seed)]
                X_real = encoder.embed([real_texts[i] for i in chosen])
                y_real = [real_labels[i] for i in chosen]
            configs = {
                "a_old": EvalConfig(C=10.0, class_weight="balanced", seed=seed),
                "b_default": EvalConfig(seed=seed),
                "c_clean": EvalConfig(seed=seed, clean=True, prior=prior, prior_em=True),
            }
            reports = {}
            for name, config in configs.items():
                reports[name], _ = evaluate(
                    X_syn, syn_labels, X_test, test_labels, config, X_real=X_real, real_labels=y_real
                )
            runs["a_old"].append(_scores(reports["a_old"], "a_old"))
            runs["b_default"].append(
                _scores(reports["b_default"], "b_default") | {"C": reports["b_default"]["head_choices"]["C"]}
            )
            for v in ("c_clean", "d_prior_em", "d_prior_known"):
                runs[v].append(_scores(reports["c_clean"], v))
            cleaning = reports["c_clean"]["cleaning"]
            runs["c_clean"][-1] |= {"kept": cleaning["kept"], "fidelity_before": cleaning["label_fidelity_before"]}
            runs["c_clean"][-1] |= {"fidelity_after": cleaning["label_fidelity_after"]}
        settings[f"real{r}"] = {v: _mean(rows) for v, rows in runs.items()}
        b = settings[f"real{r}"]
        print(
            f"  +{r} real: old {b['a_old']['accuracy']:.3f}, default {b['b_default']['accuracy']:.3f}, "
            f"clean {b['c_clean']['accuracy']:.3f}, prior-em {b['d_prior_em']['accuracy']:.3f}, "
            f"prior-known {b['d_prior_known']['accuracy']:.3f}",
            file=sys.stderr,
        )
    base = reports["b_default"]["majority_baseline"]
    return {
        "synthetic": {"dir": str(synthetic_dir), "n": len(syn_texts), "label_counts": dict(Counter(syn_labels))},
        "test": {"n": len(test_texts), "label_counts": dict(Counter(test_labels)), "majority_baseline": base},
        "prior_sample": {
            "n": len(prior_idx),
            "shares": {k: round(v / sum(prior.values()), 4) for k, v in prior.items()},
        },
        "settings": settings,
        "embed_s": round(embed_s, 1),
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in rows[0]:
        vals = [row[key] for row in rows if row.get(key) is not None]
        out[key] = round(float(np.mean(vals)), 4) if vals else None
        if key in ("accuracy", "macro_f1"):
            out[f"{key}_std"] = round(float(np.std(vals)), 4)
    return out  # type: ignore[return-value]


def cv_cost(encoder: Any) -> dict[str, Any]:
    """Seconds ``select_C`` takes (5 folds x 9 values of C) on ``CV_SIZES`` real tweets (3 labels)."""
    from engine.tasks import load_real, load_task
    from evaluators.head import DEFAULT_CS, select_C

    train = load_real(load_task("tweet-sentiment"), "train")
    labels = [e.label for e in train]
    keep = _stratified(labels, max(CV_SIZES), 0)
    X = encoder.embed([train[i].text for i in keep])
    y = [labels[i] for i in keep]
    names = sorted(set(y))
    out = {}
    for n in CV_SIZES:
        idx = _stratified(y, n, 1)
        targets = np.array([names.index(y[i]) for i in idx])
        t = time.perf_counter()
        C, details = select_C(X[idx], targets, np.ones(len(names)))
        out[str(n)] = {"seconds": round(time.perf_counter() - t, 2), "C": C, "folds": details["folds"]}
        print(f"cv of C on {n} tweets: {out[str(n)]['seconds']}s (C={C})", file=sys.stderr)
    return {"task": "tweet-sentiment", "grid": list(DEFAULT_CS), "by_n": out}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from evaluators.encoder import DEFAULT_VARIANT, Encoder

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_eval")
    parser.add_argument("--synthetic", action="append", default=[], metavar="TASK=DIR")
    args = parser.parse_args(argv)
    dirs = {task: DEFAULT_DIR / task for task in TASKS}
    dirs |= {k: Path(v) for k, _, v in (s.partition("=") for s in args.synthetic)}
    encoder = Encoder.load(DEFAULT_VARIANT)
    results: dict[str, Any] = {
        "knobs": {
            "real_mix": list(REAL_MIX),
            "seeds": list(SEEDS),
            "tweet_test": TWEET_TEST,
            "prior_sample": PRIOR_SAMPLE,
        },
        "variant": DEFAULT_VARIANT,
        "tasks": {},
    }
    try:
        for task in TASKS:
            if not (dirs[task] / "data.jsonl").exists():
                print(f"{task}: no synthetic data in {dirs[task]}; skipped", file=sys.stderr)
                continue
            results["tasks"][task] = bench_task(task, dirs[task], encoder)
        results["cv_cost"] = cv_cost(encoder)
    finally:
        encoder.close()
    write_results("eval", results)
    print(render(results))
    return results


_NAMES = {
    "a_old": "old head (C=10, balanced)",
    "b_default": "new default (C by CV, no weights)",
    "c_clean": "+ cleaning",
    "d_prior_em": "+ cleaning + prior (EM)",
    "d_prior_known": "+ cleaning + prior (100 real)",
}


def headline(data: dict[str, Any]) -> Headline:
    out = []
    for task in get(data, "tasks") or {}:
        old = get(data, f"tasks.{task}.settings.real0.a_old.accuracy")
        new = get(data, f"tasks.{task}.settings.real0.b_default.accuracy")
        out.append((f"{task} synthetic-only accuracy, old head -> new default", f"{fmt(old)} -> {fmt(new)}"))
    return out or headline_generic(data)


def render(data: dict[str, Any]) -> str:
    lines = []
    for task, t in (get(data, "tasks") or {}).items():
        if "skipped" in t:
            lines += [f"**{task}**: skipped ({t['skipped']}).", ""]
            continue
        base = get(t, "test.majority_baseline") or {}
        lines += [
            f"**{task}**: {fmt(get(t, 'synthetic.n'))} synthetic examples ({get(t, 'synthetic.dir')}), "
            f"{fmt(get(t, 'test.n'))} real test examples; majority class ({base.get('label')}) "
            f"accuracy {fmt(base.get('accuracy'))}, macro-F1 {fmt(base.get('macro_f1'))}. "
            f"Accuracy / macro-F1, mean over {len(get(data, 'knobs.seeds') or [])} seeds.",
            "",
        ]
        header = ["head"] + [
            f"{'synthetic only' if r == 0 else f'+{r} real'}" for r in get(data, "knobs.real_mix") or []
        ]
        rows = []
        for v, name in _NAMES.items():
            row = [name]
            for r in get(data, "knobs.real_mix") or []:
                s = get(t, f"settings.real{r}.{v}") or {}
                row.append(f"{fmt(s.get('accuracy'))} / {fmt(s.get('macro_f1'))}")
            rows.append(row)
        lines += [*table(header, rows), ""]
        clean = get(t, "settings.real0.c_clean") or {}
        lines += [
            f"Synthetic only, means over seeds: cleaning kept {fmt(clean.get('kept'))} of "
            f"{fmt(get(t, 'synthetic.n'))} examples, label-fidelity estimate {fmt(clean.get('fidelity_before'))} -> "
            f"{fmt(clean.get('fidelity_after'))}; the C chosen by cross-validation {fmt(get(t, 'settings.real0.b_default.C'))}.",
            "",
        ]
    cv = get(data, "cv_cost.by_n") or {}
    if cv:
        lines.append(
            "Cross-validation of C (5 folds x 9 values): "
            + ", ".join(f"{n} examples {fmt(c.get('seconds'))} s" for n, c in cv.items())
            + "."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
