"""The paper's study run as a grid (see :mod:`evaluators.grid`): generate once per approach and seed, score every cell.

For each (approach, seed) the corpus is generated **once**, at the largest
quantity, by the ``generate`` function the caller passes in (the command layer
runs ``corpusforge generate`` in-process; evaluators never drive the network).
Smaller quantities take a prefix of one fixed, label-interleaved order of that
corpus, so a 50-example cell is a subset of the 100-example cell of the same seed.

Every cell then goes through the evaluation service (:func:`evaluators.evaluate.evaluate`):
a head on embeddings of (first ``q`` synthetic + ``r`` real train examples),
cleaned and prior-corrected if the :class:`~evaluators.evaluate.EvalConfig`
asks, scored on the real test split. Real-only baselines (``r`` real examples
alone, and the full real train split) are the reference lines, with the
majority-class baseline. Results go to ``DIR/results.json`` after every cell, so
an interrupted run resumes where it stopped; ``DIR/results.md`` and the PNG
plots are redrawn at the end (see :mod:`evaluators.report`). Embeddings are
cached by the encoder's own cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError, DataError

from .evaluate import EvalConfig, evaluate
from .grid import (
    BASELINE_REAL_FULL,
    BASELINE_REAL_ONLY,
    Cell,
    GenerateFn,
    GenerateJob,
    Grid,
    cells_for,
    load_grid,
)
from .quality import Embed, FloatArray, corpus_quality
from .report import read_json, write_experiment_reports, write_json

__all__ = [
    "Cell",
    "GenerateFn",
    "GenerateJob",
    "Grid",
    "RealData",
    "cells_for",
    "eval_config_for",
    "interleave_by_label",
    "load_grid",
    "run_experiment",
]

RESULTS_VERSION = 2

Progress = Callable[[str], None]
#: ``split -> (texts, labels)`` for the real data; splits asked for are ``train`` and ``test``.
RealData = Callable[[str], tuple[list[str], list[str]]]


def eval_config_for(grid: Grid, **overrides: Any) -> EvalConfig:
    """The grid's ``head`` mapping (kind, class_weight, C) as an ``EvalConfig``; ``overrides`` win."""
    base: dict[str, Any] = {"head": grid.head.get("kind", "logreg")}
    if "class_weight" in grid.head:
        base["class_weight"] = grid.head["class_weight"]
    if "C" in grid.head:
        base["C"] = float(grid.head["C"])
    return EvalConfig(**(base | overrides))


def task_real_data(grid: Grid) -> RealData:
    """Real data from the grid's files if given, else the task's packaged splits."""

    def load(split: str) -> tuple[list[str], list[str]]:
        from .data import load_input, texts_and_labels

        path = grid.real_train if split == "train" else grid.real_test
        return texts_and_labels(load_input(path or grid.task, split))

    return load


def _task_info(task: str) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """The task's input fields and labels; ``(None, None)`` for a task ``engine.tasks`` does not know."""
    from engine.errors import EngineError
    from engine.tasks import load_task

    try:
        t = load_task(task)
    except EngineError:
        return None, None
    return tuple(t.fields), tuple(t.labels)


