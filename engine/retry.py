"""Retry policies as values, built from tenacity's composable pieces.

The predicate is just "is it retryable" (see the error tree in ``errors.py``).
The wait is the server's ``Retry-After`` when the error carries one (plus a
little jitter, so clients told the same instant do not all return at once),
else full-jitter exponential backoff: uniform in ``[0, initial_s * 2**(attempt-1)]``,
capped at ``max_backoff_s``. We stop after ``max_attempts`` attempts or
``max_elapsed_s`` seconds, whichever comes first, and re-raise the last error.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from .config import RetryPolicy
from .errors import RetryableError

__all__ = [
    "RETRY_AFTER_JITTER_S",
    "build_retrying",
    "is_retryable",
    "server_delay",
    "wait_for",
    "wait_jittered_exponential",
    "wait_retry_after",
]

#: Upper bound of the random delay added to a server's ``Retry-After``.
RETRY_AFTER_JITTER_S = 0.25

Sleep = Callable[[float], Awaitable[Any]]
BeforeSleep = Callable[[RetryCallState], Any]


def is_retryable(exc: BaseException) -> bool:
    """Whether trying the same request again later may succeed."""
    return isinstance(exc, RetryableError)


def server_delay(exc: BaseException | None) -> float | None:
    """The seconds the server asked us to wait, if the error carries them."""
    if isinstance(exc, RetryableError) and exc.retry_after is not None:
        return max(0.0, exc.retry_after)
    return None


class wait_jittered_exponential(wait_random_exponential):
    """tenacity's full-jitter exponential wait, drawing from an injected ``rng``."""

    def __init__(self, *, multiplier: float, max: float, rng: random.Random) -> None:
        super().__init__(multiplier=multiplier, max=max)
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        high = wait_exponential.__call__(self, retry_state)
        return self.rng.uniform(0.0, high)


class wait_retry_after(wait_base):
    """Wait for the server's ``Retry-After`` plus jitter when the last error carries one, else ``fallback``."""

    def __init__(self, fallback: wait_base, *, rng: random.Random, jitter_s: float = RETRY_AFTER_JITTER_S) -> None:
        self.fallback = fallback
        self.rng = rng
        self.jitter_s = jitter_s

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        delay = server_delay(outcome.exception() if outcome is not None and outcome.failed else None)
        if delay is not None:
            return delay + self.rng.uniform(0.0, self.jitter_s)
        return float(self.fallback(retry_state))


def build_wait(policy: RetryPolicy, rng: random.Random) -> wait_retry_after:
    return wait_retry_after(
        wait_jittered_exponential(multiplier=policy.initial_s, max=policy.max_backoff_s, rng=rng), rng=rng
    )


def build_retrying(
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    before_sleep: BeforeSleep | None = None,
) -> AsyncRetrying:
    """The tenacity loop for ``policy``: retryable errors only, and the last error re-raised when we give up."""
    return AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_elapsed_s),
        wait=build_wait(policy, rng if rng is not None else random.Random()),
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )


def wait_for(policy: RetryPolicy, attempt: int, exc: BaseException | None, rng: random.Random) -> float:
    """Seconds to wait after attempt number ``attempt`` (1-based) failed with ``exc``.

    A pure function over the same tenacity wait that :func:`build_retrying` uses.
    """
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    if exc is not None:
        state.set_exception((type(exc), exc, exc.__traceback__))
    return build_wait(policy, rng)(state)
