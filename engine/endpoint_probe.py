"""Load-test an OpenAI-compatible endpoint through the engine's own request path.

What ``vllm bench serve``, llmperf and AIPerf do, in small: a sweep of steps,
each at one concurrency (a closed loop: N workers, each sending its next request
when the last one ends) or one request rate (an open loop: seeded Poisson
arrivals, in flight capped). Requests stream (SSE) through ``OpenAIProvider``,
so the figures are the engine's own: time to first token, inter-token latency,
time per output token, end-to-end latency, output tokens/s, requests/s, errors.

When the server reports llama.cpp's ``timings``, each step also carries the
server's own view: its decode speed per request (``predicted_per_second``)
beside ours (tokens over the time from first to last streamed token), and its
token count beside the one we saw.

Every step is bounded in count (``requests``) and time (``duration_s``, and a
hard ``step_timeout_s`` after which what is still in flight is cancelled).
This module measures and describes (``sweep_report``, the JSON a sweep is saved
as; ``step_line``, one line per finished step); it never prints. Users:
``corpusforge bench-endpoint`` (``engine/commands/bench_endpoint.py``, which adds
the table and the plot) and ``benchmarks/bench_endpoint.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import ProviderConfig
from .errors import ConfigError, EngineError
from .providers.base import Provider
from .types import Completion, Request

__all__ = [
    "BenchConfig",
    "Sample",
    "StepResult",
    "percentiles",
    "run_sweep",
    "run_step",
    "step_line",
    "sweep_report",
    "synthetic_prompts",
]

DEFAULT_PROMPT_TOKENS = 128
DEFAULT_MAX_TOKENS = 128
DEFAULT_REQUESTS_PER_STEP = 32
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_STEP_TIMEOUT_S = 600.0
DEFAULT_PROMPT_SET = 256
QUANTILES = (50, 90, 99)

_VOCABULARY = (
    "river market signal garden winter engine paper silver orbit harbor lantern meadow copper thunder "
    "canvas pocket violet marble ladder cotton anchor bridge candle forest glacier island jungle kettle "
    "lemon mirror needle ocean pepper quartz rocket saddle tunnel umbrella valley wagon yellow zebra"
)
_WORDS = tuple(_VOCABULARY.split())


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One sweep. Give ``concurrency`` levels or ``rates`` (requests/s), not both.

    A step ends when ``requests`` have been sent or ``duration_s`` has passed
    (whichever comes first; at least one must be set), and never runs longer
    than ``step_timeout_s``.
    """

    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    max_tokens: int = DEFAULT_MAX_TOKENS
    requests: int | None = DEFAULT_REQUESTS_PER_STEP
    duration_s: float | None = None
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    warmup: int = 1
    temperature: float = 0.0
    prompt_set: int = DEFAULT_PROMPT_SET
    seed: int = 0

    def __post_init__(self) -> None:
        if bool(self.concurrency) == bool(self.rates):
            raise ConfigError(
                "give concurrency levels or request rates (exactly one of them)",
                hint="e.g. --concurrency 1,2,4,8 or --rates 1,2,5",
            )
        if any(c < 1 for c in self.concurrency):
            raise ConfigError(f"concurrency levels must be >= 1, got {list(self.concurrency)}")
        if any(not (r > 0 and math.isfinite(r)) for r in self.rates):
            raise ConfigError(f"request rates must be positive, got {list(self.rates)}")
        if self.requests is None and self.duration_s is None:
            raise ConfigError(
                "a step needs a bound", hint="pass --requests-per-step N and/or --duration-per-step SECONDS"
            )
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"--requests-per-step must be >= 1, got {self.requests}")
        for name in ("duration_s", "step_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        for name in ("prompt_tokens", "max_tokens", "max_in_flight", "prompt_set"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")

    @property
    def mode(self) -> str:
        return "concurrency" if self.concurrency else "rate"

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(float(c) for c in self.concurrency) if self.concurrency else self.rates


def synthetic_prompts(n: int, prompt_tokens: int, seed: int | str = 0) -> list[list[dict[str, str]]]:
    """``n`` distinct chat prompts of about ``prompt_tokens`` tokens each, the same for the same seed.

    Each starts with its own random words so no two share a prefix (a server's
    prompt cache would otherwise make later requests look faster), and ends with
    an instruction that invites a long answer. One common English word is about
    one token for BPE tokenizers; the server's ``usage`` reports the truth.
    """
    rng = random.Random(seed)
    ask = "Now write a long, detailed story that uses all of these words."
    filler = max(1, prompt_tokens - len(ask.split()) - 8)
    return [
        [{"role": "user", "content": " ".join(rng.choice(_WORDS) for _ in range(filler)) + "\n\n" + ask}]
        for _ in range(n)
    ]


