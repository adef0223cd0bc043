"""``corpusforge batch export|import``: the offline round trip (e.g. ``vllm run-batch`` on a GPU machine).

``export OUT`` writes the run's planned requests as Batch API input files
(``OUT/batches/input-NNNNN.jsonl``: ``custom_id``, ``method``, ``url``,
``body``) and marks them as handed out; ``import OUT RESULTS.jsonl`` ingests an
output file (``custom_id``, ``response``, ``error`` lines, as the Batch API and
``vllm run-batch`` write them) through the same chain, with the same resume
contract as ``generate --batch``. Also the glue ``generate --batch`` uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import aio
from ..errors import ConfigError

NAME = "batch"
HELP = "offline batch files: export a run's planned requests (for vllm run-batch), import the results"
DESCRIPTION = (
    "export OUT: write the planned requests of the run in OUT as Batch API input files (for `vllm run-batch -i FILE "
    "-o RESULTS.jsonl` or any OpenAI-compatible batch runner); a new run needs --task and --model. "
    "Every strategy exports: one-shot and few-shot take their shots from the task's real data (--data for tasks "
    "without packaged data); topic first lists topics per label through --base-url (an endpoint serving the model), "
    "once per run. import OUT RESULTS.jsonl: pass the results through the run's filters into OUT (rerun export for "
    "what is still missing)."
)
OFFLINE_URL = "http://offline.invalid/v1"
#: As ``generate --strategy`` (kept literal: importing engine.strategies here would slow --help).
STRATEGIES = ("zero-shot", "one-shot", "few-shot", "topic")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="batch_command", metavar="{export,import}", required=True)
    ex = sub.add_parser("export", help="write planned requests as batch input files", description=DESCRIPTION)
    ex.add_argument("out", type=Path, metavar="OUT", help="run directory (created if new)")
    ex.add_argument("--task", help="task of a new run (built-in name or YAML file)")
    ex.add_argument("--model", help="model named in every request body (a new run)")
    ex.add_argument("--n", type=int, help="examples to accept (a new run: default 100; an existing one: may grow)")
    ex.add_argument("--per-request", type=int, default=1, help="examples asked for in one request")
    ex.add_argument("--max-tokens", type=int, default=512, help="completion tokens per request")
    ex.add_argument("--seed", type=int, default=0, help="seed of the request plan")
    ex.add_argument("--strategy", choices=STRATEGIES, help="prompting approach of a new run (default: zero-shot)")
    ex.add_argument("--shots", type=int, help="real examples per prompt for few-shot (default: 3)")
    ex.add_argument("--attributes", action="store_true", help="condition prompts on sampled attributes (AttrPrompt)")
    ex.add_argument("--data", type=Path, help="real data file for the shots, for tasks without packaged data")
    ex.add_argument(
        "--base-url",
        help="the topic strategy only: an endpoint serving the model (e.g. `vllm serve MODEL`) that lists the "
        "topics per label first (one request per label); not needed once OUT has them",
    )
    ex.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    ex.add_argument("--batch-max-requests", type=int, default=50_000, help="requests per input file")
    ex.add_argument("--batch-max-bytes", default="200MB", help="size of an input file")
    im = sub.add_parser("import", help="ingest a batch output file into a run", description=DESCRIPTION)
    im.add_argument("out", type=Path, metavar="OUT", help="run directory the requests were exported from")
    im.add_argument("results", type=Path, nargs="+", metavar="RESULTS", help="batch output JSONL file(s)")
    im.add_argument("--data", type=Path, help="the real data file the export used (--data), if any")


def _configs(args: argparse.Namespace, *, new_ok: bool) -> tuple[Any, Any, Any, bool]:
    """(RunConfig, ProviderConfig, DedupConfig | None, resume) from OUT's manifest, or from flags for a new run."""
    from dataclasses import replace

    from ..config import ProviderConfig, RunConfig
    from ..dedup import DedupConfig

    manifest_path = args.out / "manifest.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            run_cfg = RunConfig(**manifest["run"])
            provider = manifest["provider"]
            dedup_raw = manifest["fingerprint"].get("dedup")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{manifest_path} is not a corpusforge manifest", hint="check OUT") from exc
        _same_run(args, run_cfg, str(provider["model"]))
        if getattr(args, "n", None):
            run_cfg = replace(run_cfg, n=args.n)
        base_url = str(provider.get("base_url") or OFFLINE_URL)
        provider_cfg = ProviderConfig(base_url=base_url, model=str(provider["model"]), name=str(provider["name"]))
        dedup = DedupConfig(**dedup_raw) if dedup_raw else None
        return run_cfg, provider_cfg, dedup, True
    if not new_ok:
        raise ConfigError(f"{args.out} holds no run (no manifest.json)", hint="export from the run first")
    if not args.task or not args.model:
        raise ConfigError(
            f"{args.out} holds no run yet: a new one needs --task and --model",
            hint="e.g. --task bbc-news --model Qwen/Qwen2.5-7B-Instruct",
        )
    run_cfg = RunConfig(
        task=args.task,
        strategy=args.strategy or "zero-shot",
        n=args.n or 100,
        seed=args.seed,
        max_tokens=args.max_tokens,
        per_request=args.per_request,
        shots=1 if args.strategy == "one-shot" else args.shots or 3,
        attributes=args.attributes,
    )
    provider_cfg = ProviderConfig(base_url=OFFLINE_URL, model=args.model, name="offline")
    return run_cfg, provider_cfg, DedupConfig(), False


