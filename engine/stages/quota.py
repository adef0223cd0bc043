"""The quota stage: an example beyond its label's quota is ``surplus``; every finished request goes back to the plan.

This is the one place an example is dropped as surplus. It is also where the
planner learns how each request ended (how many of its examples were kept),
which sizes the rest of the plan, and where each request's journal line is
written down (with its attempts and usage, from which a resumed run rebuilds
its counters).
"""

from __future__ import annotations

from typing import Any

from ..errors import FatalError
from ..pipeline import Work
from ..plan import Planner
from ..stats import Stats
from ..types import Outcome

__all__ = ["QuotaStage", "journal_line"]


def journal_line(outcome: Outcome, *, status: str, kept: int) -> dict[str, Any]:
    request = outcome.request
    line: dict[str, Any] = {"request_id": request.id, "label": request.label or "", "status": status, "kept": kept}
    line["attempts"] = request.attempts
    if request.rate_limited:
        line["rate_limited"] = request.rate_limited
    completion = outcome.completion
    if completion is not None:
        line["prompt_tokens"] = completion.prompt_tokens
        line["completion_tokens"] = completion.completion_tokens
    return line


class QuotaStage:
    def __init__(self, planner: Planner, *, stats: Stats) -> None:
        self.planner = planner
        self.stats = stats

    def process(self, work: Work) -> None:
        planner = self.planner
        kept_by_request: dict[str, int] = {}
        verdicts: list[str | None] = []
        taken: dict[str, int] = {}
        for example in work.examples:
            label = example.label
            if planner.room(label) - taken.get(label, 0) <= 0:
                self.stats.incr("rejected:surplus")
                verdicts.append("surplus")
            else:
                taken[label] = taken.get(label, 0) + 1
                kept_by_request[example.request_id] = kept_by_request.get(example.request_id, 0) + 1
                verdicts.append(None)
        if any(verdicts):
            work.keep_only(verdicts)
        for outcome in work.outcomes:
            if isinstance(outcome.error, FatalError):
                continue  # the run stops: the request is not done, a resumed run asks again
            request = outcome.request
            kept = kept_by_request.get(request.id, 0)
            planner.record(request.label or "", kept=kept)
            status = "failed" if outcome.error is not None else "ok"
            work.journal.append(journal_line(outcome, status=status, kept=kept))
        work.done = planner.finished or (planner.exhausted and planner.outstanding == 0)
