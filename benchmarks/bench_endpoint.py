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
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine.config import ProviderConfig
from engine.endpoint_probe import BenchConfig, StepResult, run_sweep, step_line, sweep_report
from engine.providers.local import LocalServer, LocalServerConfig, default_threads
from engine.providers.openai import OpenAIProvider, make_session

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
RESULTS = Path(__file__).parent / "results" / "endpoint.json"


def bench_config() -> BenchConfig:
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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    empty = [s["level"] for s in report["steps"] if s["ok"] == 0]
    if empty:  # as the command does: a step without one good request fails the run (the JSON stays)
        print(f"no successful request at concurrency {empty}", file=sys.stderr)
        sys.exit(1)
    return results


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(r: dict[str, Any]) -> str:
    srv = r["local_server"]
    lines = [
        f"bench-endpoint on {r['model']} (llama.cpp: {srv['parallel']} slots, {srv['threads']} threads; "
        f"{r['requests_per_step']} requests per step, ~{r['prompt_tokens']} prompt tokens, "
        f"max {r['max_tokens']} output tokens):",
        "",
        "| concurrency | ok/sent | output tokens/s | requests/s | TTFT p50 ms | E2E p50 ms "
        "| decode tok/s ours | server | ours / server |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in r["per_step"]:
        lines.append(
            f"| {s['concurrency']} | {s['ok']}/{s['sent']} | {_cell(s['output_tokens_per_s'])} "
            f"| {_cell(s['requests_per_s'])} | {_cell(s['ttft_ms_p50'])} | {_cell(s['e2e_ms_p50'])} "
            f"| {_cell(s['decode_tps_p50'])} | {_cell(s['server_decode_tps_p50'])} | {_cell(s['decode_agreement'])} |"
        )
    lines.append("")
    lines += [f"{key}: {_cell(value)}" for key, value in r["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
