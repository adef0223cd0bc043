"""End to end with the packaged local LLM: the engine's ``generate`` vs a sequential openai-SDK loop.

One managed llama.cpp server (``LocalServer``, SmolLM2-135M-Instruct) serves both
clients, one after the other, after one unmeasured warm-up request:

* ``engine``: ``generate`` for bbc-news zero-shot, N examples, as ``corpusforge
  generate`` runs it against the local model (at most 8 in flight, real-data
  reference, dedup, durable writes). Accepted examples/s, requests/s and output
  tokens/s come from its final stats (``accepted``, ``requests``,
  ``completion_tokens`` over ``elapsed_s``).
* ``sdk_sequential`` (baseline): ``AsyncOpenAI``, one request at a time, the same
  prompts the engine sent (rebuilt from its journal: ids ``<label>-<k>`` and the
  plan's seeds), as many requests as the engine sent, each reply parsed with
  ``parse_completion``; accepted = parsed items up to the same per-label quotas
  the engine fills (``parsed`` counts them all; no dedup, so if anything generous).

Headline: engine / baseline for accepted examples/s and output tokens/s. The LLM
is the bottleneck by design; the ratio says how much of it the engine's
concurrency recovers and its pipeline costs. The baseline runs second, so it may
find the server's prompt cache warm (zero-shot prompts share most of their prefix).

    python -m benchmarks.bench_e2e                   # quick: 20 examples
    BENCH_FULL=1 python -m benchmarks.bench_e2e      # 100 examples
    BENCH_E2E_N=3 python -m benchmarks.bench_e2e     # a smoke run
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .markdown import Headline, fmt, get, headline_table, ratio, table
from .record import write_results

if TYPE_CHECKING:  # the engine is imported where it runs, so ``render`` needs none of it
    from engine.config import RunConfig
    from engine.types import Request

FULL = os.environ.get("BENCH_FULL") == "1"
TASK = "bbc-news"
STRATEGY = "zero-shot"
#: Accepted examples the engine is asked for (``BENCH_E2E_N`` overrides, for smoke runs).
N_EXAMPLES = int(os.environ.get("BENCH_E2E_N") or (100 if FULL else 20))
SEED = 0
#: ``corpusforge generate``'s default; the local model rarely needs all of it.
MAX_TOKENS = 512
#: What ``corpusforge generate`` allows in flight against the local server (its slots queue the rest).
ENGINE_CONCURRENCY = 8
#: Hard limits: the engine's run, the baseline loop, one baseline request.
ENGINE_MAX_S = 3000.0 if FULL else 900.0
BASELINE_MAX_S = 3000.0 if FULL else 900.0
REQUEST_TIMEOUT_S = 300.0
#: llama.cpp threads; 0 = ``default_threads()`` (every core when idle, else one fewer).
#: ``BENCH_LLAMA_THREADS=1`` keeps a run off a core another job is timing on.
THREADS = int(os.environ.get("BENCH_LLAMA_THREADS") or 0)
#: ``run_all`` stops this benchmark after this many seconds (it drives the local LLM).
TIMEOUT_S = 3600.0


def _run_config() -> RunConfig:
    from engine.config import RunConfig

    return RunConfig(task=TASK, strategy=STRATEGY, n=N_EXAMPLES, seed=SEED, max_tokens=MAX_TOKENS)


def _rates(accepted: int, requests: int, tokens: int, seconds: float) -> dict[str, Any]:
    span = max(seconds, 1e-9)
    return {
        "accepted": accepted,
        "requests": requests,
        "completion_tokens": tokens,
        "elapsed_s": round(seconds, 3),
        "accepted_per_s": round(accepted / span, 4),
        "requests_per_s": round(requests / span, 4),
        "output_tokens_per_s": round(tokens / span, 2),
    }


async def run_engine(base_url: str, model: str, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``generate`` into ``out``; (its figures, its final stats). Stopped after ``ENGINE_MAX_S``."""
    from engine.config import ProviderConfig, RateLimit, RetryPolicy
    from engine.generate import GenerateOptions, generate

    cfg = ProviderConfig(
        base_url=base_url, model=model, name="local", timeout_s=REQUEST_TIMEOUT_S, max_connections=ENGINE_CONCURRENCY
    )
    options = GenerateOptions(out_dir=out, progress=False, reference_real=True)
    coro = generate(_run_config(), cfg, RateLimit(max_in_flight=ENGINE_CONCURRENCY), RetryPolicy(), options)
    t0 = time.perf_counter()
    try:
        final = await asyncio.wait_for(coro, ENGINE_MAX_S)
    except TimeoutError:
        final = json.loads((out / "stats.json").read_text())
        final["phase"] = "timeout"
    wall = time.perf_counter() - t0
    figures = _rates(
        int(final.get("accepted", 0)),
        int(final.get("requests", 0)),
        int(final.get("completion_tokens", 0)),
        float(final.get("elapsed_s") or wall),
    )
    figures.update(
        wall_s=round(wall, 3),
        phase=final.get("phase"),
        failed=final.get("failed", 0),
        rejected=final.get("rejected", 0),
        retries=final.get("retries", 0),
        structured_fallback=final.get("structured_fallback", 0),
    )
    return figures, final


