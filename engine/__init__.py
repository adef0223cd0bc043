"""corpusforge's engine: the network side and the run."""

from .errors import (
    AuthError,
    BadRequest,
    ConfigError,
    DataError,
    EngineError,
    FatalError,
    MalformedResponse,
    NotFound,
    ProviderUnavailable,
    RateLimited,
    RetryableError,
    Timeout,
)
from .types import Completion, Example, Request

__all__ = [
    "AuthError",
    "BadRequest",
    "Completion",
    "ConfigError",
    "DataError",
    "EngineError",
    "Example",
    "FatalError",
    "MalformedResponse",
    "NotFound",
    "ProviderUnavailable",
    "RateLimited",
    "Request",
    "RetryableError",
    "Timeout",
]
