"""The embedding step of ``eval``/``experiment`` on the session's shared two-node Ray cluster, against one process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli import main
from evaluators.embed_ray import RayEncoder
from evaluators.encoder import Encoder

from .conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]


def fixture_texts() -> list[str]:
    """The fixture's texts three times over with variations (so lengths differ), plus one repeated text."""
    base = [
        json.loads(x)["text"]
        for name in ("test.jsonl", "train.jsonl")
        for x in (FIXTURES / name).read_text().splitlines()
    ]
    return [t + " again" * k for k in range(3) for t in base] + [base[0]]


def _eval(out: Path, *extra: str) -> dict[str, Any]:
    argv = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
    assert main([*argv, "--out", str(out), "--variant", "fp32", "--no-save", *extra]) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def test_ray_embeddings_equal_single_process_ones(ray_cluster, onnx_root):
    texts = fixture_texts()
    local = Encoder.load("fp32", cache=False, root=onnx_root)
    try:
        expected = local.embed(texts)
        # blocks of 16 texts: seven blocks spread over the two actors, on two nodes
        on_ray = RayEncoder.attach(local, block=16)
        got = on_ray.embed(texts, progress=lambda done, total: None)
    finally:
        local.close()
    assert got.shape == expected.shape == (len(texts), local.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert on_ray.stats.as_dict() == {
        "asked": len(texts),
        "embedded_on_ray": len(set(texts)),  # the repeated text is embedded once
        "passes": 1,
        "actors": 2,
    }


def test_eval_on_ray_reports_what_eval_in_one_process_does(ray_cluster, cache_env, tmp_path, capsys):
    on_ray = _eval(tmp_path / "ray", "--ray")
    assert "texts on Ray with 2 actor(s)" in capsys.readouterr().err
    local = _eval(tmp_path / "local", "--no-cache")
    assert "ray" not in local
    for key in ("accuracy", "macro_f1", "per_class", "confusion", "majority_baseline", "n_train", "n_test"):
        assert on_ray[key] == local[key], key
    assert on_ray["head_choices"]["C"] == local["head_choices"]["C"]
    assert on_ray["accuracy"] == pytest.approx(0.9)


def test_eval_on_ray_sends_only_what_the_cache_lacks(ray_cluster, cache_env, tmp_path):
    train = [json.loads(x)["text"] for x in (FIXTURES / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x)["text"] for x in (FIXTURES / "test.jsonl").read_text().splitlines()]
    unique = len(set(train + test))

    first = _eval(tmp_path / "one", "--ray")["ray"]
    assert first == {"asked": len(train) + len(test), "embedded_on_ray": unique, "passes": 1, "actors": 2}
    caches = list((cache_env / "embeddings").glob("*.sqlite"))
    assert len(caches) == 1  # written by the driver, its only writer
    with sqlite3.connect(caches[0]) as db:
        assert db.execute("SELECT COUNT(*) FROM emb").fetchone() == (unique,)

    second = _eval(tmp_path / "two", "--ray")["ray"]
    assert second == {"asked": len(train) + len(test), "embedded_on_ray": 0, "passes": 0, "actors": 2}
    # the same report from cached vectors
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert (a["accuracy"], a["confusion"]) == (b["accuracy"], b["confusion"])


@pytest.mark.slow  # two Ray passes, each starting its actors
def test_experiment_on_ray_scores_what_one_process_does(ray_cluster, onnx_root, tmp_path):
    """The embed function `experiment --ray` hands the grid runner: one pass per call with new texts, none after."""
    from evaluators import experiment as ex

    from .test_experiment import FakeGenerator, fake_real

    grid = ex.Grid.from_dict(
        {"task": "fake", "approaches": ["zero-shot"], "quantities": [8], "seeds": [0], "baselines": False}
        | {"quality": False, "head": {"kind": "logreg", "C": 1.0}}
    )

    def run(out: str, encoder: Encoder) -> dict[str, Any]:
        embed = lambda texts: encoder.embed(list(texts))  # noqa: E731  (what the command passes)
        return ex.run_experiment(grid, tmp_path / out, generate=FakeGenerator(), embed=embed, real_data=fake_real)

    (tmp_path / "emb").mkdir()
    local = Encoder.load("fp32", cache=False, root=onnx_root)
    cached = Encoder.load("fp32", cache=True, root=onnx_root, cache_root=tmp_path / "emb")
    try:
        on_ray = RayEncoder.attach(cached)
        got, expected = run("ray", on_ray), run("local", local)
        assert on_ray.stats.passes == 2 and on_ray.stats.embedded == 20 + 8  # the test split, then the cell's texts
        again = run("again", on_ray)  # a new output folder, the same cache: nothing is sent
    finally:
        local.close()
        cached.close()
    assert on_ray.stats.passes == 2 and on_ray.stats.embedded == 28
    for results in (got, again):
        assert results["cells"].keys() == expected["cells"].keys()
        for key, cell in results["cells"].items():
            assert (cell["accuracy"], cell["macro_f1"]) == (
                expected["cells"][key]["accuracy"],
                expected["cells"][key]["macro_f1"],
            )


@pytest.mark.parametrize(
    ("command", "extra", "needle"),
    [
        ("eval", ["--actors", "2"], "--actors needs --ray"),
        ("eval", ["--ray", "--finetune"], "not --finetune"),
        ("eval", ["--ray", "--threads", "0"], "--threads must be >= 1"),
        ("experiment", ["--num-cpus", "2"], "--num-cpus needs --ray"),
    ],
)
def test_bad_ray_flags_are_one_line(tmp_path, capsys, command, extra, needle):
    if command == "eval":
        argv = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
    else:
        argv = ["experiment", str(tmp_path / "grid.yaml")]
    assert main([*argv, "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("corpusforge: error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code = "import sys\nfrom engine.cli import main\ncode = main(sys.argv[1:])\nprint('ray' in sys.modules)\nsys.exit(code)"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def test_an_unreachable_cluster_is_one_line_with_the_fix(tmp_path):
    argv = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
    done = _cli(*argv, "--out", str(tmp_path / "out"), "--ray", "127.0.0.1:9")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("corpusforge: error: no Ray cluster at 127.0.0.1:9")
    assert "ray start --head" in lines[0]
    assert not (tmp_path / "out").exists()


def test_eval_without_ray_never_imports_ray(tmp_path):
    # a flag error after parsing: the command and its Ray helpers are loaded, ray is not
    argv = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
    done = _cli(*argv, "--out", str(tmp_path / "out"), "--actors", "2")
    assert done.returncode == 2 and "--actors needs --ray" in done.stderr
    assert done.stdout.strip() == "False"