def engine_requests(out: Path, count: int, *, structured: bool) -> list[Request]:
    """The requests the engine sent, in the order they finished, rebuilt from its journal (cycled to ``count``)."""
    from engine.plan import stable_seed
    from engine.store import JOURNAL, read_jsonl
    from engine.strategies import make_strategy
    from engine.tasks import load_task

    task = load_task(TASK)
    strategy = make_strategy(STRATEGY, task, seed=SEED, max_tokens=MAX_TOKENS, structured=structured)
    built = []
    for row in read_jsonl(out / JOURNAL):
        rid, label = str(row["request_id"]), str(row["label"])
        k = int(rid.rsplit("-", 1)[1])  # the plan's ids are <label>-<k>, seeded stable_seed(seed, label, k)
        built.append(strategy.build(request_id=rid, label=label, seed=stable_seed(SEED, label, k)))
    if not built:
        return []
    return [built[i % len(built)] for i in range(count)]


async def run_baseline(base_url: str, model: str, requests: list[Request]) -> dict[str, Any]:
    """One request at a time through the openai SDK; replies parsed as the engine parses them."""
    from openai import APIError, AsyncOpenAI

    from engine.parse import parse_completion
    from engine.plan import quotas
    from engine.tasks import load_task

    task = load_task(TASK)
    room = quotas(task.labels, N_EXAMPLES)  # the engine keeps no more than these per label (the rest is surplus)
    accepted = parsed = tokens = sent = failed = 0
    client = AsyncOpenAI(base_url=base_url, api_key="x", timeout=REQUEST_TIMEOUT_S, max_retries=2)
    t0 = time.perf_counter()
    try:
        for request in requests:  # bounded in count (the list) and in time (below)
            if time.perf_counter() - t0 > BASELINE_MAX_S:
                break
            sent += 1
            # what OpenAIProvider.body sends: the same sampling, seed and schema
            extra: dict[str, Any] = {"temperature": request.temperature}
            if request.seed is not None:
                extra["seed"] = request.seed
            if request.response_format is not None:
                extra["response_format"] = request.response_format
            try:
                reply = await client.chat.completions.create(
                    model=model,
                    messages=request.messages,  # type: ignore[arg-type]
                    max_tokens=request.max_tokens,
                    **extra,
                )
            except APIError:  # counted, as the engine counts its failures
                failed += 1
                continue
            tokens += reply.usage.completion_tokens if reply.usage else 0
            text = reply.choices[0].message.content or ""
            items = parse_completion(text, task, expected_label=request.label).items
            parsed += len(items)
            for item in items:
                if room.get(item.label, 0) > 0:
                    room[item.label] -= 1
                    accepted += 1
        seconds = time.perf_counter() - t0
    finally:
        await client.close()
    figures = _rates(accepted, sent, tokens, seconds)
    figures.update(parsed=parsed, failed=failed)
    return figures


