"""Label-prior correction: a classifier trained on one label mix, scored where labels are mixed differently.

Generation balances labels by design; real data rarely is. A probabilistic
classifier's output carries its training prior ``s``: by Bayes' rule, under a
target prior ``t`` with the same class-conditional inputs, ``p'(y|x) ∝ p(y|x) ·
t(y) / s(y)`` (:func:`adjust`). The target prior comes from the user (a small
real sample, or shares given by hand), or is estimated from the unlabelled test
inputs with the EM procedure of Saerens, Latinne and Decaestecker (2002),
:func:`em_prior`: alternate between adjusting the posteriors to the current
prior estimate and re-estimating the prior as the mean adjusted posterior.

Both need calibrated posteriors, and a strongly regularised head gives
under-confident ones (EM then over-corrects). So the posteriors are first
tempered (:func:`temper`, ``p^(1/T)`` renormalised) with the temperature that
fits out-of-fold predictions on the training data best (:func:`fit_temperature`),
as Alexandari et al. (2020) recommend for EM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from engine.errors import ConfigError

__all__ = [
    "adjust",
    "em_prior",
    "fit_temperature",
    "parse_prior",
    "prior_from_labels",
    "prior_vector",
    "temper",
    "training_prior",
]

#: Shares below this are raised to it, so a class is never ruled out entirely.
MIN_SHARE = 1e-6
EM_MAX_ITER = 1000
EM_TOL = 1e-8


def parse_prior(spec: str) -> dict[str, float]:
    """``"sport=0.5,tech=0.3,food=0.2"`` → shares (normalised to sum 1 later by :func:`prior_vector`)."""
    shares: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        label, sep, value = part.rpartition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or not label.strip() or share < 0:
            raise ConfigError(f"--prior: cannot read {part!r}", hint="write label=share pairs, e.g. sport=0.6,tech=0.4")
        shares[label.strip()] = share
    if not shares or sum(shares.values()) <= 0:
        raise ConfigError("--prior: no positive share given", hint="write label=share pairs, e.g. sport=0.6,tech=0.4")
    return shares


def prior_vector(shares: Mapping[str, float], labels: Sequence[str]) -> np.ndarray:
    """Shares in the order of ``labels``, normalised to sum 1; labels not given get none (raised to MIN_SHARE)."""
    unknown = sorted(set(shares) - set(labels))
    if unknown:
        raise ConfigError(
            f"prior names labels the classifier does not know: {', '.join(unknown)}",
            hint=f"the labels are {', '.join(labels)}",
        )
    v = np.array([max(float(shares.get(label, 0.0)), 0.0) for label in labels], dtype=np.float64)
    if v.sum() <= 0:
        raise ConfigError("the prior gives no share to any label the classifier knows")
    v = np.maximum(v / v.sum(), MIN_SHARE)
    out: np.ndarray = v / v.sum()
    return out


def prior_from_labels(sample: Sequence[str], labels: Sequence[str], *, smoothing: float = 1.0) -> np.ndarray:
    """The label shares of a (small) labelled sample, with ``smoothing`` pseudo-counts per label."""
    counts = Counter(sample)
    unknown = sorted(set(counts) - set(labels))
    if unknown:
        raise ConfigError(
            f"the prior sample has labels the classifier does not know: {', '.join(unknown)}",
            hint=f"the labels are {', '.join(labels)}",
        )
    return prior_vector({label: counts.get(label, 0) + smoothing for label in labels}, labels)


def training_prior(train_labels: Sequence[str], labels: Sequence[str], class_weight: str | None) -> np.ndarray:
    """The prior a head trained on ``train_labels`` has learned: their shares, or uniform with balanced weights."""
    if class_weight == "balanced":
        return np.full(len(labels), 1.0 / len(labels))
    return prior_from_labels(train_labels, labels, smoothing=0.0)


def adjust(proba: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Posteriors under prior ``source`` re-weighted to prior ``target`` (rows renormalised)."""
    w = np.asarray(target, dtype=np.float64) / np.maximum(np.asarray(source, dtype=np.float64), MIN_SHARE)
    p = np.asarray(proba, dtype=np.float64) * w
    out: np.ndarray = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    return out


def em_prior(
    proba: np.ndarray, source: np.ndarray, *, max_iter: int = EM_MAX_ITER, tol: float = EM_TOL
) -> tuple[np.ndarray, int]:
    """Saerens et al. (2002): the target prior that makes the adjusted posteriors self-consistent.

    Starts from ``source``; each step adjusts the posteriors to the current estimate and takes their mean as
    the next estimate. Returns ``(prior, iterations)``.
    """
    prior = np.asarray(source, dtype=np.float64)
    if len(proba) == 0:
        return prior, 0
    for it in range(1, max_iter + 1):
        new = adjust(proba, source, prior).mean(axis=0)
        new = np.maximum(new, MIN_SHARE)
        new = new / new.sum()
        if np.abs(new - prior).max() < tol:
            return new, it
        prior = new
    return prior, max_iter


def temper(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``p^(1/T)`` renormalised: temperature scaling of a softmax output (``T < 1`` sharpens)."""
    logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-300, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    out: np.ndarray = p / p.sum(axis=1, keepdims=True)
    return out


def fit_temperature(proba: np.ndarray, targets: np.ndarray) -> float:
    """The temperature (0.05-20, log grid then refined) minimising the log-loss of tempered ``proba`` on ``targets``."""
    if len(targets) == 0:
        return 1.0
    rows = np.arange(len(targets))

    def nll(t: float) -> float:
        return float(-np.log(np.clip(temper(proba, t)[rows, targets], 1e-300, 1.0)).mean())

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    best = float(grid[int(np.argmin([nll(t) for t in grid]))])
    fine = best * np.exp(np.linspace(-0.06, 0.06, 13))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])
