"""``corpusforge experiment``: the paper's study (approach x quantity x real mix x seed) from a grid file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import ConfigError

NAME = "experiment"
HELP = "run a grid of generate + train + score cells and report accuracy against data quantity"
DESCRIPTION = """\
Reproduce Li et al. (2024)'s study on one task. For each approach and seed in
GRID.yaml the corpus is generated once (`corpusforge generate`, resumable) at the
largest quantity; every cell trains a head on the first N synthetic examples plus
R real ones and scores it on the real test split, next to real-only baselines.
Writes OUT/results.json (after every cell: rerun the same command to resume),
OUT/results.md and one accuracy plot per real-mix size (OUT/accuracy_realR.png).
See examples/grids/ for the grid format."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from evaluators.encoder import DEFAULT_VARIANT, VARIANT_HELP, VARIANTS  # light: numpy only

    p.add_argument("grid", metavar="GRID.yaml", type=Path, help="grid file (see examples/grids/)")
    p.add_argument("--out", type=Path, help="output directory (default: runs/experiment-<grid name>)")
    g = p.add_argument_group("provider (passed to `corpusforge generate`)")
    g.add_argument("--base-url", help="OpenAI-style base URL ending in /v1")
    g.add_argument("--model", help="model name (required with --base-url)")
    g.add_argument("--local", action="store_true", help="use the packaged local model (the default without --base-url)")
    p.add_argument("--variant", choices=VARIANTS, default=DEFAULT_VARIANT, help=VARIANT_HELP)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evaluators.encoder import Encoder
    from evaluators.experiment import load_grid, run_experiment, subprocess_generator

    if args.local and args.base_url:
        raise ConfigError("--local and --base-url exclude each other", hint="pass one of them")
    if args.base_url and not args.model:
        raise ConfigError("--base-url needs --model", hint="pass --model NAME")
    grid = load_grid(args.grid)
    out = args.out or Path("runs") / f"experiment-{args.grid.stem}"
    generate = subprocess_generator(
        base_url=args.base_url, model=args.model, local=not args.base_url, extra_args=grid.generate_args
    )
    console = Console(highlight=False)
    started = time.monotonic()

    def progress(message: str) -> None:
        elapsed = int(time.monotonic() - started)
        console.print(f"[dim]{elapsed // 60:3d}:{elapsed % 60:02d}[/dim] {message}")

    progress(f"experiment {args.grid} -> {out}")
    encoder = Encoder.load(variant=args.variant)
    run_experiment(grid, out, generate=generate, embed=lambda texts: encoder.embed(list(texts)), progress=progress)
    progress(f"done: {out / 'results.md'}, {out / 'results.json'} and plots in {out}")
    return 0
