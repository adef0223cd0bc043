"""Sources of outcomes: what turns a run's planned requests into completions or errors.

``online`` sends them now, through the rate-limited, retrying provider stack.
Every source hands its outcomes to the same chain (``Run.consume``).
"""

from __future__ import annotations

from .online import preflight, run_online

__all__ = ["preflight", "run_online"]
