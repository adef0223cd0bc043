"""Server-side rate limits the way OpenAI applies them, and the headers that report them.

A budget per minute is the engine's own :class:`~engine.limits.bucket.Bucket` (one
bucket class on both sides of the wire): it starts full and refills continuously at
``limit / 60`` per second. A request is admitted only if every bucket holds its
cost (``delay(amount) == 0``); ``remaining()`` and ``reset_s()`` fill the headers,
whose durations ``format_duration`` writes the way OpenAI does.
"""

from __future__ import annotations

from ..headers import format_duration
from ..limits.bucket import Bucket

__all__ = ["Bucket", "format_duration"]
