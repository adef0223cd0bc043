"""Admission control: request and token buckets that learn the provider's limits.

:class:`AdmissionController` combines an RPM bucket, a TPM bucket and an
in-flight cap behind one FIFO queue, and keeps them honest:

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
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ..config import RateLimit
from ..errors import RateLimited, RetryableError
from ..headers import bucket_level, parse_duration, parse_number, parse_retry_after
from .bucket import Bucket, Clock, Gate, Sleep, fit_bucket

__all__ = [
    "DECREASE_INTERVAL_S",
    "HEADROOM",
    "INITIAL_CONCURRENCY",
    "USAGE_WINDOW_S",
    "AdmissionController",
    "Ticket",
]

#: AIMD start: the in-flight cap before any limit is known (never above ``max_in_flight``).
INITIAL_CONCURRENCY = 8
#: A burst of 429/503s halves the in-flight cap at most once per this many seconds.
DECREASE_INTERVAL_S = 1.0
#: Share of a learned budget left unused after a re-sync, so timing noise does not become 429s.
#: It shifts the phase of the bucket, not its rate: steady-state throughput is unchanged.
HEADROOM = 0.01
#: Window of ``rpm_used`` / ``tpm_used`` in the snapshot.
USAGE_WINDOW_S = 60.0
#: Headers that say the server keeps its own token count (then a completion's unused tokens are not refunded).
_SERVER_TOKEN_COUNT = frozenset({"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"})


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
        self._gate = Gate(sleep)
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

    def try_acquire(self, tokens: int = 0) -> Ticket | None:
        """A ticket now if nobody waits and everything fits, else None (then :meth:`acquire` waits in line)."""
        tokens = max(0, tokens)
        if not self._gate and self._delay(tokens) == 0.0:
            return self._admit(tokens)
        return None

    async def acquire(self, tokens: int | Callable[[], int] = 0) -> Ticket:
        """Wait for a request slot, ``tokens`` of token budget and an in-flight slot, in FIFO order.

        ``tokens`` may be a function, asked again each time the caller checks at the head of the
        queue: what a request reserves can shrink while it waits (see ``RateLimitedProvider``).
        """
        if callable(tokens):
            amount = tokens
            if not self._gate and self._delay(n := max(0, amount())) == 0.0:
                return self._admit(n)
            return await self._gate.wait(lambda: self._delay(max(0, amount())), lambda: self._admit(max(0, amount())))
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
            if refund > 0 and headers and _SERVER_TOKEN_COUNT & headers.keys():
                # The server reports its token budget, so it charged the reservation (OpenAI charges prompt +
                # max_tokens up front and gives nothing back): a refund here would make us more optimistic than
                # the server, and 429s follow. Its headers re-sync the level both ways instead.
                refund = 0
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
        server_limit = parse_number(headers.get(f"x-ratelimit-limit-{kind}"))
        user_limit = self.limit.rpm if kind == "requests" else self.limit.tpm
        bucket = self._rpm if kind == "requests" else self._tpm
        if server_limit is not None:
            bucket, _ = fit_bucket(bucket, server_limit, user_limit, self._clock, now)
            if kind == "requests":
                self._rpm = bucket
            else:
                self._tpm = bucket
            if not self._learned:
                self._learned = True
                self._aimd = False
                self._concurrency = self.limit.max_in_flight
        if bucket is None:
            return False
        server_cap = server_limit if server_limit is not None else bucket.capacity
        remaining = parse_number(headers.get(f"x-ratelimit-remaining-{kind}"))
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if remaining is None and reset is None:
            return False
        if ticket.requests_mark < self._synced[kind]:
            return False  # an older snapshot than the one we already trust
        server_rate = server_cap / 60.0
        level = bucket_level(remaining, reset, server_cap)
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

    def nudge(self) -> None:
        """Make the head of the queue check again now (what it needs may have changed)."""
        self._gate.nudge()

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
