from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import engine.tasks as tasks_pkg
from engine.cli import main
from engine.errors import ConfigError, DataError
from engine.tasks import Task, has_real_data, list_builtin, load_real, load_task, stable_key

PAPER_TASKS = {"sst2", "emotion", "nyt", "amazon", "rte", "boolq"}


def test_builtin_tasks_load():
    names = set(list_builtin())
    assert {"bbc-news", "tweet-sentiment"} | PAPER_TASKS <= names
    for name in names:
        task = load_task(name)
        assert task.name == name
        assert len(task.labels) >= 2
        assert all(task.describe_label(lab) for lab in task.labels), name
        assert task.description and task.domain


def test_builtin_label_sets():
    assert load_task("bbc-news").labels == ("business", "entertainment", "politics", "sport", "tech")
    assert load_task("tweet-sentiment").labels == ("negative", "neutral", "positive")
    assert load_task("sst2").labels == ("negative", "positive")
    assert load_task("emotion").labels == ("sadness", "joy", "love", "anger", "fear", "surprise")
    assert load_task("rte").fields == ("premise", "hypothesis")
    assert load_task("rte").labels == ("entailment", "not_entailment")
    assert load_task("boolq").fields == ("passage", "question")
    assert load_task("boolq").labels == ("true", "false")
    assert len(load_task("nyt").labels) == 26
    assert len(load_task("amazon").labels) == 23


def test_unknown_task_lists_builtins():
    with pytest.raises(ConfigError) as info:
        load_task("no-such-task")
    assert "bbc-news" in info.value.hint and "sst2" in info.value.hint


def test_task_from_yaml_file(tmp_path: Path):
    path = tmp_path / "spam.yaml"
    path.write_text(
        "name: spam\ndescription: Spam or not.\ndomain: SMS messages\nfields: [text]\n"
        "labels: {spam: unwanted ads, ham: normal messages}\nsource: {file: data.csv}\nmin_chars: 5\n"
    )
    task = load_task(path)
    assert task.labels == ("spam", "ham") and task.min_chars == 5 and task.source.kind == "file"
    assert hash(task) == hash(load_task(str(path)))


@pytest.mark.parametrize(
    "body",
    [
        "name: x\nlabels: {a: one}\n",  # one label
        "name: X Y\nlabels: {a: 1, b: 2}\n",  # not a slug
        "name: x\nlabels: {a: 1, b: 2}\nfields: [label]\n",  # reserved field
        "name: x\nlabels: {a: 1, b: 2}\nsource: {packaged: a, file: b}\n",  # two sources
        "name: x\nlabels: {a: 1, b: 2}\ncolour: red\n",  # unknown key
        "name: x\nlabels: {a: 1, b: 2}\nmin_chars: 50\nmax_chars: 10\n",
        "name: [x\n",  # not YAML
    ],
)
def test_bad_task_files(tmp_path: Path, body: str):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError):
        load_task(path)


def test_stable_key_is_blake2b():
    # Pinned: the split must be the same on every machine and Python version.
    assert stable_key(0, "hello") == "bcfe2847d25328d276685820"


@pytest.mark.parametrize("name", ["bbc-news", "tweet-sentiment"])
def test_packaged_splits_disjoint_stratified_deterministic(name: str):
    task = load_task(name)
    assert has_real_data(task)
    train, test = load_real(task, "train"), load_real(task, "test")
    train_texts = {" ".join(e.text.split()).lower() for e in train}
    test_texts = {" ".join(e.text.split()).lower() for e in test}
    assert not train_texts & test_texts
    assert len(train_texts) == len(train) and len(test_texts) == len(test)  # de-duplicated
    total = Counter(e.label for e in train) + Counter(e.label for e in test)
    assert set(total) == set(task.labels)
    for label, n in Counter(e.label for e in test).items():
        assert abs(n / total[label] - 0.2) < 0.01, label
    assert train[0].id == "real-train-000000" and test[5].id == "real-test-000005"
    assert all(e.strategy == "real" and e.fields["text"] for e in train[:50])
    # The tweet CSV mixes UTF-8 and cp1252: no undecoded bytes survive.
    assert not any("\udc80" <= ch <= "\udcff" for e in train for ch in e.text)


