"""A provider wrapper for a server this process supervises: a failed connection waits for the restart.

Without it, requests sent while the managed server restarts spend their retries on a dead
port (backoff is tuned for remote servers, not for a process we can watch). With it, a
request that could not reach the server waits until the supervisor has it answering again,
then fails as before, so the retry layer above sends it again at once: a restart costs each
request one attempt. When the supervisor gives up, the wait raises its error (a
``FatalError`` with the server's log), and the run stops with that instead of retrying.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import ProviderUnavailable
from ..types import Completion, Request
from .base import Provider, Wrapper

__all__ = ["Supervisor", "SupervisedProvider"]


class Supervisor(Protocol):
    async def wait_running(self) -> None:
        """Return once the server answers; raise if it never will."""


class SupervisedProvider(Wrapper):
    """Sits on the vendor provider (below ``Metered``), so an attempt is still one HTTP call."""

    def __init__(self, inner: Provider, supervisor: Supervisor) -> None:
        super().__init__(inner)
        self.supervisor = supervisor

    async def complete(self, request: Request) -> Completion:
        try:
            return await self.inner.complete(request)
        except ProviderUnavailable as exc:
            if exc.status is None:  # no HTTP answer at all: the process may be down
                await self.supervisor.wait_running()
            raise
