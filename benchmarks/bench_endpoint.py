"""``bench-endpoint`` on the packaged local model: a concurrency sweep against the managed llama.cpp server.

What ``corpusforge bench-endpoint --local`` does, with the command's own pieces
(``engine.endpoint_probe``: ``run_sweep`` through ``OpenAIProvider``, ``step_line``
and ``sweep_report``): streaming requests with synthetic prompts, a closed loop
per concurrency level, one unmeasured warm-up request first. Per step: output
tokens/s, requests/s, TTFT and end-to-end p50, and how our per-request decode
speed (tokens from first to last streamed token) agrees with the server's own
``timings.predicted_per_second``.

Headlines: ``ratios.decode_agreement_c<N>`` (median of ours / the server's, per
request: 1.0 is perfect agreement; the server's own clock is the baseline for
ours) and ``ratios.output_tokens_per_s_c<max>_vs_c1`` (what concurrency buys on
this machine: the server's slots decode together). The server gets as many slots
as the highest level, so each level is really decoded concurrently.

    python -m benchmarks.bench_endpoint                     # quick: 1,2,4
    BENCH_FULL=1 python -m benchmarks.bench_endpoint        # 1,2,4,8, more requests per step
    BENCH_ENDPOINT_REQUESTS=2 python -m benchmarks.bench_endpoint   # a smoke run
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from .markdown import Headline, fmt, get, headline_generic, headline_table, ratio, render_generic, table
from .record import write_results

if TYPE_CHECKING:  # the engine is imported where it runs, so ``render`` needs none of it
    from engine.endpoint_probe import BenchConfig, StepResult

FULL = os.environ.get("BENCH_FULL") == "1"
CONCURRENCY: tuple[int, ...] = (1, 2, 4, 8) if FULL else (1, 2, 4)
#: Requests per step (``BENCH_ENDPOINT_REQUESTS`` overrides, for smoke runs).
REQUESTS_PER_STEP = int(os.environ.get("BENCH_ENDPOINT_REQUESTS") or (32 if FULL else 12))
#: bench-endpoint's defaults.
PROMPT_TOKENS = 128
MAX_TOKENS = 128
WARMUP = 1
SEED = 0
#: Bounds per step: stop sending after DURATION_S, cancel what is in flight after STEP_TIMEOUT_S.
DURATION_S = 600.0 if FULL else 180.0
STEP_TIMEOUT_S = 900.0 if FULL else 300.0
REQUEST_TIMEOUT_S = 300.0
#: llama.cpp slots: one per request of the highest level; context shared by them.
PARALLEL = max(CONCURRENCY)
CTX = 8192
#: llama.cpp threads; 0 = ``default_threads()`` (every core when idle, else one fewer).
#: ``BENCH_LLAMA_THREADS=1`` keeps a run off a core another job is timing on.
THREADS = int(os.environ.get("BENCH_LLAMA_THREADS") or 0)
#: ``run_all`` stops this benchmark after this many seconds (it drives the local LLM).
TIMEOUT_S = 3600.0


def bench_config() -> BenchConfig:
    from engine.endpoint_probe import BenchConfig

    return BenchConfig(
        concurrency=CONCURRENCY,
        prompt_tokens=PROMPT_TOKENS,
        max_tokens=MAX_TOKENS,
        requests=REQUESTS_PER_STEP,
        duration_s=DURATION_S,
        step_timeout_s=STEP_TIMEOUT_S,
        warmup=WARMUP,
        seed=SEED,
    )


async def sweep(cfg: BenchConfig) -> dict[str, Any]:
    """Start the local server, sweep, stop it (also on error, cancellation or SIGTERM); the command's report."""
    from engine.config import ProviderConfig
    from engine.endpoint_probe import run_sweep, sweep_report
    from engine.llamacpp import LocalServer, LocalServerConfig, default_threads
    from engine.providers.openai import OpenAIProvider, make_session

    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    server_cfg = LocalServerConfig(parallel=PARALLEL, ctx=CTX, threads=THREADS or default_threads())
    started = time.time()
    async with LocalServer(server_cfg) as server:
        pcfg = ProviderConfig(
            base_url=server.base_url,
            model=server.model,
            name="local",
            timeout_s=REQUEST_TIMEOUT_S,
            max_connections=max(CONCURRENCY),
        )
        async with make_session(pcfg) as session:
            provider = OpenAIProvider(session, pcfg)
            steps = await run_sweep(provider, cfg, on_step=_progress)
    info = {"parallel": server_cfg.parallel, "ctx": server_cfg.ctx, "threads": server_cfg.threads}
    return sweep_report(pcfg, cfg, steps, started, local_server=info)


