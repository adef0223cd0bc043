"""Retry policies as pure functions, and the retrying provider against a scripted fake provider."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tenacity import AsyncRetrying, RetryCallState

from engine.config import RetryPolicy
from engine.errors import (
    AuthError,
    BadRequest,
    EngineError,
    MalformedResponse,
    ProviderUnavailable,
    RateLimited,
    Timeout,
)
from engine.providers import retrying as retrying_module
from engine.providers.base import Provider
from engine.providers.retrying import RetryingProvider
from engine.retry import RETRY_AFTER_JITTER_S, build_retrying, is_retryable, server_delay, wait_for
from engine.stats import Stats
from engine.types import Completion, Request


class Extremes(random.Random):
    """An rng whose ``uniform`` returns the top (or bottom) of its range, so delays can be asserted exactly."""

    def __init__(self, top: bool = True) -> None:
        super().__init__(0)
        self.top = top

    def uniform(self, a: float, b: float) -> float:
        return b if self.top else a


POLICY = RetryPolicy(max_attempts=4, max_elapsed_s=600, initial_s=0.5, max_backoff_s=3.0)


# -- pure functions ----------------------------------------------------------


def test_is_retryable() -> None:
    retryable: list[BaseException] = [RateLimited(), ProviderUnavailable(), Timeout("t"), MalformedResponse("m")]
    fatal: list[BaseException] = [AuthError("a"), BadRequest("b"), EngineError("e"), ValueError("v")]
    assert all(is_retryable(exc) for exc in retryable)
    assert not any(is_retryable(exc) for exc in fatal)


@pytest.mark.parametrize(("attempt", "high"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (30, 3.0)])
def test_backoff_window_doubles_and_is_capped(attempt: int, high: float) -> None:
    assert wait_for(POLICY, attempt, Timeout("t"), Extremes(top=True)) == pytest.approx(high)
    assert wait_for(POLICY, attempt, Timeout("t"), Extremes(top=False)) == 0.0  # full jitter: from zero


def test_backoff_is_jittered_and_seeded() -> None:
    draws = [wait_for(POLICY, 3, Timeout("t"), random.Random(seed)) for seed in range(50)]
    assert all(0.0 <= d <= 2.0 for d in draws)
    assert len(set(draws)) == 50
    assert wait_for(POLICY, 3, Timeout("t"), random.Random(7)) == draws[7]


def test_server_retry_after_wins_over_backoff() -> None:
    exc = RateLimited(retry_after=7.0)
    assert server_delay(exc) == 7.0
    assert wait_for(POLICY, 1, exc, Extremes(top=False)) == 7.0
    assert wait_for(POLICY, 1, exc, Extremes(top=True)) == pytest.approx(7.0 + RETRY_AFTER_JITTER_S)
    # beyond max_backoff_s too: the server knows best
    assert wait_for(POLICY, 5, ProviderUnavailable(retry_after=30.0), Extremes(top=False)) == 30.0
    # an error without one falls back to backoff
    assert server_delay(RateLimited()) is None
    assert wait_for(POLICY, 2, RateLimited(), Extremes(top=True)) == pytest.approx(1.0)


def _state(retrying: AsyncRetrying, attempt: int, exc: BaseException, started_ago: float = 0.0) -> RetryCallState:
    state = RetryCallState(retry_object=retrying, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.start_time -= started_ago
    state.set_exception((type(exc), exc, None))
    return state


def test_build_retrying_stops_on_attempts_or_elapsed_time() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed_s=10)
    r = build_retrying(policy)
    assert not r.stop(_state(r, 2, Timeout("t")))
    assert r.stop(_state(r, 3, Timeout("t")))
    assert r.stop(_state(r, 1, Timeout("t"), started_ago=11))
    assert r.retry(_state(r, 1, Timeout("t")))
    assert not r.retry(_state(r, 1, AuthError("no key")))
    assert r.reraise


# -- the retrying provider ---------------------------------------------------


class ScriptedProvider(Provider):
    name = "scripted"

    def __init__(self, *script: Completion | BaseException) -> None:
        self.script = list(script)
        self.calls = 0

    async def complete(self, request: Request) -> Completion:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


REQUEST = Request(id="r1", messages=[{"role": "user", "content": "hi"}])
OK = Completion(request_id="r1", text="fine")


def make(inner: Provider, policy: RetryPolicy = POLICY, **kw: Any) -> tuple[RetryingProvider, Stats, Sleeps]:
    stats, sleeps = Stats(), Sleeps()
    provider = RetryingProvider(inner, policy, stats=stats, sleep=sleeps, rng=Extremes(top=True), **kw)
    return provider, stats, sleeps


async def test_fast_path_builds_no_tenacity_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tenacity built on the fast path")

    monkeypatch.setattr(retrying_module, "build_retrying", forbidden)
    provider, stats, sleeps = make(ScriptedProvider(OK))
    assert await provider.complete(REQUEST) is OK
    assert stats.counters == {} and sleeps.calls == []


async def test_retries_until_success_and_counts() -> None:
    inner = ScriptedProvider(RateLimited(retry_after=2.0), Timeout("slow"), OK)
    seen: list[tuple[str, str, int, float]] = []
    provider, stats, sleeps = make(
        inner, on_retry=lambda req, exc, attempt, delay: seen.append((req.id, type(exc).__name__, attempt, delay))
    )
    assert await provider.complete(REQUEST) is OK
    assert inner.calls == 3
    assert sleeps.calls == pytest.approx([2.0 + RETRY_AFTER_JITTER_S, 1.0])  # Retry-After, then backoff #2
    assert seen == [("r1", "RateLimited", 1, sleeps.calls[0]), ("r1", "Timeout", 2, 1.0)]
    assert stats.get("retries") == 2
    assert stats.get("rate_limited") == 1
    assert stats.get("errors:RateLimited") == 1 and stats.get("errors:Timeout") == 1


async def test_fatal_error_is_never_retried() -> None:
    inner = ScriptedProvider(AuthError("bad key"), OK)
    provider, stats, sleeps = make(inner)
    with pytest.raises(AuthError):
        await provider.complete(REQUEST)
    assert inner.calls == 1 and sleeps.calls == []
    assert stats.counters == {"errors:AuthError": 1}


async def test_fatal_error_during_retries_stops_at_once() -> None:
    inner = ScriptedProvider(ProviderUnavailable(status=500), BadRequest("too long"), OK)
    provider, stats, sleeps = make(inner)
    with pytest.raises(BadRequest):
        await provider.complete(REQUEST)
    assert inner.calls == 2 and len(sleeps.calls) == 1
    assert stats.get("retries") == 1 and stats.get("errors:BadRequest") == 1


async def test_exhaustion_reraises_the_last_error() -> None:
    errors = [Timeout(f"slow {i}") for i in range(4)]
    inner = ScriptedProvider(*errors, OK)
    provider, stats, sleeps = make(inner)  # max_attempts=4: the first try plus three retries
    with pytest.raises(Timeout) as info:
        await provider.complete(REQUEST)
    assert info.value is errors[-1]
    assert inner.calls == 4 and sleeps.calls == pytest.approx([0.5, 1.0, 2.0])
    assert stats.get("retries") == 3 and stats.get("errors:Timeout") == 4


async def test_single_attempt_policy_does_not_retry() -> None:
    inner = ScriptedProvider(RateLimited(retry_after=1.0), OK)
    provider, stats, _ = make(inner, RetryPolicy(max_attempts=1))
    with pytest.raises(RateLimited):
        await provider.complete(REQUEST)
    assert inner.calls == 1 and stats.get("rate_limited") == 1 and stats.get("retries") == 0


async def test_wrapper_keeps_the_inner_name_and_closes_it() -> None:
    closed: list[bool] = []

    class Closing(ScriptedProvider):
        async def aclose(self) -> None:
            closed.append(True)

    provider, _, _ = make(Closing(OK))
    async with provider:
        assert provider.name == "scripted"
    assert closed == [True]
