"""The store stage: the batch goes to disk in one durable write (data, rejects, failures, then the journal).

It is the last stage, so what it writes is final: accepted examples, every
reject with its reason, the failures, and the journal lines that commit the
batch. Every ``stats_every_s`` it also rewrites ``stats.json`` from the run's
snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..pipeline import Work
from ..stats import Stats
from ..store import RunStore

__all__ = ["STATS_EVERY_S", "StoreStage"]

STATS_EVERY_S = 2.0


class StoreStage:
    def __init__(
        self,
        store: RunStore,
        *,
        stats: Stats,
        snapshot: Callable[[], dict[str, Any]],
        stats_every_s: float = STATS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.stats = stats
        self.snapshot = snapshot
        self.stats_every_s = stats_every_s
        self._clock = clock
        self._last_stats = clock()

    def process(self, work: Work) -> None:
        self.stats.incr("accepted", len(work.examples))
        self.stats.incr("rejected", len(work.rejected))
        self.store.write_batch(
            accepted=work.examples, rejected=work.rejected, failures=work.failures, journal=work.journal
        )
        now = self._clock()
        if now - self._last_stats >= self.stats_every_s:
            self._last_stats = now
            self.store.write_stats(self.snapshot())
