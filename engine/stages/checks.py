"""The checks stage: drops candidates that are not real texts of the task (``engine.checks.check_fields``)."""

from __future__ import annotations

from ..checks import check_fields
from ..pipeline import Work
from ..stats import Stats
from ..tasks import Task

__all__ = ["CheckStage"]


class CheckStage:
    def __init__(self, *, task: Task, stats: Stats) -> None:
        self.task = task
        self.stats = stats

    def process(self, work: Work) -> None:
        task, stats = self.task, self.stats
        verdicts: list[str | None] = []
        for example in work.examples:
            reason = check_fields(example.fields, task)
            if reason is not None:
                stats.incr(f"rejected:{reason}")
            verdicts.append(reason)
        if any(verdicts):
            work.keep_only(verdicts, raw_records=True)
