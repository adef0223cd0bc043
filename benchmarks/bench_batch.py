"""Batch mode vs the online path: cost, HTTP calls and client CPU per accepted example, on one simulator.

Both paths generate the same N accepted examples of the same task (bbc-news,
zero-shot, structured output, 5% planted near-duplicates) from a simulator in
a child process, at the same list prices; the batch path pays the batch price
(``--batch-discount 0.5``). Measured in this process: cost per accepted
example, HTTP calls the client made (online: every attempt; batch: files,
batches, polls, downloads), client CPU seconds per 1,000 accepted examples
(user + system, this process only), label balance and the duplicate rate
(near-duplicates dropped per example generated, and exact duplicates left in
the data: must be 0). Then the resume contract, for real: the CLI in a
subprocess kills itself (SIGKILL) at each step of a batch run and is resumed;
it counts lost or repeated examples and requests the simulator executed twice.

    python -m benchmarks.bench_batch                 # N = 20,000
    python -m benchmarks.bench_batch --n 100000      # the issue's size (BENCH_FULL=1 too)
    python -m benchmarks.bench_batch --skip-resume
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from engine.batch.poll import PollPolicy
from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from engine.generate import generate
from engine.run import GenerateOptions
from engine.sim import SimConfig, sim_process
from engine.sources.batch import BatchOptions, generate_batch
from engine.store import read_jsonl

from .markdown import Headline, fmt, ratio
from .record import write_results

FULL = os.environ.get("BENCH_FULL") == "1"
N = 100_000 if FULL else 20_000
#: List prices (USD per 1M tokens, input/output), gpt-4o's at the time of writing; batch pays half.
PRICE_IN, PRICE_OUT = 2.50, 10.00
DISCOUNT = 0.5
MAX_TOKENS = 64
CONCURRENCY = 64
SIM = SimConfig(dup_rate=0.05, batch_rps=50_000, batch_phase_s=0.05, seed=7)
#: Resume scenario: examples per run, and the ledger events the CLI is killed just before.
RESUME_N = 600
RESUME_EVENTS = ("written:2", "uploaded:1", "created:1", "status:2", "ended:1", "downloaded:1", "ingested:1")
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 3600


def _cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def _quality(out: Path) -> dict[str, Any]:
    data = list(read_jsonl(out / "data.jsonl"))
    labels = Counter(row["label"] for row in data)
    texts = Counter(row["text"] for row in data)
    rejects = Counter(row.get("reason", "") for row in read_jsonl(out / "rejects.jsonl"))
    near = sum(n for reason, n in rejects.items() if "dup" in reason or "near" in reason or "exact" in reason)
    generated = len(data) + sum(rejects.values())
    return {
        "accepted": len(data),
        "unique_ids": len({row["id"] for row in data}),
        "exact_duplicates_in_data": sum(n - 1 for n in texts.values() if n > 1),
        "label_counts": dict(sorted(labels.items())),
        "label_spread": max(labels.values()) - min(labels.values()) if labels else None,
        "duplicates_dropped": near,
        "duplicate_rate": round(near / max(generated, 1), 4),
        "rejects": dict(rejects),
    }


def _sim_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/sim/batch-stats", timeout=30) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def measure(mode: str, n: int, out: Path) -> dict[str, Any]:
    run = RunConfig(task="bbc-news", n=n, max_tokens=MAX_TOKENS, price_in=PRICE_IN, price_out=PRICE_OUT)
    options = GenerateOptions(out_dir=out, progress=False, reference_real=False)
    retry = RetryPolicy(max_attempts=4, initial_s=0.05, max_backoff_s=1.0)
    with sim_process(SIM) as url:
        cfg = ProviderConfig(base_url=url, model="sim", timeout_s=300.0, max_connections=CONCURRENCY)
        cpu0, t0 = _cpu(), time.perf_counter()
        if mode == "batch":
            batch = BatchOptions(discount=DISCOUNT, poll=PollPolicy(initial_s=0.2, max_s=2.0))
            final = asyncio.run(generate_batch(run, cfg, RateLimit(), retry, options, batch))
            calls = int(final["batch_http_calls"]) + 1  # + the preflight GET /models
        else:
            final = asyncio.run(generate(run, cfg, RateLimit(max_in_flight=CONCURRENCY), retry, options))
            calls = int(final["requests"]) + 1
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        sim = _sim_stats(url) if mode == "batch" else {}
    quality = _quality(out)
    accepted = quality["accepted"]
    result = {
        "n": n,
        "wall_s": round(wall, 2),
        "client_cpu_s": round(cpu, 2),
        "cpu_s_per_1k": round(cpu / accepted * 1000, 3),
        "http_calls": calls,
        "http_calls_per_1k": round(calls / accepted * 1000, 2),
        "requests": final["requests"],
        "prompt_tokens": final["prompt_tokens"],
        "completion_tokens": final["completion_tokens"],
        "cost_usd": final["cost_usd"],
        "cost_per_1k_accepted_usd": round(final["cost_usd"] / accepted * 1000, 6),
        "phase": final["phase"],
        **quality,
    }
    if mode == "batch":
        result["batches"] = {k: final[k] for k in final if k.startswith("batches_") and isinstance(final[k], int)}
        result["sim_executed_twice"] = sim.get("executed_twice")
    print(f"{mode}: {json.dumps({k: v for k, v in result.items() if k not in ('rejects',)})}", flush=True)
    return result


def resume_check(tmp: Path) -> dict[str, Any]:
    """The CLI killed (SIGKILL) before each ledger event, then resumed: losses, repeats, double executions."""
    rows = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OPENAI_API_KEY", None)
    cfg = SimConfig(batch_rps=2000, batch_phase_s=0.05, batch_error_rate=0.02, seed=3)
    for event in RESUME_EVENTS:
        out = tmp / f"resume-{event.replace(':', '-')}"
        with sim_process(cfg) as url:
            argv = [sys.executable, "-m", "engine", "generate", "bbc-news", "--n", str(RESUME_N), "--out", str(out)]
            argv += ["--base-url", url, "--model", "sim", "--max-tokens", str(MAX_TOKENS), "--no-progress"]
            argv += ["--no-reference-real", "--batch", "--batch-max-requests", "150", "--batch-poll-s", "0.05"]
            killed = subprocess.run([*argv, "--batch-crash-before", event], env=env, capture_output=True, cwd=ROOT)
            resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, cwd=ROOT)
            with urllib.request.urlopen(url.removesuffix("/v1") + "/sim/batch-stats?ids=1", timeout=30) as r:
                sim = json.loads(r.read())
        data = list(read_jsonl(out / "data.jsonl"))
        journal = list(read_jsonl(out / "requests.jsonl"))
        ok = {j["request_id"] for j in journal if j["status"] == "ok"}
        row = {
            "killed_before": event,
            "killed": killed.returncode == -signal.SIGKILL,
            "resumed_ok": resumed.returncode == 0,
            "examples": len(data),
            "examples_lost": max(0, RESUME_N - len({d["id"] for d in data})),
            "examples_repeated": len(data) - len({d["id"] for d in data}),
            "requests_executed_twice": sim["executed_twice"],
            "answers_lost": len(set(sim["answered_ids"]) - ok),
        }
        print(f"resume: {row}", flush=True)
        rows.append(row)
    return {
        "n": RESUME_N,
        "runs": rows,
        "all_ok": all(
            r["killed"]
            and r["resumed_ok"]
            and r["examples"] == RESUME_N
            and not r["examples_repeated"]
            and not r["requests_executed_twice"]
            and not r["answers_lost"]
            for r in rows
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N, help="accepted examples per path")
    parser.add_argument("--skip-resume", action="store_true", help="skip the kill -9 / resume runs")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"task": "bbc-news", "price_in": PRICE_IN, "price_out": PRICE_OUT, "discount": DISCOUNT}
    with tempfile.TemporaryDirectory() as tmp:
        results["online"] = measure("online", args.n, Path(tmp) / "online")
        results["batch"] = measure("batch", args.n, Path(tmp) / "batch")
        if not args.skip_resume:
            results["resume"] = resume_check(Path(tmp))
    on, ba = results["online"], results["batch"]
    results["ratios"] = {
        "cost_per_accepted_batch_vs_online": round(ba["cost_per_1k_accepted_usd"] / on["cost_per_1k_accepted_usd"], 3),
        "http_calls_batch_vs_online": round(ba["http_calls"] / on["http_calls"], 5),
        "cpu_per_accepted_batch_vs_online": round(ba["cpu_s_per_1k"] / on["cpu_s_per_1k"], 3),
    }
    write_results("batch", results)
    print(render(results))
    return results


def headline(result: dict[str, Any]) -> Headline:
    r = result.get("ratios") or {}
    return [
        ("batch cost per accepted example vs online", ratio(r.get("cost_per_accepted_batch_vs_online"))),
        ("batch HTTP calls vs online", ratio(r.get("http_calls_batch_vs_online"))),
    ]


def render(result: dict[str, Any]) -> str:
    """This benchmark's section of ``SUMMARY.md`` and its report on stdout."""
    on, ba = result["online"], result["batch"]
    lines = [
        f"Batch mode vs online, {ba['n']:,} accepted examples of {result['task']} on the simulator "
        f"(list prices ${result['price_in']}/${result['price_out']} per 1M tokens, batch x{result['discount']}):",
        "",
        "| path | $ per 1k accepted | HTTP calls | calls per 1k | client CPU s per 1k | wall s | requests "
        "| label spread | near-dup rate | exact dups in data |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in (("online", on), ("batch", ba)):
        lines.append(
            f"| {name} | {m['cost_per_1k_accepted_usd']:.4f} | {m['http_calls']:,} | {fmt(m['http_calls_per_1k'])} "
            f"| {fmt(m['cpu_s_per_1k'])} | {fmt(m['wall_s'])} | {m['requests']:,} | {m['label_spread']} "
            f"| {m['duplicate_rate']:.2%} | {m['exact_duplicates_in_data']} |"
        )
    r = result["ratios"]
    lines.append(
        f"\nbatch / online: cost per accepted example {ratio(r['cost_per_accepted_batch_vs_online'])}, "
        f"HTTP calls {ratio(r['http_calls_batch_vs_online'])}, client CPU per example "
        f"{ratio(r['cpu_per_accepted_batch_vs_online'])}; batches {ba.get('batches')}, "
        f"requests the simulator executed twice: {ba.get('sim_executed_twice')}"
    )
    resume = result.get("resume")
    if resume:
        lost = sum(x["examples_lost"] for x in resume["runs"])
        repeated = sum(x["examples_repeated"] for x in resume["runs"])
        twice = sum(x["requests_executed_twice"] for x in resume["runs"])
        answers = sum(x["answers_lost"] for x in resume["runs"])
        lines.append(
            f"\nkill -9 before each of {len(resume['runs'])} ledger steps, then --resume (N={resume['n']}): "
            f"examples lost {lost}, repeated {repeated}, requests executed twice {twice}, paid answers lost "
            f"{answers}: {'all ok' if resume['all_ok'] else 'FAILED'}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
