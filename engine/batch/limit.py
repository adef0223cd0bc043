"""The provider's enqueued-token limit, as its refusals word it.

OpenAI fails a batch with ``token_limit_exceeded`` ("Limit: 90,000 enqueued
tokens"); Azure says "surpassed the configured limit of 30K". The batch source
learns the number from the message and keeps its queue under
``LIMIT_SAFETY`` of it (our token count is an estimate of the provider's).
"""

from __future__ import annotations

import re

__all__ = ["LIMIT_SAFETY", "is_token_limit", "limit_from"]

#: Share of the enqueued-token limit a run fills.
LIMIT_SAFETY = 0.9
_LIMIT_NUMBER = re.compile(r"limit(?:\s+of)?\W+([\d,.]+)\s*([KkMm]?)", re.IGNORECASE)
_TOKEN_LIMIT = ("token_limit_exceeded", "enqueued token", "enqueued tokens")


def is_token_limit(text: str) -> bool:
    """Whether a provider's error code or message is about the enqueued-token limit."""
    low = text.lower()
    return any(marker in low for marker in _TOKEN_LIMIT)


def limit_from(text: str) -> int | None:
    """The enqueued-token limit a refusal states ("Limit: 90,000 enqueued tokens", "limit of 30K"), if any."""
    m = _LIMIT_NUMBER.search(text)
    if m is None:
        return None
    try:
        value = float(m.group(1).replace(",", ""))
    except ValueError:
        return None
    scale = {"k": 1_000, "m": 1_000_000}.get(m.group(2).lower(), 1)
    return int(value * scale) or None
