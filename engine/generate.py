"""One generation run, end to end: plan → admit → request → parse → filter → store.

``Generator`` wires the stages together for a run directory; the scheduler
decides how they run. It is the library entry point behind ``corpusforge
generate`` (``cli`` builds the config objects and calls :func:`generate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from .dedup import DedupConfig, DedupFilter
from .errors import BadRequest, DataError, EngineError, FatalError
from .limits import AdmissionController
from .parse import parse_completion
from .plan import Planner
from .providers.base import Provider
from .providers.limited import RateLimitedProvider
from .providers.openai import OpenAIProvider, make_session
from .providers.retrying import RetryingProvider
from .scheduler import Metered, Outcome, Scheduler
from .stats import Stats
from .store import ResumeState, RunStore
from .strategies import Strategy, make_strategy
from .tasks import Task, load_real, load_task
from .tokens import TokenCounter
from .types import Example, Request

__all__ = ["GenerateOptions", "Generator", "generate"]

STATS_EVERY_S = 2.0
#: Counters stats.json always shows, zero or not.
_ALWAYS = (
    "requests",
    "rate_limited",
    "retries",
    "failed",
    "accepted",
    "rejected",
    "prompt_tokens",
    "completion_tokens",
)


@dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    out_dir: Path
    resume: bool = False
    progress: bool = True
    data_file: Path | None = None
    #: Near-duplicate filtering; ``None`` turns it off (exact copies are then kept too).
    dedup: DedupConfig | None = field(default_factory=DedupConfig)
    #: Drop examples that copy any real training example (not only the shots).
    reference_real: bool = False
    workers: int | None = None


def _public_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Generator:
    """The consumer side of a run: turns outcomes into stored examples and keeps the plan informed."""

    def __init__(
        self,
        *,
        task: Task,
        run: RunConfig,
        strategy: Strategy,
        planner: Planner,
        store: RunStore,
        dedup: DedupFilter | None,
        stats: Stats,
        model: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task = task
        self.run = run
        self.strategy = strategy
        self.planner = planner
        self.store = store
        self.dedup = dedup
        self.stats = stats
        self.model = model
        self._clock = clock
        self._last_stats = clock()
        self.extra_stats: Callable[[], dict[str, Any]] = dict
        #: What the run is doing, for the display: generating, then finishing (collecting what is in flight).
        self.phase = "generating"

    # -- producer side ------------------------------------------------------------------------

    def next_request(self) -> Request | None:
        planned = self.planner.next()
        if planned is None:
            return None
        request = self.strategy.build(request_id=planned.id, label=planned.label, seed=planned.seed)
        request.stream = self.run.stream
        return request

    # -- consumer side ------------------------------------------------------------------------

    async def consume(self, batch: list[Outcome]) -> bool:
        accepted: list[Example] = []
        rejected: list[tuple[dict[str, Any], str]] = []
        failures: list[dict[str, Any]] = []
        journal: list[dict[str, Any]] = []
        candidates: list[tuple[Outcome, list[Example]]] = []
        fatal: FatalError | None = None
        for outcome in batch:
            request = outcome.request
            label = request.label or ""
            if outcome.error is not None:
                if isinstance(outcome.error, FatalError):
                    # stop the run, but only after the rest of this batch (paid for) is on disk
                    fatal = fatal or outcome.error
                    continue
                self.stats.incr("failed")
                failures.append({"request_id": request.id, "label": label, "reason": _public_error(outcome.error)})
                journal.append({"request_id": request.id, "label": label, "status": "failed", "kept": 0})
                continue
            completion = outcome.completion
            assert completion is not None
            parsed = parse_completion(
                completion.text, self.task, expected_label=label or None, per_request=self.run.per_request
            )
            for raw, reason in parsed.rejects:
                self.stats.incr(f"rejected:{reason}")
                rejected.append(({"request_id": request.id, "label": label, "raw": raw[:2000]}, reason))
            examples = [
                Example(
                    id=f"{request.id}-{j}",
                    fields=item.fields,
                    label=item.label,
                    request_id=request.id,
                    strategy=self.strategy.name,
                    model=completion.model or self.model,
                    meta=request.meta,
                )
                for j, item in enumerate(parsed.items)
            ]
            candidates.append((outcome, examples))
        flat = [ex for _, exs in candidates for ex in exs]
        verdicts: list[str | None] = (
            self.dedup.check_batch(flat) if flat and self.dedup is not None else [None] * len(flat)
        )
        pos = 0
        for outcome, examples in candidates:
            request = outcome.request
            label = request.label or ""
            kept = 0
            for ex in examples:
                verdict = verdicts[pos]
                pos += 1
                if verdict is not None:
                    self.stats.incr(f"rejected:{verdict}")
                    rejected.append((ex.to_dict(), verdict))
                elif self.planner.room(ex.label) - (kept if ex.label == label else 0) <= 0:
                    self.stats.incr("rejected:surplus")
                    rejected.append((ex.to_dict(), "surplus"))
                else:
                    accepted.append(ex)
                    kept += 1
            self.planner.record(label, kept=kept)
            journal.append({"request_id": request.id, "label": label, "status": "ok", "kept": kept})
        self.stats.incr("accepted", len(accepted))
        self.stats.incr("rejected", len(rejected))
        self.store.write_batch(accepted=accepted, rejected=rejected, failures=failures, journal=journal)
        if fatal is not None:
            raise fatal
        now = self._clock()
        if now - self._last_stats >= STATS_EVERY_S:
            self._last_stats = now
            self.store.write_stats(self.snapshot())
        done = self.planner.finished or (self.planner.exhausted and self.planner.outstanding == 0)
        if done:
            # requests still in flight were paid for: the scheduler collects them before the run ends
            self.phase = "finishing: collecting requests in flight"
        return done

    def snapshot(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        snap.update(self.extra_stats())
        snap["target"] = self.run.n
        for key in _ALWAYS:
            snap.setdefault(key, 0)
        elapsed = max(snap.get("elapsed_s", 0.0), 1e-9)
        snap["requests_per_s"] = round(snap.get("requests", 0) / elapsed, 3)
        snap["tokens_per_s"] = round((snap.get("prompt_tokens", 0) + snap.get("completion_tokens", 0)) / elapsed, 1)
        snap["accepted_per_s"] = round(snap["accepted"] / elapsed, 3)
        if self.run.price_in is not None or self.run.price_out is not None:
            snap["cost_usd"] = round(
                snap.get("prompt_tokens", 0) * (self.run.price_in or 0.0) / 1e6
                + snap.get("completion_tokens", 0) * (self.run.price_out or 0.0) / 1e6,
                6,
            )
        return snap


def manifest_for(
    run: RunConfig, provider: ProviderConfig, limit: RateLimit, dedup: DedupConfig | None
) -> dict[str, Any]:
    from dataclasses import asdict

    fingerprint = run.fingerprint()
    fingerprint["model"] = provider.model
    fingerprint["dedup"] = asdict(dedup) if dedup is not None else None
    return {
        "version": 1,
        "fingerprint": fingerprint,
        "run": {k: v for k, v in asdict(run).items()},
        "provider": provider.public(),
        "limits": asdict(limit),
    }


async def generate(
    run: RunConfig,
    provider_cfg: ProviderConfig,
    limit: RateLimit,
    retry: RetryPolicy,
    options: GenerateOptions,
    *,
    stats: Stats | None = None,
    view_factory: Callable[[Callable[[], dict[str, Any]]], contextlib.AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """Run one generation into ``options.out_dir``; return the final stats snapshot."""
    stats = stats or Stats()
    task = load_task(run.task)
    train = None
    if run.strategy in ("one-shot", "few-shot"):
        train = load_real(task, "train", data_file=options.data_file)  # the shots: required
    elif options.reference_real:
        # only to drop copies of real texts: a task without real data still generates (zero-shot, topic)
        with contextlib.suppress(DataError):
            train = load_real(task, "train", data_file=options.data_file)
    strategy = make_strategy(
        run.strategy,
        task,
        shots=run.shots,
        per_request=run.per_request,
        structured=run.structured,
        attributes=run.attributes,
        seed=run.seed,
        max_tokens=run.max_tokens,
        temperature=run.temperature,
        top_p=run.top_p,
        train_examples=train,
    )
    async with make_session(provider_cfg) as session:
        base = OpenAIProvider(session, provider_cfg)
        # before anything touches --out: a wrong URL or key leaves nothing behind to resume
        await _preflight(base, provider_cfg)
        with RunStore(options.out_dir) as store:
            manifest = manifest_for(run, provider_cfg, limit, options.dedup)
            resumed = store.open(manifest, resume=options.resume, field_names=task.fields)
            if store.read_state().get("structured") is False:
                strategy.structured = False
            dedup = _dedup_filter(options, strategy, train, resumed, stats)
            stats.merge({k: v for k, v in resumed.stats.items() if k != "elapsed_s"})
            planner = Planner(
                list(task.labels),
                n=run.n,
                per_request=run.per_request,
                seed=run.seed,
                cap=run.request_cap,
                balance=run.balance,
                done=resumed.done_requests,
                accepted=resumed.accepted_by_label,
                requests_done=resumed.requests_by_label,
            )
            metered = Metered(base, stats)
            controller = AdmissionController(limit)
            limited = RateLimitedProvider(metered, controller, TokenCounter())
            provider: Provider = RetryingProvider(limited, retry, stats=stats, rng=random.Random(run.seed))
            await strategy.prepare(provider.complete, options.out_dir)
            gen = Generator(
                task=task,
                run=run,
                strategy=strategy,
                planner=planner,
                store=store,
                dedup=dedup,
                stats=stats,
                model=provider_cfg.model,
            )

            def extra() -> dict[str, Any]:
                snap = controller.snapshot()
                snap["in_flight"] = metered.in_flight
                snap["phase"] = gen.phase
                return snap

            gen.extra_stats = extra
            scheduler = Scheduler(
                provider,
                workers=options.workers or limit.max_in_flight,
                fallback=_structured_fallback(strategy, store, stats),
            )
            view = view_factory(gen.snapshot) if view_factory else contextlib.nullcontext()
            try:
                with view:
                    await scheduler.run(gen.next_request, gen.consume)
            finally:
                final = gen.snapshot()
                final["phase"] = "done" if planner.finished else "stopped"
                final["requests_planned"] = planner.issued
                final["request_cap_reached"] = planner.exhausted and not planner.finished
                store.write_stats(final)
            return final


def _dedup_filter(
    options: GenerateOptions, strategy: Strategy, train: list[Example] | None, resumed: ResumeState, stats: Stats
) -> DedupFilter | None:
    """The streaming near-duplicate filter, primed with what must not be copied and what a resumed run kept."""
    if options.dedup is None:
        return None
    dedup = DedupFilter(options.dedup, stats=stats)
    refs = list(strategy.reference_texts())
    if options.reference_real and train is not None:
        refs += [ex.text for ex in train]
    if refs:
        dedup.add_reference(refs)
    if resumed.examples:
        dedup.rebuild(resumed.examples)
    return dedup


def _structured_fallback(
    strategy: Strategy, store: RunStore, stats: Stats
) -> Callable[[Request, EngineError], Request | None]:
    """When the provider rejects ``response_format``, switch the run to free text once, and remember it."""

    def fallback(request: Request, exc: EngineError) -> Request | None:
        if not isinstance(exc, BadRequest) or request.response_format is None:
            return None
        if strategy.structured:
            strategy.structured = False
            store.write_state({**store.read_state(), "structured": False})
            stats.incr("structured_fallback")
        seed = request.seed if request.seed is not None else 0
        retry = strategy.build(request_id=request.id, label=request.label or "", seed=seed)
        retry.stream = request.stream
        return retry

    return fallback


async def _preflight(provider: OpenAIProvider, cfg: ProviderConfig) -> None:
    """Fail within seconds on a wrong URL or key, instead of after N requests."""
    try:
        await asyncio.wait_for(provider.list_models(), timeout=min(15.0, cfg.timeout_s))
    except TimeoutError:
        return  # slow /models is not a reason to refuse; real requests will tell
    except EngineError as exc:
        if isinstance(exc, FatalError) and exc.status in (401, 403):
            raise
        if exc.status is None and "cannot connect" in exc.message:
            raise FatalError(exc.message, hint="is the server running? check --base-url") from exc
        # 404 on /models and other oddities: many servers lack the route; carry on
