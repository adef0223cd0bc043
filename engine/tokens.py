"""Prompt token counting with tiktoken, offline, for admission control.

Counting is an estimate for budgeting (the provider's ``usage`` is the truth and
refunds the difference), so we count each distinct message content once and
cache it: prompts built from templates repeat their parts constantly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .assets import ensure_tiktoken

__all__ = ["TokenCounter"]

#: Per-message overhead of the chat format (role, separators), as OpenAI documents it.
_PER_MESSAGE = 4
_PER_REPLY = 3


class TokenCounter:
    """Counts with tiktoken's ``encoding``, loaded on first use (loading costs about 0.3 s)."""

    def __init__(self, encoding: str = "o200k_base", cache_size: int = 65536) -> None:
        self.encoding = encoding
        self._enc: Any = None
        self.count_text = lru_cache(maxsize=cache_size)(self._count)

    def _count(self, text: str) -> int:
        if self._enc is None:
            ensure_tiktoken()
            import tiktoken

            self._enc = tiktoken.get_encoding(self.encoding)
        return len(self._enc.encode_ordinary(text))

    def count_messages(self, messages: list[dict[str, Any]]) -> int:
        total = _PER_REPLY
        for m in messages:
            total += _PER_MESSAGE + self.count_text(str(m.get("content", "")))
        return total
