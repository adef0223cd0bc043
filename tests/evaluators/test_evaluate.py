"""The evaluation service: a fair head (C by CV on training data only, class weights off), baselines, reports."""

import numpy as np
import pytest

from engine.errors import ConfigError
from evaluators.evaluate import EvalConfig, evaluate
from evaluators.head import select_C, train_head


def _gauss(n_per: int, k: int, dim: int, sep: float, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * sep
    X = np.vstack([centers[i] + rng.normal(size=(n_per, dim)) for i in range(k)]).astype(np.float32)
    return X, [f"c{i}" for i in range(k) for _ in range(n_per)]


def _flip(labels: list[str], share: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    names = sorted(set(labels))
    out = list(labels)
    for i in rng.choice(len(labels), int(share * len(labels)), replace=False):
        out[i] = names[(names.index(out[i]) + 1) % len(names)]
    return out


def _gauss_counts(counts: list[int], dim: int, sep: float, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(counts), dim)) * sep
    X = np.vstack([centers[i] + rng.normal(size=(n, dim)) for i, n in enumerate(counts)]).astype(np.float32)
    return X, [f"c{i}" for i, n in enumerate(counts) for _ in range(n)]


def test_cv_picks_strong_regularisation_for_noisy_labels_and_weak_for_clean():
    # clean and imbalanced: strong regularisation would predict the majority class, so CV picks a larger C
    X, y = _gauss_counts([80, 10, 10], 10, 1.2, seed=0)
    clean = train_head(X, y, seed=0)
    # few examples in many dimensions with a quarter of the labels flipped: CV picks strong regularisation
    Xn, yn = _gauss(30, 3, 100, 0.5, seed=0)
    noisy = train_head(Xn, _flip(yn, 0.25, seed=1), seed=0)
    assert clean.choices["C_chosen_by"] == noisy.choices["C_chosen_by"] == "cv"
    assert noisy.choices["C"] < clean.choices["C"]
    assert clean.choices["cv"]["folds"] == 5 and len(clean.choices["cv"]["mean_accuracy"]) == 9
    # and it matters: on clean test data from the same classes, the chosen C beats a fixed weak regularisation
    centers = np.random.default_rng(0).normal(size=(3, 100)) * 0.5  # the same centers _gauss drew for seed 0
    rng = np.random.default_rng(99)
    X_test = np.vstack([centers[i] + rng.normal(size=(200, 100)) for i in range(3)]).astype(np.float32)
    y_test = np.array([f"c{i}" for i in range(3) for _ in range(200)])
    weak = train_head(Xn, _flip(yn, 0.25, seed=1), C=100.0)
    chosen_acc = np.mean(np.array(noisy.predict(X_test)) == y_test)
    assert chosen_acc > np.mean(np.array(weak.predict(X_test)) == y_test) + 0.05


def test_c_is_chosen_on_the_training_data_only():
    X, y = _gauss(30, 3, 40, 0.5, seed=2)
    X_test, y_test = _gauss(20, 3, 40, 0.5, seed=3)
    report, _ = evaluate(X, y, X_test, y_test)
    # a test set with every label wrong, or another test set altogether, chooses the same C
    wrong, _ = evaluate(X, y, X_test, _flip(y_test, 1.0, seed=0))
    other, _ = evaluate(X, y, X_test[:5], y_test[:5])
    assert report["head_choices"]["C"] == wrong["head_choices"]["C"] == other["head_choices"]["C"]
    targets = np.array([int(v[1]) for v in y])
    expected, details = select_C(X, targets, np.ones(3))
    assert report["head_choices"]["C"] == expected
    assert report["head_choices"]["cv"]["mean_accuracy"] == details["mean_accuracy"]
    # the first best: ties go to the smaller C
    scores = details["mean_accuracy"]
    assert expected == details["Cs"][scores.index(max(scores))]


def test_too_few_examples_fall_back_to_a_fixed_C():
    X, y = _gauss(3, 2, 5, 2.0, seed=0)
    head = train_head(X, [*y[:5], "lonely"], seed=0)
    assert head.choices["C_chosen_by"].startswith("default") and head.choices["C"] == 1.0


def test_class_weight_is_off_by_default_and_balanced_on_request():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (200, 2)), rng.normal(1.5, 1, (12, 2))]).astype(np.float32)
    y = ["big"] * 200 + ["small"] * 12
    plain, plain_head = evaluate(X, y, X, y)
    balanced, balanced_head = evaluate(X, y, X, y, EvalConfig(class_weight="balanced"))
    assert plain["head_choices"]["class_weight"] == "none"
    assert balanced["head_choices"]["class_weight"] == "balanced"
    assert balanced_head.predict(X).count("small") > plain_head.predict(X).count("small")
    # plain weights win accuracy here, balanced weights macro-F1: the trade the option documents
    assert plain["accuracy"] >= balanced["accuracy"]
    with pytest.raises(ConfigError):
        EvalConfig(class_weight="heavy")


def test_reports_carry_the_majority_baseline():
    X, y = _gauss(20, 3, 10, 3.0, seed=4)
    X_test, y_test = _gauss(10, 3, 10, 3.0, seed=4)
    keep = [i for i, label in enumerate(y_test) if label != "c2" or i % 5 == 0]  # c2 rare, c0/c1 tie at 10
    y_test = [y_test[i] for i in keep]
    report, _ = evaluate(X, y, X_test[keep], y_test)
    base = report["majority_baseline"]
    assert base["label"] == "c0" and base["accuracy"] == pytest.approx(10 / 22)
    assert base["macro_f1"] == pytest.approx((2 * (10 / 22) / (1 + 10 / 22)) / 3)
    assert report["accuracy"] > base["accuracy"]
    assert {"accuracy", "macro_f1", "per_class", "confusion", "head_choices", "n_train"} <= set(report)


def test_mlp_stops_early_on_a_held_out_fold():
    pytest.importorskip("torch")
    X, y = _gauss(40, 3, 16, 1.0, seed=5)
    head = train_head(X, y, kind="mlp", seed=0)
    stop = head.choices["early_stopping"]
    assert stop["holdout"] == 18 and 1 <= stop["best_epoch"] < 100
    assert np.mean(np.array(head.predict(X)) == np.array(y)) > 0.9
