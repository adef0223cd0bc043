"""The rate budget many processes share: RPM/TPM buckets, the in-flight cap and the pause, granted as leases.

The RPM/TPM buckets, the in-flight cap (AIMD while no limit is known) and the
``Retry-After`` pause live in one :class:`Budget` (in a cluster, inside one
Ray actor, :mod:`engine.cluster.budget`). Shards lease from it through
:class:`~engine.limits.leased.LeasedAdmission`: each lease call carries a
:class:`Report` of what the shard saw since the last one (successes, 429s,
``Retry-After``, the newest ``x-ratelimit-*`` headers) and returns a
:class:`Grant`, so learning and AIMD are global::

    shard ─ Report(successes, 429s, headers, want) ─► Budget.lease ─► Grant(requests, tokens, in-flight share)

The budget's buckets have the server's shape (full at the start, refilling at
``limit / 60`` per second) and are charged when capacity is *granted*, which
is never later than the server sees it, so the total stays within the limit
whatever the number of shards. The first ``x-ratelimit-*`` headers set the
limit and the level; later ones only lower the level (someone else spends on
the key too), and a 429 empties it and makes every shard drop what it holds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import RateLimit
from ..headers import bucket_level, parse_duration, parse_number
from .admission import DECREASE_INTERVAL_S, HEADROOM, INITIAL_CONCURRENCY
from .bucket import Bucket, Clock, fit_bucket

__all__ = ["LEASE_S", "Budget", "Grant", "Report"]

#: Seconds of the budget's rate one lease carries, split across the shards still running.
LEASE_S = 2.0
_KINDS = ("requests", "tokens")


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
                bucket, fresh = fit_bucket(bucket, server_limit, user_limit, self.clock, now)
                if kind == "requests":
                    self._rpm = bucket
                else:
                    self._tpm = bucket
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
