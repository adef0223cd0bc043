"""How good is a synthetic corpus, before training anything on it?

Pure functions over label lists, texts and embedding arrays, each small enough to
check by hand on a 3x2 matrix, plus :func:`corpus_quality`, which runs them all
over one corpus and returns a plain dict (what ``corpusforge inspect`` prints and
``experiment`` stores per approach).

- **balance**: label counts and normalised entropy (1.0 = perfectly balanced);
- **duplicates**: exact after normalisation, and near-duplicates through
  ``engine.dedup`` (MinHash) when that package provides its filter;
- **diversity**: distinct-1/2/3 (unique n-grams / all n-grams), remote-clique
  (mean pairwise cosine distance) and chamfer (mean nearest-neighbour cosine
  distance) on embeddings;
- **similarity to real**: mean over synthetic examples of their mean top-k cosine
  similarity to real examples;
- **label fidelity**: a head trained on *real* embeddings predicts each
  synthetic example; the fraction whose prediction equals its synthetic label.

Large corpora are sampled (seeded) before the quadratic or embedding-bound
metrics, so cost is bounded whatever the corpus size.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from engine.dedup.normalize import normalize

__all__ = [
    "DEFAULT_MAX_EMBED",
    "DEFAULT_MAX_REAL",
    "DEFAULT_MAX_TEXTS",
    "DEFAULT_NEAR_THRESHOLD",
    "DEFAULT_TOP_K",
    "Embed",
    "chamfer_distance",
    "corpus_quality",
    "distinct_n",
    "exact_duplicate_rate",
    "label_balance",
    "label_fidelity",
    "near_duplicate_rate",
    "normalize_text",
    "remote_clique",
    "sample_indices",
    "summary_rows",
    "tokenize",
    "topk_similarity",
]

#: Synthetic examples embedded for the embedding-based metrics (chamfer is quadratic in this).
DEFAULT_MAX_EMBED = 2000
#: Real examples embedded as the reference set (similarity) and the head's training set (fidelity).
DEFAULT_MAX_REAL = 5000
#: Texts used for distinct-n and near-duplicates.
DEFAULT_MAX_TEXTS = 20000
DEFAULT_TOP_K = 5
#: MinHash Jaccard threshold above which two texts count as near-duplicates.
DEFAULT_NEAR_THRESHOLD = 0.8
_BLOCK = 1024

FloatArray = npt.NDArray[np.floating[Any]]
Embed = Callable[[Sequence[str]], FloatArray]


class _Head(Protocol):
    def predict(self, X: FloatArray) -> Any: ...


Train = Callable[[FloatArray, Sequence[str], int], _Head]

_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """``engine.dedup``'s normalisation (NFKC, lower case, no punctuation, single spaces): what "exact" compares."""
    return normalize(text)


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def sample_indices(n: int, max_n: int, seed: int = 0) -> npt.NDArray[np.intp]:
    """All of ``range(n)`` if ``n <= max_n``, else a seeded sample of ``max_n`` indices, sorted."""
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False))


