import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import ConfigError
from evaluators import experiment as ex
from evaluators.report import read_json

LABELS = ["sport", "tech"]
WORDS = {"sport": ["goal", "match", "team", "score"], "tech": ["chip", "software", "robot", "code"]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def hashing_embed(texts: Sequence[str]) -> np.ndarray:
    """Deterministic bag-of-hashed-words embedder, L2-normalised (stands in for the ONNX encoder)."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 256] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    normed: np.ndarray = out / np.maximum(norms, 1e-9)
    return normed


def _text(label: str, i: int, flavour: str) -> str:
    w = WORDS[label]
    return f"{flavour} {w[i % 4]} {w[(i + 1) % 4]} {w[(i + 2) % 4]} item{i}"


class FakeGenerator:
    """Writes ``n`` examples per job as JSONL, alternating labels, and records each job it ran."""

    def __init__(self) -> None:
        self.jobs: list[ex.GenerateJob] = []

    def __call__(self, job: ex.GenerateJob) -> None:
        self.jobs.append(job)
        with open(job.out / "data.jsonl", "w") as fh:
            for i in range(job.n):
                label = LABELS[i % 2]
                row = {"id": f"{job.strategy}-{job.seed}-{i}", "label": label, "text": _text(label, i, job.strategy)}
                fh.write(json.dumps(row) + "\n")


def fake_real(split: str) -> tuple[list[str], list[str]]:
    n = 40 if split == "train" else 20
    labels = [LABELS[i % 2] for i in range(n)]
    return [_text(y, i, f"real{split}") for i, y in enumerate(labels)], labels


GRID: dict[str, Any] = {
    "task": "fake",
    "approaches": ["zero-shot", "few-shot"],
    "quantities": [4, 8],
    "real_mix": [0, 6],
    "seeds": [0, 1],
}


def _run(tmp_path: Path, gen: FakeGenerator, grid: dict[str, Any] = GRID, **kw: Any) -> dict[str, Any]:
    return ex.run_experiment(
        ex.Grid.from_dict(grid),
        tmp_path / "out",
        generate=gen,
        embed=kw.pop("embed", hashing_embed),
        real_data=fake_real,
        **kw,
    )


class CountingEmbed:
    """The hashing embedder, counting the texts it embeds (what a cell that trains must do)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return hashing_embed(texts)


def test_grid_from_yaml_and_validation(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("task: bbc-news\nquantities: [100, 50]\nreal_mix: 0\nhead: {kind: logreg}\n")
    grid = ex.load_grid(path)
    assert grid.quantities == (50, 100) and grid.real_mix == (0,) and grid.seeds == (0,)
    assert grid.approaches == ("zero-shot", "one-shot", "few-shot", "topic")
    assert grid.head == {"kind": "logreg"}
    for bad in ({"task": "t"}, {"task": "t", "quantities": [0]}, {"task": "t", "quantities": [5], "colour": 1}):
        with pytest.raises(ConfigError):
            ex.Grid.from_dict(bad)
    with pytest.raises(ConfigError):
        ex.load_grid(tmp_path / "missing.yaml")


def test_cells_for_counts():
    cells = ex.cells_for(ex.Grid.from_dict(GRID))
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys))
    # 2 approaches x 2 quantities x 2 real-mix x 2 seeds, + real-only (real 6) x 2 seeds, + full real x 2 seeds
    assert len(cells) == 16 + 2 + 2
    assert "zero-shot/syn8/real6/seed1" in keys and "real-only/syn0/real6/seed0" in keys
    assert "real-full/seed1" in keys


def test_interleave_by_label_is_balanced_and_nested():
    labels = ["a"] * 6 + ["b"] * 3 + ["c"] * 1
    order = ex.interleave_by_label(labels, seed=0)
    assert sorted(order) == list(range(10))
    assert sorted(labels[i] for i in order[:3]) == ["a", "b", "c"]
    assert ex.interleave_by_label(labels, seed=0) == order
    assert ex.interleave_by_label(labels, seed=1) != order


def test_end_to_end_then_resume(tmp_path):
    gen = FakeGenerator()
    messages: list[str] = []
    results = _run(tmp_path, gen, progress=messages.append)
    out = tmp_path / "out"

    # generated once per (approach, seed), at the largest quantity
    assert sorted((j.strategy, j.seed, j.n) for j in gen.jobs) == [
        ("few-shot", 0, 8),
        ("few-shot", 1, 8),
        ("zero-shot", 0, 8),
        ("zero-shot", 1, 8),
    ]
    assert all(j.task == "fake" for j in gen.jobs)

    stored = read_json(out / "results.json")
    assert stored["cells"] == json.loads(json.dumps(results["cells"]))
    cells = stored["cells"]
    assert len(cells) == 20
    cell = cells["few-shot/syn4/real6/seed1"]
    assert (cell["n_synthetic"], cell["n_real"], cell["short"]) == (4, 6, False)
    assert 0.0 <= cell["accuracy"] <= 1.0 and 0.0 <= cell["macro_f1"] <= 1.0
    assert cells["zero-shot/syn8/real0/seed0"]["n_real"] == 0
    assert cells["real-full/seed0"]["n_real"] == 40
    assert cells["real-only/syn0/real6/seed1"]["n_synthetic"] == 0
    # the toy task is separable by vocabulary, so every model gets it right
    assert cells["real-full/seed0"]["accuracy"] == 1.0
    assert set(stored["quality"]) == {"zero-shot/seed0", "zero-shot/seed1", "few-shot/seed0", "few-shot/seed1"}
    qual = stored["quality"]["few-shot/seed0"]
    assert qual["n"] == 8 and qual["balance"]["normalized_entropy"] == pytest.approx(1.0)
    assert qual["label_fidelity"]["fidelity"] == 1.0

    md = (out / "results.md").read_text()
    assert "## Synthetic only" in md and "## Synthetic + 6 real" in md
    assert "| zero-shot |" in md and "| few-shot |" in md and "full real train (40)" in md
    assert "## Quality of the generated data" in md
    for r in (0, 6):
        png = out / f"accuracy_real{r}.png"
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert any("[20/20]" in m for m in messages)

    # every cell records the head it trained: C chosen by cross-validation, no class weights
    assert cell["head"]["kind"] == "logreg" and cell["head"]["class_weight"] == "none" and cell["head"]["C"] > 0
    assert stored["majority_baseline"]["accuracy"] == 0.5 and "majority class" in md

    # resume: nothing to do, nothing regenerated, nothing embedded (so no cell retrained)
    gen2 = FakeGenerator()
    embed = CountingEmbed()
    again = _run(tmp_path, gen2, embed=embed)
    assert gen2.jobs == [] and embed.texts == []
    assert again["cells"] == stored["cells"]


