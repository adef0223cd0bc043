"""engine.stats: the counters stages bump and the snapshots the UI and stats.json read."""

from __future__ import annotations

from engine.stats import Stats


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counters_gauges_and_snapshot() -> None:
    clock = Clock()
    stats = Stats(clock=clock)
    stats.incr("requests")
    stats.incr("requests", 4)
    stats.incr("dedup.dropped:near_duplicate", 2)
    stats.set("in_flight", 3)
    stats.set("in_flight", 1)  # a gauge keeps the current value, not a sum
    clock.now = 102.5
    assert stats.get("requests") == 5 and stats.get("never") == 0
    assert stats.elapsed() == 2.5
    assert stats.snapshot() == {"requests": 5, "dedup.dropped:near_duplicate": 2, "in_flight": 1, "elapsed_s": 2.5}


def test_snapshot_is_a_copy() -> None:
    stats = Stats(clock=Clock())
    stats.incr("accepted")
    snap = stats.snapshot()
    snap["accepted"] = 99
    stats.incr("accepted")
    assert snap["accepted"] == 99 and stats.get("accepted") == 2


def test_elapsed_rounds_in_the_snapshot_only() -> None:
    clock = Clock()
    stats = Stats(clock=clock)
    clock.now += 1.23456
    assert stats.snapshot()["elapsed_s"] == 1.235
    assert abs(stats.elapsed() - 1.23456) < 1e-9


def test_merge_adds_integer_counters_only() -> None:
    """--resume adds the previous stats.json: counts add up; floats (rates, gauges, elapsed) and flags are not counts."""
    stats = Stats(clock=Clock())
    stats.incr("requests", 2)
    stats.merge({"requests": 10, "accepted": 7, "elapsed_s": 55.0, "requests_per_s": 3.2, "done": True, "phase": "x"})
    assert stats.get("requests") == 12 and stats.get("accepted") == 7
    assert "elapsed_s" not in stats.counters and "requests_per_s" not in stats.counters and "done" not in stats.counters
    assert "phase" not in stats.counters
