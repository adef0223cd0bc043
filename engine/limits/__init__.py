"""Admission control: the token bucket (:mod:`.bucket`), the controller that learns limits (:mod:`.admission`)
and what a request costs against a token budget, ``max_tokens`` sized to the completions seen (:mod:`.sizing`).

The response headers both sides read (``x-ratelimit-*``, ``Retry-After``) are parsed in
:mod:`engine.headers`, outside this package, so a provider never imports the limiter;
``parse_duration`` and ``parse_retry_after`` are re-exported here for older importers.
"""

from ..headers import parse_duration, parse_retry_after
from .admission import DECREASE_INTERVAL_S, HEADROOM, INITIAL_CONCURRENCY, USAGE_WINDOW_S, AdmissionController, Ticket
from .bucket import Bucket

__all__ = [
    "DECREASE_INTERVAL_S",
    "HEADROOM",
    "INITIAL_CONCURRENCY",
    "USAGE_WINDOW_S",
    "AdmissionController",
    "Bucket",
    "Ticket",
    "parse_duration",
    "parse_retry_after",
]