@dataclass(slots=True)
class Sample:
    """One finished request, as the client saw it (and as the server reported it, when it did)."""

    ok: bool
    error: str = ""
    ttft_s: float = 0.0
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gaps_s: list[float] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, done: Completion) -> Sample:
        times = done.chunk_times
        return cls(
            ok=True,
            ttft_s=done.ttft_s,
            latency_s=done.latency_s,
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            gaps_s=[b - a for a, b in zip(times, times[1:], strict=False)],
            server=dict(done.server_timings),
        )

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (vLLM's TPOT); None for one-token answers."""
        if self.completion_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.completion_tokens - 1)

    @property
    def decode_tps(self) -> float | None:
        """Our view of this request's decode speed: tokens over first-to-last token, as llama.cpp measures it."""
        window = self.latency_s - self.ttft_s
        if self.completion_tokens < 2 or window <= 0:
            return None
        return self.completion_tokens / window


def percentiles(values: Sequence[float], quantiles: Sequence[int] = QUANTILES) -> dict[str, float]:
    """``{"mean", "p50", "p90", "p99"}`` with linear interpolation (numpy's default); empty → ``{}``."""
    if not values:
        return {}
    xs = sorted(values)
    out = {"mean": statistics.fmean(xs)}
    for q in quantiles:
        pos = (len(xs) - 1) * q / 100
        lo, hi = math.floor(pos), math.ceil(pos)
        out[f"p{q}"] = xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
    return out


@dataclass(slots=True)
class StepResult:
    """What one step measured. Latencies in milliseconds, rates per second."""

    mode: str
    level: float
    sent: int
    ok: int
    errors: dict[str, int]
    cancelled: int
    duration_s: float
    requests_per_s: float
    output_tokens_per_s: float
    input_tokens_per_s: float
    output_tokens: int
    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]
    tpot_ms: dict[str, float]
    e2e_ms: dict[str, float]
    #: Per-request decode speed: ours (client clock) and the server's own ``timings``, when reported.
    decode_tps: dict[str, float]
    server: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        """``c=4`` for a concurrency step, ``2/s`` for a rate step."""
        return f"c={self.level:g}" if self.mode == "concurrency" else f"{self.level:g}/s"

    @classmethod
    def summarise(cls, mode: str, level: float, samples: list[Sample], cancelled: int, duration_s: float) -> StepResult:
        good = [s for s in samples if s.ok]
        errors = Counter(s.error for s in samples if not s.ok)
        span = max(duration_s, 1e-9)
        out_tokens = sum(s.completion_tokens for s in good)
        ms = 1000.0
        return cls(
            mode=mode,
            level=level,
            sent=len(samples) + cancelled,
            ok=len(good),
            errors=dict(errors),
            cancelled=cancelled,
            duration_s=duration_s,
            requests_per_s=len(good) / span,
            output_tokens_per_s=out_tokens / span,
            input_tokens_per_s=sum(s.prompt_tokens for s in good) / span,
            output_tokens=out_tokens,
            ttft_ms=percentiles([s.ttft_s * ms for s in good]),
            itl_ms=percentiles([g * ms for s in good for g in s.gaps_s]),
            tpot_ms=percentiles([t * ms for s in good if (t := s.tpot_s) is not None]),
            e2e_ms=percentiles([s.latency_s * ms for s in good]),
            decode_tps=percentiles([d for s in good if (d := s.decode_tps) is not None]),
            server=_server_view(good),
        )


def _server_view(good: list[Sample]) -> dict[str, Any]:
    """The server's ``timings`` summarised beside ours; ``{}`` when the server does not report them."""
    timed = [s for s in good if s.server.get("predicted_per_second") and s.server.get("predicted_n")]
    if not timed:
        return {}
    ours = [s.decode_tps for s in timed if s.decode_tps is not None]
    theirs = [float(s.server["predicted_per_second"]) for s in timed]
    ratios = [d / float(s.server["predicted_per_second"]) for s in timed if (d := s.decode_tps) is not None]
    server_ms = [float(s.server.get("prompt_ms", 0.0)) + float(s.server.get("predicted_ms", 0.0)) for s in timed]
    return {
        "requests": len(timed),
        "decode_tps": percentiles(theirs),
        "our_decode_tps": percentiles(ours),
        #: median of (our decode speed / the server's), per request: 1.0 = perfect agreement
        "decode_ratio_p50": statistics.median(ratios) if ratios else None,
        "predicted_n": sum(int(s.server["predicted_n"]) for s in timed),
        "completion_tokens": sum(s.completion_tokens for s in timed),
        "prompt_ms": percentiles([float(s.server.get("prompt_ms", 0.0)) for s in timed]),
        "server_ms": percentiles(server_ms),
    }


# -- running ------------------------------------------------------------------------------------


