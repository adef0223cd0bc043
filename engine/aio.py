"""Running a coroutine from a command: on uvloop when it is installed (it roughly halves the
event loop's CPU cost per request), else on asyncio's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the lock file; other platforms may lack it
        return asyncio.run(coro)
    return uvloop.run(coro)
