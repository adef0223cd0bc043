"""TPM utilisation: how much of a server's token budget the engine uses when it has to learn the limit.

The simulator enforces ``TPM_LIMIT`` the way OpenAI does: a request is charged
its prompt plus its whole ``max_tokens`` when admitted, and nothing comes back
when the completion is shorter. The engine is not told the limit (no ``--tpm``):
it learns it from the ``x-ratelimit-*`` headers. Three runs, one after the other,
each against a fresh simulator for ``SECONDS``:

* ``as_asked``: the request path (admission + provider) sending ``max_tokens`` as
  asked (``RateLimitedProvider(right_size=False)``): the budget fills with reservations;
* ``right_sized``: the same path with ``max_tokens`` sized to the completions seen;
* ``generate``: the whole of ``generate`` (the default: right-sized), as a user runs it.

For each: the tokens the server charged over its capacity in the window (a full
bucket plus the refill: the figure the RPM benchmark reports as utilisation), the
real tokens (prompt + completion) per minute against the limit, and 429s; the same
over the second half of the run alone (``steady``: no starting bucket, limit learned).

    python -m benchmarks.bench_tpm              # quick: 120 s per run
    BENCH_FULL=1 python -m benchmarks.bench_tpm  # 300 s per run
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from engine.errors import RateLimited
from engine.limits import AdmissionController
from engine.providers.limited import RateLimitedProvider
from engine.providers.openai import OpenAIProvider, make_session
from engine.sim.config import SimConfig
from engine.sim.server import RunningSim, SimState, running_sim
from engine.tokens import TokenCounter
from engine.types import Request

from .record import write_results

FULL = os.environ.get("BENCH_FULL") == "1"
TPM_LIMIT = 20_000
SECONDS = 300 if FULL else 120
#: The steady state is measured over the second half of each run (the first starts from a full bucket and learns).
STEADY_FROM = 0.5
#: What the CLI asks for by default (``--max-tokens``).
MAX_TOKENS = 512
WORKERS = 64
PROMPT = [
    {
        "role": "user",
        "content": "You write training data for a news topic classifier. "
        + "Write one realistic, specific news article of two or three sentences, in a neutral register, " * 8
        + "as JSON with the keys text and label.\nLabel: sport",
    }
]


@contextmanager
def sim_thread(cfg: SimConfig) -> Iterator[tuple[str, SimState]]:
    """The simulator on its own loop in a thread (its counters stay readable); yields (base URL, state)."""
    ready: list[RunningSim] = []
    stop = threading.Event()

    async def serve() -> None:
        async with running_sim(cfg) as sim:
            ready.append(sim)
            while not stop.is_set():  # noqa: ASYNC110 - a thread's event, polled
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    while not ready:
        time.sleep(0.01)
    try:
        yield ready[0].url, ready[0].state
    finally:
        stop.set()
        thread.join(10)


async def request_path(url: str, *, right_size: bool) -> dict[str, Any]:
    """``WORKERS`` loops through RateLimitedProvider(OpenAIProvider) until ``SECONDS`` are up."""
    cfg = ProviderConfig(base_url=url, model="sim", max_connections=WORKERS)
    controller = AdmissionController(RateLimit(max_in_flight=WORKERS))
    end = time.monotonic() + SECONDS
    done = limited = 0
    async with make_session(cfg) as session:
        provider = RateLimitedProvider(OpenAIProvider(session, cfg), controller, TokenCounter(), right_size=right_size)

        async def worker(w: int) -> None:
            nonlocal done, limited
            i = 0
            while time.monotonic() < end:
                i += 1
                try:
                    await provider.complete(Request(id=f"{w}-{i}", messages=PROMPT, max_tokens=MAX_TOKENS))
                    done += 1
                except RateLimited as exc:
                    limited += 1
                    await asyncio.sleep(exc.retry_after or 0.5)

        tasks = [asyncio.ensure_future(worker(w)) for w in range(WORKERS)]
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    sizer = provider.sizer.snapshot() if provider.sizer is not None else {}
    return {"client_ok": done, "client_rate_limited": limited, **sizer}


async def generate_path(url: str, out: Path) -> dict[str, Any]:
    from engine.generate import GenerateOptions, generate

    run = RunConfig(task="bbc-news", strategy="zero-shot", n=10**7, max_tokens=MAX_TOKENS)
    cfg = ProviderConfig(base_url=url, model="sim", max_connections=WORKERS)
    options = GenerateOptions(out_dir=out, progress=False, reference_real=False, dedup=None)
    coro = generate(run, cfg, RateLimit(max_in_flight=WORKERS), RetryPolicy(), options)
    with suppress(TimeoutError):
        await asyncio.wait_for(coro, SECONDS)
    stats = json.loads((out / "stats.json").read_text())
    return {"accepted": stats.get("accepted", 0), "client_rate_limited": stats.get("rate_limited", 0)}


def measure(name: str, fn: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    def counters(state: SimState) -> tuple[float, int, int, int, int]:
        real = state.prompt_tokens + state.completion_tokens
        return time.perf_counter(), state.tokens_charged, real, state.ok, state.rate_limited

    with sim_thread(SimConfig(tpm_limit=TPM_LIMIT, seed=4)) as (url, state):
        mid: list[tuple[float, int, int, int, int]] = []
        timer = threading.Timer(SECONDS * STEADY_FROM, lambda: mid.append(counters(state)))
        t0 = time.perf_counter()
        timer.start()
        extra = asyncio.run(fn(url))  # type: ignore[arg-type]
        t1, charged, real, ok, rate_limited = counters(state)
        wall = t1 - t0
    t_mid, charged_mid, real_mid, ok_mid, limited_mid = mid[0]
    steady_s = t1 - t_mid
    capacity = TPM_LIMIT + TPM_LIMIT * wall / 60.0  # the bucket starts full, then refills
    result = {
        "seconds": round(wall, 1),
        "ok_requests": ok,
        "rate_limited": rate_limited,
        "rate_limited_pct": round(100 * rate_limited / max(ok + rate_limited, 1), 2),
        "charged_utilisation_pct": round(100 * charged / capacity, 1),
        "real_tokens_per_min": round(real / wall * 60),
        "real_pct_of_limit": round(100 * real / capacity, 1),
        "real_tokens_per_request": round(real / max(ok, 1), 1),
        "steady": {
            "seconds": round(steady_s, 1),
            "charged_pct_of_limit": round(100 * (charged - charged_mid) / (TPM_LIMIT * steady_s / 60), 1),
            "real_tokens_per_min": round((real - real_mid) / steady_s * 60),
            "real_pct_of_limit": round(100 * (real - real_mid) / (TPM_LIMIT * steady_s / 60), 1),
            "ok_requests": ok - ok_mid,
            "rate_limited": rate_limited - limited_mid,
        },
        **extra,
    }
    print(f"{name}: {result}", flush=True)
    return result


def main() -> dict[str, Any]:
    results: dict[str, Any] = {"tpm_limit": TPM_LIMIT, "max_tokens": MAX_TOKENS, "seconds": SECONDS}
    results["as_asked"] = measure("as_asked", lambda url: request_path(url, right_size=False))
    results["right_sized"] = measure("right_sized", lambda url: request_path(url, right_size=True))
    with tempfile.TemporaryDirectory() as tmp:
        results["generate"] = measure("generate", lambda url: generate_path(url, Path(tmp) / "run"))
    base, sized = results["as_asked"], results["right_sized"]
    results["ratios"] = {
        "steady_real_tokens_per_min_right_sized_vs_as_asked": round(
            sized["steady"]["real_tokens_per_min"] / max(base["steady"]["real_tokens_per_min"], 1), 2
        ),
    }
    write_results("tpm", results)
    print(render(results))
    return results


def render(result: dict[str, Any]) -> str:
    """This benchmark's section of ``SUMMARY.md`` (``run_all``) and its report on stdout."""
    return table(result)


def table(r: dict[str, Any]) -> str:
    lines = [
        f"TPM utilisation ({r['tpm_limit']:,} TPM learned, --max-tokens {r['max_tokens']}, {r['seconds']} s per run):",
        "",
        "| run | charged / capacity | real tokens/min | real / limit | 429s | ok requests "
        "| steady: charged / limit | steady: real tokens/min (/ limit) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    # ``before_fix_generate``: generate at the commit before the TPM fix (e231e1e), same machine and sizes, if recorded
    for name in ("before_fix_generate", "as_asked", "right_sized", "generate"):
        if name not in r:
            continue
        m, st = r[name], r[name]["steady"]
        lines.append(
            f"| {name} | {m['charged_utilisation_pct']}% | {m['real_tokens_per_min']:,} | {m['real_pct_of_limit']}% "
            f"| {m['rate_limited']} ({m['rate_limited_pct']}%) | {m['ok_requests']} "
            f"| {st['charged_pct_of_limit']}% | {st['real_tokens_per_min']:,} ({st['real_pct_of_limit']}%) |"
        )
    lines.append(
        f"\nreal tokens per minute, right-sized / as asked: "
        f"{r['ratios']['steady_real_tokens_per_min_right_sized_vs_as_asked']}x (steady state)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
