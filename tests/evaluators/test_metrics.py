import numpy as np
import pytest

from evaluators.metrics import accuracy, classification_report, confusion_matrix, macro_f1, per_class

# Hand-computed case: 3 classes, 8 examples.
Y_TRUE = ["a", "a", "a", "b", "b", "c", "c", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c", "c", "a"]
#            pred a  b  c
# true a        2  1  0
# true b        0  1  1
# true c        1  0  2


def test_confusion_matrix_hand_computed():
    m, labels = confusion_matrix(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert labels == ["a", "b", "c"]
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]


def test_accuracy_and_per_class_hand_computed():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(5 / 8)
    pc = per_class(Y_TRUE, Y_PRED, ["a", "b", "c"])
    # a: tp 2, predicted 3, support 3 -> p 2/3, r 2/3, f1 2/3
    assert pc["a"] == {
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "support": 3,
    }
    # b: tp 1, predicted 2, support 2 -> p 1/2, r 1/2, f1 1/2
    assert pc["b"]["precision"] == pytest.approx(0.5) and pc["b"]["recall"] == pytest.approx(0.5)
    # c: tp 2, predicted 3, support 3 -> 2/3 each
    assert pc["c"]["f1"] == pytest.approx(2 / 3)
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_matches_sklearn():
    from sklearn import metrics as sk

    rng = np.random.default_rng(0)
    labels = ["x", "y", "z", "w"]
    y_true = list(rng.choice(labels, 200))
    y_pred = list(rng.choice(labels[:3], 200))
    assert macro_f1(y_true, y_pred, labels) == pytest.approx(
        sk.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    )
    assert (
        confusion_matrix(y_true, y_pred, labels)[0].tolist()
        == sk.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    )


def test_unseen_label_is_kept_with_zero_scores():
    # "d" is never predicted: precision/recall/f1 0, still part of macro-F1
    report = classification_report(["a", "d"], ["a", "a"], ["a"])
    assert report["confusion"]["labels"] == ["a", "d"]
    assert report["confusion"]["matrix"] == [[1, 0], [1, 0]]
    assert report["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # a: p 1/2, r 1 -> f1 2/3; d: 0
    assert report["macro_f1"] == pytest.approx(1 / 3)
    assert report["accuracy"] == 0.5
    assert report["n"] == 2


def test_edge_cases():
    assert accuracy([], []) == 0.0
    assert classification_report([], [])["macro_f1"] == 0.0
    with pytest.raises(ValueError):
        accuracy(["a"], [])