def test_split_is_deterministic_and_seeded():
    task = load_task("bbc-news")
    test = load_real(task, "test")
    # Same arguments, same split (cached); a fresh read gives the same too.
    tasks_pkg.clear_cache()
    again = load_real(task, "test")
    assert [(e.id, e.text, e.label) for e in again] == [(e.id, e.text, e.label) for e in test]
    other = load_real(task, "test", seed=1)
    assert {e.text for e in other} != {e.text for e in test}


def test_bbc_news_counts_and_first_examples_pinned():
    task = load_task("bbc-news")
    train, test = load_real(task, "train"), load_real(task, "test")
    assert (len(train), len(test)) == (1699, 425)  # 2,225 files, 101 exact duplicates removed
    assert test[0].meta["source_id"] == "business/025"
    assert test[0].text.startswith("Yukos loses US bankruptcy battle")


def test_paper_task_without_data_says_what_to_do():
    for name in PAPER_TASKS:
        task = load_task(name)
        assert not has_real_data(task)  # `datasets` is not installed here
        with pytest.raises(DataError) as info:
            load_real(task, "train")
        assert "--data" in info.value.hint
        assert "datasets" in info.value.hint


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_user_data_file_jsonl(tmp_path: Path):
    rows = [{"text": f"movie review number {i} is {'great' if i % 2 else 'awful'}", "label": i % 2} for i in range(40)]
    rows.append(dict(rows[0]))  # a duplicate
    data = tmp_path / "sst2.jsonl"
    _write_jsonl(data, rows)
    task = load_task("sst2")
    train = load_real(task, "train", data_file=data)
    test = load_real(task, "test", data_file=data)
    assert len(train) + len(test) == 40 and len(test) == 8
    assert {e.label for e in test} == {"negative", "positive"}  # 0/1 mapped by source.labels


