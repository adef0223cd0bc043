"""The OpenAI ``response_format`` (JSON schema, strict) for one requested label."""

from __future__ import annotations

import functools
from typing import Any

from ..tasks import Task

__all__ = ["example_schema", "response_format", "topics_response_format"]


def example_schema(task: Task, label: str) -> dict[str, Any]:
    """One example: the task's fields as required strings, ``label`` fixed to the requested label."""
    props: dict[str, Any] = {f: {"type": "string"} for f in task.fields}
    props["label"] = {"type": "string", "enum": [label]}
    return {"type": "object", "properties": props, "required": [*task.fields, "label"], "additionalProperties": False}


@functools.lru_cache(maxsize=1024)
def response_format(task: Task, label: str, per_request: int = 1) -> dict[str, Any]:
    """``{"type": "json_schema", ...}``: one example, or ``{"examples": [...]}`` with exactly ``per_request`` items."""
    item = example_schema(task, label)
    if per_request == 1:
        schema, name = item, "example"
    else:
        schema = {
            "type": "object",
            "properties": {
                "examples": {"type": "array", "items": item, "minItems": per_request, "maxItems": per_request}
            },
            "required": ["examples"],
            "additionalProperties": False,
        }
        name = "examples"
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def topics_response_format(n: int) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"topics": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": n}},
        "required": ["topics"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "topics", "strict": True, "schema": schema}}
