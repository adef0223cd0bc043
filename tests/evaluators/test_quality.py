import math
from collections.abc import Sequence

import numpy as np
import pytest

from evaluators import quality as q


def test_normalize_and_exact_duplicates():
    assert q.normalize_text("  Hello,   WORLD!! ") == "hello world"
    texts = ["Hello world", "hello, world!", "HELLO WORLD", "something else"]
    # 4 texts, 2 distinct after normalisation
    assert q.exact_duplicate_rate(texts) == pytest.approx(0.5)
    assert q.exact_duplicate_rate([]) == 0.0


def test_label_balance_hand_computed():
    bal = q.label_balance(["a", "a", "b", "b"])
    assert bal["counts"] == {"a": 2, "b": 2}
    assert bal["normalized_entropy"] == pytest.approx(1.0)
    assert bal["imbalance_ratio"] == 1.0

    bal = q.label_balance(["a", "a", "a", "b"])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert bal["entropy"] == pytest.approx(h)
    assert bal["normalized_entropy"] == pytest.approx(h / math.log(2))
    assert bal["imbalance_ratio"] == 3.0

    # a class the task has but the corpus lacks drags entropy down and makes imbalance infinite
    bal = q.label_balance(["a", "b"], classes=["a", "b", "c", "d"])
    assert bal["counts"] == {"a": 1, "b": 1, "c": 0, "d": 0}
    assert bal["normalized_entropy"] == pytest.approx(math.log(2) / math.log(4))
    assert bal["imbalance_ratio"] == math.inf


def test_distinct_n_hand_computed():
    texts = ["the cat sat", "the cat ran"]
    # unigrams: the cat sat the cat ran -> 4 unique / 6
    assert q.distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) -> 3 / 4
    assert q.distinct_n(texts, 2) == pytest.approx(3 / 4)
    # trigrams never cross texts: 2 / 2
    assert q.distinct_n(texts, 3) == 1.0
    assert q.distinct_n(["one"], 2) == 0.0
    with pytest.raises(ValueError):
        q.distinct_n(texts, 0)


E3 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # not normalised on purpose


def test_remote_clique_and_chamfer_hand_computed():
    c = 1 / math.sqrt(2)
    # pairwise cosines: (0,1)=0, (0,2)=c, (1,2)=c
    assert q.remote_clique(E3) == pytest.approx(1 - (0 + c + c) / 3)
    # nearest neighbours: 0->2 (c), 1->2 (c), 2->0 or 1 (c)
    assert q.chamfer_distance(E3) == pytest.approx(1 - c)
    # identical points: no diversity
    same = np.ones((4, 3))
    assert q.remote_clique(same) == pytest.approx(0.0, abs=1e-12)
    assert q.chamfer_distance(same) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(q.remote_clique(E3[:1]))
    assert math.isnan(q.chamfer_distance(E3[:1]))


def test_remote_clique_matches_brute_force():
    x = np.random.default_rng(3).normal(size=(30, 8))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    brute = 1 - (s.sum() - np.trace(s)) / (30 * 29)
    assert q.remote_clique(x) == pytest.approx(brute)


def test_topk_similarity_hand_computed():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    query = np.array([[1.0, 0.0], [0.0, 2.0]])
    # query 0 sims: 1, 0, -1 -> top2 mean 0.5 ; query 1 sims: 0, 1, 0 -> top2 mean 0.5
    assert q.topk_similarity(query, ref, k=2) == pytest.approx([0.5, 0.5])
    assert q.topk_similarity(query, ref, k=1) == pytest.approx([1.0, 1.0])
    # k larger than the reference set: all of it
    assert q.topk_similarity(query, ref, k=10) == pytest.approx([0.0, 1 / 3])


class _NearestCentroid:
    """A stand-in head: label of the most similar class centroid."""

    def __init__(self, X: np.ndarray, labels: Sequence[str]) -> None:
        self.labels = sorted(set(labels))
        self.centroids = np.stack([X[[y == c for y in labels]].mean(axis=0) for c in self.labels])

    def predict(self, X):
        return np.array(self.labels)[np.argmax(X @ self.centroids.T, axis=1)]


def _train(X: np.ndarray, labels: Sequence[str], seed: int) -> _NearestCentroid:
    return _NearestCentroid(np.asarray(X), list(labels))


def test_label_fidelity():
    real = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    real_labels = ["pos", "pos", "neg", "neg"]
    syn = np.array([[1.0, 0.05], [0.05, 1.0], [0.95, 0.0], [0.0, 1.0]])
    syn_labels = ["pos", "neg", "neg", "other"]  # 2 agree; "neg" half right; "other" never seen
    fid = q.label_fidelity(syn, syn_labels, real, real_labels, train=_train)
    assert fid["fidelity"] == pytest.approx(0.5)
    assert fid["per_class"] == {"neg": 0.5, "other": 0.0, "pos": 1.0}
    assert fid["unseen_labels"] == 1
    assert fid["n"] == 4


def test_sample_indices_seeded_and_bounded():
    assert list(q.sample_indices(5, 10)) == [0, 1, 2, 3, 4]
    a = q.sample_indices(1000, 50, seed=1)
    assert len(a) == 50 and len(set(a)) == 50 and list(a) == sorted(a)
    assert list(a) == list(q.sample_indices(1000, 50, seed=1))
    assert list(a) != list(q.sample_indices(1000, 50, seed=2))


def _bag_embed(texts: Sequence[str]) -> np.ndarray:
    vocab = ["cat", "dog", "stock", "market", "goal", "match"]
    return np.array([[t.lower().split().count(w) + 0.01 for w in vocab] for t in texts])


def test_corpus_quality_without_and_with_embeddings():
    texts = ["the cat and the dog", "a dog and a cat", "stock market falls", "stock market falls"]
    labels = ["pets", "pets", "money", "money"]
    plain = q.corpus_quality(texts, labels)
    assert plain["n"] == 4
    assert plain["duplicates"]["exact"] == pytest.approx(0.25)
    assert plain["diversity"]["remote_clique"] is None
    assert plain["similarity_to_real"] is None and plain["label_fidelity"] is None

    real_texts = ["my cat", "my dog", "the market", "stock prices"]
    real_labels = ["pets", "pets", "money", "money"]
    full = q.corpus_quality(
        texts, labels, embed=_bag_embed, real_texts=real_texts, real_labels=real_labels, train=_train, k=2
    )
    assert 0 < full["diversity"]["remote_clique"] <= 1
    assert full["diversity"]["chamfer"] == pytest.approx(
        q.chamfer_distance(_bag_embed(texts)), abs=1e-12
    )  # the two identical texts are each other's nearest neighbour
    assert 0 < full["similarity_to_real"]["mean_topk_cosine"] <= 1
    assert full["label_fidelity"]["fidelity"] == 1.0
    names = [name for name, _ in q.summary_rows(full)]
    assert "label fidelity" in names and "chamfer" in names


def test_near_duplicate_rate():
    base = "the quick brown fox jumps over the lazy dog near the river bank today"
    texts = [base, base.replace("today", "tonight"), "a completely different sentence about stock markets", base + "!"]
    # the second differs by one word (a near duplicate), the fourth only by punctuation (exact after normalising)
    assert q.near_duplicate_rate(texts, threshold=0.5) == pytest.approx(0.5)
    assert q.near_duplicate_rate(["alpha beta gamma", "delta epsilon zeta"]) == 0.0
    assert q.near_duplicate_rate([]) == 0.0
