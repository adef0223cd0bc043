"""A provider wrapper that admits each request through an :class:`~engine.limits.AdmissionController`."""

from __future__ import annotations

from ..errors import EngineError
from ..limits import AdmissionController, Ticket
from ..limits.sizing import TokenSizer
from ..tokens import TokenCounter
from ..types import Completion, Request
from .base import Provider, Wrapper

__all__ = ["RateLimitedProvider"]


class RateLimitedProvider(Wrapper):
    """Reserve a request slot and ``prompt + max_tokens`` tokens, send, then settle with what was used.

    Prompt tokens come from ``request.prompt_tokens`` or, when that is 0 and a
    token budget is in force, from ``counter`` (the count is stored back on the
    request, so a retry does not count again; with no TPM limit known, nothing
    is counted). The completion's ``usage`` and rate-limit headers settle the
    reservation and teach the controller the provider's limits.

    While a token budget is in force, ``sizer`` (:class:`~engine.limits.sizing.TokenSizer`;
    ``right_size=False`` turns it off) counts the prompt the way the server does
    and sends a ``max_tokens`` sized to the completions seen, because the server
    charges the whole ``max_tokens`` up front. A completion that the lower cap cut
    short is sent again with the request's own ``max_tokens``: the caller never
    sees a completion shorter than it asked for.
    """

    def __init__(
        self,
        inner: Provider,
        controller: AdmissionController,
        counter: TokenCounter | None = None,
        *,
        right_size: bool = True,
    ) -> None:
        super().__init__(inner)
        self.controller = controller
        self.counter = counter
        self.sizer = TokenSizer() if right_size else None

    def reserve(self, request: Request, max_tokens: int | None = None) -> int:
        """Tokens to reserve for ``request``: its prompt (counted once, the server's way) plus ``max_tokens``."""
        if not request.prompt_tokens and self.counter is not None and self.controller.tracks_tokens:
            request.prompt_tokens = self.counter.count_messages(request.messages)
        prompt = self.sizer.prompt(request.prompt_tokens) if self.sizer is not None else request.prompt_tokens
        return prompt + (request.max_tokens if max_tokens is None else max_tokens)

    async def complete(self, request: Request) -> Completion:
        sizer, asked, controller = self.sizer, request.max_tokens, self.controller
        sized = sizer is not None and controller.tracks_tokens
        sent = sizer.max_tokens(asked) if sized and sizer is not None else asked
        ticket = controller.try_acquire(self.reserve(request, sent))  # the fast path: nobody waits, it fits
        if ticket is None:

            def reservation() -> int:
                # Asked again each time the request reaches the head of the queue: a limit learned (the prompt
                # is then counted) or a cap lowered while it waited changes what it needs.
                nonlocal sent
                sent = sizer.max_tokens(asked) if sizer is not None and controller.tracks_tokens else asked
                return self.reserve(request, sent)

            ticket = await controller.acquire(reservation)
        completion = await self._settle(request, ticket, sent)
        if sizer is not None and controller.tracks_tokens and self._cut(sizer, request, asked, sent, completion):
            completion = await self._send(request, asked)
            self._cut(sizer, request, asked, asked, completion)
        return completion

    def _cut(self, sizer: TokenSizer, request: Request, asked: int, sent: int, completion: Completion) -> bool:
        """Teach the sizer; True if the completion was cut by the lowered cap."""
        before = sizer.max_tokens(asked)
        cut = sizer.observe(
            asked=asked,
            sent=sent,
            completion_tokens=completion.completion_tokens,
            finish_reason=completion.finish_reason,
            counted=request.prompt_tokens,
            server_prompt=completion.prompt_tokens,
        )
        if sizer.max_tokens(asked) < before:
            self.controller.nudge()  # a waiting request now needs less
        return cut

    async def _send(self, request: Request, max_tokens: int) -> Completion:
        ticket = await self.controller.acquire(self.reserve(request, max_tokens))
        return await self._settle(request, ticket, max_tokens)

    async def _settle(self, request: Request, ticket: Ticket, max_tokens: int) -> Completion:
        """Send ``request`` with ``max_tokens`` under an admitted ``ticket``; release it with what was learned."""
        controller = self.controller
        asked, request.max_tokens = request.max_tokens, max_tokens  # one call at a time per request: safe to lend
        try:
            completion = await self.inner.complete(request)
        except EngineError as exc:
            controller.release(ticket, headers=exc.headers, error=exc)
            raise
        except BaseException:  # cancelled, or a bug below us: free the slot, keep the reservation
            controller.release(ticket)
            raise
        finally:
            request.max_tokens = asked
        used = completion.prompt_tokens + completion.completion_tokens
        controller.release(ticket, used_tokens=used if used > 0 else None, headers=completion.headers)
        return completion
