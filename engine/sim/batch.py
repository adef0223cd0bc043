"""The OpenAI Files + Batches API, simulated: upload, create, poll, download, cancel, delete.

``files`` serves ``/v1/files``, this module ``/v1/batches``, ``batch_input``
validates an input file and ``batch_progress`` moves a batch with the clock
(so a test with a fast sim or a fake clock finishes in well under a second and
nothing runs between requests). Answers come from the chat route's own content
generator.

Behaviour follows OpenAI's documentation: an input line is ``{custom_id,
method, url, body}``; an output line is ``{id, custom_id, response:
{status_code, request_id, body}, error}``; failed requests go to the error
file; a batch over the enqueued-token limit is created and then ``failed``
with ``token_limit_exceeded``; an expired or cancelled batch keeps the output
of what was done and lists the rest in the error file (``batch_expired``,
``batch_cancelled``). Faults on demand: every k-th batch fails validation or
expires half done, and a share of lines fail with a server error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from aiohttp import web

from .batch_input import ENDPOINTS, MAX_REQUESTS, validate
from .batch_progress import ACTIVE, Progress, SimBatch
from .batch_state import BatchState, api_error, denied
from .files import MAX_FILE_BYTES, FilesSim, SimFile
from .server import Simulator

__all__ = ["ACTIVE", "MAX_FILE_BYTES", "MAX_REQUESTS", "BatchSim", "BatchState"]


class BatchSim:
    """The ``/v1/files`` and ``/v1/batches`` routes over the simulator's config, content and clock."""

    def __init__(
        self, sim: Simulator, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self.sim = sim
        self.cfg = sim.cfg
        self.state = BatchState()
        self._clock = clock
        self._wall = wall
        self._seq = 0
        self.files_api = FilesSim(sim, self.state, self._next_id, wall)
        self.progress = Progress(sim, self.state, self.files_api, clock, wall)
        self.batches: dict[str, SimBatch] = {}

    @property
    def files(self) -> dict[str, SimFile]:
        return self.files_api.files

    def add_routes(self, router: web.UrlDispatcher) -> None:
        self.files_api.add_routes(router)
        router.add_post("/v1/batches", self.create)
        router.add_get("/v1/batches", self.list_batches)
        router.add_get("/v1/batches/{batch_id}", self.retrieve)
        router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)
        router.add_get("/sim/batch-stats", self.stats)

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-sim{self._seq:06d}" if prefix == "file" else f"{prefix}_sim{self._seq:06d}"

    def _denied(self, request: web.Request) -> web.Response | None:
        return denied(self.sim, self.state, request)

    async def create(self, request: web.Request) -> web.Response:
        if (no := self._denied(request)) is not None:
            return no
        try:
            body = json.loads(await request.read())
        except ValueError:
            return api_error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return api_error(400, "Expected a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return api_error(400, f"Missing required parameter: '{name}'.", "missing_required_parameter", name)
        if body["endpoint"] not in ENDPOINTS:
            return api_error(400, f"Invalid value for 'endpoint': {body['endpoint']!r}.", "invalid_value", "endpoint")
        if body["completion_window"] != "24h":
            msg = f"Invalid value for 'completion_window': {body['completion_window']!r}. Supported values are: '24h'."
            return api_error(400, msg, "invalid_value", "completion_window")
        rec = self.files.get(body["input_file_id"])
        if rec is None:
            return api_error(404, f"No such File object: {body['input_file_id']}", param="input_file_id")
        if rec.purpose != "batch":
            return api_error(
                400, f"File {rec.id} was not uploaded with purpose 'batch'.", "invalid_value", "input_file_id"
            )
        metadata = body.get("metadata")
        lines, tokens, errors = validate(rec.content, body["endpoint"], self.cfg)
        self.state.batches_created += 1
        n = self.state.batches_created
        fate = "ok"
        if errors:
            fate = "invalid"
        elif self.cfg.batch_fail_every and n % self.cfg.batch_fail_every == 0:
            fate = "invalid"
            errors = [{"code": "invalid_request", "message": "Simulated validation failure.", "param": None, "line": 1}]
        elif self.cfg.batch_token_limit is not None and self._enqueued() + tokens > self.cfg.batch_token_limit:
            fate = "token_limit"
            self.state.token_limit_failures += 1
            limit = f"{self.cfg.batch_token_limit:,}"
            msg = (
                f"Enqueued token limit reached for {self.cfg.model} in organization org-sim. Limit: {limit} enqueued "
                "tokens. Please try again once some in_progress batches have been completed."
            )
            errors = [{"code": "token_limit_exceeded", "message": msg, "param": None, "line": None}]
            if self.cfg.batch_token_limit_on_create:
                self.state.batches_created -= 1
                return api_error(400, msg, "token_limit_exceeded")
        elif self.cfg.batch_expire_every and n % self.cfg.batch_expire_every == 0:
            fate = "expire"
        batch = SimBatch(
            id=self._next_id("batch"),
            input_file_id=rec.id,
            endpoint=body["endpoint"],
            completion_window=body["completion_window"],
            metadata=metadata if isinstance(metadata, dict) else None,
            created_at=int(self._wall()),
            created_mono=self._clock(),
            lines=lines if fate != "invalid" else [],
            tokens=tokens if fate in ("ok", "expire") else 0,
            fate=fate,
            errors=errors,
        )
        batch.phase_started = batch.created_mono
        self.batches[batch.id] = batch
        return web.json_response(batch.public())

    def _enqueued(self) -> int:
        total = 0
        for b in self.batches.values():
            self.progress.advance(b)
            if b.status in ACTIVE:
                total += b.tokens
        return total

    def _batch(self, request: web.Request) -> SimBatch | web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return api_error(404, f"No batch found with id '{request.match_info['batch_id']}'.", param="batch_id")
        self.progress.advance(batch)
        return batch

    async def retrieve(self, request: web.Request) -> web.Response:
        if (no := self._denied(request)) is not None:
            return no
        batch = self._batch(request)
        return batch if isinstance(batch, web.Response) else web.json_response(batch.public())

    async def list_batches(self, request: web.Request) -> web.Response:
        if (no := self._denied(request)) is not None:
            return no
        try:
            limit = max(1, min(100, int(request.query.get("limit", "20"))))
        except ValueError:
            return api_error(400, "Invalid value for 'limit'.", "invalid_value", "limit")
        newest_first = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after:
            ids = [b.id for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        for b in page:
            self.progress.advance(b)
        data = [b.public() for b in page]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(newest_first) > limit,
            }
        )

    async def cancel(self, request: web.Request) -> web.Response:
        if (no := self._denied(request)) is not None:
            return no
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status not in ("validating", "in_progress", "finalizing"):
            msg = f"Cannot cancel a batch with status '{batch.status}'."
            return api_error(409, msg, "invalid_state")
        self.progress.enter(batch, "cancelling")
        return web.json_response(batch.public())

    async def stats(self, request: web.Request) -> web.Response:
        """``GET /sim/batch-stats``: what the client did; ``?ids=1`` adds every executed custom_id and live file."""
        summary = self.state.summary()
        summary["files_stored"] = len(self.files)
        if request.query.get("ids"):
            summary["executed_ids"] = sorted(self.state.executed)
            summary["answered_ids"] = sorted(self.state.answered)
            summary["file_ids"] = sorted(self.files)
        return web.json_response(summary)
