"""A provider wrapper that admits each request through an :class:`~engine.limits.AdmissionController`."""

from __future__ import annotations

from ..errors import EngineError
from ..limits import AdmissionController
from ..tokens import TokenCounter
from ..types import Completion, Request
from .base import Provider, Wrapper

__all__ = ["RateLimitedProvider"]


class RateLimitedProvider(Wrapper):
    """Reserve a request slot and ``prompt + max_tokens`` tokens, send, then settle with what was used.

    Prompt tokens come from ``request.prompt_tokens`` or, when that is 0 and a
    token budget is in force, from ``counter`` (the count is stored back on the
    request, so a retry does not count again; with no TPM limit known, nothing
    is counted). The completion's ``usage`` refunds what was reserved but not
    used, and its rate-limit headers teach the controller the provider's limits.
    """

    def __init__(self, inner: Provider, controller: AdmissionController, counter: TokenCounter | None = None) -> None:
        super().__init__(inner)
        self.controller = controller
        self.counter = counter

    def reserve(self, request: Request) -> int:
        """Tokens to reserve for ``request``: its prompt (counted once) plus ``max_tokens``."""
        if not request.prompt_tokens and self.counter is not None and self.controller.tracks_tokens:
            request.prompt_tokens = self.counter.count_messages(request.messages)
        return request.prompt_tokens + request.max_tokens

    async def complete(self, request: Request) -> Completion:
        controller = self.controller
        ticket = await controller.acquire(self.reserve(request))
        try:
            completion = await self.inner.complete(request)
        except EngineError as exc:
            controller.release(ticket, headers=exc.headers, error=exc)
            raise
        except BaseException:  # cancelled, or a bug below us: free the slot, keep the reservation
            controller.release(ticket)
            raise
        used = completion.prompt_tokens + completion.completion_tokens
        controller.release(ticket, used_tokens=used if used > 0 else None, headers=completion.headers)
        return completion
