"""The paper's study as a grid: approach x synthetic quantity x real-mix size x seed.

For each (approach, seed) the corpus is generated **once**, at the largest
quantity, by an injectable ``generate`` callable (by default the
``corpusforge generate`` command run as a subprocess with ``--resume``). Smaller
quantities take a prefix of one fixed, label-interleaved order of that corpus,
so a 50-example cell is a subset of the 100-example cell of the same seed.

Every cell then trains a head on embeddings of (first ``q`` synthetic + ``r``
real train examples) and scores it on the real test split. Real-only baselines
(``r`` real examples alone, and the full real train split) are the reference
lines. Results go to ``DIR/results.json`` after every cell, so an interrupted
run resumes where it stopped; ``DIR/results.md`` and the PNG plots are redrawn
at the end (see :mod:`evaluators.report`).

Grid file (YAML)::

    task: bbc-news                 # a task name known to engine.tasks
    approaches: [zero-shot, one-shot, few-shot, topic]   # passed as --strategy
    quantities: [50, 100, 200]     # synthetic examples per cell
    real_mix: [0, 100]             # real train examples mixed in (0 = synthetic only)
    seeds: [0, 1, 2]
    baselines: true                # real-only at each real_mix size > 0, and the full real train split
    quality: true                  # quality metrics of each approach's corpus
    head: {kind: logreg, class_weight: balanced}   # passed to train_head; omitted = its defaults
    real: {train: path, test: path, max_test: 2000}  # optional: files instead of the task's packaged data
    generate_args: ["--concurrency", "4"]          # extra flags for every generate run
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import ConfigError, DataError

from .quality import Embed, FloatArray, corpus_quality
from .report import REAL_FULL, REAL_ONLY, read_json, write_experiment_reports, write_json

__all__ = [
    "CachedEmbedder",
    "Cell",
    "GenerateJob",
    "Generator",
    "Grid",
    "RealData",
    "cells_for",
    "interleave_by_label",
    "load_grid",
    "read_generated",
    "run_experiment",
    "subprocess_generator",
]

RESULTS_VERSION = 1
BASELINE_REAL_ONLY = REAL_ONLY
BASELINE_REAL_FULL = REAL_FULL

Progress = Callable[[str], None]
#: ``split -> (texts, labels)`` for the real data; splits asked for are ``train`` and ``test``.
RealData = Callable[[str], tuple[list[str], list[str]]]
#: ``(X, labels, seed) -> head`` with ``.predict(X)``; the default wraps ``evaluators.head.train_head``.
Train = Callable[[FloatArray, Sequence[str], int], Any]


# -- the grid ---------------------------------------------------------------------------------------------------


def _ints(name: str, value: Any, *, minimum: int) -> tuple[int, ...]:
    values = value if isinstance(value, list | tuple) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
        raise ConfigError(f"grid: {name} must be a list of integers >= {minimum}, got {value!r}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True, kw_only=True)
class Grid:
    """One experiment: what to generate, how to mix it, how to score it."""

    task: str
    quantities: tuple[int, ...]
    approaches: tuple[str, ...] = ("zero-shot", "one-shot", "few-shot", "topic")
    real_mix: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    baselines: bool = True
    quality: bool = True
    head: dict[str, Any] = field(default_factory=dict)
    real_train: str | None = None
    real_test: str | None = None
    max_test: int | None = None
    generate_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.task:
            raise ConfigError("grid: no task given", hint="add `task: NAME` to the grid file")
        if not self.approaches or len(set(self.approaches)) != len(self.approaches):
            raise ConfigError(f"grid: approaches must be a non-empty list of distinct names, got {self.approaches}")
        if set(self.approaches) & {BASELINE_REAL_ONLY, BASELINE_REAL_FULL}:
            raise ConfigError(f"grid: {BASELINE_REAL_ONLY!r}/{BASELINE_REAL_FULL!r} are reserved for baselines")
        if self.max_test is not None and self.max_test < 1:
            raise ConfigError(f"grid: real.max_test must be >= 1, got {self.max_test}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        known = {"task", "approaches", "quantities", "real_mix", "seeds", "baselines", "quality", "head", "real"}
        known |= {"generate_args"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"grid: unknown keys {unknown}", hint=f"known keys: {sorted(known)}")
        if "quantities" not in d:
            raise ConfigError("grid: no quantities given", hint="add e.g. `quantities: [50, 100, 200]`")
        real = d.get("real") or {}
        if not isinstance(real, dict) or set(real) - {"train", "test", "max_test"}:
            raise ConfigError(f"grid: real must be a mapping with train/test/max_test, got {real!r}")
        head = d.get("head") or {}
        if not isinstance(head, dict):
            raise ConfigError(f"grid: head must be a mapping (kind, class_weight), got {head!r}")
        approaches = d.get("approaches", cls.approaches)
        return cls(
            task=str(d.get("task") or ""),
            approaches=tuple(str(a) for a in (approaches if isinstance(approaches, list | tuple) else [approaches])),
            quantities=_ints("quantities", d["quantities"], minimum=1),
            real_mix=_ints("real_mix", d.get("real_mix", [0]), minimum=0),
            seeds=_ints("seeds", d.get("seeds", [0]), minimum=0),
            baselines=bool(d.get("baselines", True)),
            quality=bool(d.get("quality", True)),
            head=dict(head),
            real_train=real.get("train"),
            real_test=real.get("test"),
            max_test=real.get("max_test"),
            generate_args=tuple(str(a) for a in d.get("generate_args") or ()),
        )

    def fingerprint(self) -> dict[str, Any]:
        """What makes a stored cell's score comparable: a resumed run must match it."""
        return {
            "task": self.task,
            "head": self.head,
            "real_train": self.real_train,
            "real_test": self.real_test,
            "max_test": self.max_test,
        }


