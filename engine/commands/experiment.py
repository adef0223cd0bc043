"""``corpusforge experiment``: the paper's study (approach x quantity x real mix x seed) from a grid file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .eval import (
    add_clean_prior_arguments,
    add_head_arguments,
    add_ray_arguments,
    check_ray_arguments,
    connect_ray,
    eval_config,
    ray_encoder,
)

NAME = "experiment"
HELP = "run a grid of generate + train + score cells and report accuracy against data quantity"
DESCRIPTION = """\
Reproduce Li et al. (2024)'s study on one task. For each approach and seed in
GRID.yaml the corpus is generated once (`corpusforge generate`, in this process,
resumable) at the largest quantity; every cell trains a head on the first N
synthetic examples plus R real ones and scores it on the real test split, next
to real-only and majority-class baselines. The head's C is chosen by
cross-validation on each cell's training data unless --C or the grid's head.C
fixes it. Writes OUT/results.json (after every cell: rerun the same command to
resume), OUT/results.md and one accuracy plot per real-mix size
(OUT/accuracy_realR.png). See examples/grids/ for the grid format.

With --ray [ADDRESS] the texts the embedding cache lacks are embedded on a Ray
cluster (an actor pool, one encoder per actor; see `corpusforge eval --help`);
generation and the heads run here."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from evaluators.encoder import DEFAULT_VARIANT, VARIANT_HELP, VARIANTS  # light: numpy only

    p.add_argument("grid", metavar="GRID.yaml", type=Path, help="grid file (see examples/grids/)")
    p.add_argument("--out", type=Path, help="output directory (default: runs/experiment-<grid name>)")
    g = p.add_argument_group("provider (used by the generate step)")
    g.add_argument("--base-url", help="OpenAI-style base URL ending in /v1")
    g.add_argument("--model", help="model name (required with --base-url)")
    g.add_argument("--local", action="store_true", help="use the packaged local model (the default without --base-url)")
    p.add_argument("--variant", choices=VARIANTS, default=DEFAULT_VARIANT, help=VARIANT_HELP)
    add_head_arguments(p)
    add_clean_prior_arguments(p)
    add_ray_arguments(p)
    # the grid's head mapping is the default; flags given on the command line override it
    p.set_defaults(class_weight=None)


def in_process_generate(*, base_url: str | None, model: str | None) -> Any:
    """A ``GenerateFn`` running ``corpusforge generate`` in this process (same flags, same resume contract)."""
    from evaluators.grid import GenerateJob

    from . import generate as generate_command

    parser = argparse.ArgumentParser(prog="corpusforge generate", add_help=False, exit_on_error=False)
    generate_command.add_arguments(parser)
    provider = ["--base-url", base_url, "--model", model] if base_url and model else ["--provider", "local"]

    def generate(job: GenerateJob) -> None:
        argv = [job.task, "--strategy", job.strategy, "--n", str(job.n), "--out", str(job.out)]
        argv += ["--seed", str(job.seed), *provider, "--no-progress"]
        if (job.out / "manifest.json").exists():
            argv.append("--resume")
        argv += list(job.extra_args)
        try:
            args = parser.parse_args(argv)
        except (argparse.ArgumentError, SystemExit) as exc:
            raise ConfigError(
                f"grid: generate_args {list(job.extra_args)} are not `corpusforge generate` flags ({exc})",
                hint="see `corpusforge generate --help`",
            ) from None
        if generate_command.run(args) != 0:
            raise DataError(
                f"generation stopped before {job.n} {job.strategy} examples (seed {job.seed})",
                hint="see its summary above; rerun the experiment to resume",
            )

    return generate


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evaluators.embed_ray import RayEncoder  # light: no ray until a pass runs
    from evaluators.encoder import Encoder
    from evaluators.experiment import eval_config_for, load_grid, run_experiment

    if args.local and args.base_url:
        raise ConfigError("--local and --base-url exclude each other", hint="pass one of them")
    if args.base_url and not args.model:
        raise ConfigError("--base-url needs --model", hint="pass --model NAME")
    check_ray_arguments(args)
    grid = load_grid(args.grid)
    out = args.out or Path("runs") / f"experiment-{args.grid.stem}"
    args.seed = 0  # every cell uses its own seed
    flags = eval_config(args, labels=_task_labels(grid.task))
    overrides: dict[str, Any] = {
        "clean": flags.clean,
        "prior": flags.prior,
        "prior_source": flags.prior_source,
        "prior_em": flags.prior_em,
    }
    if args.class_weight is not None:
        overrides["class_weight"] = flags.class_weight
    if args.C is not None:
        overrides["C"] = args.C
    config = eval_config_for(grid, **overrides)
    generate = in_process_generate(base_url=args.base_url, model=args.model)
    console = Console(highlight=False)
    started = time.monotonic()

    def progress(message: str) -> None:
        elapsed = int(time.monotonic() - started)
        console.print(f"[dim]{elapsed // 60:3d}:{elapsed % 60:02d}[/dim] {message}")

    progress(f"experiment {args.grid} -> {out}")
    if args.ray is not None:
        connect_ray(args)
    encoder = Encoder.load(variant=args.variant)
    if args.ray is not None:
        encoder = ray_encoder(args, encoder)
    try:
        run_experiment(
            grid,
            out,
            generate=generate,
            embed=lambda texts: encoder.embed(list(texts)),
            config=config,
            progress=progress,
        )
    finally:
        encoder.close()
    if isinstance(encoder, RayEncoder):
        stats = encoder.stats
        progress(f"embedded {stats.embedded} texts on Ray in {stats.passes} pass(es) of {stats.actors} actor(s)")
    progress(f"done: {out / 'results.md'}, {out / 'results.json'} and plots in {out}")
    return 0


def _task_labels(task: str) -> list[str]:
    from ..errors import EngineError
    from ..tasks import load_task

    try:
        return list(load_task(task).labels)
    except EngineError:
        return []
