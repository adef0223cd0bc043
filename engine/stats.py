"""Counters every stage writes into and the UI reads snapshots of.

Stages never print; they count. ``Stats`` is a plain counter plus a few gauges,
cheap enough to bump on the hot path, and ``snapshot()`` gives the UI and
``stats.json`` a consistent copy.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["Stats"]


class Stats:
    """Counters (monotonic) and gauges (current values) for one run."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, float] = {}
        self._clock = clock
        self.started = clock()

    def incr(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def set(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def elapsed(self) -> float:
        return self._clock() - self.started

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = dict(self.counters)
        snap.update(self.gauges)
        snap["elapsed_s"] = round(self.elapsed(), 3)
        return snap

    def merge(self, other: dict[str, Any]) -> None:
        """Add counters from an earlier run's ``stats.json`` (used by ``--resume``)."""
        for key, value in other.items():
            if isinstance(value, int) and not isinstance(value, bool):
                self.counters[key] += value
