"""``corpusforge dedup`` end to end, through engine.cli.main, on the small committed fixture."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main

FIXTURE = Path(__file__).parents[1] / "fixtures" / "dedup" / "small.jsonl"


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_to_jsonl_keeps_first_of_each_group_whole_and_in_order(tmp_path, capsys):
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    assert main(["dedup", str(FIXTURE), "--out", str(out), "--rejects", str(rejects)]) == 0
    originals = FIXTURE.read_text(encoding="utf-8").splitlines()
    kept = out.read_text(encoding="utf-8").splitlines()
    assert kept == [line for line in originals if json.loads(line)["label"] == "orig"]  # byte for byte, in order
    dropped = load(rejects)
    assert {d["record"]["id"] for d in dropped} == {r["id"] for r in map(json.loads, originals) if r["label"] == "copy"}
    for d in dropped:
        assert d["duplicate_of"] == d["record"]["source"]
    text = capsys.readouterr().out
    assert "kept 20, dropped 6 (exact_duplicate 1, near_duplicate 5)" in text
    assert "same as id t" in text


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_other_formats_round_trip(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = load(FIXTURE)
    src = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        with src.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "text", "label", "source"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(
            pa.Table.from_pylist([{k: r.get(k) for k in ("id", "text", "label", "source")} for r in rows]), src
        )
    out = tmp_path / f"out.{fmt}"
    assert main(["dedup", str(src), "--out", str(out), "--quiet"]) == 0
    if fmt == "csv":
        with out.open(newline="", encoding="utf-8") as fh:
            kept = list(csv.DictReader(fh))
    else:
        kept = pq.read_table(out).to_pylist()
    assert [r["id"] for r in kept] == [r["id"] for r in rows if r["label"] == "orig"]
    assert set(kept[0]) == {"id", "text", "label", "source"}


def test_jsonl_to_parquet_and_default_fields(tmp_path):
    import pyarrow.parquet as pq

    src = tmp_path / "in.jsonl"
    src.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": 1,
                    "premise": "The cat sat on the mat all day long.",
                    "hypothesis": "A cat rested.",
                    "label": "a",
                },
                {
                    "id": 2,
                    "premise": "The cat sat on the mat all day long!",
                    "hypothesis": "A cat rested",
                    "label": "b",
                },
                {
                    "id": 3,
                    "premise": "The cat sat on the mat all day long.",
                    "hypothesis": "Dogs bark at night.",
                    "label": "a",
                },
            ]
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out.parquet"
    assert main(["dedup", str(src), "--out", str(out)]) == 0
    assert [r["id"] for r in pq.read_table(out).to_pylist()] == [1, 3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.jsonl", "--out", "o.jsonl"], "does not exist"),
        ([str(FIXTURE), "--out", "o.txt"], "unknown file format '.txt'"),
        ([str(FIXTURE), "--out", "o.jsonl", "--field", "body"], "field 'body' not found"),
        ([str(FIXTURE), "--out", "o.jsonl", "--threshold", "2"], "threshold must be between 0 and 1"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["dedup", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_input_format(tmp_path, capsys):
    src = tmp_path / "in.xlsx"
    src.write_text("x")
    assert main(["dedup", str(src), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "unknown file format '.xlsx'" in capsys.readouterr().err