def _same_run(args: argparse.Namespace, run_cfg: Any, model: str) -> None:
    """Flags of a new run given for an existing one must agree with it (they cannot change it)."""
    given = {
        "--task": (getattr(args, "task", None), run_cfg.task),
        "--model": (getattr(args, "model", None), model),
        "--strategy": (getattr(args, "strategy", None), run_cfg.strategy),
    }
    for flag, (value, actual) in given.items():
        if value is not None and value != actual:
            raise ConfigError(
                f"{args.out} holds a run with {flag} {actual}, not {value}",
                hint=f"drop {flag} to continue that run, or export into another directory",
            )


def _no_topic_endpoint(args: argparse.Namespace) -> ConfigError:
    return ConfigError(
        "the topic strategy first asks the model for topics per label (one request per label), which needs an "
        "endpoint serving the model",
        hint=f"pass --base-url of one (e.g. `vllm serve {args.model or 'MODEL'}`, then --base-url "
        "http://localhost:8000/v1), or export with --strategy zero-shot",
    )


def _check_topic_endpoint(args: argparse.Namespace, run_cfg: Any) -> None:
    """A topic run without its topics needs ``--base-url`` for phase one: a one-line error, OUT untouched."""
    from ..store import TOPICS

    if run_cfg.strategy == "topic" and not (args.out / TOPICS).exists() and not args.base_url:
        raise _no_topic_endpoint(args)


async def _topic_phase(args: argparse.Namespace, run: Any, provider_cfg: Any) -> None:
    """Phase one of the topic strategy through ``--base-url``, as ``generate --batch`` runs it (online)."""
    from dataclasses import replace

    from ..config import RetryPolicy
    from ..providers.openai import OpenAIProvider, make_session
    from ..providers.retrying import RetryingProvider
    from ._launch import api_key_from_env

    async def no_endpoint(request: Any) -> Any:
        raise _no_topic_endpoint(args)  # OUT has the topics of some labels, not all

    if not args.base_url:
        await run.prepare(no_endpoint)
        return
    cfg = replace(provider_cfg, base_url=args.base_url, api_key=api_key_from_env(args.api_key_env))
    async with make_session(cfg) as session:
        await run.prepare(RetryingProvider(OpenAIProvider(session, cfg), RetryPolicy(), stats=run.stats).complete)


