"""The parse stage: outcomes -> candidate examples; failed requests -> failures.

A completion's reply is parsed into candidates (``engine.parse.parse_reply``);
what has no usable form is rejected with its reason. A request whose attempts
ended in a retryable error is a failure (journaled, so the plan asks again
with a new request); a fatal error is kept for the chain to raise once the
batch is on disk.
"""

from __future__ import annotations

from ..errors import FatalError
from ..parse import parse_reply
from ..pipeline import Work
from ..stats import Stats
from ..tasks import Task
from ..types import Example

__all__ = ["ParseStage"]


class ParseStage:
    def __init__(self, *, task: Task, strategy_name: str, model: str, per_request: int, stats: Stats) -> None:
        self.task = task
        self.strategy_name = strategy_name
        self.model = model
        self.per_request = per_request
        self.stats = stats
        #: The reason of the last request given up after its retries.
        self.last_failure: str | None = None

    def process(self, work: Work) -> None:
        task, stats = self.task, self.stats
        for outcome in work.outcomes:
            request = outcome.request
            label = request.label or ""
            if outcome.error is not None:
                if isinstance(outcome.error, FatalError):
                    work.fatal = work.fatal or outcome.error
                    continue
                stats.incr("failed")
                self.last_failure = f"{type(outcome.error).__name__}: {outcome.error}"
                work.failures.append({"request_id": request.id, "label": label, "reason": self.last_failure})
                continue
            completion = outcome.completion
            assert completion is not None
            parsed = parse_reply(completion.text, task, expected_label=label or None, per_request=self.per_request)
            for raw, reason in parsed.rejects:
                stats.incr(f"rejected:{reason}")
                work.rejected.append(({"request_id": request.id, "label": label, "raw": raw[:2000]}, reason))
            model = completion.model or self.model
            for j, item in enumerate(parsed.items):
                example = Example(
                    id=f"{request.id}-{j}",
                    fields=item.fields,
                    label=item.label,
                    request_id=request.id,
                    strategy=self.strategy_name,
                    model=model,
                    meta=request.meta,
                )
                work.add(example, item.raw)
