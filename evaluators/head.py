"""The light classifier trained on sentence embeddings: logistic regression, or a small MLP.

Either way a head is a stack of dense layers, ``x @ W + b`` with ReLU between
them and a softmax at the end, so ``classifier.py`` can write it into the ONNX
graph as MatMul/Add nodes. Training takes seconds on a few thousand embeddings.

Fair by default: nothing is tuned on the test set, and nothing trades accuracy
away unless asked.

- **logreg**: the regularisation ``C`` is chosen by stratified k-fold
  cross-validation on the *training* data (the best mean held-out accuracy over
  :data:`DEFAULT_CS`, ties going to the smaller ``C``, as scikit-learn's
  ``LogisticRegressionCV`` does), then the head is refitted on all of it.
  Synthetic data is noisy, and a fixed weak regularisation overfits it.
- **mlp**: trained with early stopping on a stratified held-out fold of the
  training data; the weights of the epoch with the best held-out loss are kept.
- **class weights** are off by default; ``class_weight="balanced"`` reweights
  classes by inverse frequency (better macro-F1 on imbalanced data, usually
  worse accuracy).

What was chosen, and how, is in ``Head.choices`` (reports copy it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine.errors import ConfigError, DataError

__all__ = ["CLASS_WEIGHTS", "DEFAULT_CS", "HEAD_KINDS", "Head", "select_C", "train_head"]

HEAD_KINDS = ("logreg", "mlp")
CLASS_WEIGHTS = ("none", "balanced")
#: The grid cross-validation picks ``C`` (inverse regularisation strength) from.
DEFAULT_CS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Stratified folds for choosing ``C`` (fewer when the rarest class has fewer examples).
CV_FOLDS = 5
#: ``C`` when there is too little data to cross-validate (a class with a single example).
FALLBACK_C = 1.0
MLP_HIDDEN = 256
MLP_MAX_EPOCHS = 100
#: Epochs without a better held-out loss before the MLP stops.
MLP_PATIENCE = 8
#: Share of the training data held out for the MLP's early stopping.
MLP_HOLDOUT = 0.15
MLP_LR = 1e-3
MLP_WEIGHT_DECAY = 1e-4
_MAX_ITER = 2000


@dataclass(slots=True)
class Head:
    """Dense layers (``x @ W + b``, ReLU between them) and a softmax over ``labels``."""

    labels: list[str]
    layers: list[tuple[np.ndarray, np.ndarray]]
    kind: str = "logreg"
    #: How the head was fitted: kind, class weight, C (and how it was chosen), epochs, CV scores and seconds.
    choices: dict[str, Any] = field(default_factory=dict)

    @property
    def weights(self) -> np.ndarray:
        """The last layer's weights, ``(in, n_labels)`` float32 (the only layer for logreg)."""
        return self.layers[-1][0]

    @property
    def bias(self) -> np.ndarray:
        return self.layers[-1][1]

    def logits(self, X: np.ndarray) -> np.ndarray:
        h = np.asarray(X, dtype=np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.logits(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return out

    def predict(self, X: np.ndarray) -> list[str]:
        if len(X) == 0:
            return []
        return [self.labels[i] for i in self.predict_proba(X).argmax(axis=1)]


def _normalise_class_weight(class_weight: str | None) -> str | None:
    if class_weight in (None, "none"):
        return None
    if class_weight != "balanced":
        raise ConfigError(f"unknown class_weight {class_weight!r}", hint="use 'balanced' or 'none'")
    return "balanced"


def train_head(
    X: np.ndarray,
    y: Sequence[str],
    *,
    kind: Literal["logreg", "mlp"] | str = "logreg",
    class_weight: Literal["balanced", "none"] | None | str = None,
    seed: int = 0,
    C: float | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    folds: int = CV_FOLDS,
) -> Head:
    """Fit a head on embeddings ``X`` (n, dim) and string labels ``y``.

    ``C=None`` (logreg) chooses it by stratified ``folds``-fold cross-validation
    over ``Cs`` on this training data; a number fixes it. ``class_weight`` is
    ``None``/``"none"`` (default) or ``"balanced"``.
    """
    if kind not in HEAD_KINDS:
        raise ConfigError(f"unknown head {kind!r}", hint=f"choose one of {', '.join(HEAD_KINDS)}")
    weighting = _normalise_class_weight(class_weight)
    if C is not None and C <= 0:
        raise ConfigError(f"C must be > 0, got {C}")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(y):
        raise DataError(f"need one embedding per label, got X {X.shape} and {len(y)} labels")
    labels = sorted(set(y))
    if len(labels) < 2:
        raise DataError(
            f"training needs at least two labels, found {labels or 'none'}", hint="check the label column of --train"
        )
    index = {label: i for i, label in enumerate(labels)}
    targets = np.array([index[label] for label in y], dtype=np.int64)
    weights = _class_weights(targets, len(labels)) if weighting == "balanced" else np.ones(len(labels))
    choices: dict[str, Any] = {"kind": kind, "class_weight": weighting or "none"}
    if kind == "logreg":
        if C is None:
            C, cv = select_C(X, targets, weights, Cs=Cs, folds=folds, seed=seed)
            choices |= {"C": C, "C_chosen_by": cv["chosen_by"], "cv": cv}
        else:
            choices |= {"C": C, "C_chosen_by": "given"}
        layers = _fit_logreg(X, targets, weights, seed=seed, C=C)
    else:
        layers, fit = _fit_mlp(X, targets, weights, seed=seed)
        choices |= fit
    return Head(labels=labels, layers=layers, kind=kind, choices=choices)


def _class_weights(targets: np.ndarray, n: int) -> np.ndarray:
    """``n_samples / (n_classes * count)``, scikit-learn's "balanced"."""
    counts = np.bincount(targets, minlength=n).astype(np.float64)
    return len(targets) / (n * np.maximum(counts, 1.0))


def cv_folds(targets: np.ndarray, folds: int) -> int:
    """Folds stratified k-fold can use: at most ``folds``, at most the rarest class's count (0 = cannot)."""
    counts = np.bincount(targets)
    smallest = int(counts[counts > 0].min()) if len(targets) else 0
    k = min(folds, smallest)
    return k if k >= 2 else 0


def select_C(
    X: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    folds: int = CV_FOLDS,
    seed: int = 0,
) -> tuple[float, dict[str, Any]]:
    """The ``C`` of ``Cs`` with the best mean held-out accuracy over stratified folds of ``(X, targets)``.

    Ties go to the smaller ``C`` (the stronger regularisation); the mean held-out log-loss is recorded too.

    Only the data given is used, so pass training data only. Returns ``(C, details)``; with a class of a
    single example there is nothing to hold out and :data:`FALLBACK_C` is returned.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    grid = sorted(float(c) for c in Cs)
    if not grid or any(c <= 0 for c in grid):
        raise ConfigError(f"the C grid must hold positive numbers, got {list(Cs)}")
    k = cv_folds(targets, folds)
    if k == 0 or len(grid) == 1:
        why = "the only value given" if len(grid) == 1 else "default (a class has fewer than 2 examples)"
        return (grid[0] if len(grid) == 1 else FALLBACK_C), {"chosen_by": why, "folds": 0}
    started = time.perf_counter()
    n_labels = len(weights)
    losses = np.zeros((k, len(grid)))
    accuracies = np.zeros((k, len(grid)))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    class_weight = {i: float(w) for i, w in enumerate(weights)}
    with threadpool_limits(limits=1, user_api="blas"):
        for f, (tr, va) in enumerate(splitter.split(X, targets)):
            # warm start along the grid, weakest regularisation last: each fit starts near its answer
            model = LogisticRegression(
                class_weight=class_weight, max_iter=_MAX_ITER, warm_start=True, random_state=seed
            )
            for j, c in enumerate(grid):
                model.set_params(C=c)
                model.fit(X[tr], targets[tr])
                proba = _full_proba(model, X[va], n_labels)
                losses[f, j] = log_loss(targets[va], proba, labels=list(range(n_labels)))
                accuracies[f, j] = float(np.mean(proba.argmax(axis=1) == targets[va]))
    mean = losses.mean(axis=0)
    mean_accuracy = accuracies.mean(axis=0)
    best = int(np.argmax(np.round(mean_accuracy, 10)))  # the first best: the smallest C among ties
    details = {
        "chosen_by": "cv",
        "folds": k,
        "scoring": "accuracy",
        "Cs": grid,
        "mean_accuracy": [round(float(v), 5) for v in mean_accuracy],
        "mean_log_loss": [round(float(v), 5) for v in mean],
        "seconds": round(time.perf_counter() - started, 3),
    }
    return grid[best], details


def _full_proba(model: Any, X: np.ndarray, n_labels: int) -> np.ndarray:
    """``predict_proba`` with a column for every label, also those missing from the fold's training part."""
    proba = np.zeros((len(X), n_labels))
    proba[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(X)
    proba = np.clip(proba, 1e-12, 1.0)
    out: np.ndarray = proba / proba.sum(axis=1, keepdims=True)
    return out


def _fit_logreg(
    X: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, seed: int, C: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    n = len(weights)
    model = LogisticRegression(
        C=C,
        class_weight={i: float(w) for i, w in enumerate(weights)},
        max_iter=_MAX_ITER,
        random_state=seed,
    )
    # one BLAS thread: on a loaded machine, BLAS threads fighting for cores make these small fits 100x slower
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(X, targets)
    coef = np.asarray(model.coef_, dtype=np.float32)
    intercept = np.asarray(model.intercept_, dtype=np.float32)
    if n == 2 and coef.shape[0] == 1:
        # Binary: sigmoid(z) equals softmax over (0, z).
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros(1, dtype=np.float32), intercept])
    return [(np.ascontiguousarray(coef.T), intercept)]


def _holdout(targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A stratified ``(train, held-out)`` split for early stopping, or ``None`` when a class is too small."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(targets)
    n_classes = int((counts > 0).sum())
    n_out = max(n_classes, round(MLP_HOLDOUT * len(targets)))
    if counts[counts > 0].min() < 2 or len(targets) - n_out < n_classes:
        return None
    tr, va = train_test_split(np.arange(len(targets)), test_size=n_out, stratify=targets, random_state=seed)
    return np.asarray(tr), np.asarray(va)


def _fit_mlp(
    X: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dim, n = X.shape[1], len(weights)
    net = torch.nn.Sequential(torch.nn.Linear(dim, MLP_HIDDEN), torch.nn.ReLU(), torch.nn.Linear(MLP_HIDDEN, n))
    opt = torch.optim.AdamW(net.parameters(), lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    split = _holdout(targets, seed)
    fit_idx = split[0] if split is not None else np.arange(len(targets))
    xs, ys = torch.from_numpy(X[fit_idx]), torch.from_numpy(targets[fit_idx])
    if split is not None:
        xv, yv = torch.from_numpy(X[split[1]]), torch.from_numpy(targets[split[1]])
    best_loss, best_epoch, best_state = float("inf"), 0, None
    epochs = MLP_MAX_EPOCHS if split is not None else MLP_MAX_EPOCHS // 2
    batch = 64
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(len(xs), generator=gen)
        for start in range(0, len(xs), batch):
            idx = perm[start : start + batch]
            opt.zero_grad()
            loss_fn(net(xs[idx]), ys[idx]).backward()
            opt.step()
        if split is None:
            continue
        net.eval()
        with torch.no_grad():
            val = float(loss_fn(net(xv), yv))
        if val < best_loss - 1e-6:
            best_loss, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= MLP_PATIENCE:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
        fit: dict[str, Any] = {
            "early_stopping": {"holdout": len(split[1]) if split else 0, "best_epoch": best_epoch},
            "holdout_loss": round(best_loss, 5),
        }
    else:
        fit = {"early_stopping": None, "epochs": epochs, "why": "a class has fewer than 2 examples"}
    first, last = net[0], net[2]
    assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
    layers = [
        (first.weight.detach().numpy().T.copy(), first.bias.detach().numpy().copy()),
        (last.weight.detach().numpy().T.copy(), last.bias.detach().numpy().copy()),
    ]
    return layers, fit
