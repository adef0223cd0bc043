import csv
import json
from pathlib import Path

import pytest

from engine.cli import main

from .conftest import FIXTURES


def _eval(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "ev"
    argv = ["eval", "--test", str(FIXTURES / "test.jsonl"), "--out", str(out), "--variant", "fp32", *extra]
    return main(argv), out


def test_eval_writes_report_and_model(cache_env, tmp_path, capsys):
    code, out = _eval(tmp_path, "--train", str(FIXTURES / "train.jsonl"), "--seed", "3")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("accuracy", "macro_f1", "per_class", "confusion", "n_train", "n_test", "seed", "timings_s"):
        assert key in report
    assert report["n_train"] == 21 and report["n_test"] == 10 and report["seed"] == 3
    # the unseen "weather" example is reported, counted wrong, and does not crash anything
    assert report["unseen_test_labels"] == {"weather": 1}
    assert report["confusion"]["labels"] == ["food", "sports", "tech", "weather"]
    assert report["accuracy"] == pytest.approx(0.9)
    assert report["accuracy_seen_labels"] == 1.0
    assert (out / "model" / "model.onnx").exists()
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and "unseen" in printed


def test_eval_mixes_real_data_and_run_dirs(cache_env, tmp_path):
    code, out = _eval(
        tmp_path,
        "--train", str(FIXTURES / "run"),
        "--real-train", str(FIXTURES / "train.jsonl"),
        "--real-n", "6",
        "--no-save",
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_train_synthetic"] == 11 and report["n_train_real"] == 6 and report["n_train"] == 17
    assert not (out / "model").exists()


def test_eval_user_errors_are_one_line(cache_env, tmp_path, capsys):
    assert _eval(tmp_path)[0] == 2
    assert "nothing to train on" in capsys.readouterr().err
    assert _eval(tmp_path, "--train", str(tmp_path / "nope.jsonl"))[0] == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err
    assert _eval(tmp_path, "--train", str(FIXTURES / "train.jsonl"), "--real-n", "5")[0] == 2


def test_score_writes_pred_and_probs(cache_env, tmp_path):
    code, out = _eval(tmp_path, "--train", str(FIXTURES / "train.jsonl"))
    assert code == 0
    dest = tmp_path / "scored.jsonl"
    assert main(["score", "--model", str(out / "model"), str(FIXTURES / "test.csv"), "--out", str(dest)]) == 0
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert len(rows) == 10
    assert rows[0]["id"] == "sports-t0" and rows[0]["pred"] == "sports"
    assert set(rows[0]["probs"]) == {"food", "sports", "tech"}
    assert sum(rows[0]["probs"].values()) == pytest.approx(1.0, abs=1e-4)

    dest_csv = tmp_path / "scored.csv"
    assert main(["score", "--model", str(out / "model"), str(FIXTURES / "test.jsonl"), "--out", str(dest_csv)]) == 0
    with dest_csv.open() as f:
        table = list(csv.DictReader(f))
    assert table[0]["pred"] == "sports" and json.loads(table[0]["probs"])["sports"] > 0.5


def test_score_rejects_a_non_model_dir(tmp_path, capsys):
    code = main(["score", "--model", str(tmp_path), str(FIXTURES / "test.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert "not a saved classifier" in capsys.readouterr().err
