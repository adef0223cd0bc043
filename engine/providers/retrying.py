"""A provider wrapper that retries retryable errors under a :class:`~engine.config.RetryPolicy`.

The first attempt is a plain ``await``: no tenacity objects exist unless it
fails with a retryable error. Then the tenacity loop from
:func:`engine.retry.build_retrying` takes over, with that failure as its first
attempt, so ``max_attempts`` counts every attempt. Fatal errors propagate at
once; when the policy gives up, the last error is re-raised for the scheduler
to record.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from tenacity import RetryCallState

from ..config import RetryPolicy
from ..errors import EngineError, RateLimited, RetryableError
from ..retry import Sleep, build_retrying
from ..stats import Stats
from ..types import Completion, Request
from .base import Provider, Wrapper

__all__ = ["OnRetry", "RetryingProvider"]

#: Called before each wait for a re-attempt: (request, error, failed attempt number, seconds to wait).
OnRetry = Callable[[Request, BaseException, int, float], None]


class RetryingProvider(Wrapper):
    """Counts into ``stats``: ``retries`` (each re-attempt), ``rate_limited`` (each 429 seen) and
    ``errors:<ErrorClass>`` (each failed attempt, fatal or not)."""

    def __init__(
        self,
        inner: Provider,
        policy: RetryPolicy,
        *,
        stats: Stats,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        super().__init__(inner)
        self.policy = policy
        self.stats = stats
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._on_retry = on_retry

    def _count(self, exc: EngineError) -> None:
        self.stats.incr(f"errors:{type(exc).__name__}")
        if isinstance(exc, RateLimited):
            self.stats.incr("rate_limited")

    async def complete(self, request: Request) -> Completion:
        try:
            return await self.inner.complete(request)
        except RetryableError as exc:
            self._count(exc)
            first = exc
        except EngineError as exc:
            self._count(exc)
            raise
        return await self._retry(request, first)

    async def _retry(self, request: Request, first: RetryableError) -> Completion:
        pending: list[RetryableError] = [first]

        async def attempt() -> Completion:
            if pending:
                raise pending.pop()  # attempt 1 already happened on the fast path
            self.stats.incr("retries")
            try:
                return await self.inner.complete(request)
            except EngineError as exc:
                self._count(exc)
                raise

        before_sleep = None
        if self._on_retry is not None:
            on_retry = self._on_retry

            def before_sleep(state: RetryCallState) -> None:
                exc = state.outcome.exception() if state.outcome is not None else None
                delay = state.next_action.sleep if state.next_action is not None else 0.0
                if exc is not None:
                    on_retry(request, exc, state.attempt_number, delay)

        retrying = build_retrying(self.policy, sleep=self._sleep, rng=self._rng, before_sleep=before_sleep)
        return await retrying(attempt)