def _progress(step: StepResult) -> None:
    from engine.endpoint_probe import step_line

    print(step_line(step), file=sys.stderr, flush=True)


def summarise(step: dict[str, Any]) -> dict[str, Any]:
    """The few figures per step this benchmark reports (the whole step stays under ``steps``)."""
    server = step.get("server") or {}
    return {
        "concurrency": int(step["level"]),
        "ok": step["ok"],
        "sent": step["sent"],
        "output_tokens_per_s": round(step["output_tokens_per_s"], 2),
        "requests_per_s": round(step["requests_per_s"], 3),
        "ttft_ms_p50": _round(step["ttft_ms"].get("p50")),
        "e2e_ms_p50": _round(step["e2e_ms"].get("p50")),
        "decode_tps_p50": _round(step["decode_tps"].get("p50"), 2),
        "server_decode_tps_p50": _round((server.get("decode_tps") or {}).get("p50"), 2),
        "decode_agreement": _round(server.get("decode_ratio_p50"), 3),
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def ratios(per_step: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"decode_agreement_c{s['concurrency']}": s["decode_agreement"] for s in per_step}
    by_level = {s["concurrency"]: s["output_tokens_per_s"] for s in per_step}
    low, high = min(by_level), max(by_level)
    base = by_level[low]
    out[f"output_tokens_per_s_c{high}_vs_c{low}"] = round(by_level[high] / base, 3) if base > 0 else None
    return out


def main() -> dict[str, Any]:
    cfg = bench_config()
    report = asyncio.run(sweep(cfg))
    per_step = [summarise(s) for s in report["steps"]]
    results = {
        "model": report["endpoint"]["model"],
        "local_server": report["endpoint"]["local"],
        "concurrency": list(CONCURRENCY),
        "requests_per_step": REQUESTS_PER_STEP,
        "prompt_tokens": PROMPT_TOKENS,
        "max_tokens": MAX_TOKENS,
        "elapsed_s": report["elapsed_s"],
        "ratios": ratios(per_step),
        "per_step": per_step,
        "report": report,  # what `corpusforge bench-endpoint --out DIR` writes to bench.json
    }
    write_results("endpoint", results)
    print(render(results))
    empty = [s["level"] for s in report["steps"] if s["ok"] == 0]
    if empty:  # as the command does: a step without one good request fails the run (the JSON stays)
        print(f"no successful request at concurrency {empty}", file=sys.stderr)
        sys.exit(1)
    return results


def headline(data: dict[str, Any]) -> Headline:
    return headline_generic({"ratios": get(data, "ratios") or {}})


def render(data: dict[str, Any]) -> str:
    steps = get(data, "per_step")
    if not isinstance(steps, list) or not steps:
        return render_generic(data)
    keys = ("output_tokens_per_s", "requests_per_s", "ttft_ms_p50", "e2e_ms_p50", "decode_tps_p50")
    rows = [
        [fmt(s.get("concurrency")), f"{fmt(s.get('ok'))}/{fmt(s.get('sent'))}"]
        + [fmt(s.get(k)) for k in keys]
        + [fmt(s.get("server_decode_tps_p50")), ratio(s.get("decode_agreement"))]
        for s in steps
    ]
    header = ["concurrency", "ok/sent", "output tokens/s", "requests/s", "TTFT p50 ms", "E2E p50 ms"]
    header += ["decode tok/s ours", "server", "ours / server"]
    what = (
        f"{fmt(get(data, 'model'))}; llama.cpp {fmt(get(data, 'local_server.parallel'))} slots, "
        f"{fmt(get(data, 'local_server.threads'))} threads; {fmt(get(data, 'requests_per_step'))} requests per step, "
        f"~{fmt(get(data, 'prompt_tokens'))} prompt tokens, at most {fmt(get(data, 'max_tokens'))} output tokens"
    )
    return "\n".join(
        [
            f"Streaming, closed loop per level ({what}).",
            "",
            *table(header, rows),
            "",
            *headline_table(headline(data)),
        ]
    )


if __name__ == "__main__":
    main()
