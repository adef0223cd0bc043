"""Admission control: request and token buckets that learn the provider's limits.

Like aiolimiter, a budget per minute is a leaky bucket that starts full and
refills continuously; ``acquire(amount)`` lets one bucket charge by request and
another by token. :class:`AdmissionController` combines an RPM bucket, a TPM
bucket and an in-flight cap behind one FIFO queue, and keeps them honest:

* ``x-ratelimit-limit-*`` headers set the limits when the user gave none (and
  never raise a limit the user gave); ``x-ratelimit-remaining-*`` and
  ``x-ratelimit-reset-*`` re-sync the bucket level with the server's.
* ``Retry-After`` / ``retry-after-ms`` on a 429 or 503 pause *all* admissions,
  so a burst of 429s never turns into a stampede of retries.
* While no limit is known, the in-flight cap follows AIMD: it starts small,
  grows by one per window of successes and halves on 429/503.

The fast path (capacity available, nobody queued) takes what it needs and
returns without awaiting anything; only a blocked caller queues.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from .config import RateLimit
from .errors import RateLimited, RetryableError

__all__ = [
    "DECREASE_INTERVAL_S",
    "HEADROOM",
    "INITIAL_CONCURRENCY",
    "AdmissionController",
    "Bucket",
    "Ticket",
    "parse_duration",
    "parse_retry_after",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
T = TypeVar("T")

#: AIMD start: the in-flight cap before any limit is known (never above ``max_in_flight``).
INITIAL_CONCURRENCY = 8
#: A burst of 429/503s halves the in-flight cap at most once per this many seconds.
DECREASE_INTERVAL_S = 1.0
#: Share of a learned budget left unused after a re-sync, so timing noise does not become 429s.
#: It shifts the phase of the bucket, not its rate: steady-state throughput is unchanged.
HEADROOM = 0.01
#: Window of ``rpm_used`` / ``tpm_used`` in the snapshot.
USAGE_WINDOW_S = 60.0
#: Shortfalls below this many units count as none (guards float round-off against endless tiny sleeps).
_EPSILON = 1e-6

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | None) -> float | None:
    """Seconds in ``"1s"``, ``"6m0s"``, ``"59ms"``, ``"0.5s"``, ``"1h2m3s"`` or plain ``"12.5"``; None if unreadable."""
    if text is None:
        return None
    s = text.strip().lower()
    if not s:
        return None
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(s) else None


def parse_retry_after(headers: Mapping[str, str], wall: Clock = time.time) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP-date); None if absent."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = parse_duration(raw)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - wall())


class _Waiter:
    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Gate:
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
        self._gate = _Gate(sleep)

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

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait (FIFO) until ``amount`` fits, then take it."""
        if not self._gate and self.delay(amount) == 0.0:
            self.take(amount)
            return
        await self._gate.wait(lambda: self.delay(amount), lambda: self.take(amount))


class Ticket:
    """One admitted request: what it reserved and when, for :meth:`AdmissionController.release`."""

    __slots__ = ("released", "requests_mark", "t", "tokens", "tokens_mark")

    def __init__(self, tokens: int, t: float, requests_mark: float, tokens_mark: float) -> None:
        self.tokens = tokens
        self.t = t
        #: Totals charged up to and including this ticket, to tell what was sent after it.
        self.requests_mark = requests_mark
        self.tokens_mark = tokens_mark
        self.released = False

    def __repr__(self) -> str:
        return f"Ticket(tokens={self.tokens}, t={self.t:.3f}, released={self.released})"