def label_balance(labels: Sequence[str], classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Counts per label and the entropy of the label distribution, normalised by ``log(#classes)``.

    ``classes`` (e.g. the task's label set) makes absent classes count as zeros.
    """
    counts = Counter(labels)
    for c in classes or ():
        counts.setdefault(c, 0)
    n = sum(counts.values())
    k = len(counts)
    probs = np.array([v / n for v in counts.values() if v], dtype=np.float64) if n else np.zeros(0)
    entropy = float(-(probs * np.log(probs)).sum()) if n else math.nan
    if n == 0:
        normalised = math.nan
    elif k <= 1:
        normalised = 1.0
    else:
        normalised = entropy / math.log(k)
    lo, hi = (min(counts.values()), max(counts.values())) if counts else (0, 0)
    return {
        "n": n,
        "classes": k,
        "counts": dict(sorted(counts.items())),
        "entropy": entropy,
        "normalized_entropy": normalised,
        "imbalance_ratio": hi / lo if lo else math.inf if hi else math.nan,
    }


def exact_duplicate_rate(texts: Sequence[str]) -> float:
    """Fraction of texts that repeat an earlier one after :func:`normalize_text` (0.0 for an empty corpus)."""
    if not texts:
        return 0.0
    return 1.0 - len({normalize_text(t) for t in texts}) / len(texts)


def near_duplicate_rate(texts: Sequence[str], *, threshold: float = DEFAULT_NEAR_THRESHOLD) -> float | None:
    """Fraction of texts that are an exact or MinHash near-duplicate (Jaccard >= ``threshold``) of an earlier one.

    Uses ``engine.dedup``'s normalisation, shingles, signatures and index, the
    same pieces the generate pipeline filters with; ``None`` if they are missing.
    """
    try:
        from engine.dedup.index import DedupIndex
        from engine.dedup.minhash import signatures
        from engine.dedup.normalize import exact_key
        from engine.dedup.shingle import shingle_batch
    except ImportError:  # pragma: no cover - dedup package incomplete
        return None
    if not texts:
        return 0.0
    normed = [normalize(t) for t in texts]
    sigs = signatures(shingle_batch(normed))
    index = DedupIndex(threshold=threshold)
    dropped = sum(
        index.query_and_add(i, exact_key(t, normalized=True), sigs[i]) is not None for i, t in enumerate(normed)
    )
    return dropped / len(texts)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams over all n-grams in the corpus (n-grams never cross texts); 0.0 if there are none."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        toks = tokenize(text)
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _unit(emb: FloatArray) -> npt.NDArray[np.float64]:
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float64] = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out


def remote_clique(emb: FloatArray) -> float:
    """Mean cosine distance over all pairs ``i != j`` (NaN for fewer than 2 rows).

    Linear, not quadratic: the sum of all pairwise similarities is ``|sum u_i|^2 - sum |u_i|^2``.
    """
    u = _unit(emb)
    n = len(u)
    if n < 2:
        return math.nan
    s = u.sum(axis=0)
    pair_sum = float(s @ s - (u * u).sum())
    return 1.0 - pair_sum / (n * (n - 1))


def chamfer_distance(emb: FloatArray) -> float:
    """Mean over rows of the cosine distance to the nearest *other* row (NaN for fewer than 2 rows)."""
    u = _unit(emb)
    n = len(u)
    if n < 2:
        return math.nan
    nearest = np.empty(n)
    for start in range(0, n, _BLOCK):
        sims = u[start : start + _BLOCK] @ u.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        nearest[start : start + _BLOCK] = sims.max(axis=1)
    return float(np.mean(1.0 - nearest))


def topk_similarity(query: FloatArray, reference: FloatArray, k: int = DEFAULT_TOP_K) -> npt.NDArray[np.float64]:
    """For each query row, the mean cosine similarity of its ``k`` most similar reference rows."""
    q, r = _unit(query), _unit(reference)
    if len(r) == 0:
        raise ValueError("reference set is empty")
    k = max(1, min(k, len(r)))
    out = np.empty(len(q))
    for start in range(0, len(q), _BLOCK):
        sims = q[start : start + _BLOCK] @ r.T
        top = np.partition(sims, -k, axis=1)[:, -k:]
        out[start : start + _BLOCK] = top.mean(axis=1)
    return out


def _default_train(X: FloatArray, labels: Sequence[str], seed: int) -> _Head:
    from evaluators.head import train_head

    head: _Head = train_head(X, list(labels), seed=seed)
    return head


def label_fidelity(
    syn_emb: FloatArray,
    syn_labels: Sequence[str],
    real_emb: FloatArray,
    real_labels: Sequence[str],
    *,
    train: Train | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a head on real embeddings, predict the synthetic ones; how often does it agree with their label?

    ``per_class`` is the agreement within each synthetic label; ``unseen_labels``
    counts synthetic examples whose label never occurs in the real data (they
    can only disagree).
    """
    if len(syn_labels) != len(syn_emb):
        raise ValueError(f"{len(syn_emb)} embeddings but {len(syn_labels)} labels")
    head = (train or _default_train)(real_emb, list(real_labels), seed)
    pred = [str(p) for p in head.predict(syn_emb)] if len(syn_labels) else []
    agree = np.array([p == y for p, y in zip(pred, syn_labels, strict=True)], dtype=bool)
    per_class: dict[str, float] = {}
    for label in sorted(set(syn_labels)):
        mask = np.array([y == label for y in syn_labels], dtype=bool)
        per_class[label] = float(agree[mask].mean())
    known = set(real_labels)
    return {
        "fidelity": float(agree.mean()) if len(agree) else math.nan,
        "per_class": per_class,
        "unseen_labels": sum(1 for y in syn_labels if y not in known),
        "n": len(agree),
    }


def corpus_quality(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    embed: Embed | None = None,
    real_texts: Sequence[str] | None = None,
    real_labels: Sequence[str] | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    k: int = DEFAULT_TOP_K,
    max_embed: int = DEFAULT_MAX_EMBED,
    max_real: int = DEFAULT_MAX_REAL,
    max_texts: int = DEFAULT_MAX_TEXTS,
    train: Train | None = None,
) -> dict[str, Any]:
    """Every quality metric for one corpus, as a JSON-ready dict.

    Without ``embed``, the embedding-based metrics are ``None``; without real
    data, so are similarity and fidelity (fidelity also needs ``real_labels``).
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    text_idx = sample_indices(len(texts), max_texts, seed)
    text_sample = [texts[i] for i in text_idx]
    n_tokens = [len(tokenize(t)) for t in text_sample]
    out: dict[str, Any] = {
        "n": len(texts),
        "mean_words": float(np.mean(n_tokens)) if n_tokens else math.nan,
        "balance": label_balance(labels, classes),
        "duplicates": {"exact": exact_duplicate_rate(texts), "near": near_duplicate_rate(text_sample)},
        "diversity": {f"distinct_{n}": distinct_n(text_sample, n) for n in (1, 2, 3)},
        "similarity_to_real": None,
        "label_fidelity": None,
        "sampled": {"texts": len(text_idx), "embedded": 0, "real": 0},
    }
    out["diversity"].update(remote_clique=None, chamfer=None)
    if embed is None or not texts:
        return out

    emb_idx = sample_indices(len(texts), max_embed, seed)
    syn_emb = embed([texts[i] for i in emb_idx])
    out["sampled"]["embedded"] = len(emb_idx)
    out["diversity"].update(remote_clique=remote_clique(syn_emb), chamfer=chamfer_distance(syn_emb))
    if not real_texts:
        return out

    real_idx = sample_indices(len(real_texts), max_real, seed)
    real_emb = embed([real_texts[i] for i in real_idx])
    out["sampled"]["real"] = len(real_idx)
    out["similarity_to_real"] = {"mean_topk_cosine": float(topk_similarity(syn_emb, real_emb, k).mean()), "k": k}
    if real_labels is not None and len(set(real_labels)) >= 2:
        sub_real_labels = [real_labels[i] for i in real_idx]
        out["label_fidelity"] = label_fidelity(
            syn_emb, [labels[i] for i in emb_idx], real_emb, sub_real_labels, train=train, seed=seed
        )
    return out


def summary_rows(quality: dict[str, Any]) -> list[tuple[str, Any]]:
    """The headline numbers of a :func:`corpus_quality` dict as ``(name, value)`` rows for a table."""
    div = quality["diversity"]
    sim = quality.get("similarity_to_real") or {}
    fid = quality.get("label_fidelity") or {}
    bal = quality["balance"]
    return [
        ("examples", quality["n"]),
        ("classes", bal["classes"]),
        ("label entropy (norm.)", bal["normalized_entropy"]),
        ("mean words", quality["mean_words"]),
        ("exact duplicates", quality["duplicates"]["exact"]),
        ("near duplicates", quality["duplicates"]["near"]),
        ("distinct-1", div["distinct_1"]),
        ("distinct-2", div["distinct_2"]),
        ("distinct-3", div["distinct_3"]),
        ("remote-clique", div["remote_clique"]),
        ("chamfer", div["chamfer"]),
        (f"similarity to real (top-{sim.get('k', DEFAULT_TOP_K)})", sim.get("mean_topk_cosine")),
        ("label fidelity", fid.get("fidelity")),
    ]