class _Step:
    """The state of one running step: the prompts, the clock, the samples."""

    def __init__(self, provider: Provider, cfg: BenchConfig, prompts: list[list[dict[str, str]]], tag: str) -> None:
        self.provider = provider
        self.cfg = cfg
        self.prompts = prompts
        self.tag = tag
        self.samples: list[Sample] = []
        self.sent = 0
        self.started = time.perf_counter()
        self.stop_at = self.started + (cfg.duration_s if cfg.duration_s is not None else math.inf)

    def may_send(self) -> bool:
        under = self.cfg.requests is None or self.sent < self.cfg.requests
        return under and time.perf_counter() < self.stop_at

    def request(self) -> Request:
        n = self.sent
        self.sent += 1
        return Request(
            id=f"bench-{self.tag}-{n}",
            messages=self.prompts[n % len(self.prompts)],
            max_tokens=self.cfg.max_tokens,
            temperature=self.cfg.temperature,
            seed=self.cfg.seed + n,
            stream=True,
        )

    async def one(self, request: Request) -> None:
        try:
            done = await self.provider.complete(request)
        except EngineError as exc:
            self.samples.append(Sample(ok=False, error=type(exc).__name__))
            return
        self.samples.append(Sample.of(done))


async def _closed_loop(step: _Step, workers: int) -> None:
    async def worker() -> None:
        while step.may_send():
            await step.one(step.request())

    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(worker())


async def _open_loop(step: _Step, rate: float, rng: random.Random) -> None:
    slots = asyncio.Semaphore(step.cfg.max_in_flight)

    async def fire(request: Request) -> None:
        try:
            await step.one(request)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tg:
        next_at = step.started
        while step.may_send():
            next_at += rng.expovariate(rate)
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if not step.may_send():
                break
            await slots.acquire()  # at most max_in_flight outstanding; arrivals wait beyond that
            tg.create_task(fire(step.request()))


async def run_step(
    provider: Provider,
    cfg: BenchConfig,
    level: float,
    prompts: list[list[dict[str, str]]] | None = None,
) -> StepResult:
    """Run one step at ``level`` (workers, or requests/s) and summarise it."""
    if prompts is None:
        # Fresh prompts for every step, so no step is served from a prompt cache an earlier one filled.
        count = min(cfg.requests or cfg.prompt_set, cfg.prompt_set)
        prompts = synthetic_prompts(count, cfg.prompt_tokens, seed=f"{cfg.seed}:{cfg.mode}:{level}")
    step = _Step(provider, cfg, prompts, tag=f"{cfg.mode[0]}{level:g}")
    if cfg.mode == "concurrency":
        body = _closed_loop(step, int(level))
    else:
        body = _open_loop(step, level, random.Random(f"{cfg.seed}:{level}"))
    with contextlib.suppress(TimeoutError):  # what was still in flight is cancelled, and counted below
        await asyncio.wait_for(body, timeout=cfg.step_timeout_s)
    duration = time.perf_counter() - step.started
    cancelled = step.sent - len(step.samples)
    return StepResult.summarise(cfg.mode, level, step.samples, cancelled, duration)


async def run_sweep(
    provider: Provider,
    cfg: BenchConfig,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Warm up (not measured), then run every level in order; ``on_step`` sees each result as it lands."""
    prompts = synthetic_prompts(max(cfg.warmup, 1), cfg.prompt_tokens, seed=f"{cfg.seed}:warmup")
    for i in range(cfg.warmup):
        warm = Request(
            id=f"bench-warmup-{i}",
            messages=prompts[i % len(prompts)],
            max_tokens=min(cfg.max_tokens, 16),
            temperature=cfg.temperature,
            stream=True,
        )
        try:
            await asyncio.wait_for(provider.complete(warm), timeout=cfg.step_timeout_s)
        except TimeoutError as exc:
            raise EngineError("the warm-up request did not finish", hint="is the endpoint up?") from exc
    results = []
    for level in cfg.levels:
        result = await run_step(provider, cfg, level)
        results.append(result)
        if on_step is not None:
            on_step(result)
    return results


# -- describing ---------------------------------------------------------------------------------


def _p50(stats: dict[str, float]) -> str:
    value = stats.get("p50")
    return "-" if value is None else f"{value:,.0f}"


def step_line(step: StepResult) -> str:
    """One line of progress for a finished step: counts, rates, TTFT and end-to-end p50."""
    failed = sum(step.errors.values()) + step.cancelled
    return (
        f"  {step.label:>8}  {step.ok}/{step.sent} ok, {failed} failed, "
        f"{step.output_tokens_per_s:,.1f} out tok/s, {step.requests_per_s:.2f} req/s, "
        f"TTFT p50 {_p50(step.ttft_ms)} ms, E2E p50 {_p50(step.e2e_ms)} ms"
    )


def sweep_report(
    endpoint: ProviderConfig,
    cfg: BenchConfig,
    steps: Sequence[StepResult],
    started: float,
    *,
    local_server: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a sweep is saved as (``bench-endpoint --out DIR`` writes it to ``DIR/bench.json``); never the API key.

    ``started`` is the wall-clock time (``time.time()``) the sweep began; ``local_server``
    describes the managed llama.cpp server when one was started.
    """
    return {
        "endpoint": {"base_url": endpoint.base_url, "model": endpoint.model, "local": local_server},
        "config": asdict(cfg),
        "started_at": started,
        "elapsed_s": round(time.time() - started, 3),
        "steps": [step.to_dict() for step in steps],
    }
