"""Cleaning: drop the examples whose label the data itself disputes (confident learning, out of fold).

Every example gets an out-of-fold probability for each label: the data is split
into stratified folds and a head trained on the other folds (plus any trusted
real examples, which are never judged) predicts it. Per label ``j`` the
threshold ``t_j`` is the mean out-of-fold probability of ``j`` over the examples
labelled ``j`` (its mean self-confidence). An example labelled ``y`` is dropped
when **p(y) < t_y and another label is more probable than y**: the data says it
looks like another class, and less like its own than its class usually does.
Examples of a label with fewer than two examples cannot be judged and are kept.

The label-fidelity estimate is the share of examples whose out-of-fold
prediction is their own label: measured on all the data before, and again
(new folds, new heads) on the kept data after.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .head import CV_FOLDS, _class_weights, select_C, train_head

__all__ = ["CLEAN_RULE", "CleanResult", "clean_labels", "out_of_fold_proba"]

#: The rule in one sentence (``--help`` and reports quote it).
CLEAN_RULE = (
    "an example labelled y is dropped when its out-of-fold probability of y is below y's threshold "
    "(the mean out-of-fold probability of y over the examples labelled y) and another label is more probable"
)


@dataclass(frozen=True, kw_only=True)
class CleanResult:
    """Which examples to keep, why the others go, and the label-fidelity estimate before and after."""

    keep: np.ndarray
    y: list[str]
    reasons: list[str | None]
    labels: list[str]
    proba: np.ndarray
    thresholds: dict[str, float]
    fidelity_before: float | None
    fidelity_after: float | None
    folds: int
    C: float
    seconds: float

    @property
    def dropped(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.keep)]

    def summary(self) -> dict[str, Any]:
        """JSON-ready: counts, thresholds, fidelity before/after, the rule."""
        by_label: dict[str, int] = {}
        for i in self.dropped:
            by_label[self.y[i]] = by_label.get(self.y[i], 0) + 1
        return {
            "rule": CLEAN_RULE,
            "n": len(self.keep),
            "kept": int(self.keep.sum()),
            "dropped": len(self.dropped),
            "dropped_by_label": dict(sorted(by_label.items())),
            "thresholds": {k: round(v, 4) for k, v in self.thresholds.items()},
            "label_fidelity_before": self.fidelity_before,
            "label_fidelity_after": self.fidelity_after,
            "folds": self.folds,
            "C": self.C,
            "seconds": round(self.seconds, 3),
        }


def out_of_fold_proba(
    X: np.ndarray,
    y: Sequence[str],
    labels: Sequence[str],
    *,
    folds: int = CV_FOLDS,
    seed: int = 0,
    C: float = 1.0,
    class_weight: str | None = None,
    X_real: np.ndarray | None = None,
    y_real: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(proba, judged, k)``: out-of-fold probabilities over ``labels`` for the examples that could be judged.

    ``judged`` marks the examples whose label has at least two examples; real examples join every fold's
    training part and are never predicted. ``k`` is the number of folds used (0: nothing judged).
    """
    from sklearn.model_selection import StratifiedKFold

    y_arr = np.asarray(list(y), dtype=object)
    counts = {label: int((y_arr == label).sum()) for label in set(y)}
    judged = np.array([counts[label] >= 2 for label in y], dtype=bool)
    proba = np.zeros((len(y), len(labels)))
    idx = np.flatnonzero(judged)
    k = min(folds, min((counts[label] for label in set(y_arr[idx])), default=0))
    if k < 2 or len(set(y_arr[idx])) < 2:
        return proba, np.zeros(len(y), dtype=bool), 0
    column = {label: j for j, label in enumerate(labels)}
    real_X = X_real if X_real is not None and len(y_real) else np.zeros((0, X.shape[1]), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, va in splitter.split(idx, y_arr[idx]):
        train_rows, held = idx[tr], idx[va]
        X_fit = np.vstack([X[train_rows], real_X])
        y_fit = [str(v) for v in y_arr[train_rows]] + list(y_real)
        head = train_head(X_fit, y_fit, C=C, class_weight=class_weight, seed=seed)
        p = head.predict_proba(X[held])
        for j, label in enumerate(head.labels):
            proba[held, column[label]] = p[:, j]
    return proba, judged, k


def _agreement(proba: np.ndarray, y: Sequence[str], labels: Sequence[str], judged: np.ndarray) -> float | None:
    if not judged.any():
        return None
    pred = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
    return float(np.mean((pred == np.asarray(list(y), dtype=object))[judged]))


def clean_labels(
    X: np.ndarray,
    y: Sequence[str],
    *,
    folds: int = CV_FOLDS,
    seed: int = 0,
    class_weight: str | None = None,
    X_real: np.ndarray | None = None,
    y_real: Sequence[str] = (),
    measure_after: bool = True,
) -> CleanResult:
    """Judge every example of ``(X, y)`` by :data:`CLEAN_RULE`; real examples only help train the fold heads."""
    started = time.perf_counter()
    X = np.asarray(X, dtype=np.float32)
    y = [str(v) for v in y]
    labels = sorted(set(y) | set(y_real))
    index = {label: i for i, label in enumerate(labels)}
    all_X = X if X_real is None or not len(y_real) else np.vstack([X, X_real])
    all_t = np.array([index[v] for v in [*y, *y_real]], dtype=np.int64)
    weights = _class_weights(all_t, len(labels)) if class_weight == "balanced" else np.ones(len(labels))
    C, _ = select_C(all_X, all_t, weights, folds=folds, seed=seed)
    kw: dict[str, Any] = {"folds": folds, "seed": seed, "C": C, "class_weight": class_weight}
    proba, judged, k = out_of_fold_proba(X, y, labels, X_real=X_real, y_real=y_real, **kw)
    targets = np.array([index[v] for v in y], dtype=np.int64)
    own = proba[np.arange(len(y)), targets] if len(y) else np.zeros(0)
    thresholds = {
        label: float(own[(targets == index[label]) & judged].mean())
        for label in labels
        if ((targets == index[label]) & judged).any()
    }
    others = proba.copy()
    others[np.arange(len(y)), targets] = -1.0
    best_other = others.argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(y), dtype=bool)
    reasons: list[str | None] = [None] * len(y)
    for i in np.flatnonzero(judged):
        label = y[i]
        rival = int(best_other[i])
        if own[i] < thresholds[label] and proba[i, rival] > own[i]:
            keep[i] = False
            reasons[i] = (
                f"label disputed: p({label})={own[i]:.3f} < threshold {thresholds[label]:.3f}, "
                f"p({labels[rival]})={proba[i, rival]:.3f}"
            )
    before = _agreement(proba, y, labels, judged)
    after: float | None = None
    if measure_after and keep.any():
        kept = np.flatnonzero(keep)
        kept_y = [y[i] for i in kept]
        p2, judged2, _ = out_of_fold_proba(X[kept], kept_y, labels, X_real=X_real, y_real=y_real, **kw)
        after = _agreement(p2, kept_y, labels, judged2)
    return CleanResult(
        keep=keep,
        y=y,
        reasons=reasons,
        labels=labels,
        proba=proba,
        thresholds=thresholds,
        fidelity_before=before,
        fidelity_after=after,
        folds=k,
        C=C,
        seconds=time.perf_counter() - started,
    )
