"""Fine-tuning the encoder on the tiny fixture: the ONNX export loads and agrees with torch."""

import json

import numpy as np
import pytest

from engine.cli import main
from evaluators.finetune import FinetunedClassifier, export, train

from .conftest import FIXTURES

# No filterwarnings marks needed: the ONNX export runs in a subprocess, and torch's own
# UserWarnings are already ignored in pyproject.toml.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_finetune_exports_an_onnx_model_that_matches_torch(tiny, tmp_path):
    import torch

    texts = [r["text"] for r in tiny["train"]]
    labels = [r["label"] for r in tiny["train"]]
    test_texts = [r["text"] for r in tiny["test"]]
    model, tokenizer, names = train(texts, labels, epochs=1, batch_size=4, lr=1e-4, max_length=64, seed=0)
    assert names == sorted(set(labels))
    out = export(model, tokenizer, names, tmp_path / "model", max_length=64)
    assert (out / "model.onnx").exists()
    assert json.loads((out / "labels.json").read_text()) == names

    clf = FinetunedClassifier.load(out)
    probs = clf.predict_proba(test_texts, batch_size=3)
    assert probs.shape == (len(test_texts), len(names))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    predicted = clf.predict(test_texts, batch_size=3)
    assert set(predicted) <= set(names)
    assert clf.predict([]) == []

    with torch.no_grad():
        batch = tokenizer(test_texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
        torch_probs = torch.softmax(model(**batch).logits, dim=-1).numpy()
    np.testing.assert_allclose(probs, torch_probs, atol=1e-4)
    assert predicted == [names[i] for i in torch_probs.argmax(axis=1)]


def test_eval_finetune_writes_the_same_report_keys(tmp_path):
    out = tmp_path / "ev"
    argv = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
    assert main([*argv, "--out", str(out), "--finetune", "--epochs", "1", "--seed", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("accuracy", "macro_f1", "per_class", "confusion", "n_train", "n_test", "seed", "timings_s"):
        assert key in report
    assert report["finetuned"] is True
    assert report["n_train"] == 21 and report["n_test"] == 10 and report["seed"] == 2
    assert report["unseen_test_labels"] == {"weather": 1}
    assert (out / "model" / "model.onnx").exists()
