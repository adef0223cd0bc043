"""Classification metrics in plain numpy: accuracy, macro-F1, per-class scores, the confusion matrix.

Labels are strings. ``labels`` fixes the order of rows and columns; labels in
the data but not in ``labels`` are appended in sorted order, so a test label the
classifier never saw still shows up (with recall 0) instead of vanishing. A
class with no predictions has precision 0, and one with no true examples recall
0 (scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["accuracy", "classification_report", "confusion_matrix", "macro_f1", "per_class"]


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
    order = _labels(y_true, y_pred, labels)
    index = {label: i for i, label in enumerate(order)}
    m = np.zeros((len(order), len(order)), dtype=np.int64)
    if len(y_true):
        np.add.at(m, ([index[t] for t in y_true], [index[p] for p in y_pred]), 1)
    return m, order


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels, y_pred {len(y_pred)}")
    if not y_true:
        return 0.0
    return float(np.mean([t == p for t, p in zip(y_true, y_pred, strict=True)]))


def _scores(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(m).astype(np.float64)
    predicted = m.sum(axis=0).astype(np.float64)
    support = m.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support


def per_class(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """``{label: {precision, recall, f1, support}}``."""
    m, order = confusion_matrix(y_true, y_pred, labels)
    p, r, f, s = _scores(m)
    return {
        label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, label in enumerate(order)
    }


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """The unweighted mean of the per-class F1 over ``labels`` plus every label seen in the data."""
    m, _ = confusion_matrix(y_true, y_pred, labels)
    if m.size == 0:
        return 0.0
    return float(_scores(m)[2].mean())


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Everything at once, JSON-ready: accuracy, macro_f1, per_class, confusion ``{labels, matrix}``, n."""
    m, order = confusion_matrix(y_true, y_pred, labels)
    p, r, f, s = _scores(m)
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
