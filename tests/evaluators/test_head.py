import numpy as np
import pytest

from engine.errors import ConfigError, DataError
from evaluators.data import load_records, record_texts, stratified_sample, texts_and_labels
from evaluators.encoder import join_fields
from evaluators.head import train_head

from .conftest import FIXTURES


def _blobs(n_per: int, labels: list[str], seed: int = 0, dim: int = 8) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(labels), dim)) * 3
    X = np.vstack([centers[i] + rng.normal(size=(n_per, dim)) for i in range(len(labels))]).astype(np.float32)
    y = [label for label in labels for _ in range(n_per)]
    return X, y


def test_logreg_learns_and_is_seeded():
    X, y = _blobs(40, ["b", "a", "c"])
    head = train_head(X, y, seed=1)
    assert head.labels == ["a", "b", "c"]
    assert np.mean(np.array(head.predict(X)) == np.array(y)) > 0.95
    p = head.predict_proba(X)
    assert p.shape == (120, 3) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert head.weights.shape == (8, 3) and head.bias.shape == (3,)
    again = train_head(X, y, seed=1)
    assert np.allclose(again.weights, head.weights)


def test_binary_head_has_two_columns_matching_sklearn():
    from sklearn.linear_model import LogisticRegression

    X, y = _blobs(30, ["neg", "pos"])
    head = train_head(X, y, class_weight=None, C=10.0)
    assert head.weights.shape == (8, 2)
    assert head.choices == {"kind": "logreg", "class_weight": "none", "C": 10.0, "C_chosen_by": "given"}
    ref = LogisticRegression(C=10.0, max_iter=2000).fit(X, y)
    assert np.allclose(head.predict_proba(X), ref.predict_proba(X), atol=1e-4)


def test_balanced_weights_help_the_minority_class():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (200, 2)), rng.normal(1.5, 1, (10, 2))]).astype(np.float32)
    y = ["big"] * 200 + ["small"] * 10
    balanced = train_head(X, y, class_weight="balanced")
    plain = train_head(X, y, class_weight=None)
    assert balanced.predict(X).count("small") > plain.predict(X).count("small")


def test_mlp_head():
    pytest.importorskip("torch")
    X, y = _blobs(30, ["a", "b", "c"])
    head = train_head(X, y, kind="mlp", seed=0)
    assert len(head.layers) == 2
    assert np.mean(np.array(head.predict(X)) == np.array(y)) > 0.95


def test_head_errors():
    X, y = _blobs(5, ["a", "b"])
    with pytest.raises(DataError):
        train_head(X, ["a"] * 10)
    with pytest.raises(ConfigError):
        train_head(X, y, kind="svm")
    with pytest.raises(DataError):
        train_head(X[:3], y)


def test_load_records_formats(tmp_path):
    jsonl = load_records(FIXTURES / "test.jsonl")
    csv_rows = load_records(FIXTURES / "test.csv")
    assert [r["text"] for r in jsonl] == [r["text"] for r in csv_rows]
    run = load_records(FIXTURES / "run")
    assert run[0]["strategy"] == "zero_shot"
    texts, labels = texts_and_labels(run)
    assert len(texts) == len(labels) == len(run)

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(jsonl), tmp_path / "t.parquet")
    assert load_records(tmp_path / "t.parquet") == jsonl


def test_pair_fields_are_detected_and_joined():
    records = load_records(FIXTURES / "pairs.jsonl")
    texts, labels = texts_and_labels(records)
    assert texts[0] == join_fields({"premise": "A man plays guitar.", "hypothesis": "A person makes music."})
    assert texts[0] == "A man plays guitar.\nA person makes music."
    assert labels == ["entailment", "contradiction"]
    assert record_texts(records, ["hypothesis"])[1] == "The dog is running."


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="without data.jsonl"):
        load_records(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "a"}\nnot json\n')
    with pytest.raises(DataError, match=":2:"):
        load_records(bad)
    nolabel = tmp_path / "nolabel.jsonl"
    nolabel.write_text('{"id": "1", "text": "x"}\n')
    with pytest.raises(DataError, match="no label"):
        texts_and_labels(load_records(nolabel))
    with pytest.raises(DataError, match="no column"):
        texts_and_labels(load_records(FIXTURES / "test.jsonl"), ["premise"])
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match="unknown file type"):
        load_records(tmp_path / "x.txt")


def test_stratified_sample_is_seeded_and_proportional():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    pick = stratified_sample(labels, 10, seed=3)
    assert pick == stratified_sample(labels, 10, seed=3)
    assert pick != stratified_sample(labels, 10, seed=4)
    chosen = [labels[i] for i in pick]
    assert (chosen.count("a"), chosen.count("b"), chosen.count("c")) == (6, 3, 1)
    # every label shows up when n allows it, and n is exact
    rare = ["a"] * 98 + ["b", "c"]
    assert sorted({rare[i] for i in stratified_sample(rare, 5, 0)}) == ["a", "b", "c"]
    assert len(stratified_sample(rare, 5, 0)) == 5
    assert stratified_sample(labels, 1000, 0) == list(range(100))
