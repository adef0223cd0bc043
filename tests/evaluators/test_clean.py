"""Cleaning drops planted label flips and keeps clean examples; the `clean` command end to end."""

import json

import numpy as np

from engine.cli import main
from evaluators.clean import clean_labels

from .conftest import FIXTURES


def _planted(seed: int = 0) -> tuple[np.ndarray, list[str], list[str], list[int]]:
    """Three well-separated Gaussian classes, 40 each, with 12 labels flipped to the next class."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 16)) * 2.5
    X = np.vstack([centers[k] + rng.normal(size=(40, 16)) for k in range(3)]).astype(np.float32)
    true = [f"c{k}" for k in range(3) for _ in range(40)]
    flipped = sorted(rng.choice(len(true), 12, replace=False).tolist())
    given = list(true)
    for i in flipped:
        given[i] = f"c{(int(true[i][1]) + 1) % 3}"
    return X, true, given, flipped


def test_cleaning_drops_planted_flips_and_keeps_clean_examples():
    X, _, given, flipped = _planted()
    result = clean_labels(X, given, seed=0)
    dropped = set(result.dropped)
    assert len(dropped & set(flipped)) >= 11  # the planted flips go
    assert len(dropped - set(flipped)) <= 2  # and almost nothing else
    for i in dropped:
        assert result.reasons[i] and result.reasons[i].startswith(f"label disputed: p({given[i]})=")
    assert result.fidelity_before is not None and result.fidelity_after is not None
    assert result.fidelity_before < 0.95 < result.fidelity_after
    summary = result.summary()
    assert summary["kept"] + summary["dropped"] == 120 and set(summary["thresholds"]) == {"c0", "c1", "c2"}


def test_real_examples_help_but_are_never_judged():
    X, true, given, flipped = _planted(seed=1)
    X_real, y_real = X[:30] + 0.01, true[:30]
    result = clean_labels(X, given, X_real=X_real, y_real=y_real, seed=0)
    assert len(result.keep) == 120
    assert len(set(result.dropped) & set(flipped)) >= 11


def test_a_label_with_one_example_is_not_judged():
    X, _, given, _ = _planted()
    given = [*given[:-1], "lonely"]
    result = clean_labels(X, given, seed=0)
    assert result.keep[-1]


def test_clean_cli_end_to_end(cache_env, tmp_path, capsys):
    rows = [json.loads(line) for line in (FIXTURES / "train.jsonl").read_text().splitlines() if line.strip()]
    flips = {"sports-1": "food", "food-4": "tech"}
    for row in rows:
        row["label"] = flips.get(row["id"], row["label"])
    data = tmp_path / "noisy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cleaned"
    assert main(["clean", str(data), "--out", str(out), "--variant", "fp32", "--folds", "3"]) == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    kept = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rejects} >= set(flips)
    assert len(kept) + len(rejects) == 21 and len(rejects) <= 4
    flipped = next(r for r in rejects if r["id"] == "sports-1")
    assert flipped["reason"] == "label_disputed" and flipped["predicted"] == "sports"
    assert flipped["p_label"] < flipped["threshold"] and flipped["p_predicted"] > flipped["p_label"]
    summary = json.loads((out / "clean.json").read_text())
    assert summary["kept"] == len(kept) and summary["label_fidelity_after"] > summary["label_fidelity_before"]
    assert "label fidelity estimate" in capsys.readouterr().out
    # the kept data is a run directory eval reads
    ev = tmp_path / "ev"
    code = main(
        ["eval", "--train", str(out), "--test", str(FIXTURES / "test.jsonl"), "--out", str(ev)]
        + ["--no-save", "--variant", "fp32"]
    )
    assert code == 0


def test_clean_cli_refuses_to_overwrite_its_input(cache_env, tmp_path, capsys):
    assert main(["clean", str(FIXTURES / "run"), "--out", str(FIXTURES / "run")]) == 2
    assert "overwrite" in capsys.readouterr().err
