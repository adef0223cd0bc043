"""Classification metrics, computed by scikit-learn: accuracy, macro-F1, per-class scores, the confusion matrix.

Labels are strings. ``labels`` fixes the order of rows and columns; labels in
the data but not in ``labels`` are appended in sorted order, so a test label the
classifier never saw still shows up (with recall 0) instead of vanishing. A
class with no predictions has precision 0, and one with no true examples recall
0 (``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["accuracy", "classification_report", "confusion_matrix", "macro_f1", "majority_baseline", "per_class"]


def _labels(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels, y_pred {len(y_pred)}")
    order = list(dict.fromkeys(labels or []))
    extra = sorted((set(y_true) | set(y_pred)) - set(order))
    return order + extra


def confusion_matrix(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """``(matrix, labels)``: ``matrix[i, j]`` counts examples of ``labels[i]`` predicted as ``labels[j]``."""
    from sklearn import metrics

    order = _labels(y_true, y_pred, labels)
    if not len(y_true):
        return np.zeros((len(order), len(order)), dtype=np.int64), order
    m = metrics.confusion_matrix(list(y_true), list(y_pred), labels=order)
    return np.asarray(m, dtype=np.int64), order


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    from sklearn import metrics

    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels, y_pred {len(y_pred)}")
    if not len(y_true):
        return 0.0
    return float(metrics.accuracy_score(list(y_true), list(y_pred)))


def _scores(
    y_true: Sequence[str], y_pred: Sequence[str], order: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn import metrics

    if not len(y_true) or not order:
        zeros = np.zeros(len(order))
        return zeros, zeros, zeros, zeros
    p, r, f, s = metrics.precision_recall_fscore_support(list(y_true), list(y_pred), labels=order, zero_division=0.0)
    return np.asarray(p), np.asarray(r), np.asarray(f), np.asarray(s)


def per_class(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """``{label: {precision, recall, f1, support}}``."""
    order = _labels(y_true, y_pred, labels)
    p, r, f, s = _scores(y_true, y_pred, order)
    return {
        label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, label in enumerate(order)
    }


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """The unweighted mean of the per-class F1 over ``labels`` plus every label seen in the data."""
    order = _labels(y_true, y_pred, labels)
    if not order:
        return 0.0
    return float(_scores(y_true, y_pred, order)[2].mean())


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Everything at once, JSON-ready: accuracy, macro_f1, per_class, confusion ``{labels, matrix}``, n."""
    m, order = confusion_matrix(y_true, y_pred, labels)
    p, r, f, s = _scores(y_true, y_pred, order)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": float(f.mean()) if len(order) else 0.0,
        "per_class": {
            label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, label in enumerate(order)
        },
        "confusion": {"labels": order, "matrix": m.tolist()},
        "n": len(y_true),
    }


def majority_baseline(y_true: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The score of always predicting the most frequent label of ``y_true``: the best any constant classifier does.

    A classifier below this accuracy has learned nothing useful about the test distribution.
    """
    if not len(y_true):
        return {"label": None, "accuracy": 0.0, "macro_f1": 0.0}
    values, counts = np.unique(np.asarray(list(y_true)), return_counts=True)
    top = str(values[int(np.argmax(counts))])
    pred = [top] * len(y_true)
    return {"label": top, "accuracy": accuracy(y_true, pred), "macro_f1": macro_f1(y_true, pred, labels)}
