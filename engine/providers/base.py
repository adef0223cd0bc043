"""The provider interface: one real method, ``complete``.

Vendor modules implement only that. Cross-cutting behaviour (rate limiting,
retries) is a wrapper with the same interface holding an ``inner`` provider, so
a full stack reads ``Retrying(RateLimited(OpenAIProvider(session, cfg)))``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from ..types import Completion, Request

__all__ = ["Provider", "Wrapper"]


class Provider(ABC):
    name: str = "provider"

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """Send one request; return its completion or raise an ``EngineError``."""

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Wrapper(Provider):
    """A provider that adds behaviour around an ``inner`` provider."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name

    async def complete(self, request: Request) -> Completion:
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
