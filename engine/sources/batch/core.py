"""What every part of the batch source shares: the run, the client, the ledger (with the crash hook), the limit.

``BatchCore`` holds the state; ``submit``, ``collect`` and ``offline`` add the
steps, ``source`` the loop. Every step is recorded with :meth:`BatchCore._log`
(an fsynced ledger append) before the next one starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from ...batch.cleanup import Deletions
from ...batch.client import BatchClient, BatchInfo
from ...batch.files import InputWriter, read_requests
from ...batch.ledger import Ledger, LedgerFile
from ...batch.limit import LIMIT_SAFETY, limit_from
from ...errors import EngineError, FatalError, RetryableError
from ...providers.openai import OpenAIProvider
from ...run import Run
from ...tokens import TokenCounter
from ...types import Outcome, Request
from .options import BatchOptions

__all__ = ["BATCH_DIR", "BatchCore", "SimulatedCrash", "ignore_warning"]

#: The batch files of a run live in ``OUT/batches/``.
BATCH_DIR = "batches"


def ignore_warning(_: str) -> None:
    """The default ``warn`` of a batch source: the engine never prints; a command passes its printer."""


class SimulatedCrash(BaseException):
    """Raised in place of a SIGKILL by the resume tests' crash hook (a BaseException: nothing catches it)."""


class BatchCore:
    """The state of one run driven through the Batch API, and the steps every part needs."""

    def __init__(
        self,
        run: Run,
        provider: OpenAIProvider,
        client: BatchClient,
        options: BatchOptions,
        *,
        counter: TokenCounter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        warn: Callable[[str], None] = ignore_warning,
    ) -> None:
        self.run = run
        self.provider = provider
        self.client = client
        self.options = options
        self.counter = counter or TokenCounter()
        self.sleep = sleep
        #: Told once per session when deleting provider files fails (the command layer prints it).
        self.warn = warn
        self.deletions = Deletions()
        self.dir = run.store.dir / BATCH_DIR
        self.ledger = Ledger(self.dir)
        #: Requests of each input file whose outcome the run has not consumed yet.
        self.pending: dict[str, dict[str, Request]] = {}
        self.infos: dict[str, BatchInfo] = {}
        self.writer: InputWriter | None = None
        self._crash_count = 0
        self._cancelled: set[str] = set()
        self._rejected: FatalError | None = None
        self._done = False
        self._fatal: EngineError | None = None

    # -- the ledger, with the crash hook the resume tests use -------------------------------------

    def _log(self, event: str, **fields: Any) -> None:
        crash = self.options.crash_before
        if crash is not None and crash[0] == event:
            self._crash_count += 1
            if self._crash_count == crash[1]:
                if not self.options.crash_kill:
                    raise SimulatedCrash(f"before {event} #{crash[1]}")
                os.kill(os.getpid(), signal.SIGKILL)
        self.ledger.append(event, **fields)

    # -- the enqueued-token limit -----------------------------------------------------------------

    @property
    def token_limit(self) -> int | None:
        return self.options.max_enqueued_tokens or self.ledger.token_limit

    def _budget(self) -> float:
        limit = self.token_limit
        return float("inf") if limit is None else limit * LIMIT_SAFETY

    def _room(self) -> float:
        return self._budget() - self.ledger.enqueued_tokens()

    def _learn_limit(self, message: str) -> None:
        learned = limit_from(message)
        if learned is None:
            # no number in the refusal: what is enqueued now is the most the queue takes
            learned = max(1, int(self.ledger.enqueued_tokens() / LIMIT_SAFETY))
        if self.options.max_enqueued_tokens is None and learned != self.ledger.token_limit:
            self._log("limit", tokens=learned)
        if self.writer is not None and self.token_limit is not None:
            self.writer.max_tokens = int(self.token_limit * LIMIT_SAFETY)

    def _refused(self, f: LedgerFile, message: str) -> None:
        """The queue was full for ``f``: learn the limit; a file too large for it alone gives up its requests."""
        alone = self.ledger.enqueued_tokens() - (f.tokens if f.batch_id else 0) <= 0
        self._learn_limit(message)
        if f.batch_id:
            self._log("requeue", file=f.name, reason=message[:300])
        if alone:
            # nothing else is queued, so this file alone is over the limit: its requests are planned again,
            # into files the writer now keeps under the learned limit
            reason = f"larger than the enqueued-token limit ({f.tokens} tokens): {message[:200]}"
            self._log("ended", file=f.name, status="abandoned", reason=reason)
            self._log("downloaded", file=f.name)

    # -- start and resume -------------------------------------------------------------------------

    def _recover(self) -> None:
        """Hold the requests of every file not fully ingested; remove files the ledger never recorded."""
        known = set(self.ledger.files)
        for path in self.dir.iterdir():
            stem = path.name.split(".", 1)[0]
            if path.suffix in (".tmp", ".part") or (stem.startswith("input-") and stem not in known):
                path.unlink()  # written before a kill, never recorded: nothing was sent from it
        planner = self.run.planner
        for f in self.ledger.active():
            held = {r.id: r for r in read_requests(self.dir, f.name) if planner.hold(r.id, r.label or "")}
            self.pending[f.name] = held
        self.writer = InputWriter(
            self.dir,
            max_requests=self.options.max_requests,
            max_bytes=self.options.max_bytes,
            max_tokens=None if self.token_limit is None else int(self.token_limit * LIMIT_SAFETY),
            index=self.ledger.next_index(),
        )

    # -- the chain ----------------------------------------------------------------------------------

    async def _consume(self, chunk: list[Outcome]) -> None:
        """Count what the provider reports (as ``Metered`` does online) and pass the chunk through the chain."""
        stats = self.run.stats
        for outcome in chunk:
            outcome.request.attempts = 1
            if outcome.completion is not None:
                stats.incr("prompt_tokens", outcome.completion.prompt_tokens)
                stats.incr("completion_tokens", outcome.completion.completion_tokens)
            elif isinstance(outcome.error, FatalError):
                # a rejected line must not stop the chain mid-file (nor loop on resume): journaled as failed
                self._rejected = self._rejected or outcome.error
                outcome.error = RetryableError(
                    outcome.error.message, provider=outcome.error.provider, request_id=outcome.request.id
                )
        stats.incr("requests", len(chunk))
        if await self.run.consume(chunk):
            self._done = True
