"""The tail: time to N when a few requests hang, with and without backup requests for stragglers.

A simulator in its own process hangs ``HANG_RATE`` of requests for ``HANG_S``
seconds (its ``timeout`` fault). ``generate`` is run four times against it, each
to ``N`` examples: without faults (the baseline), with the hangs and backup
requests on (the default), with the hangs and ``--no-backup-requests`` (what the
tail cost before), and with a high error rate and two attempts per request
(failed requests must be planned again, not end the run short). Reported: the
time to the end of the run (the whole ``generate`` call, so requests abandoned
at the end are counted in it), the examples accepted, backups sent and won,
requests abandoned, and the time against the fault-free run.

    python -m benchmarks.bench_tail
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from .record import write_results

N = 5_000
HANG_RATE = 0.005
HANG_S = 60.0
ERROR_RATE = 0.3
ERROR_N = 300
CONCURRENCY = 64


def _run(url: str, out: Path, *, n: int, backups: bool, max_attempts: int = 6) -> dict[str, Any]:
    from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
    from engine.generate import GenerateOptions, generate

    run = RunConfig(task="bbc-news", n=n, max_tokens=64)
    cfg = ProviderConfig(base_url=url, model="sim", timeout_s=HANG_S * 2, max_connections=CONCURRENCY)
    options = GenerateOptions(out_dir=out, progress=False, reference_real=False, backup_requests=backups)
    retry = RetryPolicy(max_attempts=max_attempts)
    t0 = time.perf_counter()
    final = asyncio.run(generate(run, cfg, RateLimit(max_in_flight=CONCURRENCY), retry, options))
    seconds = time.perf_counter() - t0
    keys = ("accepted", "requests", "failed", "backup_requests", "backup_wins", "abandoned_in_flight", "phase")
    return {"seconds": round(seconds, 2), **{k: final.get(k, 0) for k in keys}}


def main() -> dict[str, Any]:
    from engine.sim.config import SimConfig
    from engine.sim.process import sim_process

    results: dict[str, Any] = {"n": N, "hang_rate": HANG_RATE, "hang_s": HANG_S, "concurrency": CONCURRENCY}
    with tempfile.TemporaryDirectory() as tmp:
        with sim_process(SimConfig(seed=1)) as url:
            results["fault_free"] = _run(url, Path(tmp) / "free", n=N, backups=True)
        with sim_process(SimConfig(faults={"timeout": HANG_RATE}, hang_s=HANG_S, seed=1)) as url:
            results["hangs_backups"] = _run(url, Path(tmp) / "hb", n=N, backups=True)
        with sim_process(SimConfig(faults={"timeout": HANG_RATE}, hang_s=HANG_S, seed=1)) as url:
            results["hangs_no_backups"] = _run(url, Path(tmp) / "hn", n=N, backups=False)
        with sim_process(SimConfig(error_rate=ERROR_RATE, hang_s=5.0, seed=1)) as url:
            results["errors_two_attempts"] = _run(url, Path(tmp) / "e", n=ERROR_N, backups=True, max_attempts=2)
    free = results["fault_free"]["seconds"]
    results["ratios"] = {
        "hangs_backups_vs_fault_free": round(results["hangs_backups"]["seconds"] / free, 2),
        "hangs_no_backups_vs_fault_free": round(results["hangs_no_backups"]["seconds"] / free, 2),
        "backups_share_of_requests": round(
            results["hangs_backups"]["backup_requests"] / max(results["hangs_backups"]["requests"], 1), 4
        ),
    }
    write_results("tail", results)
    print(render(results))
    return results


def render(result: dict[str, Any]) -> str:
    """This benchmark's section of ``SUMMARY.md`` (``run_all``) and its report on stdout."""
    r = result
    lines = [
        f"Time to N={r['n']:,} when {100 * r['hang_rate']:.1f}% of requests hang {r['hang_s']:.0f} s "
        f"({r['concurrency']} in flight):",
        "",
        "| run | seconds | x fault-free | accepted | requests | failed | backups (won) | abandoned at the end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    free = r["fault_free"]["seconds"]
    for name in ("fault_free", "hangs_backups", "hangs_no_backups", "errors_two_attempts"):
        m = r[name]
        ratio = f"{m['seconds'] / free:.2f}" if name != "errors_two_attempts" else "-"
        lines.append(
            f"| {name} | {m['seconds']} | {ratio} | {m['accepted']:,} | {m['requests']:,} | {m['failed']} "
            f"| {m['backup_requests']} ({m['backup_wins']}) | {m['abandoned_in_flight']} |"
        )
    lines.append(
        f"\nerrors_two_attempts: {ERROR_N} examples asked at a {ERROR_RATE:.0%} error rate with --max-attempts 2. "
        f"Backups were {100 * r['ratios']['backups_share_of_requests']:.2f}% of requests."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
