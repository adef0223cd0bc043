"""A provider wrapper that meters what the run spends: attempts, 429s, tokens, requests in flight.

It sits directly above the vendor provider, so it sees every HTTP attempt. The
run-wide totals go into ``stats``; the per-request figures go onto the request
itself (``attempts``, ``rate_limited``), so the store can journal them and a
resumed run can rebuild its counters from the journal alone.
"""

from __future__ import annotations

from ..errors import RateLimited
from ..stats import Stats
from ..types import Completion, Request
from .base import Provider, Wrapper

__all__ = ["Metered"]


class Metered(Wrapper):
    """Counts every HTTP attempt, the attempts in flight, and the tokens the provider reports."""

    def __init__(self, inner: Provider, stats: Stats) -> None:
        super().__init__(inner)
        self.stats = stats
        self.in_flight = 0

    async def complete(self, request: Request) -> Completion:
        self.stats.incr("requests")
        request.attempts += 1
        self.in_flight += 1
        try:
            completion = await self.inner.complete(request)
        except RateLimited:
            request.rate_limited += 1
            raise
        finally:
            self.in_flight -= 1
        self.stats.incr("prompt_tokens", completion.prompt_tokens)
        self.stats.incr("completion_tokens", completion.completion_tokens)
        return completion
