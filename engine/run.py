"""A run directory opened for generation: the plan on one side, the chain of stages on the other.

``open_run`` loads the task and its real data, builds the strategy, opens (or
resumes) the store, rebuilds the near-duplicate index from what was kept, and
yields a :class:`Run`. A *source* of outcomes drives it, whatever it is (the
online scheduler in ``engine.sources.online``, a provider batch job, a cluster
shard)::

    with open_run(config, model=..., manifest=..., options=...) as run:
        await run.prepare(complete)            # phase one of the topic approach, if any
        request = run.next_request()           # the deterministic plan
        ...                                    # the source turns requests into outcomes
        done = await run.consume(outcomes)     # parse ► checks ► dedup ► quota ► store
        final = run.finish()

A run only plans and consumes; how requests are sent is the source's business.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import ProviderConfig, RateLimit, RunConfig
from .dedup import DedupConfig, DedupFilter
from .errors import DataError
from .pipeline import Chain, Stage
from .plan import Planner
from .shortfall import explain
from .stages import CheckStage, DedupStage, ParseStage, QuotaStage, StoreStage
from .stats import Stats
from .store import REBUILT, ResumeState, RunStore
from .strategies import Complete, Strategy, make_strategy
from .tasks import Task, load_real, load_task
from .types import Example, Outcome, Request

__all__ = ["GenerateOptions", "Run", "manifest_for", "open_run"]

FINISHING = "finishing: collecting requests in flight"


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
    #: Send a backup of a straggling request once the plan has nothing new to send (``engine.stragglers``).
    backup_requests: bool = True


def manifest_for(
    run: RunConfig, provider: ProviderConfig, limit: RateLimit, dedup: DedupConfig | None
) -> dict[str, Any]:
    fingerprint = run.fingerprint()
    fingerprint["model"] = provider.model
    fingerprint["dedup"] = asdict(dedup) if dedup is not None else None
    return {
        "version": 1,
        "fingerprint": fingerprint,
        "run": asdict(run),
        "provider": provider.public(),
        "limits": asdict(limit),
    }


class Run:
    """One run in progress: plans requests and passes their outcomes through the chain."""

    def __init__(
        self,
        *,
        task: Task,
        config: RunConfig,
        strategy: Strategy,
        planner: Planner,
        store: RunStore,
        stats: Stats,
        dedup: DedupFilter | None,
        model: str,
        resumed: ResumeState,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task = task
        self.config = config
        self.strategy = strategy
        self.state = strategy.state
        self.planner = planner
        self.store = store
        self.stats = stats
        self.model = model
        self.resumed = resumed
        #: Counters at the start of this session, so rates are this session's work over this session's time.
        self._baseline = {key: int(resumed.stats.get(key, 0)) for key in REBUILT}
        #: Gauges a source adds to every snapshot (limits, requests in flight).
        self.extra_stats: Callable[[], dict[str, Any]] = dict
        #: What the run is doing, for the display: generating, then finishing (collecting what is in flight).
        self.phase = "generating"
        self._parse = ParseStage(
            task=task, strategy_name=strategy.name, model=model, per_request=config.per_request, stats=stats
        )
        stages: list[Stage] = [
            self._parse,
            CheckStage(task=task, stats=stats),
        ]
        if dedup is not None:
            stages.append(DedupStage(dedup, stats=stats))
        stages += [
            QuotaStage(planner, stats=stats),
            StoreStage(store, stats=stats, snapshot=self.snapshot, clock=clock),
        ]
        self.chain = Chain(stages)

    # -- the plan side --------------------------------------------------------------------------

    async def prepare(self, complete: Complete) -> None:
        """Work done once before generation (the topic approach's phase one); what it learns is persisted."""
        await self.strategy.prepare(complete)
        self.store.write_state(self.state)

    def next_request(self) -> Request | None:
        planned = self.planner.next()
        if planned is None:
            return None
        request = self.strategy.build(request_id=planned.id, label=planned.label, seed=planned.seed)
        request.stream = self.config.stream
        return request

    def rebuild(self, request: Request) -> Request:
        """The same planned request built again (after the run state changed, e.g. the structured fallback)."""
        seed = request.seed if request.seed is not None else 0
        again = self.strategy.build(request_id=request.id, label=request.label or "", seed=seed)
        again.stream = request.stream
        again.attempts, again.rate_limited = request.attempts, request.rate_limited
        return again

    def disable_structured(self) -> None:
        """The provider rejects ``response_format``: ask in free text from now on, in this run and when resumed."""
        if self.state.structured:
            self.state.structured = False
            self.store.write_state(self.state)
            self.stats.incr("structured_fallback")

    # -- the chain side -------------------------------------------------------------------------

    async def consume(self, outcomes: list[Outcome]) -> bool:
        """Pass one batch of outcomes through the chain; True once the run has what it came for."""
        work = self.chain.run(outcomes)
        if work.fatal is not None:
            raise work.fatal  # the rest of the batch (paid for) is on disk already
        if work.done:
            # requests still in flight were paid for: the source collects them before the run ends
            self.phase = FINISHING
        return work.done

    # -- reporting ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        snap.update(self.extra_stats())
        snap["phase"] = self.phase
        snap["target"] = self.config.n
        for key in REBUILT:
            snap.setdefault(key, 0)
        elapsed = max(snap.get("elapsed_s", 0.0), 1e-9)
        base = self._baseline
        session = {key: snap[key] - base[key] for key in REBUILT}
        if self.resumed.done_requests:
            snap["session_requests"] = session["requests"]
            snap["session_accepted"] = session["accepted"]
            snap["session_tokens"] = session["prompt_tokens"] + session["completion_tokens"]
        snap["requests_per_s"] = round(session["requests"] / elapsed, 3)
        snap["tokens_per_s"] = round((session["prompt_tokens"] + session["completion_tokens"]) / elapsed, 1)
        snap["accepted_per_s"] = round(session["accepted"] / elapsed, 3)
        if self.config.price_in is not None or self.config.price_out is not None:
            snap["cost_usd"] = round(
                snap["prompt_tokens"] * (self.config.price_in or 0.0) / 1e6
                + snap["completion_tokens"] * (self.config.price_out or 0.0) / 1e6,
                6,
            )
        return snap

    def final_snapshot(self, *, interrupted: bool = False) -> dict[str, Any]:
        """The run's last snapshot; ``interrupted`` when an error or a signal ended it (that says why instead)."""
        final = self.snapshot()
        planner = self.planner
        final["phase"] = "done" if planner.finished else "stopped"
        final["requests_planned"] = planner.issued
        final["request_cap_reached"] = planner.exhausted and not planner.finished
        if not planner.finished and not interrupted:
            final["stop_reason"] = explain(final, cap=planner.cap, last_failure=self._parse.last_failure)
        if self.resumed.duplicate_ids:
            final["duplicate_ids_in_data"] = self.resumed.duplicate_ids
        return final


def _dedup_filter(
    options: GenerateOptions, strategy: Strategy, train: list[Example] | None, store: RunStore, stats: Stats
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
    for chunk in store.iter_examples():  # streamed: a resumed run holds no more than the live one did
        dedup.rebuild(chunk)
    return dedup


def _train_examples(config: RunConfig, task: Task, options: GenerateOptions) -> list[Example] | None:
    if config.strategy in ("one-shot", "few-shot"):
        return load_real(task, "train", data_file=options.data_file)  # the shots: required
    if options.reference_real:
        # only to drop copies of real texts: a task without real data still generates (zero-shot, topic)
        with contextlib.suppress(DataError):
            return load_real(task, "train", data_file=options.data_file)
    return None


@contextlib.contextmanager
def open_run(
    config: RunConfig,
    *,
    model: str,
    manifest: dict[str, Any],
    options: GenerateOptions,
    stats: Stats | None = None,
    task: Task | None = None,
    planner_factory: Callable[..., Planner] = Planner,
) -> Iterator[Run]:
    """Open (or resume) ``options.out_dir`` for ``config`` and yield the :class:`Run`; the store closes after.

    The task and its real data are loaded before the run directory is touched, so a wrong task name or a
    missing ``--data`` leaves nothing behind.
    """
    stats = stats if stats is not None else Stats()
    task = task if task is not None else load_task(config.task)
    train = _train_examples(config, task, options)
    with RunStore(options.out_dir) as store:
        resumed = store.open(manifest, resume=options.resume, field_names=task.fields)
        strategy = make_strategy(
            config.strategy,
            task,
            shots=config.shots,
            per_request=config.per_request,
            structured=config.structured,
            attributes=config.attributes,
            seed=config.seed,
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            train_examples=train,
            state=store.read_state(),
        )
        dedup = _dedup_filter(options, strategy, train, store, stats)
        stats.merge(resumed.stats)
        planner = planner_factory(
            list(task.labels),
            n=config.n,
            per_request=config.per_request,
            seed=config.seed,
            cap=config.request_cap,
            balance=config.balance,
            done=resumed.done_requests,
            accepted=resumed.accepted_by_label,
            requests_done=resumed.requests_by_label,
        )
        yield Run(
            task=task,
            config=config,
            strategy=strategy,
            planner=planner,
            store=store,
            stats=stats,
            dedup=dedup,
            model=model,
            resumed=resumed,
        )