class AdmissionController:
    """RPM + TPM buckets and an in-flight cap behind one fair queue, learning from the provider."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall: Clock = time.time,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._wall = wall
        self._gate = _Gate(sleep)
        self._rpm = Bucket(limit.rpm, clock) if limit.rpm else None
        self._tpm = Bucket(limit.tpm, clock) if limit.tpm else None
        self._learned = False
        # AIMD governs the in-flight cap until some limit is known.
        known = self._rpm is not None or self._tpm is not None
        self._concurrency = limit.max_in_flight if known else min(INITIAL_CONCURRENCY, limit.max_in_flight)
        self._aimd = not known
        self._successes = 0
        self._last_decrease = -math.inf
        self._in_flight = 0
        self._paused_until = -math.inf
        self._requests_total = 0.0
        self._tokens_total = 0.0
        self._synced = {"requests": -math.inf, "tokens": -math.inf}
        self._usage: deque[list[float]] = deque()  # [second, requests, tokens]

    def _delay(self, tokens: int) -> float:
        now = self._clock()
        wait = self._paused_until - now
        if self._rpm is not None:
            wait = max(wait, self._rpm.delay(1.0, now))
        if tokens and self._tpm is not None:
            wait = max(wait, self._tpm.delay(tokens, now))
        if wait > 0:
            return wait
        return math.inf if self._in_flight >= self._concurrency else 0.0

    def _admit(self, tokens: int) -> Ticket:
        now = self._clock()
        if self._rpm is not None:
            self._rpm.take(1.0, now)
        if tokens and self._tpm is not None:
            self._tpm.take(tokens, now)
        self._in_flight += 1
        self._requests_total += 1
        self._tokens_total += tokens
        self._record(now, 1, tokens)
        return Ticket(tokens, now, self._requests_total, self._tokens_total)

    async def acquire(self, tokens: int = 0) -> Ticket:
        """Wait for a request slot, ``tokens`` of token budget and an in-flight slot, in FIFO order."""
        tokens = max(0, int(tokens))
        if not self._gate and self._delay(tokens) == 0.0:
            return self._admit(tokens)
        return await self._gate.wait(lambda: self._delay(tokens), lambda: self._admit(tokens))

    def release(
        self,
        ticket: Ticket,
        *,
        used_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Free the in-flight slot, refund unused tokens and learn from ``headers`` and ``error``.

        Releasing a ticket twice is a no-op.
        """
        if ticket.released:
            return
        ticket.released = True
        self._in_flight -= 1
        now = self._clock()
        if isinstance(error, RateLimited):
            # The server did not count a rejected request: give its charge back.
            if self._rpm is not None:
                self._rpm.give(1.0, now)
            if ticket.tokens and self._tpm is not None:
                self._tpm.give(ticket.tokens, now)
            self._record(now, -1, -ticket.tokens)
        elif used_tokens is not None and used_tokens != ticket.tokens:
            refund = ticket.tokens - max(0, used_tokens)
            if self._tpm is not None:
                if refund > 0:
                    self._tpm.give(refund, now)
                else:
                    self._tpm.take(-refund, now)
            self._record(now, 0, -refund)
        synced = self._learn(headers, ticket, now) if headers else False
        if error is None:
            self._on_success()
        else:
            self._on_error(error, headers or {}, now, synced)
        self._gate.nudge()

    def _learn(self, headers: Mapping[str, str], ticket: Ticket, now: float) -> bool:
        """Adopt limits and re-sync levels from ``x-ratelimit-*`` headers; True if a level was re-synced."""
        synced = self._learn_kind("requests", headers, ticket, now)
        return self._learn_kind("tokens", headers, ticket, now) or synced

    def _learn_kind(self, kind: str, headers: Mapping[str, str], ticket: Ticket, now: float) -> bool:
        server_limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
        user_limit = self.limit.rpm if kind == "requests" else self.limit.tpm
        bucket = self._rpm if kind == "requests" else self._tpm
        if server_limit is not None:
            capacity = min(server_limit, user_limit) if user_limit else server_limit
            if bucket is None:
                bucket = Bucket(capacity, self._clock, level=capacity)
                if kind == "requests":
                    self._rpm = bucket
                else:
                    self._tpm = bucket
            elif bucket.capacity != capacity:
                bucket.resize(capacity, now)
            if not self._learned:
                self._learned = True
                self._aimd = False
                self._concurrency = self.limit.max_in_flight
        if bucket is None:
            return False
        server_cap = server_limit if server_limit is not None else bucket.capacity
        remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if remaining is None and reset is None:
            return False
        if ticket.requests_mark < self._synced[kind]:
            return False  # an older snapshot than the one we already trust
        server_rate = server_cap / 60.0
        # ``remaining`` is rounded down; the time until the bucket is full again carries the fraction.
        precise = None if reset is None else server_cap - reset * server_rate
        if remaining is None:
            level = precise if precise is not None else 0.0
        elif precise is not None and remaining <= precise < remaining + 1:
            level = precise
        else:
            level = remaining
        sent_since = (
            self._requests_total - ticket.requests_mark
            if kind == "requests"
            else self._tokens_total - ticket.tokens_mark
        )
        estimate = min(server_cap, level + (now - ticket.t) * server_rate) - sent_since
        estimate -= max(1.0, HEADROOM * server_cap)
        if server_limit is not None and (user_limit is None or server_limit <= user_limit):
            bucket.set_level(estimate, now)  # the server's budget governs: agree with it both ways
        else:
            bucket.set_level(min(bucket.refill(now), estimate), now)  # ours governs: only ever lower it
        self._synced[kind] = ticket.requests_mark
        return True

    def _on_success(self) -> None:
        if self._concurrency >= self.limit.max_in_flight:
            return
        self._successes += 1
        if self._successes >= self._concurrency:
            self._concurrency += 1
            self._successes = 0

    def _on_error(self, error: BaseException, headers: Mapping[str, str], now: float, synced: bool) -> None:
        limited = isinstance(error, RateLimited)
        overloaded = getattr(error, "status", None) == 503
        if not (limited or overloaded):
            return
        retry_after = error.retry_after if isinstance(error, RetryableError) else None
        if retry_after is None:
            retry_after = parse_retry_after(headers, self._wall)
        if retry_after:
            self.pause(retry_after)
        if limited and not synced:
            # We were more optimistic than the server and it did not say by how much: start from empty.
            for bucket in (self._rpm, self._tpm):
                if bucket is not None:
                    bucket.set_level(min(bucket.refill(now), 0.0), now)
        if (overloaded or self._aimd) and now - self._last_decrease >= DECREASE_INTERVAL_S:
            self._concurrency = max(1, self._concurrency // 2)
            self._successes = 0
            self._last_decrease = now

    def pause(self, seconds: float) -> None:
        """Admit nothing new for ``seconds`` (a later, longer pause extends it; a shorter one does not cut it)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _record(self, now: float, requests: float, tokens: float) -> None:
        second = math.floor(now)
        usage = self._usage
        if usage and usage[-1][0] == second:
            row = usage[-1]
            row[1] += requests
            row[2] += tokens
            return
        usage.append([second, requests, tokens])
        while usage[0][0] <= now - USAGE_WINDOW_S - 1:
            usage.popleft()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def waiting(self) -> int:
        return len(self._gate)

    @property
    def tracks_tokens(self) -> bool:
        """Whether a token budget is in force (given or learned), so prompts are worth counting."""
        return self._tpm is not None

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        recent = [row for row in self._usage if row[0] > now - USAGE_WINDOW_S]
        return {
            "rpm_limit": self._rpm.capacity if self._rpm is not None else None,
            "tpm_limit": self._tpm.capacity if self._tpm is not None else None,
            "limits_learned": self._learned,
            "rpm_used": round(sum(row[1] for row in recent)),
            "tpm_used": round(sum(row[2] for row in recent)),
            "in_flight": self._in_flight,
            "concurrency": self._concurrency,
            "waiting": len(self._gate),
            "paused_s": max(0.0, self._paused_until - now),
        }


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
