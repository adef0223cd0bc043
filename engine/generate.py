"""One online generation run, end to end: the library entry point behind ``corpusforge generate``.

``generate`` opens the provider session, checks the endpoint before anything
touches the run directory, opens the run (``engine.run``) and drives it with
the online source (``engine.sources.online``). ``cli`` builds the config
objects and calls it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from .config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from .errors import EngineError
from .providers.base import Provider
from .providers.openai import OpenAIProvider, make_session
from .run import GenerateOptions, manifest_for, open_run
from .sources.online import ViewFactory, preflight, run_online
from .stats import Stats
from .stragglers import BackupPolicy
from .tasks import load_task

__all__ = ["GenerateOptions", "generate"]


async def generate(
    run: RunConfig,
    provider_cfg: ProviderConfig,
    limit: RateLimit,
    retry: RetryPolicy,
    options: GenerateOptions,
    *,
    stats: Stats | None = None,
    view_factory: ViewFactory | None = None,
    wrap_base: Callable[[Provider], Provider] | None = None,
) -> dict[str, Any]:
    """Run one generation into ``options.out_dir``; return the final stats snapshot.

    ``wrap_base`` wraps the vendor provider for the run (not for the preflight): e.g. the managed local
    server's ``SupervisedProvider``, so a request waits for a restart instead of spending its retries.
    """
    task = load_task(run.task)  # a wrong task name is the first thing to say, before any connection
    async with make_session(provider_cfg) as session:
        base = OpenAIProvider(session, provider_cfg)
        # before anything touches --out: a wrong URL or key leaves nothing behind to resume
        await preflight(base, provider_cfg)
        manifest = manifest_for(run, provider_cfg, limit, options.dedup)
        with open_run(
            run, model=provider_cfg.model, manifest=manifest, options=options, stats=stats, task=task
        ) as active:
            failed = True
            try:
                await run_online(
                    active,
                    wrap_base(base) if wrap_base is not None else base,
                    limit=limit,
                    retry=retry,
                    workers=options.workers,
                    view_factory=view_factory,
                    backups=BackupPolicy(enabled=options.backup_requests),
                )
                failed = False
            except EngineError:
                # a start that failed (wrong model, a URL without /v1) leaves no run directory behind to resume
                active.store.discard()
                raise
            finally:
                final = active.final_snapshot(interrupted=failed)
                if active.store.dir.exists():
                    if failed:
                        # the error on its way out is the one to report, not a second one from a full disk
                        with contextlib.suppress(EngineError):
                            active.store.write_stats(final)
                    else:
                        active.store.write_stats(final)
            return final
