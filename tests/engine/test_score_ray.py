"""``score --ray`` on the session's shared two-node cluster, against single-process ``score``; the embedding
cache under several writer processes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli import main
from evaluators.embcache import EmbeddingCache
from evaluators.encoder import export_key

from ..evaluators.conftest import FIXTURES, onnx_root  # noqa: F401  (the session's encoder export)
from .test_dedup_ray import write_parts


@pytest.fixture(scope="module")
def model_dir(onnx_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:  # noqa: F811
    """A classifier trained by `corpusforge eval` on the tiny fixture (fp32 encoder), with a private cache."""
    root = tmp_path_factory.mktemp("cache")
    (root / "onnx").mkdir()
    (root / "onnx" / export_key()).symlink_to(onnx_root / export_key(), target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORPUSFORGE_CACHE", str(root))
        out = tmp_path_factory.mktemp("ev")
        argv = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
        assert main([*argv, "--out", str(out), "--variant", "fp32"]) == 0
        yield out / "model"


def corpus_parts(folder: Path, parts: int = 3) -> list[Path]:
    """The fixture's test and train texts, several times over with variations, split into parts."""
    base = [json.loads(x) for name in ("test.jsonl", "train.jsonl") for x in (FIXTURES / name).read_text().splitlines()]
    rows = [{**r, "id": f"{r['id']}-{k}", "text": r["text"] + " " * k + "!" * k} for k in range(3) for r in base]
    return write_parts(folder, rows, parts)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_score_on_ray_equals_single_process_score(ray_cluster, model_dir, tmp_path, capsys):
    paths = corpus_parts(tmp_path / "in")
    out = tmp_path / "scored"
    assert main(["score", "--model", str(model_dir), str(tmp_path / "in"), "--out", str(out), "--ray"]) == 0
    assert "with 2 actor(s)" in capsys.readouterr().out

    for k, path in enumerate(paths):
        single = tmp_path / f"single-{k}.jsonl"
        assert main(["score", "--model", str(model_dir), str(path), "--out", str(single)]) == 0
        expected, got = read(single), read(out / f"part-{k:05d}.jsonl")
        assert [r["id"] for r in got] == [r["id"] for r in expected]  # same rows, same order
        assert [r["pred"] for r in got] == [r["pred"] for r in expected]
        for a, b in zip(got, expected, strict=True):
            assert a["probs"].keys() == b["probs"].keys()
            assert a["probs"] == pytest.approx(b["probs"], abs=1e-4)
            assert {k: v for k, v in a.items() if k != "probs"} == {k: v for k, v in b.items() if k != "probs"}
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == sum(len(read(p)) for p in paths)


def test_score_on_ray_bad_model_gets_one_line_and_writes_nothing(ray_cluster, tmp_path, capsys):
    corpus_parts(tmp_path / "in", parts=1)
    out = tmp_path / "scored"
    assert main(["score", "--model", str(tmp_path), str(tmp_path / "in"), "--out", str(out), "--ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("corpusforge: error: ") and "is not a saved classifier" in err and "\n" not in err
    assert not out.exists()


def _hammer(path: str, worker: int, rounds: int, dim: int) -> int:
    """Write and read the shared cache from one process: own keys plus keys every worker writes."""
    cache = EmbeddingCache(Path(path), dim)
    try:
        for r in range(rounds):
            keys = [EmbeddingCache.key(f"w{worker}-r{r}-{i}") for i in range(50)]
            shared = [EmbeddingCache.key(f"shared-{r}-{i}") for i in range(50)]
            own = np.full((50, dim), worker * 1000 + r, dtype=np.float32)
            same = np.tile(np.arange(dim, dtype=np.float32) + r, (50, 1))
            cache.put(keys + shared, np.concatenate([own, same]))
            got = cache.get(keys)
            assert len(got) == 50 and all(float(v[0]) == worker * 1000 + r for v in got.values())
        return worker
    finally:
        cache.close()


def test_embedding_cache_stays_whole_with_writers_in_several_processes(ray_cluster, tmp_path):
    import ray

    dim, rounds, workers = 16, 20, 4
    path = tmp_path / "emb.sqlite"
    EmbeddingCache(path, dim).close()
    hammer = ray.remote(num_cpus=0.5)(_hammer)
    assert sorted(ray.get([hammer.remote(str(path), w, rounds, dim) for w in range(workers)])) == list(range(workers))
    # processes other than this one did the writing (on two nodes of the cluster)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM emb").fetchone() == (workers * rounds * 50 + rounds * 50,)
    cache = EmbeddingCache(path, dim)
    try:
        for r in range(rounds):
            got = cache.get([EmbeddingCache.key(f"shared-{r}-{i}") for i in range(50)])
            assert len(got) == 50 and all(np.array_equal(v, np.arange(dim, dtype=np.float32) + r) for v in got.values())
    finally:
        cache.close()