async def warm_up(base_url: str, model: str) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=base_url, api_key="x", timeout=REQUEST_TIMEOUT_S) as client:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
        )


async def bench(out: Path) -> dict[str, Any]:
    from engine.llamacpp import LocalServer, LocalServerConfig, default_threads

    # run_all stops us with SIGTERM: cancel, so the server is stopped by ``async with`` on the way out.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    server_cfg = LocalServerConfig(threads=THREADS or default_threads())
    async with LocalServer(server_cfg) as server:
        await warm_up(server.base_url, server.model)
        engine, final = await run_engine(server.base_url, server.model, out)
        structured = not final.get("structured_fallback")
        requests = engine_requests(out, engine["requests"], structured=structured)
        baseline = await run_baseline(server.base_url, server.model, requests)
        model = server.model
    return {
        "task": TASK,
        "strategy": STRATEGY,
        "n_examples": N_EXAMPLES,
        "max_tokens": MAX_TOKENS,
        "model": model,
        "local_server": {"parallel": server_cfg.parallel, "ctx": server_cfg.ctx, "threads": server_cfg.threads},
        "engine_concurrency": ENGINE_CONCURRENCY,
        "engine": engine,
        "sdk_sequential": baseline,
        "ratios": {
            "engine_vs_sdk_accepted_per_s": _ratio(engine["accepted_per_s"], baseline["accepted_per_s"]),
            "engine_vs_sdk_output_tokens_per_s": _ratio(engine["output_tokens_per_s"], baseline["output_tokens_per_s"]),
            "engine_vs_sdk_requests_per_s": _ratio(engine["requests_per_s"], baseline["requests_per_s"]),
        },
    }


def _ratio(ours: float, base: float) -> float | None:
    return round(ours / base, 3) if base > 0 else None


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        results = asyncio.run(bench(Path(tmp) / "run"))
    write_results("e2e", results)
    print(render(results))
    return results


def headline(data: dict[str, Any]) -> Headline:
    return [
        (
            "engine / sequential openai SDK, accepted examples/s",
            ratio(get(data, "ratios.engine_vs_sdk_accepted_per_s")),
        ),
        (
            "engine / sequential openai SDK, output tokens/s",
            ratio(get(data, "ratios.engine_vs_sdk_output_tokens_per_s")),
        ),
    ]


def render(data: dict[str, Any]) -> str:
    rows = [
        [name]
        + [fmt(get(data, f"{name}.{k}")) for k in ("accepted", "requests", "completion_tokens", "elapsed_s")]
        + [fmt(get(data, f"{name}.{k}")) for k in ("accepted_per_s", "requests_per_s", "output_tokens_per_s")]
        for name in ("engine", "sdk_sequential")
    ]
    what = (
        f"{fmt(get(data, 'task'))} {fmt(get(data, 'strategy'))}, {fmt(get(data, 'n_examples'))} examples, "
        f"{fmt(get(data, 'model'))}, {fmt(get(data, 'local_server.parallel'))} llama.cpp slots and "
        f"{fmt(get(data, 'local_server.threads'))} threads, engine in flight {fmt(get(data, 'engine_concurrency'))}"
    )
    header = ["client", "accepted", "requests", "output tokens", "s", "accepted/s", "requests/s", "output tokens/s"]
    return "\n".join(
        [
            f"Same server and prompts ({what}).",
            "",
            *table(header, rows),
            "",
            *headline_table(headline(data)),
            "",
            f"The SDK loop parsed {fmt(get(data, 'sdk_sequential.parsed'))} examples; accepted counts those within "
            "the engine's per-label quotas.",
        ]
    )


if __name__ == "__main__":
    main()
