"""The online source: requests go out now, through admission control, retries and the scheduler's workers.

The provider stack reads inside out: the vendor provider, ``Metered`` (counts
attempts and tokens), ``RateLimitedProvider`` (RPM/TPM buckets, the in-flight
cap), ``RetryingProvider`` (backoff, ``Retry-After``). The scheduler runs the
workers and hands outcomes to the run's chain in batches. The one fatal error
this source turns into a retry is a provider refusing ``response_format``:
the run switches to free text (remembered in its state) and the request is
built again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

from ..config import ProviderConfig, RateLimit, RetryPolicy
from ..errors import BadRequest, EngineError, FatalError
from ..limits import AdmissionController
from ..providers.base import Provider
from ..providers.limited import RateLimitedProvider
from ..providers.metered import Metered
from ..providers.openai import OpenAIProvider
from ..providers.retrying import RetryingProvider
from ..run import Run
from ..scheduler import Fallback, Scheduler
from ..stragglers import BackupPolicy
from ..tokens import TokenCounter
from ..types import Request

__all__ = ["ViewFactory", "preflight", "run_online"]

#: Builds the live display around a snapshot callable (``engine.ui.LiveView``); None = no display.
ViewFactory = Callable[[Callable[[], dict[str, Any]]], contextlib.AbstractContextManager[Any]]


async def preflight(provider: OpenAIProvider, cfg: ProviderConfig) -> None:
    """Fail within seconds on a wrong URL or key, before anything touches the run directory."""
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


def structured_fallback(run: Run) -> Fallback:
    """When the provider rejects ``response_format``, switch the run to free text once and build the request again."""

    def fallback(request: Request, exc: EngineError) -> Request | None:
        if not isinstance(exc, BadRequest) or request.response_format is None:
            return None
        run.disable_structured()
        return run.rebuild(request)

    return fallback


async def run_online(
    run: Run,
    base: Provider,
    *,
    limit: RateLimit,
    retry: RetryPolicy,
    workers: int | None = None,
    view_factory: ViewFactory | None = None,
    backups: BackupPolicy | None = None,
    controller: AdmissionController | None = None,
) -> None:
    """Send the run's plan through ``base`` until the run is done or the plan is dry.

    ``controller`` replaces the local admission control (a cluster shard leases from one shared budget).
    """
    metered = Metered(base, run.stats)
    controller = controller if controller is not None else AdmissionController(limit)
    limited = RateLimitedProvider(metered, controller, TokenCounter())
    provider = RetryingProvider(limited, retry, stats=run.stats, rng=random.Random(run.config.seed))
    await run.prepare(provider.complete)

    scheduler = Scheduler(
        provider, workers=workers or limit.max_in_flight, fallback=structured_fallback(run), backups=backups
    )
    stragglers = scheduler.stragglers

    def extra() -> dict[str, Any]:
        snap = controller.snapshot()
        snap["in_flight"] = metered.in_flight
        if stragglers.backups:
            snap["backup_requests"] = stragglers.backups
            snap["backup_wins"] = stragglers.backup_wins
        if scheduler.abandoned:
            snap["abandoned_in_flight"] = scheduler.abandoned
        return snap

    run.extra_stats = extra
    view = view_factory(run.snapshot) if view_factory else contextlib.nullcontext()
    with view:
        await scheduler.run(run.next_request, run.consume)
