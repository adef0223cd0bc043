"""The evaluation service: embed, (clean), train a head, score it on real test data, report.

``run``, ``eval`` and ``experiment`` all evaluate through :func:`evaluate` (embeddings in hand) or
:func:`evaluate_texts` (texts and an embedding function), so every report has the same keys:

- ``accuracy``, ``macro_f1``, ``per_class``, ``confusion`` on the test set, and the
  ``majority_baseline`` (always predicting the test set's most frequent label) next to them;
- ``head`` (its kind) and ``head_choices`` (class weight, the ``C`` chosen by cross-validation on the
  training data only, early stopping for the MLP);
- ``cleaning`` when asked: what :mod:`evaluators.clean` dropped and the label-fidelity estimate before
  and after;
- ``prior_corrected`` when a target label prior is given or estimated (:mod:`evaluators.prior`; the
  probabilities are first calibrated by a temperature fitted on out-of-fold training predictions), kept
  apart from the plain score.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import ConfigError

from .head import CLASS_WEIGHTS, HEAD_KINDS, Head, train_head
from .metrics import classification_report, majority_baseline

__all__ = ["EvalConfig", "Labelled", "evaluate", "evaluate_texts", "score_predictions"]

#: Texts in, ``(n, dim)`` embeddings out.
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class Labelled:
    """Texts and their labels, in step."""

    texts: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How to train and score: the head, cleaning of the synthetic part, prior correction."""

    head: str = "logreg"
    #: ``None`` (plain) or ``"balanced"``.
    class_weight: str | None = None
    #: ``None``: chosen by stratified cross-validation on the training data.
    C: float | None = None
    seed: int = 0
    #: Drop synthetic examples whose label the data disputes before training (:mod:`evaluators.clean`).
    clean: bool = False
    #: A known target label prior (shares by label) to correct the output by.
    prior: Mapping[str, float] | None = field(default=None)
    #: Where ``prior`` came from, for the report ("given", "file NAME").
    prior_source: str = "given"
    #: Estimate the target prior from the unlabelled test inputs (Saerens et al., 2002).
    prior_em: bool = False

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise ConfigError(f"unknown head {self.head!r}", hint=f"choose one of {', '.join(HEAD_KINDS)}")
        if self.class_weight not in (None, *CLASS_WEIGHTS):
            raise ConfigError(f"unknown class weight {self.class_weight!r}", hint="use balanced or none")
        if self.class_weight == "none":
            object.__setattr__(self, "class_weight", None)
        if self.C is not None and self.C <= 0:
            raise ConfigError(f"C must be > 0, got {self.C}")

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes a score (for resumable experiments)."""
        return {
            "head": self.head,
            "class_weight": self.class_weight,
            "C": self.C,
            "clean": self.clean,
            "prior": dict(self.prior) if self.prior is not None else None,
            "prior_em": self.prior_em,
        }


def score_predictions(
    predictions: Sequence[str], test_labels: Sequence[str], train_labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class, confusion and the majority baseline of ``predictions``.

    ``train_labels`` are the labels the classifier knows (rows/columns come first in that order); test
    labels it never saw are reported and count as errors.
    """
    seen = set(train_labels)
    unseen = dict(sorted(Counter(label for label in test_labels if label not in seen).items()))
    metrics = classification_report(list(test_labels), list(predictions), list(train_labels))
    seen_idx = [i for i, label in enumerate(test_labels) if label in seen]
    return {
        **{k: metrics[k] for k in ("accuracy", "macro_f1", "per_class", "confusion")},
        "majority_baseline": majority_baseline(test_labels, list(train_labels)),
        "accuracy_seen_labels": float(np.mean([predictions[i] == test_labels[i] for i in seen_idx]))
        if seen_idx
        else 0.0,
        "unseen_test_labels": unseen,
        "train_labels": list(train_labels),
        "n_test": len(test_labels),
    }


def _brief_scores(predictions: Sequence[str], test_labels: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    m = classification_report(list(test_labels), list(predictions), list(labels))
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "per_class": m["per_class"]}


def _temperature(head: Head, X_train: np.ndarray, train_labels: Sequence[str], config: EvalConfig) -> float:
    """The temperature that calibrates the head's out-of-fold probabilities on its own training data."""
    from .clean import out_of_fold_proba
    from .prior import fit_temperature

    C = float(head.choices.get("C", 1.0))
    proba, judged, k = out_of_fold_proba(
        X_train, train_labels, head.labels, seed=config.seed, C=C, class_weight=config.class_weight
    )
    if k == 0:
        return 1.0
    index = {label: i for i, label in enumerate(head.labels)}
    targets = np.array([index[label] for label in train_labels], dtype=np.int64)
    return fit_temperature(proba[judged], targets[judged])