def load_grid(path: str | Path) -> Grid:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"grid file {path} not found", hint="see examples/grids/ for examples") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"grid file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"grid file {path} must hold a mapping", hint="see examples/grids/bbc-small.yaml")
    return Grid.from_dict(data)


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One trained-and-scored model: ``quantity`` synthetic examples of ``approach`` plus ``real_n`` real ones."""

    approach: str
    quantity: int
    real_n: int
    seed: int

    @property
    def key(self) -> str:
        if self.approach == BASELINE_REAL_FULL:
            return f"{self.approach}/seed{self.seed}"
        return f"{self.approach}/syn{self.quantity}/real{self.real_n}/seed{self.seed}"


def cells_for(grid: Grid) -> list[Cell]:
    """Every cell of the grid, synthetic ones first, in the order they run."""
    cells = [
        Cell(approach=a, quantity=q, real_n=r, seed=s)
        for a in grid.approaches
        for s in grid.seeds
        for r in grid.real_mix
        for q in grid.quantities
    ]
    if grid.baselines:
        cells += [
            Cell(approach=BASELINE_REAL_ONLY, quantity=0, real_n=r, seed=s)
            for s in grid.seeds
            for r in grid.real_mix
            if r > 0
        ]
        cells += [Cell(approach=BASELINE_REAL_FULL, quantity=0, real_n=-1, seed=s) for s in grid.seeds]
    return cells


# -- generation -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GenerateJob:
    """Generate ``n`` examples of ``task`` with ``strategy`` into ``out/data.jsonl``."""

    task: str
    strategy: str
    n: int
    seed: int
    out: Path


Generator = Callable[[GenerateJob], None]


def subprocess_generator(
    *,
    base_url: str | None = None,
    model: str | None = None,
    local: bool = False,
    extra_args: Sequence[str] = (),
    python: str = sys.executable,
) -> Generator:
    """A :data:`Generator` that runs ``python -m engine generate`` (output goes straight to this terminal)."""
    if not local and not (base_url and model):
        raise ConfigError("no provider for generation", hint="pass --base-url URL --model NAME, or --local")

    def generate(job: GenerateJob) -> None:
        cmd = [python, "-m", "engine", "generate", job.task, "--strategy", job.strategy]
        cmd += ["--n", str(job.n), "--out", str(job.out), "--seed", str(job.seed)]
        cmd += ["--provider", "local"] if local else ["--base-url", str(base_url), "--model", str(model)]
        if (job.out / "data.jsonl").exists():
            cmd.append("--resume")
        cmd += list(extra_args)
        code = subprocess.call(cmd)
        if code != 0:
            raise DataError(
                f"`corpusforge generate` failed for {job.strategy} seed {job.seed} (exit {code})",
                hint="see its message above; rerun the experiment to resume",
            )

    return generate


# -- data -------------------------------------------------------------------------------------------------------


def read_generated(path: Path, fields: Sequence[str] = ("text",)) -> tuple[list[str], list[str]]:
    """Texts and labels of a generated ``data.jsonl``, in file order; pair fields joined as the encoder joins them."""
    import json

    from .encoder import join_fields

    texts: list[str] = []
    labels: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if not line.endswith("\n"):
                    break  # a torn last line from a killed run; the generate command's --resume repairs it
                raise DataError(f"{path}:{lineno} is not valid JSON") from None
            present = {f: str(rec[f]) for f in fields if f in rec}
            if not present or "label" not in rec:
                raise DataError(f"{path}:{lineno} lacks a label or the fields {list(fields)}")
            texts.append(join_fields(present))
            labels.append(str(rec["label"]))
    return texts, labels


def _read_file(path: Path) -> tuple[list[str], list[str]]:
    from .data import load_records, texts_and_labels  # type: ignore[import-not-found,unused-ignore]

    texts, labels = texts_and_labels(load_records(path))
    return [str(t) for t in texts], [str(y) for y in labels]


def task_real_data(grid: Grid) -> RealData:
    """Real data from the grid's files if given, else the task's packaged splits."""

    def load(split: str) -> tuple[list[str], list[str]]:
        path = grid.real_train if split == "train" else grid.real_test
        if path:
            return _read_file(Path(path))
        from engine.tasks import load_real, load_task

        from .encoder import join_fields

        examples = load_real(load_task(grid.task), split)
        return [join_fields(e.fields) for e in examples], [e.label for e in examples]

    return load


def _task_info(task: str) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """The task's input fields and labels; ``(("text",), None)`` for a task ``engine.tasks`` does not know."""
    from engine.errors import EngineError
    from engine.tasks import load_task

    try:
        t = load_task(task)
    except EngineError:
        return ("text",), None
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


