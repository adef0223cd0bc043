"""The light classifier trained on sentence embeddings: logistic regression, or a small MLP.

Either way a head is a stack of dense layers, ``x @ W + b`` with ReLU between
them and a softmax at the end, so ``classifier.py`` can write it into the ONNX
graph as MatMul/Add nodes. Training takes seconds on a few thousand embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine.errors import ConfigError, DataError

__all__ = ["HEAD_KINDS", "Head", "train_head"]

HEAD_KINDS = ("logreg", "mlp")
#: Inverse regularisation strength of the logistic regression; the embeddings are unit vectors, so it is large.
DEFAULT_C = 10.0
MLP_HIDDEN = 256
MLP_EPOCHS = 60
MLP_LR = 1e-3
MLP_WEIGHT_DECAY = 1e-4


@dataclass(slots=True)
class Head:
    """Dense layers (``x @ W + b``, ReLU between them) and a softmax over ``labels``."""

    labels: list[str]
    layers: list[tuple[np.ndarray, np.ndarray]]
    kind: str = "logreg"

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


def train_head(
    X: np.ndarray,
    y: Sequence[str],
    *,
    kind: Literal["logreg", "mlp"] | str = "logreg",
    class_weight: Literal["balanced"] | None | str = "balanced",
    seed: int = 0,
    C: float = DEFAULT_C,
) -> Head:
    """Fit a head on embeddings ``X`` (n, dim) and string labels ``y``; ``class_weight="balanced"`` or ``None``."""
    if kind not in HEAD_KINDS:
        raise ConfigError(f"unknown head {kind!r}", hint=f"choose one of {', '.join(HEAD_KINDS)}")
    if class_weight not in ("balanced", None):
        raise ConfigError(f"unknown class_weight {class_weight!r}", hint="use 'balanced' or None")
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
    weights = _class_weights(targets, len(labels)) if class_weight == "balanced" else np.ones(len(labels))
    if kind == "logreg":
        layers = _fit_logreg(X, targets, weights, seed=seed, C=C)
    else:
        layers = _fit_mlp(X, targets, weights, seed=seed)
    return Head(labels=labels, layers=layers, kind=kind)


def _class_weights(targets: np.ndarray, n: int) -> np.ndarray:
    """``n_samples / (n_classes * count)``, scikit-learn's "balanced"."""
    counts = np.bincount(targets, minlength=n).astype(np.float64)
    return len(targets) / (n * np.maximum(counts, 1.0))


def _fit_logreg(
    X: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, seed: int, C: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.linear_model import LogisticRegression

    n = len(weights)
    model = LogisticRegression(
        C=C,
        class_weight={i: float(w) for i, w in enumerate(weights)},
        max_iter=2000,
        random_state=seed,
    )
    model.fit(X, targets)
    coef = np.asarray(model.coef_, dtype=np.float32)
    intercept = np.asarray(model.intercept_, dtype=np.float32)
    if n == 2 and coef.shape[0] == 1:
        # Binary: sigmoid(z) equals softmax over (0, z).
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros(1, dtype=np.float32), intercept])
    return [(np.ascontiguousarray(coef.T), intercept)]


def _fit_mlp(
    X: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dim, n = X.shape[1], len(weights)
    net = torch.nn.Sequential(torch.nn.Linear(dim, MLP_HIDDEN), torch.nn.ReLU(), torch.nn.Linear(MLP_HIDDEN, n))
    opt = torch.optim.AdamW(net.parameters(), lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    xs, ys = torch.from_numpy(X), torch.from_numpy(targets)
    batch = 64
    for _ in range(MLP_EPOCHS):
        perm = torch.randperm(len(xs), generator=gen)
        for start in range(0, len(xs), batch):
            idx = perm[start : start + batch]
            opt.zero_grad()
            loss_fn(net(xs[idx]), ys[idx]).backward()
            opt.step()
    first, last = net[0], net[2]
    assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
    return [
        (first.weight.detach().numpy().T.copy(), first.bias.detach().numpy().copy()),
        (last.weight.detach().numpy().T.copy(), last.bias.detach().numpy().copy()),
    ]
