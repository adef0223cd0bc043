"""The dedup stage: drops exact and near-duplicates of kept examples, and copies of reference texts.

The filter itself (``engine.dedup.DedupFilter``) signs the whole batch at once
and decides in order, so a duplicate within one batch is caught too.
"""

from __future__ import annotations

from ..dedup import DedupFilter
from ..pipeline import Work
from ..stats import Stats

__all__ = ["DedupStage"]


class DedupStage:
    def __init__(self, dedup: DedupFilter, *, stats: Stats) -> None:
        self.dedup = dedup
        self.stats = stats

    def process(self, work: Work) -> None:
        if not work.examples:
            return
        verdicts = self.dedup.check_batch(work.examples)
        for reason in verdicts:
            if reason is not None:
                self.stats.incr(f"rejected:{reason}")
        work.keep_only(verdicts)