class CachedEmbedder:
    """Wraps an :data:`Embed` with a per-text cache, optionally kept in a ``.npz`` file across runs."""

    def __init__(self, embed: Embed, path: Path | None = None) -> None:
        self._embed = embed
        self._path = path
        self._cache: dict[bytes, npt.NDArray[np.float32]] = {}
        if path is not None and path.exists():
            with np.load(path) as data:
                self._cache = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
        self.computed = 0

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha1(text.encode("utf-8")).digest()

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        keys = [self._key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            first = {k: t for k, t in zip(keys, texts, strict=True) if k in set(missing)}
            vectors = np.asarray(self._embed([first[k] for k in missing]), dtype=np.float32)
            self._cache.update(zip(missing, vectors, strict=True))
            self.computed += len(missing)
            self.save()
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])

    def save(self) -> None:
        if self._path is None or not self._cache:
            return
        tmp = self._path.with_name(f".{self._path.name}.tmp.npz")
        keys = np.array(list(self._cache), dtype="S20")
        np.savez(tmp, keys=keys, vectors=np.stack(list(self._cache.values())))
        os.replace(tmp, self._path)


# -- scoring ----------------------------------------------------------------------------------------------------


def _default_train(grid: Grid) -> Train:
    def train(X: FloatArray, labels: Sequence[str], seed: int) -> Any:
        from .head import train_head

        return train_head(X, list(labels), seed=seed, **grid.head)

    return train


def _score(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    from .metrics import accuracy, macro_f1

    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred, sorted(set(y_true)))}