async def _offline(args: argparse.Namespace) -> dict[str, Any]:
    from ..batch.client import BatchClient
    from ..batch.files import parse_size
    from ..config import RateLimit
    from ..providers.openai import OpenAIProvider, make_session
    from ..run import GenerateOptions, manifest_for, open_run
    from ..sources.batch import BatchOptions, BatchSource

    exporting = args.batch_command == "export"
    run_cfg, provider_cfg, dedup, resume = _configs(args, new_ok=exporting)
    data_file = getattr(args, "data", None)
    options = GenerateOptions(
        out_dir=args.out, resume=resume, progress=False, dedup=dedup, reference_real=False, data_file=data_file
    )
    if exporting:
        batch = BatchOptions(max_requests=args.batch_max_requests, max_bytes=parse_size(args.batch_max_bytes))
        _check_topic_endpoint(args, run_cfg)
    else:
        batch = BatchOptions()
    manifest = manifest_for(run_cfg, provider_cfg, RateLimit(), dedup)
    async with make_session(provider_cfg) as session:
        provider = OpenAIProvider(session, provider_cfg)  # its body builder and response parser; never sends
        with open_run(run_cfg, model=provider_cfg.model, manifest=manifest, options=options) as run:
            source = BatchSource(run, provider, BatchClient(provider), batch)
            if exporting:
                if run_cfg.strategy == "topic":
                    await _topic_phase(args, run, provider_cfg)
                paths = source.export()
                return {"exported": [str(p) for p in paths], "run": run.final_snapshot()}
            counts = await source.import_results(list(args.results))
            final = run.final_snapshot()
            run.store.write_stats(final)
            return {**counts, "run": final}


def run(args: argparse.Namespace) -> int:
    if args.batch_command == "import":
        for path in args.results:
            if not path.is_file():
                raise ConfigError(f"no results file {path}", hint="pass the output file of the batch run")
    result = aio.run(_offline(args))
    final = result["run"]
    if args.batch_command == "export":
        paths = result["exported"]
        if not paths:
            print(f"nothing to export: the plan of {args.out} is covered by requests already exported or done")
        for p in paths:
            print(p)
        if paths:
            print(
                f"run each with e.g. `vllm run-batch -i {paths[0]} -o RESULTS.jsonl --model MODEL`, then "
                f"`corpusforge batch import {args.out} RESULTS.jsonl`",
                file=sys.stderr,
            )
        return 0
    print(
        f"imported {result['used']} results ({result['still_waiting']} exported requests still waiting); "
        f"accepted {final.get('accepted', 0)} / {final.get('target')}"
    )
    return 0 if final.get("phase") == "done" else 1


# -- glue for `generate --batch` -------------------------------------------------------------------


def _crash_before(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    event, _, count = value.partition(":")
    return event, int(count or 1)


async def run_generate_batch(
    args: argparse.Namespace, run_cfg: Any, limit: Any, retry: Any, options: Any
) -> dict[str, Any]:
    """``generate --batch``: the provider from the flags, batch options from the flags, then ``generate_batch``."""
    from ..batch.files import parse_size
    from ..batch.poll import PollPolicy
    from ..sources.batch import BatchOptions, generate_batch
    from ._launch import _view_factory, provider_context, provider_factory

    if not args.base_url or args.provider == "local":
        raise ConfigError(
            "--batch needs --base-url of a server with the Batch API (the packaged local model has none)",
            hint="pass --base-url https://api.openai.com/v1 --model NAME, or drop --batch",
        )
    batch = BatchOptions(
        max_requests=args.batch_max_requests,
        max_bytes=parse_size(args.batch_max_bytes),
        max_enqueued_tokens=args.batch_max_enqueued_tokens,
        discount=args.batch_discount,
        poll=PollPolicy(initial_s=args.batch_poll_s),
        keep_files=args.keep_batch_files,
        crash_before=_crash_before(args.batch_crash_before),
    )
    async with provider_context(args, provider_factory(args), options.out_dir) as (provider_cfg, _):
        view = _view_factory(options.progress)
        return await generate_batch(
            run_cfg, provider_cfg, limit, retry, options, batch, view_factory=view, warn=print_warning
        )


def print_warning(message: str) -> None:
    """A warning that does not stop the command, on one line of stderr."""
    print(f"corpusforge: warning: {message}", file=sys.stderr, flush=True)


def refuse_online_resume_with_batches(out: Path | None) -> None:
    """An online ``--resume`` would plan again what sits in submitted batches: say how to continue instead."""
    if out is None or not (out / "batches").exists():
        return
    from ..sources.batch import pending_batches

    pending = pending_batches(out)
    if not pending:
        return
    exported = sum(1 for f in pending if f.phase == "external")
    if exported == len(pending):
        raise ConfigError(
            f"{out} has {exported} exported batch file(s) waiting for their results",
            hint=f"import them with `corpusforge batch import {out} RESULTS.jsonl` first",
        )
    raise ConfigError(
        f"{out} has {len(pending)} batch file(s) in flight",
        hint="resume with --batch (or cancel them: `corpusforge batches OUT --cancel`, then --batch --resume)",
    )
