"""What a request costs against a token budget, as the server counts it, and how to make it cost less.

A server with a TPM limit (OpenAI, the simulator) charges every request its
prompt *plus its whole* ``max_tokens`` when it admits it, and gives nothing back
when the completion is shorter. With ``--max-tokens 512`` and completions of
~40 tokens, a 20,000 TPM budget admits ~28 requests a minute that use ~7,000
real tokens: the budget is full, of reservations. Two things close the gap:

* ``max_tokens`` is right-sized: once :data:`MIN_SAMPLES` completions are seen,
  a request asks for the cap ``c`` that minimises the expected charge per
  completion, ``(prompt + c) + P(length > c) * (prompt + max_tokens)``, over the
  lengths of the last :data:`WINDOW` completions (a cut completion is sent
  again in full), with at most :data:`MAX_CUT` of them cut. A completion cut by
  the lower cap (``finish_reason == "length"``) is reported, so the caller can
  send it again with its own ``max_tokens``.
* the prompt is counted the server's way: the local count (tiktoken) is scaled
  by the largest ratio seen between the server's ``usage.prompt_tokens`` and it,
  so a server whose tokenizer counts more does not answer 429 for the difference.

Only used while a token budget is in force: with no TPM limit, requests go out as planned.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["MAX_CUT", "MIN_SAMPLES", "RESIZE_EVERY", "SLACK", "WINDOW", "TokenSizer"]

#: Completions seen before ``max_tokens`` is lowered.
MIN_SAMPLES = 8
#: Completion lengths remembered (the most recent ones).
WINDOW = 1024
#: The cap is chosen again after this many completions.
RESIZE_EVERY = 32
#: Largest share of completions the cap may cut (each costs a second request).
MAX_CUT = 0.02
#: Tokens added to a length seen, so the same length next time is not cut.
SLACK = 8
#: Bounds of the learned prompt scale (server count / local count): a wild ratio is a bad count, not a tokenizer.
_SCALE_BOUNDS = (1.0, 4.0)


class TokenSizer:
    """Learns completion lengths and the server's prompt count; proposes ``max_tokens`` and reservations."""

    __slots__ = ("_asked", "_cap", "_lengths", "_prompt_sum", "_since", "cut", "prompt_scale", "seen")

    def __init__(self) -> None:
        self._lengths: deque[int] = deque(maxlen=WINDOW)
        self._cap: int | None = None  # None: not enough seen yet (send what was asked)
        self._asked = 0
        self._since = 0
        self._prompt_sum = 0
        self.seen = 0
        #: Completions cut short by a lowered cap (each was sent again with the full ``max_tokens``).
        self.cut = 0
        self.prompt_scale = 1.0

    def max_tokens(self, asked: int) -> int:
        """``max_tokens`` to send for a request that asked for ``asked``."""
        if asked != self._asked:
            self._asked = asked
            self._resize()
        return asked if self._cap is None else min(asked, self._cap)

    def prompt(self, counted: int) -> int:
        """Prompt tokens as the server will count them, from the local count."""
        return math.ceil(counted * self.prompt_scale)

    def observe(
        self, *, asked: int, sent: int, completion_tokens: int, finish_reason: str, counted: int, server_prompt: int
    ) -> bool:
        """Learn from one completion; True if the lowered cap cut it (send it again with ``asked``)."""
        if counted > 0 and server_prompt > 0:
            low, high = _SCALE_BOUNDS
            self.prompt_scale = max(self.prompt_scale, min(high, max(low, server_prompt / counted)))
        if finish_reason == "length" and sent < asked:
            self.cut += 1
            return True  # its length is not known yet: the full answer will tell
        self.seen += 1
        self._prompt_sum += max(0, server_prompt)
        self._lengths.append(completion_tokens)
        self._since += 1
        if self._since >= RESIZE_EVERY or len(self._lengths) <= RESIZE_EVERY:
            self._resize()
        return False

    def _resize(self) -> None:
        """Choose the cap with the lowest expected charge per completion, cutting at most ``MAX_CUT``."""
        self._since = 0
        n = len(self._lengths)
        if n < MIN_SAMPLES or not self._asked:
            self._cap = None
            return
        prompt = self._prompt_sum / self.seen
        full = prompt + self._asked
        lengths = sorted(self._lengths)
        best, best_cost = self._asked, full
        for i in range(n - 1, -1, -1):
            if i + 1 < n and lengths[i] == lengths[i + 1]:
                continue
            over = (n - 1 - i) / n  # share longer than lengths[i]
            if over > MAX_CUT:
                break
            cap = lengths[i] + SLACK
            cost = prompt + cap + over * full
            if cap < self._asked and cost < best_cost:
                best, best_cost = cap, cost
        self._cap = best if best < self._asked else None

    def snapshot(self) -> dict[str, Any]:
        return {"max_tokens_sent": self._cap, "max_tokens_cut": self.cut, "prompt_scale": round(self.prompt_scale, 3)}
