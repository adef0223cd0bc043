"""Batch output and error files → outcomes, parsed exactly as the online provider parses a response.

A line ``{id, custom_id, response: {status_code, request_id, body}, error}``
becomes a completion when the status is 200 and the body a chat completion
(the provider's own ``completion_from``), else an error outcome: the HTTP
status translated by the provider's own table, or the batch-level ``error``
(``batch_expired``, ``batch_cancelled``) as a retryable error, so the request
is journaled as failed and the planner asks for another. A request that
appears in neither file failed too. Lines of requests not waiting (already
ingested before a restart, or unknown) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import EngineError, MalformedResponse, ProviderUnavailable
from ..providers.openai import OpenAIProvider
from ..types import Outcome, Request

__all__ = ["CHUNK", "outcome_of", "read_outcomes"]

#: Outcomes handed to the chain at a time (the dedup stage vectorises over a chunk).
CHUNK = 1024


def _lines(path: Path | None) -> Iterator[dict[str, Any]]:
    if path is None or not path.exists():
        return
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def outcome_of(row: dict[str, Any], request: Request, provider: OpenAIProvider) -> Outcome:
    """The outcome one output or error line means for ``request``."""
    response = row.get("response")
    error = row.get("error")
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        if status == 200:
            try:
                return Outcome(request, completion=provider.completion_from(body, request))
            except MalformedResponse as exc:
                return Outcome(request, error=exc)
        if isinstance(status, int):
            raw = json.dumps(body).encode() if body is not None else b""
            exc2: EngineError = provider._status_error(status, raw, {}, request.id)
            return Outcome(request, error=exc2)
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        message = str(error.get("message") or "")
        return Outcome(
            request,
            error=ProviderUnavailable(f"batch line {code}: {message}", provider=provider.name, request_id=request.id),
        )
    return Outcome(
        request,
        error=MalformedResponse(
            "a batch output line without response or error", provider=provider.name, request_id=request.id
        ),
    )


def read_outcomes(
    pending: dict[str, Request],
    files: Iterable[Path | None],
    provider: OpenAIProvider,
    *,
    missing: str | None = "missing from the batch's output and error files",
    chunk: int = CHUNK,
) -> Iterator[list[Outcome]]:
    """Outcomes for the requests in ``pending`` (popped from it), in chunks.

    Requests no line answers are errors with the reason ``missing``; with ``missing=None`` they stay in
    ``pending`` (an import may bring them later).
    """
    batch: list[Outcome] = []
    for path in files:
        for row in _lines(path):
            request = pending.pop(str(row.get("custom_id")), None)
            if request is None:
                continue
            batch.append(outcome_of(row, request, provider))
            if len(batch) >= chunk:
                yield batch
                batch = []
    if missing is not None:
        for request in list(pending.values()):
            error = ProviderUnavailable(missing, provider=provider.name, request_id=request.id)
            batch.append(Outcome(request, error=error))
            if len(batch) >= chunk:
                yield batch
                batch = []
        pending.clear()
    if batch:
        yield batch
