"""The experiment's grid: approach x synthetic quantity x real-mix size x seed, read from a YAML file.

Grid file (YAML)::

    task: bbc-news                 # a task name known to engine.tasks
    approaches: [zero-shot, one-shot, few-shot, topic]   # passed as --strategy
    quantities: [50, 100, 200]     # synthetic examples per cell
    real_mix: [0, 100]             # real train examples mixed in (0 = synthetic only)
    seeds: [0, 1, 2]
    baselines: true                # real-only at each real_mix size > 0, and the full real train split
    quality: true                  # quality metrics of each approach's corpus
    head: {kind: logreg, class_weight: balanced, C: 1.0}   # omitted: logreg, no class weights, C by CV
    real: {train: path, test: path, max_test: 2000}  # optional: files instead of the task's packaged data
    generate_args: ["--concurrency", "4"]          # extra flags for every generate run
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

from .report import REAL_FULL, REAL_ONLY

__all__ = [
    "BASELINE_REAL_FULL",
    "BASELINE_REAL_ONLY",
    "Cell",
    "GenerateFn",
    "GenerateJob",
    "Grid",
    "cells_for",
    "load_grid",
]

BASELINE_REAL_ONLY = REAL_ONLY
BASELINE_REAL_FULL = REAL_FULL
HEAD_KEYS = frozenset({"kind", "class_weight", "C"})


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
        unknown = sorted(set(self.head) - HEAD_KEYS)
        if unknown:
            raise ConfigError(f"grid: unknown head keys {unknown}", hint=f"known: {sorted(HEAD_KEYS)}")

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
            raise ConfigError(f"grid: head must be a mapping (kind, class_weight, C), got {head!r}")
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


@dataclass(frozen=True, kw_only=True)
class GenerateJob:
    """Generate ``n`` examples of ``task`` with ``strategy`` into ``out/data.jsonl`` (resuming what is there)."""

    task: str
    strategy: str
    n: int
    seed: int
    out: Path
    extra_args: tuple[str, ...] = ()


#: Runs one :class:`GenerateJob`; the command layer supplies it (evaluators never drive the network).
GenerateFn = Callable[[GenerateJob], None]
