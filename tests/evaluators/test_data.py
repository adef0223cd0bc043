"""Bad input files through the real CLI (`eval`, `score`, `inspect`): one line naming the file, the line and the fix.

Each case was a traceback or a wrong result before (issue 14, item 7): a non-UTF-8 file crashed all three commands;
a Parquet file with numeric `text` and float labels trained on 200 float "labels"; a binary CSV crashed or printed
its bytes as column names; `eval --test task.yaml` was read as a data file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.cli import main
from engine.tasks import load_real, load_task
from evaluators.data import load_input, load_records

from .conftest import FIXTURES


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("corpusforge: error: "), lines[0]
    return lines[0]


@pytest.fixture
def latin1(tmp_path: Path) -> Path:
    """Twenty good lines, and line 8 with a Latin-1 "í" (byte 0xed)."""
    rows = [
        json.dumps({"text": f"article number {i} about stuff", "label": ["food", "tech"][i % 2]}) for i in range(20)
    ]
    raw = ("\n".join(rows) + "\n").encode()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(raw.replace(b"article number 7", "artícle number 7".encode("latin-1")))
    return path


def _latin1_offset(path: Path) -> int:
    return path.read_bytes().index(b"\xed")


@pytest.fixture
def binary_csv(tmp_path: Path) -> Path:
    rng = random.Random(1)
    path = tmp_path / "binary.csv"
    path.write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    return path


def _parquet(path: Path, columns: dict[str, list[object]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_eval_non_utf8_names_file_line_byte_and_fix(latin1: Path, tmp_path: Path, capsys) -> None:
    code = main(["eval", "--train", str(latin1), "--test", str(FIXTURES / "test.jsonl"), "--out", str(tmp_path / "e")])
    line = _one_line_error(capsys)
    assert code == 2
    assert f"{latin1}:8: byte 0xed (at byte {_latin1_offset(latin1)}) is not UTF-8" in line
    assert "re-encode the file as UTF-8" in line


def test_inspect_non_utf8_is_one_line(latin1: Path, capsys) -> None:
    assert main(["inspect", str(latin1), "--no-embed"]) == 2
    assert f"{latin1}:8: byte 0xed" in _one_line_error(capsys)


def test_score_non_utf8_is_one_line(cache_env, latin1: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ev"
    argv = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
    assert main([*argv, "--out", str(out), "--variant", "fp32"]) == 0
    capsys.readouterr()
    assert main(["score", str(latin1), "--model", str(out / "model"), "--out", str(tmp_path / "s.jsonl")]) == 2
    assert f"{latin1}:8: byte 0xed" in _one_line_error(capsys)
    assert not (tmp_path / "s.jsonl").exists()


def test_eval_parquet_with_numeric_text_and_float_labels_is_one_line(tmp_path: Path, capsys) -> None:
    rng = random.Random(0)
    path = _parquet(
        tmp_path / "numeric.parquet",
        {"text": [float(i) for i in range(200)], "label": [rng.random() for _ in range(200)]},
    )
    code = main(["eval", "--train", str(path), "--test", str(FIXTURES / "test.jsonl"), "--out", str(tmp_path / "e")])
    line = _one_line_error(capsys)
    assert code == 2 and f"{path}: row 1 has a float `text` (0.0), not a string" in line
    assert not (tmp_path / "e").exists()


def test_float_labels_and_too_many_labels_are_refused(tmp_path: Path, capsys) -> None:
    texts = [f"text number {i}" for i in range(200)]
    floats = _parquet(tmp_path / "floats.parquet", {"text": texts, "label": [i / 7 for i in range(200)]})
    code = main(["eval", "--train", str(floats), "--test", str(FIXTURES / "test.jsonl"), "--out", str(tmp_path / "e")])
    assert code == 2 and f"{floats}: row 2 has a float label (0.14285714285714285)" in _one_line_error(capsys)
    ids = _parquet(tmp_path / "ids.parquet", {"text": texts, "label": [f"id-{i}" for i in range(200)]})
    code = main(["eval", "--train", str(ids), "--test", str(FIXTURES / "test.jsonl"), "--out", str(tmp_path / "e")])
    assert code == 2 and "200 different labels in 200 rows" in _one_line_error(capsys)


def test_whole_float_labels_are_classes(tmp_path: Path) -> None:
    """A Parquet integer column with a null becomes float64: 1.0 is class 1, not a measurement."""
    path = _parquet(tmp_path / "f.parquet", {"text": ["a", "b", "c"], "label": [1.0, 0.0, 1.0]})
    assert [r["label"] for r in load_records(path)] == [1, 0, 1]


def test_eval_binary_csv_is_one_short_line(binary_csv: Path, tmp_path: Path, capsys) -> None:
    code = main(["eval", "--train", str(binary_csv), "--test", str(FIXTURES / "test.jsonl"), "--out", str(tmp_path)])
    line = _one_line_error(capsys)
    assert code == 2 and line.startswith(f"corpusforge: error: {binary_csv}:1: ")
    assert "binary file" in line and len(line) < len(str(binary_csv)) + 200


def test_run_directory_with_a_torn_last_line_is_read(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = (FIXTURES / "run" / "data.jsonl").read_text(encoding="utf-8")
    (run / "data.jsonl").write_text(good + '{"id": "x", "text": "half', encoding="utf-8")
    assert len(load_records(run)) == len(good.splitlines())


def _task_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(
        "name: topics\ndescription: Topic of a short text.\n"
        "labels: {food: cooking and eating, sports: games, tech: computers}\n"
        f"source: {{file: {FIXTURES / 'train.jsonl'}, test_fraction: 0.3}}\n",
        encoding="utf-8",
    )
    return path


def test_load_input_resolves_files_task_names_and_task_yaml(tmp_path: Path) -> None:
    yaml_path = _task_yaml(tmp_path)
    test = load_input(str(yaml_path), "test")
    expected = load_real(load_task(yaml_path), "test")
    assert [r["id"] for r in test] == [e.id for e in expected] and len(test) == 6
    assert load_input(str(FIXTURES / "test.jsonl"), "test")[0]["id"] == "sports-t0"
    assert len(load_input("bbc-news", "test")) == len(load_real(load_task("bbc-news"), "test"))
    with pytest.raises(Exception, match="no such file") as info:
        load_input(str(tmp_path / "typo.jsonl"), "test")
    assert "bbc-news" in info.value.hint  # type: ignore[attr-defined]


def test_eval_test_accepts_a_task_yaml(cache_env, tmp_path: Path) -> None:
    yaml_path = _task_yaml(tmp_path)
    out = tmp_path / "ev"
    argv = ["eval", "--train", str(FIXTURES / "test.jsonl"), "--test", str(yaml_path), "--out", str(out)]
    assert main([*argv, "--variant", "fp32", "--no-save"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_test"] == len(load_real(load_task(yaml_path), "test")) == 6
