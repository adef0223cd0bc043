"""Sources of outcomes: what turns a run's planned requests into completions or errors.

``online`` sends them now, through the rate-limited, retrying provider stack;
``batch`` sends them as provider batch jobs (OpenAI Files + Batches API), resumable at every step.
Every source hands its outcomes to the same chain (``Run.consume``).
"""

from __future__ import annotations

from .batch import BatchOptions, generate_batch
from .online import preflight, run_online

__all__ = ["BatchOptions", "generate_batch", "preflight", "run_online"]
