"""Stragglers: requests that take far longer than their peers, and the backup requests that cut the tail.

A few requests in a thousand can hang for a minute (a stuck upstream, a lost
connection the server never closes) while the rest answer in a second. Once
the plan has nothing new to send, the run would wait for them. :class:`Stragglers`
learns the latency distribution from the requests that succeed and calls a
request a straggler when it has been in flight longer than ``factor`` times the
observed 99th percentile (and at least ``min_s``). An idle worker then sends a
*backup*: the same request once more; whichever answer arrives first is used
and the others are discarded. A backup that straggles in turn gets another, up
to ``max_copies`` sends of one request. Backups are capped at ``budget`` of the
requests sent, and each one is counted (``backup_requests``), since it may be
billed.

When the run is done, requests still in flight are collected only up to the
same deadline; the ones abandoned are counted too (``abandoned_in_flight``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .types import Request

__all__ = ["BackupPolicy", "Stragglers"]

#: Latencies kept to estimate the percentile, and how often (in observations) it is recomputed.
WINDOW = 1024
RECOMPUTE_EVERY = 64


@dataclass(frozen=True, kw_only=True)
class BackupPolicy:
    enabled: bool = True
    #: Share of requests that may be sent a second time.
    budget: float = 0.01
    #: A request is a straggler after ``factor`` x the observed p99 latency ...
    factor: float = 3.0
    #: ... and never before this many seconds.
    min_s: float = 1.0
    #: Successful requests observed before anything is called a straggler.
    min_observations: int = 20
    #: Most sends of one request (the first and its backups).
    max_copies: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.budget <= 1:
            raise ValueError("budget must be within 0..1")
        if self.factor < 1 or self.min_s < 0 or self.min_observations < 1 or self.max_copies < 1:
            raise ValueError("factor >= 1, min_s >= 0, min_observations >= 1 and max_copies >= 1")


class _Flight:
    __slots__ = ("copies", "last_sent", "request", "started")

    def __init__(self, request: Request, started: float) -> None:
        self.request = request
        self.started = started
        #: When the latest copy went out, and how many copies did.
        self.last_sent = started
        self.copies = 1


class Stragglers:
    """Requests in flight, their latencies, and which deserves a backup."""

    def __init__(self, policy: BackupPolicy | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy if policy is not None else BackupPolicy()
        self._clock = clock
        self._flights: dict[int, _Flight] = {}
        self._latencies: deque[float] = deque(maxlen=WINDOW)
        self._since = 0
        self._p99: float | None = None
        self.sent = 0
        self.backups = 0
        self.backup_wins = 0

    # -- bookkeeping (once per request: kept cheap) -----------------------------------------------

    def start(self, request: Request) -> None:
        self.sent += 1
        self._flights[id(request)] = _Flight(request, self._clock())

    def finish(self, request: Request, *, ok: bool, backup: bool = False) -> bool:
        """A send of ``request`` ended; True if it is the first (its outcome counts), False if one already did."""
        flight = self._flights.pop(id(request), None)
        if flight is None:
            return False
        if ok and not backup:
            self._observe(self._clock() - flight.started)
        if backup:
            self.backup_wins += 1
        return True

    def _observe(self, latency: float) -> None:
        self._latencies.append(latency)
        self._since += 1
        if self._since >= RECOMPUTE_EVERY or (
            self._p99 is None and len(self._latencies) >= self.policy.min_observations
        ):
            self._since = 0
            ordered = sorted(self._latencies)
            self._p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    # -- decisions ---------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """Seconds after which a request is a straggler, or None while too little is known."""
        if self._p99 is None or len(self._latencies) < self.policy.min_observations:
            return None
        return max(self.policy.min_s, self.policy.factor * self._p99)

    def next_check_in(self) -> float | None:
        """Seconds until the oldest request that may still get a copy becomes a straggler (None: nothing to watch)."""
        deadline = self.deadline()
        if deadline is None or not self.policy.enabled or not self._flights:
            return None
        most = self.policy.max_copies
        oldest = min((f.last_sent for f in self._flights.values() if f.copies < most), default=None)
        if oldest is None:
            return None
        return max(0.0, oldest + deadline - self._clock())

    def pick(self) -> Request | None:
        """The straggler whose latest copy went out longest ago, if it may have one more and the budget allows."""
        policy = self.policy
        deadline = self.deadline()
        if not policy.enabled or deadline is None or self.backups + 1 > max(1.0, policy.budget * self.sent):
            return None
        now = self._clock()
        cutoff = now - deadline
        best: _Flight | None = None
        for flight in self._flights.values():
            late = flight.copies < policy.max_copies and flight.last_sent <= cutoff
            if late and (best is None or flight.last_sent < best.last_sent):
                best = flight
        if best is None:
            return None
        best.copies += 1
        best.last_sent = now
        self.backups += 1
        return best.request

    @property
    def in_flight(self) -> int:
        return len(self._flights)
