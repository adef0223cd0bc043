"""``corpusforge generate``: generate N labelled examples for a task into a run directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import aio
from ..config import DEFAULT_DEDUP_THRESHOLD, DEFAULT_TEMPERATURE
from ..errors import ConfigError

NAME = "generate"
HELP = "generate labelled examples with an LLM into a run directory"
DESCRIPTION = """\
Generate --n labelled examples for TASK (a built-in task name or a task YAML file)
with an OpenAI-compatible API, balanced across labels, filtering exact and
near-duplicates as they stream, into --out DIR (data.jsonl, rejects.jsonl,
failures.jsonl, stats.json, manifest.json). Without --base-url the packaged local
model (SmolLM2-135M via llama.cpp) is started and used. Rate limits are learned
from the provider's headers when --rpm/--tpm are not given. The API key is read
from $OPENAI_API_KEY (or the variable named by --api-key-env), never from a flag.
A killed run continues with --resume, without losing or repeating an example."""

STRATEGIES = ("zero-shot", "one-shot", "few-shot", "topic")


def add_provider_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("provider")
    g.add_argument("--base-url", help="OpenAI-style base URL ending in /v1; omit to use the packaged local model")
    g.add_argument("--model", help="model name (required with --base-url)")
    g.add_argument(
        "--provider",
        choices=("openai", "local"),
        help="'local' starts the packaged llama.cpp server; default: local when no --base-url is given",
    )
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds before a request times out")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK", help="built-in task name (see `corpusforge data list`) or a task YAML file")
    p.add_argument("--strategy", choices=STRATEGIES, default="zero-shot", help="prompting approach")
    p.add_argument("--n", type=int, default=100, help="examples to accept")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_provider_arguments(p)
    g = p.add_argument_group("limits")
    g.add_argument("--rpm", type=float, help="requests per minute (default: learned from the provider)")
    g.add_argument("--tpm", type=float, help="tokens per minute (default: learned from the provider)")
    g.add_argument("--concurrency", type=int, default=64, help="most requests in flight")
    g.add_argument("--max-attempts", type=int, default=6, help="attempts per request before it is given up")
    g.add_argument("--max-requests", type=int, help="cap on requests (default: 4x what N needs, plus 50)")
    g = p.add_argument_group("generation")
    g.add_argument("--max-tokens", type=int, default=512, help="completion tokens per request")
    g.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help="sampling temperature, 0..2: higher gives more varied (and more off-label) texts",
    )
    g.add_argument(
        "--top-p", type=float, help="nucleus sampling, within (0, 1] (default: not sent; the provider's default)"
    )
    g.add_argument("--per-request", type=int, default=1, help="examples asked for in one request (a JSON array)")
    g.add_argument("--shots", type=int, default=3, help="real examples per prompt for few-shot")
    g.add_argument("--attributes", action="store_true", help="condition prompts on sampled attributes (AttrPrompt)")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the request plan (labels, topics, shots); each request sends a seed derived from it",
    )
    g.add_argument("--no-balance", action="store_true", help="do not balance examples across labels")
    g.add_argument("--stream", action="store_true", help="use streaming responses (SSE)")
    g.add_argument("--no-structured", action="store_true", help="never send a response_format JSON schema")
    g.add_argument("--data", type=Path, help="real data file (JSONL/CSV/Parquet) for tasks without packaged data")
    g = p.add_argument_group("filtering and output")
    g.add_argument(
        "--dedup-threshold",
        type=float,
        default=DEFAULT_DEDUP_THRESHOLD,
        help="estimated Jaccard similarity (MinHash) at or above which a text is a near-duplicate and dropped",
    )
    g.add_argument("--no-dedup", action="store_true", help="keep exact and near-duplicates (no filtering)")
    g.add_argument("--no-reference-real", action="store_true", help="do not drop copies of real training examples")
    g.add_argument("--price-in", type=float, help="USD per 1M prompt tokens, for the cost estimate")
    g.add_argument("--price-out", type=float, help="USD per 1M completion tokens, for the cost estimate")
    g.add_argument(
        "--no-progress",
        action="store_true",
        help="no live panel: a one-line status on stderr every few seconds instead (also the default when stdout "
        "is not a terminal); the final summary table still prints on stdout",
    )
    g.add_argument(
        "--no-backup-requests",
        action="store_true",
        help="never send a second copy of a straggling request (by default, once nothing new is left to send, a "
        "request in flight 3x longer than the observed p99 latency gets one backup; at most 1%% of requests)",
    )
    add_batch_arguments(p)
    add_ray_arguments(p)


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "cluster (Ray): shards of the plan on many machines, one shared rate budget, the cross-shard dedup on Ray Data"
    )
    g.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on a Ray cluster: ADDRESS (host:6379), else $RAY_ADDRESS, else a private local instance "
        "(loopback, no dashboard); --out must be on storage every node sees",
    )
    g.add_argument(
        "--shards", type=int, help="shards of the plan (default: one per node, or one per CPU on a local instance)"
    )


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    # defaults as literals (engine.batch imports aiohttp; --help stays fast): 50,000 requests and 200 MB per file
    # are OpenAI's limits, 5 s engine.batch.poll.DEFAULT_POLL_S
    g = p.add_argument_group("batch mode (OpenAI Batch API: half the price, results within 24 h)")
    g.add_argument("--batch", action="store_true", help="send the requests as batch jobs (/v1/files + /v1/batches)")
    g.add_argument("--batch-max-requests", type=int, default=50_000, help="requests per input file")
    g.add_argument("--batch-max-bytes", default="200MB", help="size of an input file (e.g. 200MB, 50MiB)")
    g.add_argument(
        "--batch-max-enqueued-tokens",
        type=int,
        help="the provider's enqueued prompt-token limit (default: learned when the provider refuses a batch)",
    )
    g.add_argument("--batch-discount", type=float, default=0.5, help="batch price as a share of --price-in/--price-out")
    g.add_argument("--batch-poll-s", type=float, default=5.0, help="first wait between status polls")
    g.add_argument(
        "--keep-batch-files",
        action="store_true",
        help="leave the uploaded input files and the output/error files at the provider (default: deleted once "
        "their results are on disk)",
    )
    g.add_argument("--batch-crash-before", default=None, help=argparse.SUPPRESS)  # resume tests: EVENT[:K]


def _made_with_ray(out: Path) -> bool:
    """Whether the run in ``out`` is a cluster run (its manifest names the shard count)."""
    import json

    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the store says what is wrong with it
    return isinstance(manifest, dict) and isinstance(manifest.get("cluster"), dict)


def run(args: argparse.Namespace) -> int:
    from ..config import RateLimit, RetryPolicy, RunConfig
    from ..dedup import DedupConfig
    from ..generate import GenerateOptions
    from ._launch import print_final, run_with_provider

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}", hint="pass --n 1000")
    if args.resume and not (args.out / "manifest.json").exists():
        what = "does not exist" if not args.out.exists() else "holds no run (no manifest.json)"
        raise ConfigError(f"nothing to resume: {args.out} {what}", hint="drop --resume to start a new run there")
    run_cfg = RunConfig(
        task=args.task,
        strategy=args.strategy,
        n=args.n,
        seed=args.seed,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        per_request=args.per_request,
        shots=1 if args.strategy == "one-shot" else args.shots,
        balance=not args.no_balance,
        max_requests=args.max_requests,
        stream=args.stream,
        structured=not args.no_structured,
        price_in=args.price_in,
        price_out=args.price_out,
        attributes=args.attributes,
    )
    limit = RateLimit(rpm=args.rpm, tpm=args.tpm, max_in_flight=args.concurrency)
    retry = RetryPolicy(max_attempts=args.max_attempts)
    dedup: DedupConfig | None = (
        None
        if args.no_dedup
        else DedupConfig()
        if args.dedup_threshold is None
        else DedupConfig(threshold=args.dedup_threshold)
    )
    options = GenerateOptions(
        out_dir=args.out,
        resume=args.resume,
        progress=not args.no_progress,
        data_file=args.data,
        dedup=dedup,
        reference_real=not args.no_reference_real,
        backup_requests=not args.no_backup_requests,
    )

    if args.shards is not None and args.ray is None:
        raise ConfigError("--shards needs --ray", hint="add --ray (a local instance) or --ray HOST:6379")
    if args.resume and args.ray is None and _made_with_ray(args.out):
        raise ConfigError(f"{args.out} was generated with --ray", hint="resume it with --ray (and the same --shards)")
    if args.ray is not None:
        if args.batch:
            raise ConfigError("--ray and --batch do not combine", hint="drop one of them")
        from ..cluster.launch import run_generate_ray

        final = aio.run(run_generate_ray(args, run_cfg, limit, retry, options))
        print_final(final, sys.stdout)
        return 0 if final.get("phase") == "done" else 1
    if args.batch:
        from .batch import run_generate_batch

        final = aio.run(run_generate_batch(args, run_cfg, limit, retry, options))
    else:
        from .batch import refuse_online_resume_with_batches

        refuse_online_resume_with_batches(args.out if args.resume else None)
        final = aio.run(run_with_provider(args, run_cfg, limit, retry, options))
    print_final(final, sys.stdout)
    if final.get("phase") != "done":
        reason = final.get("stop_reason") or "stopped before --n examples were accepted"
        print(f"corpusforge: {reason} (what was written is kept: rerun with --resume to continue)", file=sys.stderr)
        return 1
    return 0
