"""Label-prior correction: a known prior, and the Saerens et al. (2002) EM estimate from unlabelled inputs."""

import json

import numpy as np
import pytest

from engine.cli import main
from engine.errors import ConfigError
from evaluators.evaluate import EvalConfig, evaluate
from evaluators.head import train_head
from evaluators.prior import adjust, em_prior, parse_prior, prior_from_labels, prior_vector, training_prior

from .conftest import FIXTURES


def _sample(shares: list[float], n: int, rng: np.random.Generator, centers: np.ndarray) -> tuple[np.ndarray, list[str]]:
    counts = np.round(np.array(shares) * n).astype(int)
    X = np.vstack([centers[k] + rng.normal(size=(c, centers.shape[1])) for k, c in enumerate(counts)])
    return X.astype(np.float32), [f"c{k}" for k, c in enumerate(counts) for _ in range(c)]


def test_em_recovers_a_shifted_prior_on_gaussian_data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 4)) * 1.2  # overlapping classes: the prior matters
    X_train, y_train = _sample([1 / 3, 1 / 3, 1 / 3], 1500, rng, centers)
    X_test, y_test = _sample([0.7, 0.2, 0.1], 3000, rng, centers)
    head = train_head(X_train, y_train, C=1.0)
    source = training_prior(y_train, head.labels, None)
    estimate, iterations = em_prior(head.predict_proba(X_test), source)
    assert np.abs(estimate - [0.7, 0.2, 0.1]).max() < 0.05
    assert 1 < iterations < 1000
    # correcting by the estimate beats the plain classifier on the shifted test set
    plain = np.mean(np.array(head.predict(X_test)) == np.array(y_test))
    corrected = adjust(head.predict_proba(X_test), source, estimate).argmax(axis=1)
    assert np.mean(np.array(head.labels)[corrected] == np.array(y_test)) > plain + 0.03


def test_known_prior_correction_is_reported_apart_from_the_plain_score():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(2, 4))
    X_train, y_train = _sample([0.5, 0.5], 600, rng, centers)
    X_test, y_test = _sample([0.9, 0.1], 600, rng, centers)
    config = EvalConfig(prior={"c0": 0.9, "c1": 0.1}, prior_em=True)
    report, _ = evaluate(X_train, y_train, X_test, y_test, config)
    plain, _ = evaluate(X_train, y_train, X_test, y_test)
    assert report["accuracy"] == plain["accuracy"]  # the plain score is untouched
    known, em = report["prior_corrected"]["known"], report["prior_corrected"]["em"]
    assert known["prior"] == {"c0": 0.9, "c1": 0.1} and known["training_prior"] == {"c0": 0.5, "c1": 0.5}
    assert known["accuracy"] > plain["accuracy"] and em["accuracy"] > plain["accuracy"]
    assert em["prior"]["c0"] > 0.8


def test_prior_parsing_and_vectors():
    assert parse_prior("a=0.6, b=0.4") == {"a": 0.6, "b": 0.4}
    for bad in ("a", "a=x", "a=-1", "", "a=0"):
        with pytest.raises(ConfigError):
            parse_prior(bad)
    assert prior_vector({"a": 3, "b": 1}, ["a", "b"]).tolist() == pytest.approx([0.75, 0.25])
    with pytest.raises(ConfigError, match="does not know"):
        prior_vector({"z": 1}, ["a", "b"])
    # a label missing from a small sample keeps a little share
    assert prior_from_labels(["a", "a", "a"], ["a", "b"]).tolist() == pytest.approx([0.8, 0.2])
    assert training_prior(["a", "a", "b"], ["a", "b"], "balanced").tolist() == [0.5, 0.5]


def test_eval_cli_clean_and_prior_options(cache_env, tmp_path):
    out = tmp_path / "ev"
    argv = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
    argv += ["--out", str(out), "--variant", "fp32", "--no-save", "--clean", "--prior-em"]
    argv += ["--prior-from", str(FIXTURES / "test.jsonl"), "--class-weight", "balanced"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["head_choices"]["class_weight"] == "balanced"
    assert report["cleaning"]["n"] == 21 and report["cleaning"]["kept"] >= 18
    assert set(report["prior_corrected"]) == {"known", "em"}
    assert report["prior_corrected"]["known"]["source"].startswith("file ")
    assert "1 of labels the training data lacks left out" in report["prior_corrected"]["known"]["source"]
    assert report["majority_baseline"] == {
        "label": "food",
        "accuracy": 0.3,
        "macro_f1": pytest.approx(0.4615 / 4, abs=1e-3),
    }


def test_temperature_undoes_under_confidence():
    from evaluators.prior import fit_temperature, temper

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 3
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(3, p=p) for p in calibrated])
    under = temper(calibrated, 4.0)  # what a strongly regularised head gives
    assert fit_temperature(under, targets) == pytest.approx(0.25, rel=0.1)
    assert fit_temperature(calibrated, targets) == pytest.approx(1.0, rel=0.1)
    np.testing.assert_allclose(temper(under, 0.25), calibrated, atol=1e-9)
