"""The OpenAI Files + Batches API, simulated: upload, create, poll, download, cancel.

Progress is driven by a clock rather than by background tasks: every request
that looks at a batch first advances it to what the clock says (``validating``
for ``batch_phase_s``, then ``batch_rps`` lines a second while ``in_progress``,
``finalizing`` for ``batch_phase_s``, then ``completed``), so a test with a
fast sim or a fake clock finishes in well under a second and nothing runs
between requests. Answers come from the chat route's own content generator.

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
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from .server import Simulator, _prompt_tokens

__all__ = ["ACTIVE", "BatchSim", "BatchState", "MAX_FILE_BYTES", "MAX_REQUESTS"]

#: OpenAI's per-batch limits: requests per input file and bytes per uploaded batch file.
MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Statuses whose prompt tokens count against the enqueued-token limit.
ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
_ENDPOINTS = frozenset({"/v1/chat/completions"})
_EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
_CANCELLED = {"code": "batch_cancelled", "message": "This request was cancelled before it was executed."}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class BatchState:
    """What the batch routes saw: a test or benchmark reads it to check the client's behaviour."""

    http_calls: int = 0
    uploads: int = 0
    batches_created: int = 0
    token_limit_failures: int = 0
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
            "executed_lines": sum(self.executed.values()),
            "executed_custom_ids": len(self.executed),
            "executed_twice": len(twice),
            "executed_twice_sample": sorted(twice)[:20],
        }


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None
    created_at: int
    created_mono: float
    lines: list[tuple[str, dict[str, Any]]]
    tokens: int
    #: What will happen: "ok", "invalid" (errors below), "token_limit", "expire" (half done).
    fate: str
    errors: list[dict[str, Any]]
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)
    phase_started: float = 0.0
    done: int = 0
    completed: int = 0
    failed: int = 0
    output: list[str] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.status == "failed" else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 86400,
            "request_counts": {"total": len(self.lines), "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }
        for name in ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"):
            out[f"{name}_at"] = self.times.get(name)
        return out


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(body, status=status)


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
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self._seq = 0
        self._line_seq = 0

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self.upload)
        router.add_get("/v1/files", self.list_files)
        router.add_get("/v1/files/{file_id}", self.retrieve_file)
        router.add_delete("/v1/files/{file_id}", self.delete_file)
        router.add_get("/v1/files/{file_id}/content", self.file_content)
        router.add_post("/v1/batches", self.create)
        router.add_get("/v1/batches", self.list_batches)
        router.add_get("/v1/batches/{batch_id}", self.retrieve)
        router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)
        router.add_get("/sim/batch-stats", self.stats)

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-sim{self._seq:06d}" if prefix == "file" else f"{prefix}_sim{self._seq:06d}"

    def _now(self) -> int:
        return int(self._wall())

    def _denied(self, request: web.Request) -> web.Response | None:
        self.state.http_calls += 1
        key = self.cfg.require_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            self.sim.state.unauthorized += 1
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        return None

    # -- files ------------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if not request.content_type.startswith("multipart/"):
            return _error(400, "Expected a multipart/form-data body with 'file' and 'purpose'.")
        purpose, filename, content = None, "", b""
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not part of this API
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or "upload.jsonl"
                chunks = []
                size = 0
                while chunk := await part.read_chunk(1 << 20):
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        return _error(400, f"File is larger than the {MAX_FILE_BYTES // 2**20} MB limit.", param="file")
                    chunks.append(chunk)
                content = b"".join(chunks)
        if purpose is None:
            return _error(400, "Missing required parameter: 'purpose'.", "missing_required_parameter", "purpose")
        if purpose not in ("batch", "fine-tune", "assistants", "user_data"):
            return _error(400, f"Invalid value for 'purpose': {purpose!r}.", "invalid_value", "purpose")
        if not content:
            return _error(400, "Missing required parameter: 'file' (or the file is empty).", param="file")
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return _error(400, "Invalid file format for Batch API. Must be .jsonl", "invalid_file_format", "file")
        rec = _File(self._next_id("file"), filename, purpose, content, self._now())
        self.files[rec.id] = rec
        self.state.uploads += 1
        return web.json_response(rec.public())

    def _file(self, request: web.Request) -> _File | web.Response:
        rec = self.files.get(request.match_info["file_id"])
        if rec is None:
            return _error(404, f"No such File object: {request.match_info['file_id']}", param="id")
        return rec

    async def list_files(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        purpose = request.query.get("purpose")
        data = [f.public() for f in self.files.values() if purpose is None or f.purpose == purpose]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def retrieve_file(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        rec = self._file(request)
        return rec if isinstance(rec, web.Response) else web.json_response(rec.public())

    async def delete_file(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        rec = self._file(request)
        if isinstance(rec, web.Response):
            return rec
        del self.files[rec.id]
        return web.json_response({"id": rec.id, "object": "file", "deleted": True})

    async def file_content(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        rec = self._file(request)
        if isinstance(rec, web.Response):
            return rec
        return web.Response(body=rec.content, content_type="application/octet-stream")

    # -- batches ----------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "Expected a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return _error(400, f"Missing required parameter: '{name}'.", "missing_required_parameter", name)
        if body["endpoint"] not in _ENDPOINTS:
            return _error(400, f"Invalid value for 'endpoint': {body['endpoint']!r}.", "invalid_value", "endpoint")
        if body["completion_window"] != "24h":
            msg = f"Invalid value for 'completion_window': {body['completion_window']!r}. Supported values are: '24h'."
            return _error(400, msg, "invalid_value", "completion_window")
        rec = self.files.get(body["input_file_id"])
        if rec is None:
            return _error(404, f"No such File object: {body['input_file_id']}", param="input_file_id")
        if rec.purpose != "batch":
            return _error(
                400, f"File {rec.id} was not uploaded with purpose 'batch'.", "invalid_value", "input_file_id"
            )
        metadata = body.get("metadata")
        lines, tokens, errors = self._validate(rec.content, body["endpoint"])
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
                return _error(400, msg, "token_limit_exceeded")
        elif self.cfg.batch_expire_every and n % self.cfg.batch_expire_every == 0:
            fate = "expire"
        batch = _Batch(
            id=self._next_id("batch"),
            input_file_id=rec.id,
            endpoint=body["endpoint"],
            completion_window=body["completion_window"],
            metadata=metadata if isinstance(metadata, dict) else None,
            created_at=self._now(),
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
            self._advance(b)
            if b.status in ACTIVE:
                total += b.tokens
        return total

    def _validate(
        self, content: bytes, endpoint: str
    ) -> tuple[list[tuple[str, dict[str, Any]]], int, list[dict[str, Any]]]:
        """The input file's requests, their prompt tokens, and validation errors (OpenAI's ``errors.data``)."""
        lines: list[tuple[str, dict[str, Any]]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        tokens = 0
        model = None

        def err(code: str, message: str, line: int, param: str | None = None) -> None:
            if len(errors) < 10:
                errors.append({"code": code, "message": message, "param": param, "line": line})

        for no, raw in enumerate(content.splitlines(), 1):
            if not raw.strip():
                err("invalid_json_line", "Blank lines are not allowed in a batch input file.", no)
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                err("invalid_json_line", "This line is not parseable as valid JSON.", no)
                continue
            if not isinstance(obj, dict):
                err("invalid_json_line", "Each line must be a JSON object.", no)
                continue
            cid, body = obj.get("custom_id"), obj.get("body")
            if not isinstance(cid, str) or not cid:
                err("missing_required_parameter", "Missing required parameter: 'custom_id'.", no, "custom_id")
                continue
            if cid in seen:
                err("duplicate_custom_id", f"The custom_id {cid!r} appears more than once.", no, "custom_id")
                continue
            seen.add(cid)
            if obj.get("method") != "POST":
                err("invalid_value", "Only the POST method is supported.", no, "method")
                continue
            if obj.get("url") != endpoint:
                err("invalid_url", f"The url must match the batch endpoint {endpoint}.", no, "url")
                continue
            messages = body.get("messages") if isinstance(body, dict) else None
            if not isinstance(body, dict) or not isinstance(messages, list) or not messages:
                err("invalid_request", "'messages' is a required property of 'body'.", no, "body.messages")
                continue
            if model is None:
                model = body.get("model")
            elif body.get("model") != model:
                err("mismatched_model", "All requests in a batch must use the same model.", no, "body.model")
                continue
            if self.cfg.strict_model and body.get("model") != self.cfg.model:
                err("model_not_found", f"The model `{body.get('model')}` does not exist.", no, "body.model")
                continue
            tokens += _prompt_tokens(messages)
            lines.append((cid, body))
        if not lines and not errors:
            err("empty_file", "The input file has no requests.", 1)
        if len(lines) > MAX_REQUESTS:
            errors.insert(
                0,
                {
                    "code": "too_many_requests",
                    "message": f"A batch may hold at most {MAX_REQUESTS} requests, this file has {len(lines)}.",
                    "param": None,
                    "line": None,
                },
            )
        return lines, tokens, errors

    def _batch(self, request: web.Request) -> _Batch | web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, f"No batch found with id '{request.match_info['batch_id']}'.", param="batch_id")
        self._advance(batch)
        return batch

    async def retrieve(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self._batch(request)
        return batch if isinstance(batch, web.Response) else web.json_response(batch.public())

    async def list_batches(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            limit = max(1, min(100, int(request.query.get("limit", "20"))))
        except ValueError:
            return _error(400, "Invalid value for 'limit'.", "invalid_value", "limit")
        newest_first = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after:
            ids = [b.id for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        for b in page:
            self._advance(b)
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
        if (denied := self._denied(request)) is not None:
            return denied
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status not in ("validating", "in_progress", "finalizing"):
            msg = f"Cannot cancel a batch with status '{batch.status}'."
            return _error(409, msg, "invalid_state")
        self._enter(batch, "cancelling")
        return web.json_response(batch.public())

    async def stats(self, request: web.Request) -> web.Response:
        """``GET /sim/batch-stats``: what the client did; ``?ids=1`` adds every executed custom_id."""
        summary = self.state.summary()
        if request.query.get("ids"):
            summary["executed_ids"] = sorted(self.state.executed)
            summary["answered_ids"] = sorted(self.state.answered)
        return web.json_response(summary)

    # -- the clock-driven state machine -----------------------------------------------------------

    def _enter(self, batch: _Batch, status: str) -> None:
        batch.status = status
        batch.times[status] = self._now()
        batch.phase_started = self._clock()

    def _advance(self, batch: _Batch) -> None:
        cfg = self.cfg
        now = self._clock()
        if batch.status == "validating":
            if now - batch.phase_started < cfg.batch_phase_s:
                return
            if batch.fate in ("invalid", "token_limit"):
                self._enter(batch, "failed")
                return
            self._enter(batch, "in_progress")
            batch.phase_started = batch.created_mono + cfg.batch_phase_s
        if batch.status == "in_progress":
            total = len(batch.lines)
            target = min(total, math.floor((now - batch.phase_started) * cfg.batch_rps + 1e-9))
            if batch.fate == "expire":
                target = min(target, total // 2)
            self._execute(batch, target)
            if batch.fate == "expire" and batch.done >= total // 2 and total > 0:
                self._close(batch, "expired", _EXPIRED)
                return
            if batch.done < total:
                return
            finished_at = batch.phase_started + total / cfg.batch_rps
            self._enter(batch, "finalizing")
            batch.phase_started = finished_at
        if batch.status in ("finalizing", "cancelling"):
            if now - batch.phase_started < cfg.batch_phase_s:
                return
            if batch.status == "finalizing":
                self._close(batch, "completed", _CANCELLED)
            else:
                self._close(batch, "cancelled", _CANCELLED)

    def _execute(self, batch: _Batch, target: int) -> None:
        """Answer lines ``batch.done .. target`` the way the chat route would."""
        sim, state = self.sim, self.state
        rate = self.cfg.batch_error_rate
        rng = sim.rng
        for i in range(batch.done, target):
            cid, body = batch.lines[i]
            state.executed[cid] += 1
            self._line_seq += 1
            line_id = f"batch_req_sim{self._line_seq}"
            req_id = f"req_simb{self._line_seq}"
            if rate and rng.random() < rate:
                err_body = {
                    "error": {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
                response = {"status_code": 500, "request_id": req_id, "body": err_body}
                batch.error_lines.append(_dumps({"id": line_id, "custom_id": cid, "response": response, "error": None}))
                batch.failed += 1
                continue
            messages = body["messages"]
            max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 1024
            content, finish, completion_tokens = sim._content(body, messages, int(max_tokens))
            prompt_tokens = _prompt_tokens(messages)
            completion = {
                "id": f"chatcmpl-simb{self._line_seq}",
                "object": "chat.completion",
                "created": self._now(),
                "model": self.cfg.model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
            sim._count_ok((prompt_tokens, completion_tokens))
            response = {"status_code": 200, "request_id": req_id, "body": completion}
            state.answered.add(cid)
            batch.output.append(_dumps({"id": line_id, "custom_id": cid, "response": response, "error": None}))
            batch.completed += 1
        batch.done = max(batch.done, target)

    def _close(self, batch: _Batch, status: str, unfinished: dict[str, str]) -> None:
        """End the batch: lines never executed go to the error file with ``unfinished``; write both files."""
        for cid, _ in batch.lines[batch.done :]:
            self._line_seq += 1
            line = {"id": f"batch_req_sim{self._line_seq}", "custom_id": cid, "response": None, "error": unfinished}
            batch.error_lines.append(_dumps(line))
            batch.failed += 1
        batch.done = len(batch.lines)
        if batch.output:
            out = _File(
                self._next_id("file"),
                f"{batch.id}_output.jsonl",
                "batch_output",
                ("\n".join(batch.output) + "\n").encode(),
                self._now(),
            )
            self.files[out.id] = out
            batch.output_file_id = out.id
        if batch.error_lines:
            err = _File(
                self._next_id("file"),
                f"{batch.id}_error.jsonl",
                "batch_output",
                ("\n".join(batch.error_lines) + "\n").encode(),
                self._now(),
            )
            self.files[err.id] = err
            batch.error_file_id = err.id
        batch.output.clear()
        batch.error_lines.clear()
        self._enter(batch, status)
