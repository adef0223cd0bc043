"""Client benchmark: the engine's request path vs the openai SDK vs a bare aiohttp loop, on one simulator.

All three clients run in this process, one after the other, against the same
simulator running in a separate process (so the server's CPU is not counted).
The bare loop and the engine are then measured ``ROUNDS`` times in adjacent
pairs; the engine/bare ratio is the median of the pairs' ratios, and the table
shows the median pair (a single pair varies by several percent on a shared
machine, the bare loop most of all).
For each: requests/s, client CPU-seconds per 1,000 requests, RSS. The engine
path is the whole of ``generate``: admission, retries, parsing and durable
writing included (``engine``), and the same with streaming near-duplicate
filtering on (``engine_with_dedup``). Then two engine-only scenarios: rate-limit
utilisation against a server-side RPM limit (no limit given: learned), and RSS
across a long run (flat memory).

    python -m benchmarks.bench_client            # quick
    BENCH_FULL=1 python -m benchmarks.bench_client   # the issue's sizes (200k requests, 2-minute RPM run)
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from .markdown import Headline, fmt, get, headline_table, ratio, table
from .record import write_results

FULL = os.environ.get("BENCH_FULL") == "1"
#: Requests per client in the throughput comparison.
N_REQUESTS = 20_000 if FULL else 4_000
#: Adjacent (bare loop, engine) pairs measured; the ratio reported is their median.
ROUNDS = 3
#: In-flight requests for every client.
CONCURRENCY = 64
MAX_TOKENS = 64
#: RPM-utilisation scenario: server limit and duration.
RPM_LIMIT = 600
RPM_SECONDS = 120 if FULL else 30
#: Flat-memory scenario: requests, and RSS samples along the way.
LONG_N = 200_000 if FULL else 20_000
PROMPT = [{"role": "user", "content": "Write one news article sentence about sport.\nLabel: sport"}]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "example",
        "schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "label": {"type": "string", "enum": ["sport"]}},
            "required": ["text", "label"],
        },
    },
}


class RssSampler:
    def __init__(self, every_s: float = 0.25) -> None:
        self.proc = psutil.Process()
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.proc.memory_info().rss))
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return max(r for _, r in self.samples) / 2**20 if self.samples else 0.0


def measure(fn: Any) -> dict[str, Any]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    with RssSampler() as rss:
        done = asyncio.run(fn())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {
        "requests": done,
        "wall_s": round(wall, 3),
        "requests_per_s": round(done / wall, 1),
        "cpu_s_per_1k": round(1000 * cpu / max(done, 1), 3),
        "requests_per_cpu_s": round(done / max(cpu, 1e-9), 1),
        "peak_rss_mb": round(rss.peak_mb, 1),
    }


async def bare_loop(url: str, n: int) -> int:
    sem = asyncio.Semaphore(CONCURRENCY)
    body = json.dumps({"model": "sim", "messages": PROMPT, "max_tokens": MAX_TOKENS, "response_format": SCHEMA})
    ok = 0
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal ok
            async with (
                sem,
                session.post(
                    url + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
                ) as resp,
            ):
                data = await resp.json()
                if data["choices"][0]["message"]["content"]:
                    ok += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return ok


async def openai_sdk(url: str, n: int) -> int:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=2)
    sem = asyncio.Semaphore(CONCURRENCY)
    ok = 0

    async def one() -> None:
        nonlocal ok
        async with sem:
            r = await client.chat.completions.create(
                model="sim",
                messages=PROMPT,  # type: ignore[arg-type]
                max_tokens=MAX_TOKENS,
                response_format=SCHEMA,  # type: ignore[arg-type]
            )
            if r.choices[0].message.content:
                ok += 1

    await asyncio.gather(*(one() for _ in range(n)))
    await client.close()
    return ok


async def engine_path(
    url: str, n: int, out: Path, *, rpm: float | None = None, seconds: float | None = None, dedup: bool = True
) -> int:
    from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
    from engine.generate import GenerateOptions, generate

    run = RunConfig(task="bbc-news", strategy="zero-shot", n=n, max_tokens=MAX_TOKENS)
    cfg = ProviderConfig(base_url=url, model="sim", max_connections=CONCURRENCY)
    options = GenerateOptions(out_dir=out, progress=False, reference_real=False)
    if not dedup:
        options = GenerateOptions(out_dir=out, progress=False, reference_real=False, dedup=None)
    coro = generate(run, cfg, RateLimit(rpm=rpm, max_in_flight=CONCURRENCY), RetryPolicy(), options)
    if seconds is None:
        final = await coro
    else:
        try:
            final = await asyncio.wait_for(coro, seconds)
        except TimeoutError:
            final = json.loads((out / "stats.json").read_text())
    return int(final.get("accepted", 0))


def main() -> dict[str, Any]:
    from engine.sim.config import SimConfig
    from engine.sim.process import sim_process

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    results: dict[str, Any] = {"n_requests": N_REQUESTS, "concurrency": CONCURRENCY, "loop": loop_name}
    with tempfile.TemporaryDirectory() as tmp, sim_process(SimConfig(seed=1)) as url:
        asyncio.run(bare_loop(url, 200))  # warm up the server
        results["openai_sdk"] = measure(lambda: openai_sdk(url, N_REQUESTS))
        # the request path the issue defines (admission, retries, parsing, writing) against the floor, in pairs
        rounds = []
        for i in range(ROUNDS):
            bare_i = measure(lambda: bare_loop(url, N_REQUESTS))
            engine_i = measure(lambda i=i: engine_path(url, N_REQUESTS, Path(tmp) / f"engine-{i}", dedup=False))
            ratio_i = engine_i["requests_per_cpu_s"] / bare_i["requests_per_cpu_s"]
            rounds.append({"bare_aiohttp": bare_i, "engine": engine_i, "ratio": round(ratio_i, 3)})
        median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
        results["rounds"] = rounds
        results["bare_aiohttp"], results["engine"] = median["bare_aiohttp"], median["engine"]
        # then the whole pipeline, streaming near-duplicate filtering included
        results["engine_with_dedup"] = measure(lambda: engine_path(url, N_REQUESTS, Path(tmp) / "dedup"))
    bare, sdk = results["bare_aiohttp"], results["openai_sdk"]
    eng, full = results["engine"], results["engine_with_dedup"]
    results["ratios"] = {
        "engine_vs_bare_requests_per_cpu_s": median["ratio"],
        "engine_vs_bare_per_round": [r["ratio"] for r in rounds],
        "engine_vs_sdk_requests_per_cpu_s": round(eng["requests_per_cpu_s"] / sdk["requests_per_cpu_s"], 2),
        "engine_vs_sdk_requests_per_s": round(eng["requests_per_s"] / sdk["requests_per_s"], 2),
        "engine_with_dedup_vs_bare_requests_per_cpu_s": round(
            full["requests_per_cpu_s"] / bare["requests_per_cpu_s"], 3
        ),
        "engine_with_dedup_vs_sdk_requests_per_cpu_s": round(full["requests_per_cpu_s"] / sdk["requests_per_cpu_s"], 2),
    }

    # Rate-limit utilisation: the server enforces RPM_LIMIT; the engine is not told, it learns.
    with tempfile.TemporaryDirectory() as tmp, sim_process(SimConfig(rpm_limit=RPM_LIMIT, seed=2)) as url:
        out = Path(tmp) / "rpm"
        t0 = time.perf_counter()
        asyncio.run(engine_path(url, 10**7, out, seconds=RPM_SECONDS))
        wall = time.perf_counter() - t0
        stats = json.loads((out / "stats.json").read_text())
    sent = stats.get("requests", 0)
    # the server's bucket starts full: its capacity over the window is one minute's worth plus the refill
    allowed = RPM_LIMIT + RPM_LIMIT * wall / 60.0
    results["rate_limit"] = {
        "rpm_limit": RPM_LIMIT,
        "seconds": round(wall, 1),
        "requests": sent,
        "ok_requests": sent - stats.get("rate_limited", 0),
        "rate_limited": stats.get("rate_limited", 0),
        "rate_limited_pct": round(100 * stats.get("rate_limited", 0) / max(sent, 1), 2),
        "utilisation_pct": round(100 * (sent - stats.get("rate_limited", 0)) / allowed, 1),
    }

    # Flat memory over a long run: the request path alone (dedup off), then with the dedup index,
    # whose size grows with the examples it must remember (reported per example).
    for name, dedup in (("memory", False), ("memory_with_dedup", True)):
        with tempfile.TemporaryDirectory() as tmp, sim_process(SimConfig(seed=3)) as url, RssSampler(1.0) as rss:
            asyncio.run(engine_path(url, LONG_N, Path(tmp) / "long", dedup=dedup))
        samples = [r for _, r in rss.samples]
        k = max(1, len(samples) // 5)
        results[name] = {
            "requests": LONG_N,
            "rss_mb_at_20pct": round(samples[k] / 2**20, 1),
            "rss_mb_at_end": round(samples[-1] / 2**20, 1),
            "growth_pct_after_20pct": round(100 * (samples[-1] - samples[k]) / samples[k], 1),
            "growth_bytes_per_request": round((samples[-1] - samples[k]) / (0.8 * LONG_N)),
        }

    write_results("client", results)
    print(render(results))
    return results


def headline(data: dict[str, Any]) -> Headline:
    return [
        (
            "engine / bare aiohttp, requests per CPU-s (median pair)",
            ratio(get(data, "ratios.engine_vs_bare_requests_per_cpu_s")),
        ),
        ("engine / openai SDK, requests per CPU-s", ratio(get(data, "ratios.engine_vs_sdk_requests_per_cpu_s"))),
        ("engine / openai SDK, requests per s", ratio(get(data, "ratios.engine_vs_sdk_requests_per_s"))),
        (
            "engine with dedup / bare aiohttp, requests per CPU-s",
            ratio(get(data, "ratios.engine_with_dedup_vs_bare_requests_per_cpu_s")),
        ),
    ]


def render(data: dict[str, Any]) -> str:
    sizes = ", ".join(
        f"{label} {fmt(get(data, key))}"
        for label, key in (("requests", "n_requests"), ("concurrency", "concurrency"), ("loop", "loop"))
    )
    rows = [
        [name]
        + [fmt(get(data, f"{name}.{k}")) for k in ("requests_per_s", "cpu_s_per_1k", "requests_per_cpu_s")]
        + [fmt(get(data, f"{name}.peak_rss_mb"))]
        for name in ("bare_aiohttp", "openai_sdk", "engine", "engine_with_dedup")
    ]
    per_round = get(data, "ratios.engine_vs_bare_per_round")
    pairs = (
        f" The bare loop and the engine ran in {len(per_round)} adjacent pairs (engine / bare per pair: "
        f"{', '.join(ratio(x) for x in per_round)}); the table shows the median pair."
        if isinstance(per_round, list) and per_round
        else ""
    )
    lines = [f"Same simulator, one client after another ({sizes}).{pairs}", ""]
    lines += table(["client", "requests/s", "CPU s / 1k requests", "requests / CPU s", "peak RSS MB"], rows)
    lines += ["", *headline_table(headline(data)), ""]
    lines.append(
        f"- Learned rate limit ({fmt(get(data, 'rate_limit.rpm_limit'))} RPM on the server, not told to the engine): "
        f"{fmt(get(data, 'rate_limit.utilisation_pct'), '%')} of capacity used over "
        f"{fmt(get(data, 'rate_limit.seconds'))} s, {fmt(get(data, 'rate_limit.rate_limited_pct'), '%')} of "
        f"{fmt(get(data, 'rate_limit.requests'))} requests got 429."
    )
    lines.append(
        f"- Memory over {fmt(get(data, 'memory.requests'))} requests: RSS "
        f"{fmt(get(data, 'memory.rss_mb_at_20pct'))} MB at 20% and {fmt(get(data, 'memory.rss_mb_at_end'))} MB at "
        f"the end ({fmt(get(data, 'memory.growth_pct_after_20pct'), '%')}) on the request path; with the dedup index "
        f"{fmt(get(data, 'memory_with_dedup.growth_pct_after_20pct'), '%')} "
        f"({fmt(get(data, 'memory_with_dedup.growth_bytes_per_request'))} bytes per kept example)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
