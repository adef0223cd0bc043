"""One rate budget for many processes: a :class:`Budget` that holds the buckets, and shards that lease from it.

The RPM/TPM buckets, the in-flight cap (AIMD while no limit is known) and the
``Retry-After`` pause live in one :class:`Budget` (in a cluster, inside one
Ray actor). A shard's :class:`LeasedAdmission` is the admission controller of
its provider stack: it admits requests from an *allowance* leased from the
budget a few seconds' worth at a time, so there is a round trip per lease, not
per request. Each lease call carries a :class:`Report` of what the shard saw
since the last one (successes, 429s, ``Retry-After``, the newest
``x-ratelimit-*`` headers) and returns what it did not use when it stops, so
learning and AIMD are global::

    shard ─ Report(successes, 429s, headers, want) ─► Budget.lease ─► Grant(requests, tokens, in-flight share)

The budget's buckets have the server's shape (full at the start, refilling at
``limit / 60`` per second) and are charged when capacity is *granted*, which
is never later than the server sees it, so the total stays within the limit
whatever the number of shards. The first ``x-ratelimit-*`` headers set the
limit and the level; later ones only lower the level (someone else spends on
the key too), and a 429 empties it and makes every shard drop what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import RateLimit
from ..errors import RateLimited, RetryableError
from ..headers import bucket_level, parse_duration, parse_number, parse_retry_after
from .admission import DECREASE_INTERVAL_S, HEADROOM, INITIAL_CONCURRENCY, AdmissionController, Ticket
from .bucket import Bucket, Clock, Sleep

__all__ = ["LEASE_S", "REPORT_EVERY_S", "Budget", "Grant", "LeasedAdmission", "Report"]

#: Seconds of the budget's rate one lease carries, split across the shards still running.
LEASE_S = 2.0
#: A shard reports (and hears the in-flight share, pauses and resets) at least this often.
REPORT_EVERY_S = 1.0
_KINDS = ("requests", "tokens")
_SERVER_TOKEN_COUNT = frozenset({"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"})


@dataclass(slots=True)
class Report:
    """What one shard tells the budget on each lease call (plain data: it crosses process boundaries)."""

    shard: int
    #: Ask for a request allowance / for this many tokens (0: none wanted).
    want_requests: bool = False
    want_tokens: int = 0
    #: Allowance given back (the shard stops, or drops what it holds).
    returned_requests: float = 0.0
    returned_tokens: float = 0.0
    successes: int = 0
    limited: int = 0
    overloaded: int = 0
    retry_after: float | None = None
    #: The newest ``x-ratelimit-*`` headers, the budget's grant totals before the request that got them,
    #: and how long ago they arrived.
    headers: dict[str, str] | None = None
    requests_mark: float = 0.0
    tokens_mark: float = 0.0
    headers_age_s: float = 0.0
    in_flight: int = 0
    done: bool = False


@dataclass(frozen=True, slots=True)
class Grant:
    """The budget's answer: an allowance (``inf``: no limit known), the shard's in-flight share, and news."""

    requests: float
    tokens: float
    #: The budget's grant totals before this grant (a request's mark is this plus its place in the grant).
    requests_mark: float
    tokens_mark: float
    concurrency: int
    pause_s: float
    rpm_limit: float | None
    tpm_limit: float | None
    learned: bool
    #: Nothing (of what was wanted) was granted: ask again in this many seconds.
    retry_in: float
    #: Bumped when a 429 empties the budget: holders drop what they hold.
    epoch: int


@dataclass(slots=True)
class _Holder:
    in_flight: int = 0
    done: bool = False


@dataclass
class Budget:
    """The RPM/TPM buckets, in-flight cap and pause shared by ``shards`` shards (see the module doc)."""

    limit: RateLimit
    shards: int
    lease_s: float = LEASE_S
    clock: Clock = time.monotonic
    _rpm: Bucket | None = field(init=False, default=None)
    _tpm: Bucket | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        lim = self.limit
        self._rpm = Bucket(lim.rpm, self.clock) if lim.rpm else None
        self._tpm = Bucket(lim.tpm, self.clock) if lim.tpm else None
        known = self._rpm is not None or self._tpm is not None
        self.learned = False
        self.aimd = not known
        self.concurrency = lim.max_in_flight if known else min(INITIAL_CONCURRENCY, lim.max_in_flight)
        self._successes = 0
        self._last_decrease = -math.inf
        self._paused_until = -math.inf
        self.granted = {"requests": 0.0, "tokens": 0.0}
        self.epoch = 0
        self.leases = 0
        self.rate_limited = 0
        self._holders: dict[int, _Holder] = {}

    # -- the one call ---------------------------------------------------------------------------

    def lease(self, report: Report) -> Grant:
        now = self.clock()
        self.leases += 1
        holder = self._holders.setdefault(report.shard, _Holder())
        holder.in_flight, holder.done = report.in_flight, report.done
        for bucket, amount in ((self._rpm, report.returned_requests), (self._tpm, report.returned_tokens)):
            if bucket is not None and amount > 0 and math.isfinite(amount):
                bucket.give(amount, now)
        if report.headers:
            self._learn(report, now)
        self._on_events(report, now)
        active = self.active
        want_r = report.want_requests and not report.done
        want_t = report.want_tokens if not report.done else 0
        requests, tokens, retry_in = 0.0, 0.0, 0.0
        pause = max(0.0, self._paused_until - now)
        marks = (self.granted["requests"], self.granted["tokens"])
        if self._rpm is None:
            requests = math.inf  # no limit known: nothing to lease (the in-flight cap governs)
        if self._tpm is None:
            tokens = math.inf
        if pause > 0 and (want_r or want_t):
            retry_in = pause
        else:
            if want_r:
                requests, wait = self._grant(self._rpm, "requests", 1.0, active, now)
                retry_in = max(retry_in, wait)
            if want_t:
                tokens, wait = self._grant(self._tpm, "tokens", float(want_t), active, now)
                retry_in = max(retry_in, wait)
        return Grant(
            requests=requests,
            tokens=tokens,
            requests_mark=marks[0],
            tokens_mark=marks[1],
            concurrency=self._share(report.shard, active),
            pause_s=pause,
            rpm_limit=self._rpm.capacity if self._rpm is not None else None,
            tpm_limit=self._tpm.capacity if self._tpm is not None else None,
            learned=self.learned,
            retry_in=retry_in,
            epoch=self.epoch,
        )

    # -- granting -------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Shards not known to be done (those not heard from yet count)."""
        return max(1, self.shards - sum(1 for h in self._holders.values() if h.done))

    def chunk(self, bucket: Bucket, active: int) -> float:
        return max(1.0, bucket.rate * self.lease_s / active)

    def _grant(self, bucket: Bucket | None, kind: str, need: float, active: int, now: float) -> tuple[float, float]:
        """(granted, retry_in) for one kind: a chunk when one is there, else nothing and when to ask again."""
        if bucket is None:
            return math.inf, 0.0
        amount = max(self.chunk(bucket, active), need) if kind == "tokens" else self.chunk(bucket, active)
        if kind == "requests":
            amount = float(math.floor(amount))
        wait = bucket.delay(amount, now)
        if wait > 0:
            return 0.0, wait
        bucket.take(amount, now)
        self.granted[kind] += amount
        return amount, 0.0

    def _share(self, shard: int, active: int) -> int:
        """This shard's part of the in-flight cap (the cap split evenly; at least one)."""
        base, extra = divmod(self.concurrency, active)
        return max(1, base + (1 if shard % active < extra else 0))

    # -- learning -------------------------------------------------------------------------------

    def _learn(self, report: Report, now: float) -> None:
        headers = report.headers or {}
        for kind in _KINDS:
            server_limit = parse_number(headers.get(f"x-ratelimit-limit-{kind}"))
            user_limit = self.limit.rpm if kind == "requests" else self.limit.tpm
            bucket = self._rpm if kind == "requests" else self._tpm
            fresh = False
            if server_limit is not None:
                capacity = min(server_limit, user_limit) if user_limit else server_limit
                if bucket is None:
                    bucket, fresh = Bucket(capacity, self.clock, level=capacity), True
                    if kind == "requests":
                        self._rpm = bucket
                    else:
                        self._tpm = bucket
                elif bucket.capacity != capacity:
                    bucket.resize(capacity, now)
                if not self.learned:
                    self.learned, self.aimd = True, False
                    self.concurrency = self.limit.max_in_flight
            if bucket is None:
                continue
            remaining = parse_number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is None and reset is None:
                continue
            cap = server_limit if server_limit is not None else bucket.capacity
            rate = cap / 60.0
            level = bucket_level(remaining, reset, cap)
            mark = report.requests_mark if kind == "requests" else report.tokens_mark
            since = self.granted[kind] - mark if math.isfinite(mark) else 0.0
            if kind == "requests":
                since += sum(h.in_flight for h in self._holders.values()) if fresh else 0
            estimate = min(cap, level + report.headers_age_s * rate) - since - max(1.0, HEADROOM * cap)
            if fresh:
                bucket.set_level(estimate, now)
            elif estimate < bucket.refill(now) - self._tolerance(bucket):
                bucket.set_level(estimate, now)  # someone else spends on this key: only ever lower

    def _tolerance(self, bucket: Bucket) -> float:
        """How far a header's estimate may fall below our level before we believe it (leases still unsent)."""
        return (self.shards + 1) * self.chunk(bucket, 1) / 1.0

    def _on_events(self, report: Report, now: float) -> None:
        if report.successes and self.aimd and self.concurrency < self.limit.max_in_flight:
            self._successes += report.successes
            while self._successes >= self.concurrency and self.concurrency < self.limit.max_in_flight:
                self._successes -= self.concurrency
                self.concurrency += 1
        if report.retry_after:
            self._paused_until = max(self._paused_until, now + report.retry_after)
        if report.limited:
            self.rate_limited += report.limited
            for bucket in (self._rpm, self._tpm):
                if bucket is not None:
                    bucket.set_level(min(bucket.refill(now), 0.0), now)
            self.epoch += 1
        backoff = (report.limited and self.aimd) or report.overloaded
        if backoff and now - self._last_decrease >= DECREASE_INTERVAL_S:
            self.concurrency = max(1, self.concurrency // 2)
            self._successes = 0
            self._last_decrease = now

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "rpm_limit": self._rpm.capacity if self._rpm is not None else None,
            "tpm_limit": self._tpm.capacity if self._tpm is not None else None,
            "limits_learned": self.learned,
            "concurrency": self.concurrency,
            "budget_leases": self.leases,
            "budget_granted_requests": round(self.granted["requests"]),
            "budget_rate_limited": self.rate_limited,
            "paused_s": max(0.0, self._paused_until - now),
        }