def _prior_corrections(
    head: Head,
    proba: np.ndarray,
    X_train: np.ndarray,
    train_labels: Sequence[str],
    test_labels: Sequence[str],
    config: EvalConfig,
) -> dict[str, Any]:
    from .prior import adjust, em_prior, prior_vector, temper, training_prior

    source = training_prior(train_labels, head.labels, config.class_weight)
    temperature = _temperature(head, X_train, train_labels, config) if head.kind == "logreg" else 1.0
    proba = temper(proba, temperature)
    out: dict[str, Any] = {}
    targets: list[tuple[str, np.ndarray, dict[str, Any]]] = []
    if config.prior is not None:
        targets.append(("known", prior_vector(config.prior, head.labels), {"source": config.prior_source}))
    if config.prior_em:
        estimate, iterations = em_prior(proba, source)
        targets.append(("em", estimate, {"source": "EM on the unlabelled test inputs", "iterations": iterations}))
    for name, target, info in targets:
        pred = [head.labels[i] for i in adjust(proba, source, target).argmax(axis=1)]
        out[name] = {
            **info,
            "temperature": round(temperature, 4),
            "prior": {label: round(float(v), 5) for label, v in zip(head.labels, target, strict=True)},
            "training_prior": {label: round(float(v), 5) for label, v in zip(head.labels, source, strict=True)},
            **_brief_scores(pred, test_labels, head.labels),
        }
    return out


def evaluate(
    X_train: np.ndarray,
    train_labels: Sequence[str],
    X_test: np.ndarray,
    test_labels: Sequence[str],
    config: EvalConfig = EvalConfig(),
    *,
    X_real: np.ndarray | None = None,
    real_labels: Sequence[str] = (),
) -> tuple[dict[str, Any], Head]:
    """Train on ``X_train`` (synthetic; cleaned if asked) plus ``X_real`` (trusted, never cleaned), score on test.

    Returns the report (see the module doc) and the trained head.
    """
    started = time.perf_counter()
    X_train = np.asarray(X_train, dtype=np.float32)
    syn_labels = [str(v) for v in train_labels]
    report: dict[str, Any] = {}
    timings: dict[str, float] = {}
    if config.clean and len(syn_labels):
        from .clean import clean_labels

        result = clean_labels(
            X_train,
            syn_labels,
            seed=config.seed,
            class_weight=config.class_weight,
            X_real=X_real,
            y_real=[str(v) for v in real_labels],
        )
        report["cleaning"] = result.summary()
        kept = np.flatnonzero(result.keep)
        X_train, syn_labels = X_train[kept], [syn_labels[i] for i in kept]
        timings["clean"] = round(result.seconds, 3)
    all_labels = syn_labels + [str(v) for v in real_labels]
    X_all = X_train if X_real is None or not len(real_labels) else np.vstack([X_train, X_real])
    t = time.perf_counter()
    head = train_head(
        X_all, all_labels, kind=config.head, class_weight=config.class_weight, seed=config.seed, C=config.C
    )
    timings["fit"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    proba = head.predict_proba(X_test) if len(X_test) else np.zeros((0, len(head.labels)))
    predictions = [head.labels[i] for i in proba.argmax(axis=1)]
    report = score_predictions(predictions, list(test_labels), head.labels) | report
    if config.prior is not None or config.prior_em:
        report["prior_corrected"] = _prior_corrections(head, proba, X_all, all_labels, test_labels, config)
    timings["score"] = round(time.perf_counter() - t, 3)
    report.update(
        {
            "n_train": len(all_labels),
            "train_label_counts": dict(sorted(Counter(all_labels).items())),
            "seed": config.seed,
            "head": config.head,
            "head_choices": head.choices,
            "eval_timings_s": timings | {"total": round(time.perf_counter() - started, 3)},
        }
    )
    return report, head


def evaluate_texts(
    embed: Embed,
    train: Labelled,
    test: Labelled,
    config: EvalConfig = EvalConfig(),
    *,
    real: Labelled | None = None,
    embed_test: Embed | None = None,
) -> tuple[dict[str, Any], Head]:
    """Embed, then :func:`evaluate`; ``embed_test`` (default ``embed``) embeds the test texts."""
    t = time.perf_counter()
    X_train = embed(train.texts) if train.texts else np.zeros((0, 0), dtype=np.float32)
    X_real = embed(real.texts) if real is not None and real.texts else None
    embedded_train = time.perf_counter()
    X_test = (embed_test or embed)(test.texts)
    embedded_test = time.perf_counter()
    if not train.texts:
        X_train = np.zeros((0, X_test.shape[1]), dtype=np.float32)
    report, head = evaluate(
        X_train,
        train.labels,
        X_test,
        test.labels,
        config,
        X_real=X_real,
        real_labels=real.labels if real is not None else (),
    )
    report["eval_timings_s"] |= {
        "embed_train": round(embedded_train - t, 3),
        "embed_test": round(embedded_test - embedded_train, 3),
    }
    return report, head
