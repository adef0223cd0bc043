"""Frozen, keyword-only config objects, validated on creation.

Only ``cli.py`` reads flags, environment variables and files; it builds these
and passes them down through constructors. Defaults are the named constants below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEDUP_THRESHOLD",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_NUM_PERM",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TIMEOUT_S",
    "ProviderConfig",
    "RateLimit",
    "RetryPolicy",
    "RunConfig",
]

DEFAULT_CONCURRENCY = 64
DEFAULT_MAX_TOKENS = 512
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_MAX_ELAPSED_S = 600.0
DEFAULT_BACKOFF_INITIAL_S = 0.5
DEFAULT_BACKOFF_MAX_S = 60.0
#: Near-duplicate filtering (``engine.dedup`` uses these; here so ``--help`` can show them without datasketch).
DEFAULT_DEDUP_THRESHOLD = 0.5
DEFAULT_NUM_PERM = 128


def _positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}", hint=f"pass a value > 0 for {name}")


@dataclass(frozen=True, kw_only=True)
class ProviderConfig:
    """Where requests go. ``api_key`` comes from the environment only and is never printed."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    name: str = "openai"
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_connections: int = DEFAULT_CONCURRENCY
    extra_headers: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base URL {self.base_url!r} is not an http(s) URL",
                hint="pass --base-url like https://api.openai.com/v1 or http://127.0.0.1:8000/v1",
            )
        if not self.model:
            raise ConfigError("no model given", hint="pass --model NAME")
        _positive("timeout", self.timeout_s, allow_none=False)
        _positive("max_connections", self.max_connections, allow_none=False)
        if self.api_key is not None and any(ord(c) < 32 or ord(c) == 127 for c in self.api_key):
            # aiohttp would refuse the header with a traceback; say which variable holds the bad value instead
            raise ConfigError(
                "the API key contains a newline or another control character",
                hint="set $OPENAI_API_KEY (or the variable named by --api-key-env) to the key alone, on one line",
            )

    def public(self) -> dict[str, Any]:
        """What may be written to a manifest: everything but secrets."""
        return {"base_url": self.base_url, "model": self.model, "name": self.name, "timeout_s": self.timeout_s}


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """Admission budgets. ``None`` means unknown: learn it from the provider."""

    rpm: float | None = None
    tpm: float | None = None
    max_in_flight: int = DEFAULT_CONCURRENCY

    def __post_init__(self) -> None:
        _positive("rpm", self.rpm)
        _positive("tpm", self.tpm)
        _positive("concurrency", self.max_in_flight, allow_none=False)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Stop after ``max_attempts`` or ``max_elapsed_s``; back off exponentially with full jitter."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_elapsed_s: float = DEFAULT_MAX_ELAPSED_S
    initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    max_backoff_s: float = DEFAULT_BACKOFF_MAX_S

    def __post_init__(self) -> None:
        _positive("max_attempts", self.max_attempts, allow_none=False)
        _positive("max_elapsed_s", self.max_elapsed_s, allow_none=False)
        _positive("initial_s", self.initial_s, allow_none=False)
        _positive("max_backoff_s", self.max_backoff_s, allow_none=False)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What to generate: the part of the configuration a resumed run must match."""

    task: str
    strategy: str = "zero-shot"
    n: int = 100
    seed: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float | None = None
    per_request: int = 1
    shots: int = 3
    balance: bool = True
    #: Cap on requests planned, so a model that repeats itself cannot loop forever.
    max_requests: int | None = None
    stream: bool = False
    structured: bool = True
    #: Price per 1M tokens (input, output) for a cost estimate; None = unknown.
    price_in: float | None = None
    price_out: float | None = None
    #: Condition each prompt on sampled attributes (length, style, audience, sub-topic), AttrPrompt style.
    attributes: bool = False

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ConfigError(f"--n must be at least 1, got {self.n}", hint="pass --n 1000")
        _positive("max_tokens", self.max_tokens, allow_none=False)
        if not 0 <= self.temperature <= 2:
            raise ConfigError(f"--temperature must be within 0..2, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be within (0, 1], got {self.top_p}")
        if self.per_request < 1:
            raise ConfigError(f"--per-request must be at least 1, got {self.per_request}")
        if self.max_requests is not None and self.max_requests < 1:
            raise ConfigError(f"--max-requests must be at least 1, got {self.max_requests}")

    @property
    def request_cap(self) -> int:
        """Explicit cap, or a generous default: 4x the requests N ideally needs, plus slack."""
        if self.max_requests is not None:
            return self.max_requests
        return 4 * -(-self.n // self.per_request) + 50

    def fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must match (everything but N and the caps, which may grow)."""
        d = asdict(self)
        for key in ("n", "max_requests", "price_in", "price_out"):
            d.pop(key)
        return d