def test_user_data_file_pairs_with_own_split(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {
        "premise": [f"The cat {i} sat on the mat." for i in range(6)],
        "hypothesis": [f"A cat {i} sat." for i in range(6)],
        "label": ["entailment", "not_entailment"] * 3,
        "split": ["train", "train", "train", "train", "test", "test"],
    }
    path = tmp_path / "rte.parquet"
    pq.write_table(pa.table(rows), path)
    task = load_task("rte")
    test = load_real(task, "test", data_file=path)
    assert [e.fields["premise"] for e in sorted(test, key=lambda e: e.fields["premise"])] == [
        "The cat 4 sat on the mat.",
        "The cat 5 sat on the mat.",
    ]
    assert len(load_real(task, "train", data_file=path)) == 4


def test_user_data_file_csv_bad_label_and_missing_column(tmp_path: Path):
    task = load_task("sst2")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ngood film,positive\nbad film,meh\n")
    with pytest.raises(DataError, match="unknown labels"):
        load_real(task, "train", data_file=bad)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("words,label\ngood film,positive\n")
    with pytest.raises(DataError, match="no column"):
        load_real(task, "train", data_file=nocol)
    with pytest.raises(DataError, match="does not exist"):
        load_real(task, "train", data_file=tmp_path / "missing.jsonl")


def test_task_with_relative_file_source(tmp_path: Path):
    _write_jsonl(
        tmp_path / "data.jsonl",
        [{"msg": f"message {i} text", "y": "spam" if i % 2 else "ham"} for i in range(10)],
    )
    (tmp_path / "spam.yaml").write_text(
        "name: spam\nlabels: {spam: ads, ham: normal}\n"
        "source: {file: data.jsonl, columns: {text: msg, label: y}, test_fraction: 0.5}\n"
    )
    task: Task = load_task(tmp_path / "spam.yaml")
    assert has_real_data(task)
    test = load_real(task, "test")
    assert len(test) == 4  # round(5 * 0.5) == 2 per label
    assert Counter(e.label for e in test) == {"spam": 2, "ham": 2}
    assert len(load_real(task, "train")) == 6


def test_cli_data_export_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "tweets_test.jsonl"
    assert main(["data", "export", "tweet-sentiment", "--split", "test", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected = load_real(load_task("tweet-sentiment"), "test")
    assert len(lines) == len(expected)
    assert lines[0] == {"id": expected[0].id, "text": expected[0].text, "label": expected[0].label}
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "bbc-news" in listing and "needs --data" in listing


def test_cli_data_export_missing_source_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["data", "export", "rte", "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("corpusforge: error:") and "--data" in err and "Traceback" not in err


def test_task_hash_is_cached_and_follows_equality():
    import dataclasses

    a, b = load_task("bbc-news"), load_task("bbc-news")
    assert a == b and hash(a) == hash(b) == hash(a)
    other = dataclasses.replace(a, min_chars=a.min_chars + 1)
    assert other != a and hash(other) != hash(a)


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the real CLI; it must fail with one `corpusforge: error:` line and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("corpusforge: error: "), err
    return lines[0]


def test_cli_duplicate_label_key_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Was: "labels must map at least two labels" (YAML kept the last `pos`, leaving one label)."""
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\ndescription: d\nlabels:\n  pos: good\n  pos: again\n")
    line = _cli_error(capsys, ["data", "export", str(path), "--out", str(tmp_path / "x.jsonl")])
    assert f"{path}:5:3: duplicate key 'pos'" in line and "at least two" not in line
    listed = tmp_path / "listed.yaml"
    listed.write_text("name: dup\nlabels: [pos, neg, pos]\n")
    assert "labels lists 'pos' twice" in _cli_error(capsys, ["data", "export", str(listed), "--out", "-"])


def test_cli_invalid_yaml_has_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Was: "not valid YAML: while parsing a flow sequence" with no position."""
    path = tmp_path / "invalid.yaml"
    path.write_text("name: bad\ndescription: d\nlabels:\n  pos: good\n  neg: [bad\n")
    line = _cli_error(capsys, ["data", "export", str(path), "--out", str(tmp_path / "x.jsonl")])
    assert f"{path}:6:1: not valid YAML: expected ',' or ']'" in line


def test_cli_binary_csv_as_data_is_one_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Was: a TypeError traceback from sorting the garbage column names."""
    import random

    rng = random.Random(1)
    path = tmp_path / "binary.csv"
    path.write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    line = _cli_error(capsys, ["data", "export", "tweet-sentiment", "--data", str(path), "--out", "-"])
    assert line.startswith(f"corpusforge: error: {path}:1: ") and len(line) < len(str(path)) + 200


def test_cli_numeric_text_in_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "numeric.parquet"
    pq.write_table(pa.table({"text": [float(i) for i in range(20)], "label": [0, 1] * 10}), path)
    line = _cli_error(capsys, ["data", "export", "sst2", "--data", str(path), "--out", "-"])
    assert f"{path}: row 1 has a float in text field 'text' (0.0), not a string" in line


def _tweets_with_bad_line_151(path: Path) -> Path:
    rows = [
        json.dumps({"text": f"tweet {i} is here", "label": ["positive", "negative", "neutral"][i % 3]})
        for i in range(300)
    ]
    rows[150] = '{"text": broken'
    path.write_text("\n".join(rows) + "\n")
    return path


def test_cli_malformed_data_line_reports_its_real_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Was: "Expecting value: line 1 column 10 (char 9)" for line 151 (json.loads of the line alone)."""
    bad = _tweets_with_bad_line_151(tmp_path / "bad.jsonl")
    line = _cli_error(capsys, ["data", "export", "tweet-sentiment", "--data", str(bad), "--out", "-"])
    assert f"{bad}:151: not valid JSON (Expecting value at column 10)" in line and "line 1 column" not in line


def test_cli_generate_with_malformed_data_line_against_the_simulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from engine.sim import SimConfig, sim_process

    bad = _tweets_with_bad_line_151(tmp_path / "bad.jsonl")
    with sim_process(SimConfig()) as url:
        argv = ["generate", "tweet-sentiment", "--strategy", "few-shot", "--data", str(bad), "--n", "3"]
        line = _cli_error(
            capsys, [*argv, "--out", str(tmp_path / "run"), "--base-url", url, "--model", "sim", "--no-progress"]
        )
    assert f"{bad}:151: not valid JSON" in line and "fix or delete line 151" in line