def interleave_by_label(labels: Sequence[str], seed: int) -> list[int]:
    """A fixed order of indices: shuffled within each label (seeded), then one label at a time, round robin.

    Any prefix of it is as balanced as the corpus allows, and shorter prefixes
    are subsets of longer ones: what lets quantities share one generated corpus.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        groups.setdefault(y, []).append(i)
    queues = [list(rng.permutation(groups[y])) for y in sorted(groups)]
    order: list[int] = []
    depth = max((len(q) for q in queues), default=0)
    for d in range(depth):
        order.extend(int(q[d]) for q in queues if d < len(q))
    return order


def _row_scores(report: dict[str, Any]) -> dict[str, Any]:
    """What a results.json cell keeps of an evaluation report."""
    choices = report["head_choices"]
    row: dict[str, Any] = {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "head": {k: choices[k] for k in ("kind", "class_weight", "C") if k in choices},
    }
    if "cleaning" in report:
        row["cleaning"] = {k: report["cleaning"][k] for k in ("kept", "dropped", "label_fidelity_before")}
    for name, corrected in (report.get("prior_corrected") or {}).items():
        row[f"prior_{name}"] = {"accuracy": corrected["accuracy"], "macro_f1": corrected["macro_f1"]}
    return row


class _Run:
    """The state of one ``run_experiment`` call; one method per step."""

    def __init__(
        self,
        grid: Grid,
        out: Path,
        *,
        generate: GenerateFn,
        embed: Embed,
        real_data: RealData,
        config: EvalConfig,
        progress: Progress,
    ) -> None:
        self.grid, self.out, self.generate, self.embed, self.config, self.say = (
            grid,
            out,
            generate,
            embed,
            config,
            progress,
        )
        self.results_path = out / "results.json"
        self.results = self._load_results()
        self.say(f"loading real data for {grid.task}")
        self.train_texts, self.train_labels = real_data("train")
        test_texts, test_labels = real_data("test")
        if not self.train_texts or not test_texts:
            raise DataError(f"no real train or test data for task {grid.task!r}", hint="set real.train/real.test")
        keep: list[int] = list(range(len(test_texts)))
        if grid.max_test is not None and len(test_texts) > grid.max_test:
            from sklearn.model_selection import train_test_split

            # a stratified sample keeps the test set's label mix (and so the majority baseline)
            keep = sorted(
                train_test_split(
                    np.arange(len(test_texts)), train_size=grid.max_test, stratify=test_labels, random_state=0
                )[0].tolist()
            )
        self.test_texts = [test_texts[i] for i in keep]
        self.test_labels = [test_labels[i] for i in keep]
        self._test_emb: FloatArray | None = None
        self.fields, self.classes = _task_info(grid.task)

    def _fingerprint(self) -> dict[str, Any]:
        return self.grid.fingerprint() | {"eval": self.config.fingerprint()}

    def _load_results(self) -> dict[str, Any]:
        fresh = {
            "version": RESULTS_VERSION,
            "grid": asdict(self.grid),
            "eval": self.config.fingerprint(),
            "fingerprint": self._fingerprint(),
            "cells": {},
            "quality": {},
            "corpora": {},
        }
        if not self.results_path.exists():
            return fresh
        old: dict[str, Any] = read_json(self.results_path)
        if old.get("fingerprint") != self._fingerprint():
            raise ConfigError(
                f"{self.results_path} was made with different settings ({old.get('fingerprint')})",
                hint="use another --out directory, or delete that results.json to start over",
            )
        for key in ("cells", "quality", "corpora"):
            fresh[key] = old.get(key, {})
        return fresh

    def save(self) -> None:
        write_json(self.results_path, self.results)

    @property
    def test_emb(self) -> FloatArray:
        if self._test_emb is None:
            self.say(f"embedding {len(self.test_texts)} real test examples")
            self._test_emb = self.embed(self.test_texts)
        return self._test_emb

    def real_prefix(self, n: int, seed: int) -> list[int]:
        """The first ``n`` of a seeded permutation of the real train split (nested across ``n``)."""
        order = np.random.default_rng(seed).permutation(len(self.train_texts))
        return [int(i) for i in order[: max(0, n)]]

    def _read_corpus(self, data: Path) -> tuple[list[str], list[str]]:
        from .data import load_records, texts_and_labels

        return texts_and_labels(load_records(data), self.fields)

    def corpus(self, approach: str, seed: int) -> tuple[list[str], list[str]]:
        n = max(self.grid.quantities)
        run_dir = self.out / "data" / approach / f"seed{seed}"
        data = run_dir / "data.jsonl"
        texts, labels = self._read_corpus(run_dir) if data.exists() else ([], [])
        if len(texts) < n:
            self.say(f"generating {n} {approach} examples (seed {seed}) into {run_dir}")
            run_dir.mkdir(parents=True, exist_ok=True)
            job = GenerateJob(
                task=self.grid.task, strategy=approach, n=n, seed=seed, out=run_dir, extra_args=self.grid.generate_args
            )
            self.generate(job)
            if not data.exists():
                raise DataError(f"generation wrote no {data}", hint="check the generate command's output above")
            texts, labels = self._read_corpus(run_dir)
        order = interleave_by_label(labels, seed)
        self.results["corpora"][f"{approach}/seed{seed}"] = {"dir": str(run_dir), "n": len(texts)}
        return [texts[i] for i in order], [labels[i] for i in order]

    def score_cell(self, cell: Cell, syn: tuple[list[str], list[str]]) -> dict[str, Any]:
        syn_texts, syn_labels = syn[0][: cell.quantity], syn[1][: cell.quantity]
        real_idx = self.real_prefix(len(self.train_texts) if cell.real_n < 0 else cell.real_n, cell.seed)
        real_texts = [self.train_texts[i] for i in real_idx]
        real_labels = [self.train_labels[i] for i in real_idx]
        row: dict[str, Any] = asdict(cell) | {"n_synthetic": len(syn_texts), "n_real": len(real_idx)}
        row["short"] = len(syn_texts) < cell.quantity
        if len(set(syn_labels + real_labels)) < 2:
            return row | {"accuracy": None, "macro_f1": None, "error": "fewer than 2 classes to train on"}
        test_emb = self.test_emb
        X_syn = self.embed(syn_texts) if syn_texts else np.zeros((0, test_emb.shape[1]), dtype=np.float32)
        X_real = self.embed(real_texts) if real_texts else None
        report, _ = evaluate(
            X_syn,
            syn_labels,
            test_emb,
            self.test_labels,
            replace(self.config, seed=cell.seed),
            X_real=X_real,
            real_labels=real_labels,
        )
        self.results.setdefault("majority_baseline", report["majority_baseline"])
        return row | _row_scores(report)

    def quality(self, approach: str, seed: int, syn: tuple[list[str], list[str]]) -> dict[str, Any]:
        from .head import train_head

        self.say(f"quality metrics for {approach} (seed {seed})")
        config = self.config

        def train(X: FloatArray, labels: Sequence[str], seed: int) -> Any:
            return train_head(
                X, list(labels), kind=config.head, class_weight=config.class_weight, C=config.C, seed=seed
            )

        return corpus_quality(
            syn[0],
            syn[1],
            embed=self.embed,
            real_texts=self.train_texts,
            real_labels=self.train_labels,
            seed=seed,
            classes=self.classes,
            train=train,
        )

    def _record(self, cell: Cell, row: dict[str, Any], count: int, total: int) -> None:
        self.results["cells"][cell.key] = row
        self.save()
        self.say(f"[{count}/{total}] {cell.key}: {_brief(row)}")

    def run(self) -> dict[str, Any]:
        cells = cells_for(self.grid)
        done = self.results["cells"]
        todo = [c for c in cells if c.key not in done]
        self.say(f"{len(cells)} cells, {len(cells) - len(todo)} already done")
        count = len(cells) - len(todo)
        for approach in self.grid.approaches:
            for seed in self.grid.seeds:
                pending = [c for c in todo if c.approach == approach and c.seed == seed]
                qkey = f"{approach}/seed{seed}"
                want_quality = self.grid.quality and qkey not in self.results["quality"]
                if not pending and not want_quality:
                    continue
                syn = self.corpus(approach, seed)
                for cell in pending:
                    count += 1
                    self._record(cell, self.score_cell(cell, syn), count, len(cells))
                if want_quality:
                    self.results["quality"][qkey] = self.quality(approach, seed, syn)
                    self.save()
        for cell in todo:
            if cell.approach in (BASELINE_REAL_ONLY, BASELINE_REAL_FULL):
                count += 1
                self._record(cell, self.score_cell(cell, ([], [])), count, len(cells))
        self.save()
        return self.results


def _brief(row: dict[str, Any]) -> str:
    if row.get("accuracy") is None:
        return str(row.get("error", "no score"))
    text = f"accuracy {row['accuracy']:.3f}, macro-F1 {row['macro_f1']:.3f} (train {row['n_synthetic']}+{row['n_real']}"
    if "cleaning" in row:
        text += f", {row['cleaning']['dropped']} dropped by cleaning"
    return text + ")"


def run_experiment(
    grid: Grid,
    out: str | Path,
    *,
    generate: GenerateFn,
    embed: Embed,
    real_data: RealData | None = None,
    config: EvalConfig | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of ``grid`` into ``out``; write results.json, results.md and plots; return results.

    ``generate`` writes ``job.out/data.jsonl``; ``embed`` maps texts to an ``(n, d)`` array; ``real_data``
    defaults to the task's packaged data (or the grid's files) and ``config`` to the grid's head settings.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(
        grid,
        out,
        generate=generate,
        embed=embed,
        real_data=real_data or task_real_data(grid),
        config=config or eval_config_for(grid),
        progress=progress or (lambda _msg: None),
    )
    results = run.run()
    write_experiment_reports(results, out)
    return results