def test_resume_runs_only_new_cells(tmp_path):
    gen = FakeGenerator()
    _run(tmp_path, gen, grid=GRID | {"quantities": [4], "real_mix": [0], "quality": False, "baselines": False})
    assert len(read_json(tmp_path / "out" / "results.json")["cells"]) == 4
    assert len(gen.jobs) == 4

    # a bigger quantity needs more data: generate again (the generate command resumes), then score only new cells
    gen2 = FakeGenerator()
    embed = CountingEmbed()
    grid = GRID | {"quantities": [4, 8], "real_mix": [0], "quality": False, "baselines": False}
    results = _run(tmp_path, gen2, grid=grid, embed=embed)
    assert len(results["cells"]) == 8
    # the test split once, then the 8 synthetic examples of each of the 4 new cells
    assert len(embed.texts) == 20 + 4 * 8
    assert [j.n for j in gen2.jobs] == [8, 8, 8, 8]


def test_resume_refuses_different_settings(tmp_path):
    _run(tmp_path, FakeGenerator(), grid=GRID | {"quantities": [4], "quality": False})
    with pytest.raises(ConfigError, match="different settings"):
        _run(tmp_path, FakeGenerator(), grid=GRID | {"quantities": [4], "head": {"class_weight": "balanced"}})


def test_short_generation_is_flagged(tmp_path):
    class Short(FakeGenerator):
        def __call__(self, job: ex.GenerateJob) -> None:
            super().__call__(ex.GenerateJob(task=job.task, strategy=job.strategy, n=5, seed=job.seed, out=job.out))

    grid = {"task": "fake", "approaches": ["topic"], "quantities": [4, 8], "quality": False, "baselines": False}
    cells = _run(tmp_path, Short(), grid=grid)["cells"]
    assert cells["topic/syn8/real0/seed0"]["short"] is True
    assert cells["topic/syn8/real0/seed0"]["n_synthetic"] == 5
    assert cells["topic/syn4/real0/seed0"]["short"] is False


def test_cleaning_and_prior_options_reach_every_cell(tmp_path):
    grid = GRID | {"approaches": ["few-shot"], "real_mix": [6], "seeds": [0], "quality": False, "baselines": False}
    config = ex.eval_config_for(ex.Grid.from_dict(grid), clean=True, prior_em=True, class_weight="balanced")
    results = _run(tmp_path, FakeGenerator(), grid=grid, config=config)
    cell = results["cells"]["few-shot/syn8/real6/seed0"]
    assert cell["head"]["class_weight"] == "balanced"
    assert cell["cleaning"]["kept"] + cell["cleaning"]["dropped"] == 8
    assert 0.0 <= cell["prior_em"]["accuracy"] <= 1.0
    assert results["eval"]["clean"] is True
    assert "## Corrected by the EM estimate" in (tmp_path / "out" / "results.md").read_text()


def test_grid_head_settings_become_the_eval_config():
    grid = ex.Grid.from_dict({"task": "t", "quantities": [5], "head": {"class_weight": "balanced", "C": 2}})
    config = ex.eval_config_for(grid)
    assert (config.head, config.class_weight, config.C) == ("logreg", "balanced", 2.0)
    assert ex.eval_config_for(grid, C=None).C is None
    with pytest.raises(ConfigError, match="head keys"):
        ex.Grid.from_dict({"task": "t", "quantities": [5], "head": {"colour": 1}})


def test_evaluators_never_import_the_network_side():
    import subprocess
    import sys

    code = (
        "import sys, evaluators, evaluators.experiment, evaluators.evaluate, evaluators.clean, evaluators.prior\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp')\n"
        "bad += [n for n in ('subprocess_generator', 'CachedEmbedder') if hasattr(evaluators.experiment, n)]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_command_layer_generates_in_process_and_resumes(tmp_path):
    """`experiment`'s generate function runs `corpusforge generate` in this process against the simulator."""
    from dataclasses import replace

    from engine.commands.experiment import in_process_generate
    from engine.sim import SimConfig, sim_process

    job = ex.GenerateJob(
        task="bbc-news", strategy="zero-shot", n=6, seed=0, out=tmp_path / "run", extra_args=("--concurrency", "2")
    )
    job.out.mkdir()
    with sim_process(SimConfig()) as url:
        generate = in_process_generate(base_url=url, model="sim")
        generate(job)
        assert len((job.out / "data.jsonl").read_text().splitlines()) == 6
        generate(replace(job, n=9))  # the run directory exists: generate resumes it
        assert len((job.out / "data.jsonl").read_text().splitlines()) == 9
        with pytest.raises(ConfigError, match="generate_args"):
            generate(replace(job, n=10, extra_args=("--no-such-flag",)))
