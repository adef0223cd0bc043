"""A shard's admission controller that admits from an allowance leased from the shared :class:`~.budget.Budget`.

:class:`LeasedAdmission` is the admission controller of a shard's provider
stack: it admits requests from an *allowance* leased from the budget a few
seconds' worth at a time, so there is a round trip per lease, not per request.
It reports what it saw on each lease call (see :mod:`engine.limits.budget`)
and returns what it did not use when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..config import RateLimit
from ..errors import RateLimited, RetryableError
from ..headers import parse_retry_after
from .admission import AdmissionController, Ticket
from .bucket import Clock, Sleep
from .budget import Grant, Report

__all__ = ["REPORT_EVERY_S", "Grant", "LeasedAdmission", "Report"]

#: A shard reports (and hears the in-flight share, pauses and resets) at least this often.
REPORT_EVERY_S = 1.0
#: Headers that say the server counts tokens itself.
_SERVER_TOKEN_COUNT = frozenset({"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"})


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
