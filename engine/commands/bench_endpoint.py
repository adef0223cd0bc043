"""``corpusforge bench-endpoint``: load-test an OpenAI-compatible endpoint (or the managed local model).

The flags, the local server and the rendering (a rich table, a matplotlib plot) live
here; the load test itself is ``engine/endpoint_probe.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import aio
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ProviderConfig
    from ..endpoint_probe import BenchConfig, StepResult

NAME = "bench-endpoint"
HELP = "load-test an OpenAI-compatible endpoint: TTFT, inter-token latency, tokens/s vs concurrency or rate"
DESCRIPTION = (
    "Sweep concurrency levels (closed loop) or request rates (seeded Poisson arrivals) against an "
    "OpenAI-compatible endpoint with streaming requests sent through the engine's own provider, and report "
    "time to first token, inter-token latency, end-to-end latency percentiles, output tokens/s, requests/s "
    "and errors per step. When the server reports llama.cpp timings, its own decode speed is shown beside "
    "ours. Without --base-url (or with --local) it starts the packaged local model. With --out DIR it "
    "writes DIR/bench.json and DIR/bench.png (throughput against latency)."
)


def _parse_levels(value: str, cast: type, example: str, what: str) -> tuple[Any, ...]:
    try:
        levels = tuple(cast(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {example}, got {value!r}") from None
    if not levels:
        raise argparse.ArgumentTypeError(f"expected at least one {what}")
    return levels


def _ints(value: str) -> tuple[int, ...]:
    return _parse_levels(value, int, "integers like 1,2,4,8", "level")


def _floats(value: str) -> tuple[float, ...]:
    return _parse_levels(value, float, "numbers like 1,2,5", "rate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    e = parser.add_argument_group("endpoint")
    e.add_argument("--base-url", help="OpenAI-style base URL ending in /v1; omit to start the packaged local model")
    e.add_argument("--model", help="model name (default for --local: the one the server reports)")
    e.add_argument("--local", action="store_true", help="start and bench the managed llama.cpp server")
    e.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    e.add_argument("--timeout", type=float, default=300.0, help="seconds per request before it counts as an error")
    s = parser.add_argument_group("sweep")
    s.add_argument("--concurrency", type=_ints, help="concurrency levels (closed loop); default 1,2,4,8")
    s.add_argument("--rates", type=_floats, help="request rates per second (Poisson arrivals) instead of concurrency")
    s.add_argument("--prompt-tokens", type=int, default=128, help="approximate prompt length of the synthetic prompts")
    s.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request")
    s.add_argument("--requests-per-step", type=int, default=32, help="requests per step (0 = bounded by time only)")
    s.add_argument("--duration-per-step", type=float, default=None, help="seconds per step (stop sending after)")
    s.add_argument("--step-timeout", type=float, default=600.0, help="hard limit per step; in-flight work is cancelled")
    s.add_argument("--max-in-flight", type=int, default=256, help="cap on outstanding requests in rate mode")
    s.add_argument("--warmup", type=int, default=1, help="unmeasured requests before the first step")
    s.add_argument("--temperature", type=float, default=0.0, help="sampling temperature")
    s.add_argument("--seed", type=int, default=0, help="seed for the prompts and the arrival times")
    s.add_argument("--out", type=Path, help="directory for bench.json, bench.png (and the local server's log)")
    loc = parser.add_argument_group("local server (--local)")
    loc.add_argument("--parallel", type=int, default=4, help="llama.cpp slots (requests decoded together)")
    loc.add_argument("--ctx", type=int, default=8192, help="context tokens shared by all slots")
    loc.add_argument("--threads", type=int, default=0, help="CPU threads (0 = every core we may use)")


def _bench_config(args: argparse.Namespace) -> BenchConfig:
    from ..endpoint_probe import BenchConfig

    if args.concurrency and args.rates:
        raise ConfigError("--concurrency and --rates are exclusive", hint="sweep one of them per run")
    requests = args.requests_per_step or None
    return BenchConfig(
        concurrency=() if args.rates else (args.concurrency or (1, 2, 4, 8)),
        rates=args.rates or (),
        prompt_tokens=args.prompt_tokens,
        max_tokens=args.max_tokens,
        requests=requests,
        duration_s=args.duration_per_step,
        step_timeout_s=args.step_timeout,
        max_in_flight=args.max_in_flight,
        warmup=args.warmup,
        temperature=args.temperature,
        seed=args.seed,
    )


def _api_key(var: str) -> str | None:
    value = os.environ.get(var)
    return value.strip() if value and value.strip() else None


def run(args: argparse.Namespace) -> int:

    cfg = _bench_config(args)
    local = args.local or not args.base_url
    if args.local and args.base_url:
        raise ConfigError("--local and --base-url are exclusive", hint="drop one of them")
    if not local and not args.model:
        raise ConfigError("no model given", hint="pass --model NAME (see GET /v1/models)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    report = aio.run(_bench(args, cfg, local))
    if args.out:
        path = args.out / "bench.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        written = [path]
        if any(step["ok"] for step in report["steps"]):
            plot(report, args.out / "bench.png")
            written.append(args.out / "bench.png")
        print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    steps = report["steps"]
    return 0 if steps and all(step["ok"] for step in steps) else 1


async def _bench(args: argparse.Namespace, cfg: BenchConfig, local: bool) -> dict[str, Any]:
    from ..config import ProviderConfig
    from ..endpoint_probe import sweep_report

    connections = max(int(max(cfg.levels)) if cfg.mode == "concurrency" else cfg.max_in_flight, 1)
    started = time.time()
    if not local:
        pcfg = ProviderConfig(
            base_url=args.base_url,
            model=args.model,
            api_key=_api_key(args.api_key_env),
            timeout_s=args.timeout,
            max_connections=connections,
        )
        steps = await _sweep(pcfg, cfg)
        return sweep_report(pcfg, cfg, steps, started)

    from ..llamacpp import LocalServer, LocalServerConfig, default_threads

    server_cfg = LocalServerConfig(
        parallel=args.parallel,
        ctx=args.ctx,
        threads=args.threads or default_threads(),
        log_path=args.out / "llama-server.log" if args.out else None,
    )
    print("starting the local model (llama.cpp, SmolLM2-135M-Instruct)...", file=sys.stderr, flush=True)
    async with LocalServer(server_cfg) as server:
        pcfg = ProviderConfig(
            base_url=server.base_url,
            model=args.model or server.model,
            name="local",
            timeout_s=args.timeout,
            max_connections=connections,
        )
        steps = await _sweep(pcfg, cfg)
    info = {"parallel": server_cfg.parallel, "ctx": server_cfg.ctx, "threads": server_cfg.threads}
    return sweep_report(pcfg, cfg, steps, started, local_server=info)


async def _sweep(pcfg: ProviderConfig, cfg: BenchConfig) -> list[StepResult]:
    from ..endpoint_probe import run_sweep, step_line
    from ..providers.openai import OpenAIProvider, make_session

    console, table = _table_maker(pcfg.model, pcfg.base_url)
    console.print(f"benchmarking [bold]{pcfg.model}[/] at {pcfg.base_url} ({cfg.mode} sweep: {_levels(cfg)})")
    async with make_session(pcfg) as session:
        provider = OpenAIProvider(session, pcfg)
        steps = await run_sweep(provider, cfg, on_step=lambda step: console.print(step_line(step)))
    console.print(table(steps))
    return steps


def _levels(cfg: BenchConfig) -> str:
    return ",".join(f"{level:g}" for level in cfg.levels)


# -- rendering (rich on screen, matplotlib for the PNG) ------------------------------------------


def _fmt(stats: dict[str, float], key: str, digits: int = 0) -> str:
    value = stats.get(key)
    return "-" if value is None else f"{value:,.{digits}f}"


def _table_maker(model: str, url: str) -> tuple[Any, Callable[[list[StepResult]], Any]]:
    from rich.console import Console
    from rich.table import Table

    # A pipe or a file gets the whole table rather than rich's 80 columns.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

    def table(steps: list[StepResult]) -> Table:
        t = Table(title=f"{model} @ {url}", title_justify="left")
        columns = (
            "step",
            "ok/sent",
            "errors",
            "req/s",
            "out tok/s",
            "TTFT ms p50/p90/p99",
            "ITL ms p50/p99",
            "TPOT ms",
            "E2E ms p50/p90/p99",
            "tok/s/req ours/server",
        )
        for col in columns:
            t.add_column(col, justify="right")
        for s in steps:
            errors = ", ".join(f"{k}:{v}" for k, v in s.errors.items())
            if s.cancelled:
                errors = ", ".join(filter(None, (errors, f"cancelled:{s.cancelled}")))
            decode = _fmt(s.decode_tps, "p50", 1)
            if s.server:
                decode += f" / {_fmt(s.server['decode_tps'], 'p50', 1)}"
                ratio = s.server.get("decode_ratio_p50")
                if ratio is not None:
                    decode += f" ({ratio:.2f})"
            t.add_row(
                s.label,
                f"{s.ok}/{s.sent}",
                errors or "0",
                f"{s.requests_per_s:.2f}",
                f"{s.output_tokens_per_s:,.1f}",
                "/".join(_fmt(s.ttft_ms, k) for k in ("p50", "p90", "p99")),
                "/".join(_fmt(s.itl_ms, k, 1) for k in ("p50", "p99")),
                _fmt(s.tpot_ms, "p50", 1),
                "/".join(_fmt(s.e2e_ms, k) for k in ("p50", "p90", "p99")),
                decode,
            )
        t.caption = (
            "ITL: gaps between streamed chunks; TPOT: (E2E - TTFT) / (tokens - 1); last column: median per-request "
            "decode speed, ours from the stream and the server's own timings (ratio ours/server)"
        )
        return t

    return console, table


def plot(report: dict[str, Any], path: Path) -> None:
    """Output tokens/s (x) against latency (y: TTFT and end-to-end p50, p90 dashed), one point per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s in report["steps"] if s["ok"]]
    xs = [s["output_tokens_per_s"] for s in steps]
    labels = [(f"c={s['level']:g}" if s["mode"] == "concurrency" else f"{s['level']:g}/s") for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for key, name, color in (
            ("e2e_ms", "end-to-end", "tab:blue"),
            ("ttft_ms", "time to first token", "tab:orange"),
        ):
            ax.plot(xs, [s[key].get("p50", 0) for s in steps], "o-", color=color, label=f"{name} p50")
            ax.plot(xs, [s[key].get("p90", 0) for s in steps], "--", color=color, alpha=0.6, label=f"{name} p90")
        for x, y, label in zip(xs, [s["e2e_ms"].get("p50", 0) for s in steps], labels, strict=True):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
        ax.set_xlabel("output tokens/s (all requests)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{report['endpoint']['model']}: throughput vs latency", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
