"""Server-side rate limits the way OpenAI applies them, and the headers that report them.

A budget per minute is a bucket that starts full and refills continuously at
``limit / 60`` per second. A request is admitted only if every bucket holds
its cost; the headers say what remains and how long until the bucket is full.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Bucket", "format_duration"]


def format_duration(seconds: float) -> str:
    """Go-style durations as OpenAI writes them: ``"120ms"``, ``"1s"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m3s"``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


class Bucket:
    """``limit`` units per minute; starts full, refills continuously."""

    __slots__ = ("_clock", "_last", "level", "limit", "rate")

    def __init__(self, limit: float, clock: Callable[[], float]) -> None:
        self.limit = float(limit)
        self.rate = self.limit / 60.0
        self.level = self.limit
        self._clock = clock
        self._last = clock()

    def refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self.level = min(self.limit, self.level + (now - self._last) * self.rate)
        self._last = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0 if it fits now); call ``refill`` first.

        An amount above the whole limit fits once the bucket is full (and leaves it in debt),
        so an oversized request is slowed down rather than refused forever.
        """
        short = min(amount, self.limit) - self.level
        return short / self.rate if short > 0 else 0.0

    def take(self, amount: float) -> None:
        self.level -= amount

    def remaining(self) -> int:
        return max(0, math.floor(self.level))

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.limit - self.level) / self.rate
