"""The response headers that say how much a provider will take: rate-limit snapshots and ``Retry-After``.

Read by the provider (a 429 carries its ``Retry-After``) and by the limiter
(``x-ratelimit-*`` re-sync its buckets); written by the simulator. Nothing here
depends on either side, so the provider never imports the limiter.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

__all__ = [
    "RATE_LIMIT_HEADERS",
    "bucket_level",
    "format_duration",
    "parse_duration",
    "parse_number",
    "parse_retry_after",
]

#: The response headers the limiter learns from, lower-case (looked up by name: cheaper than scanning every header).
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{what}-{kind}" for what in ("limit", "remaining", "reset") for kind in ("requests", "tokens")
) + ("retry-after", "retry-after-ms")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | None) -> float | None:
    """Seconds in ``"1s"``, ``"6m0s"``, ``"59ms"``, ``"0.5s"``, ``"1h2m3s"`` or plain ``"12.5"``; None if unreadable."""
    if text is None:
        return None
    s = text.strip().lower()
    if not s:
        return None
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(s) else None


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


def parse_number(value: str | None) -> float | None:
    """A finite, non-negative number (``x-ratelimit-limit-*``, ``-remaining-*``); None if absent or unreadable."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def bucket_level(remaining: float | None, reset_s: float | None, capacity: float) -> float:
    """How full a server's per-minute bucket is, from ``x-ratelimit-remaining-*`` and ``-reset-*``.

    ``remaining`` is rounded down; the time until the bucket is full again carries the fraction, so
    ``capacity - reset * rate`` is used when it agrees with ``remaining`` to within one.
    """
    precise = None if reset_s is None else capacity - reset_s * capacity / 60.0
    if remaining is None:
        return precise if precise is not None else 0.0
    if precise is not None and remaining <= precise < remaining + 1:
        return precise
    return remaining


def parse_retry_after(headers: Mapping[str, str], wall: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP-date); None if absent."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = parse_duration(raw)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - wall())
