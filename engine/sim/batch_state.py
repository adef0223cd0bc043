"""What the simulator's Files and Batches routes share: their counters, the error body, the key check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .server import Simulator

__all__ = ["BatchState", "api_error", "denied"]


@dataclass
class BatchState:
    """What the batch routes saw: a test or benchmark reads it to check the client's behaviour."""

    http_calls: int = 0
    uploads: int = 0
    batches_created: int = 0
    token_limit_failures: int = 0
    #: Files deleted through ``DELETE /v1/files/{id}`` (and refused deletions, when a test asks for them).
    files_deleted: int = 0
    deletes_refused: int = 0
    #: How many times each custom_id was executed (charged for): never more than once for a correct client.
    executed: Counter[str] = field(default_factory=Counter)
    #: The custom_ids answered with a completion (status 200).
    answered: set[str] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        twice = [cid for cid, n in self.executed.items() if n > 1]
        return {
            "http_calls": self.http_calls,
            "uploads": self.uploads,
            "batches_created": self.batches_created,
            "token_limit_failures": self.token_limit_failures,
            "files_deleted": self.files_deleted,
            "deletes_refused": self.deletes_refused,
            "executed_lines": sum(self.executed.values()),
            "executed_custom_ids": len(self.executed),
            "executed_twice": len(twice),
            "executed_twice_sample": sorted(twice)[:20],
        }


def api_error(status: int, message: str, code: str | None = None, param: str | None = None) -> web.Response:
    """An OpenAI-style error answer."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(body, status=status)


def denied(sim: Simulator, state: BatchState, request: web.Request) -> web.Response | None:
    """Count the call; the 401 answer when the simulator requires a key and the request lacks it."""
    state.http_calls += 1
    key = sim.cfg.require_key
    if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
        sim.state.unauthorized += 1
        return api_error(401, "Incorrect API key provided.", "invalid_api_key")
    return None
