"""The batch source: the run's plan as provider batch jobs, every step on disk before the next one.

One loop, each turn: ingest what is downloaded, download what ended, write,
upload and create new batches while the enqueued-token limit leaves room,
then poll what runs (with backoff) and sleep. The run's chain sees batch
outcomes exactly as it sees online ones (``run.consume``); a request that
failed, expired or came back unusable is journaled as failed, so the planner
asks for another in a later batch, sized by the acceptance seen so far, until
``--n`` is reached or ``--max-requests`` stops it.

Resume contract (see ``engine.batch.ledger``): requests of input files the
ledger knows and the journal does not are *held* in flight (never planned
again); a batch whose creation was not recorded is looked up by its input
file before another is created; a downloaded file is ingested again, minus
what the journal already has. So a ``kill -9`` anywhere never submits a paid
request twice, never loses a result, never writes an example twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...batch.client import BatchClient
from ...batch.ledger import Ledger, LedgerFile
from ...config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from ...errors import EngineError
from ...providers.openai import OpenAIProvider, make_session
from ...providers.retrying import RetryingProvider
from ...run import GenerateOptions, manifest_for, open_run
from ...stats import Stats
from ..online import ViewFactory, preflight
from .collect import Collecting
from .core import BATCH_DIR, ignore_warning
from .offline import Offline
from .options import BatchOptions, batch_prices

__all__ = ["BatchSource", "generate_batch", "pending_batches"]


def pending_batches(out_dir: Path) -> list[LedgerFile]:
    """Input files of the run in ``out_dir`` whose outcomes are not all ingested (empty without batches)."""
    directory = Path(out_dir) / BATCH_DIR
    if not (directory / "ledger.jsonl").exists():
        return []
    with Ledger(directory) as ledger:
        return ledger.active()


class BatchSource(Offline, Collecting):
    """Drives one run through the Batch API until it is done, the plan is dry, or a fatal error."""

    # -- the loop -------------------------------------------------------------------------------

    async def drive(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.ledger:
            self._recover()
            for f in self.ledger.active():
                if f.phase == "create" and f.creating_at is not None:
                    await self._reconcile(f)
            await self._delete_left()
            delay: float | None = None
            while True:
                progressed = await self._collect()
                if self._fatal is not None:
                    raise self._fatal
                if self._done:
                    await self._cancel_unneeded()
                else:
                    progressed |= await self._submit()
                if all(f.phase == "external" for f in self.ledger.active()):
                    return  # everything sent came back (exported files come back by import)
                changed = await self._poll()
                if changed:
                    continue
                delay = self.options.poll.next(delay, changed=progressed)
                self.run.phase = self._phase()
                await self.sleep(delay)

    def _phase(self) -> str:
        if self._done:
            return "finishing: collecting batches in flight"
        waiting = [f for f in self.ledger.active() if f.phase == "create"]
        if waiting:
            return "waiting for room under the enqueued-token limit"
        return "batches running"

    # -- reporting ------------------------------------------------------------------------------

    def extra_stats(self) -> dict[str, Any]:
        rows = []
        for f in list(self.ledger.files.values())[-12:]:
            row = f.row()
            info = self.infos.get(f.name)
            if info is not None and not f.ingested:
                row["status"] = info.status
                row.update({k: v for k, v in info.counts.items() if k != "total"})
            rows.append(row)
        out: dict[str, Any] = dict(self.ledger.summary())
        out["batch_http_calls"] = self.client.calls
        out["enqueued_tokens"] = self.ledger.enqueued_tokens()
        if self.token_limit is not None:
            out["enqueued_token_limit"] = self.token_limit
        out["batches"] = rows
        out["batch_discount"] = self.options.discount
        if self.deletions.first_error is not None:
            out["batch_files_warning"] = self.deletions.first_error
        return out


async def generate_batch(
    run_cfg: RunConfig,
    provider_cfg: ProviderConfig,
    limit: RateLimit,
    retry: RetryPolicy,
    options: GenerateOptions,
    batch: BatchOptions,
    *,
    stats: Stats | None = None,
    view_factory: ViewFactory | None = None,
    warn: Callable[[str], None] = ignore_warning,
) -> dict[str, Any]:
    """``generate`` through the Batch API: same run directory, same chain, batch prices."""
    run_cfg = batch_prices(run_cfg, batch.discount)
    async with make_session(provider_cfg) as session:
        base = OpenAIProvider(session, provider_cfg)
        await preflight(base, provider_cfg)
        client = BatchClient(base, retry)
        await client.check()  # a server without the Batch API: one line, before anything touches --out
        manifest = manifest_for(run_cfg, provider_cfg, limit, options.dedup)
        with open_run(run_cfg, model=provider_cfg.model, manifest=manifest, options=options, stats=stats) as run:
            await run.prepare(RetryingProvider(base, retry, stats=run.stats).complete)
            source = BatchSource(run, base, client, batch, warn=warn)
            run.extra_stats = source.extra_stats
            view = view_factory(run.snapshot) if view_factory else contextlib.nullcontext()
            try:
                with view:
                    await source.drive()
            finally:
                final = run.final_snapshot()
                with contextlib.suppress(EngineError):
                    run.store.write_stats(final)
            return final
