"""The records that flow through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import EngineError

__all__ = ["Completion", "Example", "Outcome", "Request"]


@dataclass(slots=True)
class Request:
    """One chat-completion request, planned deterministically.

    ``id`` is stable across runs with the same configuration, which is what lets
    ``--resume`` skip the requests already done. ``label`` is the class the
    prompt asks for (class-conditioned generation); ``meta`` carries what the
    strategy chose (topic, shots, attributes) so it can be stored with the output.
    """

    id: str
    messages: list[dict[str, str]]
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float | None = None
    response_format: dict[str, Any] | None = None
    stream: bool = False
    label: str | None = None
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: Prompt tokens as counted locally (tiktoken) for admission control; 0 = not counted.
    prompt_tokens: int = 0
    #: ``messages`` is one list many requests share (a prompt that samples nothing); never mutate it.
    shared_messages: bool = False
    #: HTTP attempts made for this request so far, and how many were answered 429 (counted by ``Metered``).
    attempts: int = 0
    rate_limited: int = 0


@dataclass(slots=True)
class Completion:
    """What a provider returned for one request."""

    request_id: str
    text: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    #: Response headers worth keeping (rate-limit headers, lower-cased names).
    headers: dict[str, str] = field(default_factory=dict)
    latency_s: float = 0.0
    #: Time to first token (streaming only; 0.0 otherwise).
    ttft_s: float = 0.0
    #: Arrival times (seconds since send) of streamed content chunks, when streaming.
    chunk_times: list[float] = field(default_factory=list)
    #: Server-side timings when the server reports them (llama.cpp's ``timings``).
    server_timings: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Example:
    """One labelled example: the record the filter and store stages see.

    ``fields`` maps the task's input field names to text (``{"text": ...}`` for
    single-text tasks, ``{"premise": ..., "hypothesis": ...}`` for pairs).
    """

    id: str
    fields: dict[str, str]
    label: str
    request_id: str = ""
    strategy: str = ""
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """All text fields joined, the form dedup and the encoder see."""
        if len(self.fields) == 1:
            return next(iter(self.fields.values()))
        return "\n".join(self.fields.values())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "label": self.label}
        out.update(self.fields)
        out["strategy"] = self.strategy
        out["request_id"] = self.request_id
        out["model"] = self.model
        if self.meta:
            out["meta"] = self.meta
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], field_names: list[str] | tuple[str, ...] = ("text",)) -> Example:
        return cls(
            id=str(d["id"]),
            fields={name: str(d[name]) for name in field_names if name in d},
            label=str(d.get("label", "")),
            request_id=str(d.get("request_id", "")),
            strategy=str(d.get("strategy", "")),
            model=str(d.get("model", "")),
            meta=dict(d.get("meta") or {}),
        )


@dataclass(slots=True)
class Outcome:
    """One planned request's end: a completion, or the error that ended its attempts.

    Every source of outcomes (the online scheduler, a provider batch job, a
    cluster shard) produces these, and the stage chain consumes them.
    """

    request: Request
    completion: Completion | None = None
    error: EngineError | None = None
