"""The token bucket: a budget per minute that starts full and refills continuously, like aiolimiter.

``acquire(amount)`` lets one bucket charge by request and another by token. The
level may go negative (a debt), so an amount above the capacity waits for a
full bucket and then takes it all: it never deadlocks and the average rate holds.
Both sides of the wire use this one class: the client's admission control
(:mod:`engine.limits.admission`) and the simulator's server-side limits
(:mod:`engine.sim.limits`), which report ``remaining()`` and ``reset_s()`` in headers.

Time is injected (``clock``; ``sleep`` for a waiting caller), so a test runs it under a
controlled clock. Only a blocked caller queues: :class:`Gate` is the FIFO of those.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["Bucket", "Clock", "Gate", "Sleep", "fit_bucket"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
T = TypeVar("T")

#: Shortfalls below this many units count as none (guards float round-off against endless tiny sleeps).
_EPSILON = 1e-6


class _Waiter:
    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Gate:
    """A FIFO of blocked callers. The head checks ``ready``; everyone else waits for their turn.

    ``ready()`` returns 0 (go now), seconds to wait, or ``inf`` (wait for an event).
    The head waits on its own future, woken by a timer or by :meth:`nudge` (which a
    release calls), whichever comes first, so a refund or a freed slot is used at
    once. With the default sleep the timer is a loop ``call_later`` handle; an
    injected ``sleep`` (a test clock) runs in a small task instead.
    """

    __slots__ = ("_sleep", "_waiters")

    def __init__(self, sleep: Sleep) -> None:
        self._sleep = sleep
        self._waiters: deque[_Waiter] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def nudge(self) -> None:
        """Make the head check again (or take its turn)."""
        if self._waiters:
            _wake(self._waiters[0].fut)

    def _arm(self, loop: asyncio.AbstractEventLoop, delay: float, fut: asyncio.Future[None]) -> Callable[[], Any]:
        if self._sleep is asyncio.sleep:
            return loop.call_later(delay, _wake, fut).cancel
        timer = asyncio.ensure_future(self._sleep(delay))
        timer.add_done_callback(lambda _: _wake(fut))
        return timer.cancel

    async def wait(self, ready: Callable[[], float], admit: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        waiters = self._waiters
        me = _Waiter(loop.create_future())
        if not waiters:
            me.fut.set_result(None)  # first in line: no turn to wait for
        waiters.append(me)
        try:
            await me.fut
            while True:
                delay = ready()
                if delay <= 0:
                    return admit()
                me.fut = loop.create_future()
                if math.isinf(delay):
                    await me.fut
                    continue
                disarm = self._arm(loop, delay, me.fut)
                try:
                    await me.fut
                finally:
                    disarm()
        finally:
            if waiters and waiters[0] is me:
                waiters.popleft()
                self.nudge()
            else:
                waiters.remove(me)


class Bucket:
    """``capacity_per_minute`` units; starts full (or at ``level``) and refills continuously.

    The level may go negative (a debt): an ``amount`` above the capacity waits for a
    full bucket, then takes it all, so it never deadlocks and the average rate holds.
    """

    __slots__ = ("_clock", "_gate", "_last", "capacity", "level", "rate")

    def __init__(
        self,
        capacity_per_minute: float,
        clock: Clock = time.monotonic,
        *,
        sleep: Sleep = asyncio.sleep,
        level: float | None = None,
    ) -> None:
        if not capacity_per_minute > 0:
            raise ValueError(f"capacity must be positive, got {capacity_per_minute!r}")
        self.capacity = float(capacity_per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity if level is None else min(float(level), self.capacity)
        self._clock = clock
        self._last = clock()
        self._gate = Gate(sleep)

    def refill(self, now: float | None = None) -> float:
        """Bring the level up to date; return it."""
        if now is None:
            now = self._clock()
        if now > self._last:
            self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
            self._last = now
        return self.level

    def delay(self, amount: float = 1.0, now: float | None = None) -> float:
        """Seconds until ``amount`` (clamped to the capacity) fits; 0 if it fits now."""
        short = min(amount, self.capacity) - self.refill(now)
        return short / self.rate if short > _EPSILON else 0.0

    def take(self, amount: float = 1.0, now: float | None = None) -> None:
        self.refill(now)
        self.level -= amount

    def give(self, amount: float, now: float | None = None) -> None:
        """Refund ``amount`` (never above the capacity)."""
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def set_level(self, level: float, now: float | None = None) -> None:
        self.refill(now)
        self.level = min(self.capacity, level)

    def resize(self, capacity_per_minute: float, now: float | None = None) -> None:
        """Change the capacity, keeping what is used (capacity - level) as it was."""
        self.refill(now)
        used = self.capacity - self.level
        self.capacity = float(capacity_per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity - used

    def remaining(self, now: float | None = None) -> int:
        """Whole units left now (what ``x-ratelimit-remaining-*`` reports)."""
        return max(0, math.floor(self.refill(now)))

    def reset_s(self, now: float | None = None) -> float:
        """Seconds until the bucket is full again (what ``x-ratelimit-reset-*`` reports)."""
        return (self.capacity - self.refill(now)) / self.rate

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait (FIFO) until ``amount`` fits, then take it."""
        if not self._gate and self.delay(amount) == 0.0:
            self.take(amount)
            return
        await self._gate.wait(lambda: self.delay(amount), lambda: self.take(amount))


def fit_bucket(
    bucket: Bucket | None, server_limit: float, user_limit: float | None, clock: Clock, now: float
) -> tuple[Bucket, bool]:
    """The bucket for a limit the server announced (capped by the user's): a new full one, or ``bucket`` resized.

    Returns ``(bucket, new)``; a limit given by the user is never raised by what the server says.
    """
    capacity = min(server_limit, user_limit) if user_limit else server_limit
    if bucket is None:
        return Bucket(capacity, clock, level=capacity), True
    if bucket.capacity != capacity:
        bucket.resize(capacity, now)
    return bucket, False
