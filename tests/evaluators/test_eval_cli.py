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
    # the majority-class baseline (food, sports and tech tie at 3 of 10) and the head's choices are recorded
    assert report["majority_baseline"]["accuracy"] == pytest.approx(0.3)
    assert report["head_choices"]["class_weight"] == "none" and report["head_choices"]["C_chosen_by"] == "cv"
    assert (out / "model" / "model.onnx").exists()
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and "unseen" in printed and "majority-class baseline" in printed


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
    probs = json.loads(table[0]["probs"])
    assert table[0]["pred"] == "sports" == max(probs, key=probs.get)


def test_score_rejects_a_non_model_dir(tmp_path, capsys):
    code = main(["score", "--model", str(tmp_path), str(FIXTURES / "test.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert "not a saved classifier" in capsys.readouterr().err


def test_run_scores_synthetic_data_and_baselines_through_the_one_service(cache_env, tmp_path):
    from engine.commands.run import evaluate_run
    from evaluators.evaluate import EvalConfig

    rows = [
        json.loads(line)
        for name in ("train.jsonl", "test.jsonl")
        for line in (FIXTURES / name).read_text().splitlines()
    ]
    real = tmp_path / "real.jsonl"
    real.write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"] != "weather"))
    task = tmp_path / "tiny.yaml"
    labels = "\n".join(f"  {label}: {label} news" for label in ("food", "sports", "tech"))
    task.write_text(f"name: tiny\ndescription: topics\nfields: [text]\nlabels:\n{labels}\nsource:\n  file: {real}\n")
    report = evaluate_run(FIXTURES / "run", str(task), data_file=None, config=EvalConfig(class_weight="balanced"))
    assert report["train"] == "synthetic" and report["n_train"] == 11
    assert report["head_choices"]["class_weight"] == "balanced" and report["head_choices"]["C_chosen_by"] == "cv"
    for name in ("real_same_size", "real_full"):
        assert report["baselines"][name]["head_choices"]["class_weight"] == "balanced"
    assert report["majority_baseline"]["accuracy"] < report["accuracy"]
