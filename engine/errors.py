"""The engine's one error tree, split by what the caller should do.

::

    EngineError
    ├── RetryableError            try the same request again, later
    │   ├── RateLimited           429: wait ``retry_after`` seconds if the server said so
    │   ├── ProviderUnavailable   5xx, 408, 409, connection refused or reset
    │   ├── Timeout               no answer in time
    │   └── MalformedResponse     unparseable JSON, a truncated stream
    └── FatalError                stop: retrying cannot help, the user must fix something
        ├── AuthError             401/403: a missing or wrong API key
        ├── NotFound              404: a wrong base URL or model name
        ├── BadRequest            400/422: the request itself is wrong
        ├── ConfigError           bad flags, files or settings
        └── DataError             a data source is missing or unreadable

A bad *record* (an unparseable label, an empty text) is data, not an exception:
the stage that sees it drops it with a reason.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BadRequest",
    "ConfigError",
    "DataError",
    "EngineError",
    "FatalError",
    "MalformedResponse",
    "NotFound",
    "ProviderUnavailable",
    "RateLimited",
    "RetryableError",
    "Timeout",
]


class EngineError(Exception):
    """Root of every error the engine raises on purpose.

    ``message`` says what went wrong, ``hint`` what to do about it. ``status``
    and ``provider`` carry the HTTP status and the provider's name when known.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        status: int | None = None,
        provider: str = "",
        request_id: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status
        self.provider = provider
        self.request_id = request_id
        #: Response headers worth keeping (rate-limit ones), so the limiter can learn from errors too.
        self.headers: dict[str, str] = dict(headers or {})

    def __str__(self) -> str:
        parts = []
        if self.provider:
            parts.append(f"{self.provider}: ")
        if self.status is not None:
            parts.append(f"HTTP {self.status}: ")
        parts.append(self.message)
        if self.hint:
            parts.append(f" ({self.hint})")
        return "".join(parts)


class RetryableError(EngineError):
    """The same request may succeed if tried again later."""

    #: Seconds the server asked us to wait, if it said so.
    retry_after: float | None = None


class RateLimited(RetryableError):
    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailable(RetryableError):
    def __init__(
        self, message: str = "provider unavailable", *, retry_after: float | None = None, **kw: object
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class Timeout(RetryableError):
    pass


class MalformedResponse(RetryableError):
    pass


class FatalError(EngineError):
    """Retrying cannot help; the run (or the command) should stop with this message."""


class AuthError(FatalError):
    pass


class NotFound(FatalError):
    pass


class BadRequest(FatalError):
    pass


class ConfigError(FatalError):
    pass


class DataError(FatalError):
    pass