Lease = Callable[[Report], Awaitable[Grant]]


class LeasedAdmission(AdmissionController):
    """The admission controller of one shard: admits from an allowance leased from a :class:`Budget`.

    ``lease`` sends a :class:`Report` to the budget and returns its :class:`Grant`
    (in a cluster, a call to the budget actor). A blocked caller waits in the same
    fair queue as :class:`AdmissionController`'s; the lease call runs in the
    background and wakes the queue's head when it returns. Call :meth:`aclose`
    when done: it returns the allowance not used.
    """

    def __init__(
        self,
        limit: RateLimit,
        lease: Lease,
        *,
        shard: int,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall: Clock = time.time,
        report_every_s: float = REPORT_EVERY_S,
    ) -> None:
        super().__init__(limit, clock=clock, sleep=sleep, wall=wall)
        self._rpm = self._tpm = None  # the buckets are the budget's
        self._lease = lease
        self._shard = shard
        self._sleep = sleep
        self._report_every_s = report_every_s
        self._allow_r = 0.0
        self._allow_t = 0.0
        self._grant: Grant | None = None
        self._used_r = 0.0
        self._used_t = 0.0
        self._concurrency = 1  # until the first grant says our share
        self._want = (False, 0)
        self._pending: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._events = Report(shard=shard)
        self._headers_t = 0.0
        self._closed = False
        self.error: BaseException | None = None

    # -- admission (the parent's queue calls these) --------------------------------------------

    def _delay(self, tokens: int) -> float:
        if self.error is not None:
            return 0.0  # let the head through to fail in _admit
        now = self._clock()
        wait = self._paused_until - now
        if wait > 0:
            return wait
        if self._in_flight >= self._concurrency and self._grant is not None:
            return math.inf
        need_r = self._allow_r < 1.0
        need_t = bool(tokens) and self.tracks_tokens and self._allow_t < tokens
        if need_r or need_t or self._grant is None:
            self._ask(need_r or self._grant is None, tokens if need_t else 0)
            return math.inf
        return 0.0

    def _admit(self, tokens: int) -> Ticket:
        if self.error is not None:
            raise self.error
        now = self._clock()
        grant = self._grant
        self._allow_r -= 1.0
        if self.tracks_tokens:
            self._allow_t -= tokens
        self._in_flight += 1
        self._requests_total += 1
        self._tokens_total += tokens
        self._record(now, 1, tokens)
        r_mark = (grant.requests_mark if grant else 0.0) + self._used_r
        t_mark = (grant.tokens_mark if grant else 0.0) + self._used_t
        self._used_r += 1
        self._used_t += tokens
        return Ticket(tokens, now, r_mark, t_mark)

    def release(
        self,
        ticket: Ticket,
        *,
        used_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
        error: BaseException | None = None,
    ) -> None:
        if ticket.released:
            return
        ticket.released = True
        self._in_flight -= 1
        now = self._clock()
        ev = self._events
        if isinstance(error, RateLimited):
            # the server did not count it, but the budget is spent: drop what we hold until the next grant
            self._allow_r = min(self._allow_r, 0.0)
            self._allow_t = min(self._allow_t, 0.0)
            ev.limited += 1
            self._record(now, -1, -ticket.tokens)
        elif used_tokens is not None and used_tokens != ticket.tokens and self.tracks_tokens:
            refund = ticket.tokens - max(0, used_tokens)
            if refund > 0 and headers and _SERVER_TOKEN_COUNT & headers.keys():
                refund = 0
            self._allow_t += refund
            self._record(now, 0, -refund)
        if headers and any(key.startswith("x-ratelimit-") for key in headers):
            ev.headers = {k: v for k, v in headers.items() if k.startswith("x-ratelimit-")}
            ev.requests_mark, ev.tokens_mark = ticket.requests_mark, ticket.tokens_mark
            self._headers_t = now
            grant = self._grant
            if grant is not None and (
                (math.isinf(grant.requests) and "x-ratelimit-limit-requests" in headers)
                or (math.isinf(grant.tokens) and "x-ratelimit-limit-tokens" in headers)
            ):
                # a limit we (and the budget) did not know: stop spending the unlimited allowance, tell it now
                self._allow_r = self._allow_t = 0.0
                self._grant = None
                self._ask(True, 0)
        if error is None:
            ev.successes += 1
        else:
            status = getattr(error, "status", None)
            if status == 503:
                ev.overloaded += 1
            if isinstance(error, RateLimited) or status == 503:
                retry_after = error.retry_after if isinstance(error, RetryableError) else None
                if retry_after is None:
                    retry_after = parse_retry_after(headers or {}, self._wall)
                if retry_after:
                    self.pause(retry_after)
                    ev.retry_after = max(ev.retry_after or 0.0, retry_after)
        if isinstance(error, RateLimited):
            self._ask(False, 0)  # the others must hear of it now, not at the next tick
        self._gate.nudge()

    @property
    def tracks_tokens(self) -> bool:
        grant = self._grant
        return grant is not None and grant.tpm_limit is not None

    # -- talking to the budget ------------------------------------------------------------------

    def _ask(self, want_requests: bool, want_tokens: int) -> None:
        """Make sure a lease call is on its way (asking for what the head of the queue lacks)."""
        old_r, old_t = self._want
        self._want = (old_r or want_requests, max(old_t, want_tokens))
        if self._ticker is None and not self._closed:
            self._ticker = asyncio.ensure_future(self._tick())
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._refill())

    def _take_report(self) -> Report:
        ev, self._events = self._events, Report(shard=self._shard)
        ev.want_requests, ev.want_tokens = self._want
        self._want = (False, 0)
        ev.in_flight = self._in_flight
        if ev.headers is not None:
            ev.headers_age_s = max(0.0, self._clock() - self._headers_t)
        return ev

    def _apply(self, grant: Grant) -> None:
        old = self._grant
        if old is not None and grant.epoch != old.epoch:
            self._allow_r = min(self._allow_r, 0.0)  # a 429 somewhere: the budget was emptied
            self._allow_t = min(self._allow_t, 0.0)
        if grant.requests > 0 or math.isinf(grant.requests) or old is None:
            self._used_r = 0.0
        if grant.tokens > 0 or math.isinf(grant.tokens) or old is None:
            self._used_t = 0.0
        self._allow_r = _add(self._allow_r, grant.requests, limited=grant.rpm_limit is not None)
        self._allow_t = _add(self._allow_t, grant.tokens, limited=grant.tpm_limit is not None)
        if grant.pause_s > 0:
            self.pause(grant.pause_s)
        self._concurrency = grant.concurrency
        self._grant = grant
        self._learned = grant.learned

    async def _refill(self) -> None:
        try:
            while not self._closed:
                report = self._take_report()
                grant = await self._lease(report)
                self._apply(grant)
                self._gate.nudge()
                short_r = report.want_requests and grant.requests <= 0
                short_t = report.want_tokens > 0 and grant.tokens <= 0
                if grant.retry_in <= 0 or not (short_r or short_t):
                    return
                # nothing there yet: ask again when a chunk will be (what is wanted by then may have grown)
                self._want = (self._want[0] or short_r, max(self._want[1], report.want_tokens if short_t else 0))
                await self._sleep(grant.retry_in)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the budget is gone: fail the waiting requests rather than hang
            self.error = exc
            self._gate.nudge()

    async def _tick(self) -> None:
        """Report at least every ``report_every_s`` (global learning, in-flight share, resets)."""
        while not self._closed:
            await self._sleep(self._report_every_s)
            if self._pending is None or self._pending.done():
                self._pending = asyncio.ensure_future(self._refill_once())

    async def _refill_once(self) -> None:
        try:
            self._apply(await self._lease(self._take_report()))
            self._gate.nudge()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
            self._gate.nudge()

    async def aclose(self) -> None:
        """Stop reporting and give back what was not used (best effort: the budget may be gone)."""
        self._closed = True
        for task in (self._ticker, self._pending):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        report = self._take_report()
        report.want_requests, report.want_tokens, report.done = False, 0, True
        report.returned_requests = self._allow_r if math.isfinite(self._allow_r) and self._allow_r > 0 else 0.0
        report.returned_tokens = self._allow_t if math.isfinite(self._allow_t) and self._allow_t > 0 else 0.0
        self._allow_r = self._allow_t = 0.0
        with contextlib.suppress(Exception):  # the budget (or its node) is gone: nothing to give back to
            await self._lease(report)

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        grant = self._grant
        snap["rpm_limit"] = grant.rpm_limit if grant else None
        snap["tpm_limit"] = grant.tpm_limit if grant else None
        snap["leased_requests"] = self._allow_r if math.isfinite(self._allow_r) else None
        return snap


def _add(held: float, granted: float, *, limited: bool) -> float:
    """The allowance after a grant: ``inf`` while no limit is known; the first finite grant replaces ``inf``."""
    if not limited or math.isinf(granted):
        return math.inf
    return (0.0 if math.isinf(held) else held) + granted