class _Run:
    """The state of one ``run_experiment`` call; one method per step."""

    def __init__(
        self,
        grid: Grid,
        out: Path,
        *,
        generate: Generator,
        embed: Embed,
        real_data: RealData,
        train: Train,
        progress: Progress,
    ) -> None:
        self.grid, self.out, self.generate, self.train, self.say = grid, out, generate, train, progress
        self.embed = CachedEmbedder(embed, out / "embeddings.npz")
        self.results_path = out / "results.json"
        self.results = self._load_results()
        self.say(f"loading real data for {grid.task}")
        self.train_texts, self.train_labels = real_data("train")
        test_texts, test_labels = real_data("test")
        if not self.train_texts or not test_texts:
            raise DataError(f"no real train or test data for task {grid.task!r}", hint="set real.train/real.test")
        keep = range(len(test_texts))
        if grid.max_test is not None and len(test_texts) > grid.max_test:
            keep = np.sort(np.random.default_rng(0).choice(len(test_texts), grid.max_test, replace=False)).tolist()
        self.test_texts = [test_texts[i] for i in keep]
        self.test_labels = [test_labels[i] for i in keep]
        self._test_emb: FloatArray | None = None
        self.fields, self.classes = _task_info(grid.task)

    def _load_results(self) -> dict[str, Any]:
        fresh = {
            "version": RESULTS_VERSION,
            "grid": asdict(self.grid),
            "fingerprint": self.grid.fingerprint(),
            "cells": {},
            "quality": {},
            "corpora": {},
        }
        if not self.results_path.exists():
            return fresh
        old: dict[str, Any] = read_json(self.results_path)
        if old.get("fingerprint") != self.grid.fingerprint():
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

    def corpus(self, approach: str, seed: int) -> tuple[list[str], list[str]]:
        n = max(self.grid.quantities)
        run_dir = self.out / "data" / approach / f"seed{seed}"
        data = run_dir / "data.jsonl"
        texts, labels = read_generated(data, self.fields) if data.exists() else ([], [])
        if len(texts) < n:
            self.say(f"generating {n} {approach} examples (seed {seed}) into {run_dir}")
            run_dir.mkdir(parents=True, exist_ok=True)
            self.generate(GenerateJob(task=self.grid.task, strategy=approach, n=n, seed=seed, out=run_dir))
            if not data.exists():
                raise DataError(f"generation wrote no {data}", hint="check the generate command's output above")
            texts, labels = read_generated(data, self.fields)
        order = interleave_by_label(labels, seed)
        self.results["corpora"][f"{approach}/seed{seed}"] = {"dir": str(run_dir), "n": len(texts)}
        return [texts[i] for i in order], [labels[i] for i in order]

    def score_cell(self, cell: Cell, syn: tuple[list[str], list[str]]) -> dict[str, Any]:
        syn_texts, syn_labels = syn[0][: cell.quantity], syn[1][: cell.quantity]
        real_idx = self.real_prefix(len(self.train_texts) if cell.real_n < 0 else cell.real_n, cell.seed)
        texts = syn_texts + [self.train_texts[i] for i in real_idx]
        labels = syn_labels + [self.train_labels[i] for i in real_idx]
        row: dict[str, Any] = asdict(cell) | {"n_synthetic": len(syn_texts), "n_real": len(real_idx)}
        row["short"] = len(syn_texts) < cell.quantity
        if len(set(labels)) < 2:
            return row | {"accuracy": None, "macro_f1": None, "error": "fewer than 2 classes to train on"}
        head = self.train(self.embed(texts), labels, cell.seed)
        pred = [str(p) for p in head.predict(self.test_emb)]
        return row | _score(self.test_labels, pred)

    def quality(self, approach: str, seed: int, syn: tuple[list[str], list[str]]) -> dict[str, Any]:
        self.say(f"quality metrics for {approach} (seed {seed})")
        return corpus_quality(
            syn[0],
            syn[1],
            embed=self.embed,
            real_texts=self.train_texts,
            real_labels=self.train_labels,
            seed=seed,
            classes=self.classes,
            train=self.train,
        )

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
                    self.results["cells"][cell.key] = row = self.score_cell(cell, syn)
                    self.save()
                    self.say(f"[{count}/{len(cells)}] {cell.key}: {_brief(row)}")
                if want_quality:
                    self.results["quality"][qkey] = self.quality(approach, seed, syn)
                    self.save()
        for cell in todo:
            if cell.approach in (BASELINE_REAL_ONLY, BASELINE_REAL_FULL):
                count += 1
                self.results["cells"][cell.key] = row = self.score_cell(cell, ([], []))
                self.save()
                self.say(f"[{count}/{len(cells)}] {cell.key}: {_brief(row)}")
        self.save()
        return self.results


def _brief(row: dict[str, Any]) -> str:
    if row.get("accuracy") is None:
        return str(row.get("error", "no score"))
    return (
        f"accuracy {row['accuracy']:.3f}, macro-F1 {row['macro_f1']:.3f} (train {row['n_synthetic']}+{row['n_real']})"
    )


def run_experiment(
    grid: Grid,
    out: str | Path,
    *,
    generate: Generator,
    embed: Embed,
    real_data: RealData | None = None,
    train: Train | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of ``grid`` into ``out``; write results.json, results.md and plots; return results.

    ``generate`` writes ``job.out/data.jsonl``; ``embed`` maps texts to an
    ``(n, d)`` array; ``real_data`` and ``train`` default to the task's packaged
    data and ``evaluators.head.train_head``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(
        grid,
        out,
        generate=generate,
        embed=embed,
        real_data=real_data or task_real_data(grid),
        train=train or _default_train(grid),
        progress=progress or (lambda _msg: None),
    )
    results = run.run()
    write_experiment_reports(results, out)
    return results
