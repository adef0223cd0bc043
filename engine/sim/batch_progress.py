"""How a simulated batch moves with the clock: validating, in_progress, finalizing, then a final status.

Nothing runs between requests: every route that looks at a batch first calls
:meth:`Progress.advance`, which brings it to what the clock says (``validating``
for ``batch_phase_s``, then ``batch_rps`` lines a second while ``in_progress``,
``finalizing`` for ``batch_phase_s``, then ``completed``). Lines are answered
by the chat route's own content generator; an expired or cancelled batch keeps
the output of what was done and lists the rest in its error file.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .batch_state import BatchState
from .files import FilesSim
from .server import Simulator, _prompt_tokens

__all__ = ["ACTIVE", "Progress", "SimBatch"]

#: Statuses whose prompt tokens count against the enqueued-token limit.
ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
CANCELLED = {"code": "batch_cancelled", "message": "This request was cancelled before it was executed."}
_SERVER_ERROR = {
    "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class SimBatch:
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


class Progress:
    """Advances batches to what the clock says, answering their lines and writing their output files."""

    def __init__(
        self,
        sim: Simulator,
        state: BatchState,
        files: FilesSim,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.sim = sim
        self.cfg = sim.cfg
        self.state = state
        self.files = files
        self._clock = clock
        self._wall = wall
        self._line_seq = 0

    def enter(self, batch: SimBatch, status: str) -> None:
        batch.status = status
        batch.times[status] = int(self._wall())
        batch.phase_started = self._clock()

    def advance(self, batch: SimBatch) -> None:
        cfg = self.cfg
        now = self._clock()
        if batch.status == "validating":
            if now - batch.phase_started < cfg.batch_phase_s:
                return
            if batch.fate in ("invalid", "token_limit"):
                self.enter(batch, "failed")
                return
            self.enter(batch, "in_progress")
            batch.phase_started = batch.created_mono + cfg.batch_phase_s
        if batch.status == "in_progress":
            total = len(batch.lines)
            target = min(total, math.floor((now - batch.phase_started) * cfg.batch_rps + 1e-9))
            if batch.fate == "expire":
                target = min(target, total // 2)
            self._execute(batch, target)
            if batch.fate == "expire" and batch.done >= total // 2 and total > 0:
                self._close(batch, "expired", EXPIRED)
                return
            if batch.done < total:
                return
            finished_at = batch.phase_started + total / cfg.batch_rps
            self.enter(batch, "finalizing")
            batch.phase_started = finished_at
        if batch.status in ("finalizing", "cancelling"):
            if now - batch.phase_started < cfg.batch_phase_s:
                return
            if batch.status == "finalizing":
                self._close(batch, "completed", CANCELLED)
            else:
                self._close(batch, "cancelled", CANCELLED)

    def _execute(self, batch: SimBatch, target: int) -> None:
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
                response = {"status_code": 500, "request_id": req_id, "body": _SERVER_ERROR}
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
                "created": int(self._wall()),
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

    def _close(self, batch: SimBatch, status: str, unfinished: dict[str, str]) -> None:
        """End the batch: lines never executed go to the error file with ``unfinished``; write both files."""
        for cid, _ in batch.lines[batch.done :]:
            self._line_seq += 1
            line = {"id": f"batch_req_sim{self._line_seq}", "custom_id": cid, "response": None, "error": unfinished}
            batch.error_lines.append(_dumps(line))
            batch.failed += 1
        batch.done = len(batch.lines)
        if batch.output:
            content = ("\n".join(batch.output) + "\n").encode()
            batch.output_file_id = self.files.add(f"{batch.id}_output.jsonl", "batch_output", content).id
        if batch.error_lines:
            content = ("\n".join(batch.error_lines) + "\n").encode()
            batch.error_file_id = self.files.add(f"{batch.id}_error.jsonl", "batch_output", content).id
        batch.output.clear()
        batch.error_lines.clear()
        self.enter(batch, status)
