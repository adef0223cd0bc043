"""How often to ask a batch's status: soon after a change, then less and less often.

A pure function over the previous delay, so it is tested without a clock:
the first poll and the one after any change wait ``initial_s``; each poll
that saw nothing new waits ``factor`` times longer, up to ``max_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["DEFAULT_POLL_S", "PollPolicy"]

DEFAULT_POLL_S = 5.0
#: The longest wait between polls is this many times the first (at most ``_MAX_S``).
_SPREAD = 12.0
_MAX_S = 60.0


@dataclass(frozen=True, kw_only=True)
class PollPolicy:
    initial_s: float = DEFAULT_POLL_S
    factor: float = 1.5
    max_s: float | None = None

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.factor < 1 or (self.max_s is not None and self.max_s < self.initial_s):
            raise ConfigError(f"--batch-poll-s must be > 0 (got {self.initial_s})", hint="e.g. --batch-poll-s 5")

    @property
    def ceiling(self) -> float:
        if self.max_s is not None:
            return self.max_s
        return max(self.initial_s, min(_MAX_S, self.initial_s * _SPREAD))

    def next(self, previous: float | None, *, changed: bool) -> float:
        """The wait before the next poll, after one that waited ``previous`` (None: the first)."""
        if previous is None or changed:
            return self.initial_s
        return min(self.ceiling, previous * self.factor)
