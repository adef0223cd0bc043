"""How generation runs: bounded queues, a fixed pool of workers, backpressure.

This module knows nothing about prompts, parsing or files. A fixed pool of
``workers`` tasks each pull the next request from a ``source`` callable when
free, send it through the provider stack and put the outcome on a bounded
result queue; one consumer drains outcomes in batches (so CPU-heavy stages can
vectorise) and decides when the run is done. Memory is flat whatever N is:
nothing is created per planned request beyond the request in flight.

When the consumer says the run is done, no new request is sent; requests
already in flight are awaited (their examples were paid for) for at most
``drain_timeout_s`` (or the straggler deadline, once latencies are known) and
handed to the consumer, then everything is cancelled. A fatal error raised by
the consumer cancels the run at once.

Stragglers (``engine.stragglers``): when the source has nothing new to send,
an idle worker sends a backup of the oldest request that has been in flight far
longer than its peers; the first answer counts, the other is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .errors import EngineError
from .providers.base import Provider
from .stragglers import BackupPolicy, Stragglers
from .types import Outcome, Request

__all__ = ["Fallback", "Scheduler"]


#: Turns a request rejected with a fatal error into a request worth one more try (or None).
Fallback = Callable[[Request, EngineError], Request | None]


class Scheduler:
    def __init__(
        self,
        provider: Provider,
        *,
        workers: int,
        max_batch: int = 256,
        drain_timeout_s: float = 60.0,
        linger_s: float = 0.005,
        fallback: Fallback | None = None,
        backups: BackupPolicy | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.provider = provider
        self.workers = workers
        self.max_batch = max_batch
        self.drain_timeout_s = drain_timeout_s
        #: How long the consumer waits for more outcomes to batch after the first (vectorised stages gain).
        self.linger_s = linger_s
        self.fallback = fallback
        self.stragglers = Stragglers(backups if backups is not None else BackupPolicy(enabled=False))
        #: Requests still in flight when the drain gave up on them (sent, maybe billed, never answered here).
        self.abandoned = 0
        self._stopping = False

    async def _recover(self, request: Request, exc: EngineError) -> Outcome:
        """A request's attempts ended in ``exc``: one more try if the fallback rewrites it, else the error."""
        retry = self.fallback(request, exc) if self.fallback else None
        if retry is None:
            return Outcome(request, error=exc)
        try:
            return Outcome(retry, completion=await self.provider.complete(retry))
        except EngineError as exc2:
            return Outcome(retry, error=exc2)

    async def run(
        self,
        source: Callable[[], Request | None],
        consume: Callable[[list[Outcome]], Awaitable[bool]],
    ) -> None:
        """Run until ``consume`` returns True (done) or ``source`` is dry and nothing is in flight.

        ``source()`` returns the next request, or ``None`` when there is nothing to
        send right now; idle workers ask it again after every consumed batch.
        """
        # small: an outcome waiting here is paid for but not yet on disk
        results: asyncio.Queue[Outcome] = asyncio.Queue(self.workers)
        wakeup = asyncio.Event()
        busy = 0  # requests taken by workers and not yet consumed
        self._stopping = False

        complete = self.provider.complete

        stragglers = self.stragglers
        watch = stragglers.policy.enabled

        async def idle() -> None:
            """Nothing to send: back up a straggler, or sleep until woken (or until one may appear)."""
            backup = stragglers.pick() if watch else None
            if backup is None:
                wakeup.clear()
                check_in = stragglers.next_check_in() if watch else None
                if check_in is None:
                    await wakeup.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wakeup.wait(), check_in + 0.01)
                return
            try:
                outcome = Outcome(backup, completion=await complete(backup))
            except EngineError as exc:
                outcome = Outcome(backup, error=exc)
            if stragglers.finish(backup, ok=outcome.error is None, backup=True):
                await results.put(outcome)

        async def worker() -> None:
            # Workers pull from the source themselves: no producer task and no request queue to hand
            # requests through, so a request costs nothing until a worker is free to send it.
            nonlocal busy
            while not self._stopping:
                request = source()
                if request is None:
                    await idle()
                    continue
                busy += 1
                stragglers.start(request)
                try:  # inline rather than a helper coroutine: this runs once per request
                    outcome = Outcome(request, completion=await complete(request))
                except EngineError as exc:
                    outcome = await self._recover(request, exc)
                if stragglers.finish(request, ok=outcome.error is None):
                    await results.put(outcome)
                # else: its backup answered first and was handed on; this answer is a duplicate

        tasks = [asyncio.create_task(worker(), name=f"worker-{i}") for i in range(self.workers)]
        try:
            done = False
            while not done:
                if busy == 0 and results.empty():
                    # nothing in flight: let idle workers ask the source once more; if none found work, it is dry
                    wakeup.set()
                    await asyncio.sleep(0)
                    if busy == 0 and results.empty():
                        return
                first = await results.get()
                if self.linger_s and busy > 1:
                    await asyncio.sleep(self.linger_s)
                batch = [first]
                while len(batch) < self.max_batch and not results.empty():
                    batch.append(results.get_nowait())
                busy -= len(batch)
                done = await consume(batch)
                wakeup.set()
            # done: send nothing new, but collect what is already paid for
            self._stopping = True
            await self._drain(results, consume, lambda: busy, tasks)
        finally:
            self._stopping = True
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(
        self,
        results: asyncio.Queue[Outcome],
        consume: Callable[[list[Outcome]], Awaitable[bool]],
        busy: Callable[[], int],
        workers: list[asyncio.Task[None]],
    ) -> None:
        loop = asyncio.get_running_loop()
        straggler_s = self.stragglers.deadline() if self.stragglers.policy.enabled else None
        deadline = loop.time() + min(self.drain_timeout_s, straggler_s or self.drain_timeout_s)
        pending = busy()
        while pending > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.abandoned = pending
                return
            try:
                first = await asyncio.wait_for(results.get(), remaining)
            except TimeoutError:
                self.abandoned = pending
                return
            batch = [first]
            while not results.empty():
                batch.append(results.get_nowait())
            pending -= len(batch)
            await consume(batch)
