"""Train a head on embeddings and score it on a test set: the one train-and-score round every
command (``eval``, ``run``, ``experiment``) is built from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .head import Head, train_head
from .metrics import classification_report

__all__ = ["score_head", "train_and_score"]


def score_head(head: Head, X_test: np.ndarray, test_labels: Sequence[str]) -> dict[str, Any]:
    """accuracy, macro-F1, per-class scores and confusion of ``head`` on a test set.

    Test labels the head never saw in training are reported and count as errors.
    """
    predictions = head.predict(X_test)
    seen = set(head.labels)
    unseen = dict(sorted(Counter(label for label in test_labels if label not in seen).items()))
    metrics = classification_report(list(test_labels), predictions, head.labels)
    seen_idx = [i for i, label in enumerate(test_labels) if label in seen]
    return {
        **{k: metrics[k] for k in ("accuracy", "macro_f1", "per_class", "confusion")},
        "accuracy_seen_labels": float(np.mean([predictions[i] == test_labels[i] for i in seen_idx]))
        if seen_idx
        else 0.0,
        "unseen_test_labels": unseen,
        "train_labels": head.labels,
        "n_test": len(test_labels),
    }


def train_and_score(
    X_train: np.ndarray,
    train_labels: Sequence[str],
    X_test: np.ndarray,
    test_labels: Sequence[str],
    *,
    head_kind: str = "logreg",
    seed: int = 0,
) -> tuple[dict[str, Any], Head]:
    """Train a head on ``X_train`` and score it; returns the report and the head."""
    head = train_head(X_train, list(train_labels), kind=head_kind, seed=seed)
    report = score_head(head, X_test, test_labels)
    report["n_train"] = len(train_labels)
    report["train_label_counts"] = dict(sorted(Counter(train_labels).items()))
    report["seed"] = seed
    report["head"] = head_kind
    return report, head
