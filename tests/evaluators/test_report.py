import json
import math

import numpy as np
import pytest

from evaluators import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_markdown_table():
    md = report.markdown_table(["name", "score"], [["a|b", 0.12345], ["c", None]], align="lr")
    assert md.splitlines() == [
        "| name | score |",
        "| :--- | ---: |",
        "| a\\|b | 0.123 |",
        "| c | – |",
    ]
    with pytest.raises(ValueError):
        report.markdown_table(["x"], [[1, 2]])


def test_fmt():
    assert report.fmt(1 / 3) == "0.333"
    assert report.fmt(math.nan) == "–"
    assert report.fmt(7) == "7"


def test_write_json_is_atomic_and_strict(tmp_path):
    path = tmp_path / "sub" / "r.json"
    report.write_json(path, {"a": np.float32(0.5), "b": np.arange(3), "c": math.nan, "d": [math.inf]})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": [None]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left behind


def test_plot_lines_writes_png(tmp_path):
    path = report.plot_lines(
        tmp_path / "p.png",
        [report.Series(label="zero-shot", x=[10, 20], y=[0.5, 0.7], err=[0.1, 0.0])],
        hlines={"full real": 0.9, "missing": math.nan},
        title="t",
    )
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_aggregate_and_experiment_markdown():
    def cell(a: str, q: int, r: int, s: int, acc: float | None) -> dict[str, object]:
        return {"approach": a, "quantity": q, "real_n": r, "seed": s, "accuracy": acc, "macro_f1": acc, "n_real": r}

    cells = {
        "1": cell("zero-shot", 10, 0, 0, 0.5),
        "2": cell("zero-shot", 10, 0, 1, 0.7),
        "3": cell("real-full", 0, -1, 0, 0.9) | {"n_real": 80},
        "4": cell("zero-shot", 20, 0, 0, None),
    }
    agg = report.aggregate(cells)
    m = agg[("zero-shot", 10, 0)]
    assert m["accuracy"] == pytest.approx(0.6) and m["accuracy_std"] == pytest.approx(math.sqrt(0.02))
    assert m["seeds"] == 2
    assert math.isnan(agg[("zero-shot", 20, 0)]["accuracy"])
    grid = {"task": "t", "approaches": ["zero-shot"], "quantities": [10, 20], "real_mix": [0], "seeds": [0, 1]}
    md = report.experiment_markdown({"grid": grid, "cells": cells, "quality": {}})
    assert "| zero-shot | 0.600 ± 0.141 (0.600) | – |" in md
    assert "full real train (80): 0.900" in md
