"""Validating a batch input file as OpenAI does: one ``{custom_id, method, url, body}`` object a line.

Errors carry OpenAI's codes and line numbers (``errors.data`` of a failed
batch); at most ten are reported.
"""

from __future__ import annotations

import json
from typing import Any

from .config import SimConfig
from .server import _prompt_tokens

__all__ = ["ENDPOINTS", "MAX_REQUESTS", "validate"]

#: OpenAI's limit on requests in one batch.
MAX_REQUESTS = 50_000
ENDPOINTS = frozenset({"/v1/chat/completions"})


def validate(
    content: bytes, endpoint: str, cfg: SimConfig
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
        if cfg.strict_model and body.get("model") != cfg.model:
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
