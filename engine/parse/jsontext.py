"""JSON in model replies: the whole reply, a fenced block, JSON inside prose, lists of items, broken JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from ..tasks import Task
from .vocab import _FENCE, _FIELD_ALIASES, _LABEL_KEYS, _LIST_KEYS, _TITLE_KEYS

__all__ = ["broken_json_items", "candidates", "dict_item", "extract_json"]

_DECODER = json.JSONDecoder()


def _json_values(s: str, limit: int = 50) -> list[Any]:
    """Every JSON object/array that decodes from a ``{`` or ``[`` in ``s``, left to right, not nested."""
    out: list[Any] = []
    i, tries = 0, 0
    while tries < limit:
        starts = [p for p in (s.find("{", i), s.find("[", i)) if p >= 0]
        if not starts:
            break
        pos = min(starts)
        tries += 1
        try:
            value, end = _DECODER.raw_decode(s, pos)
        except ValueError:
            i = pos + 1
            continue
        if isinstance(value, dict | list) and value:
            out.append(value)
        i = end
    return out


def extract_json(text: str) -> Any | None:
    """The JSON value in a model reply: the whole text, a fenced block, or embedded in prose; else None."""
    s = text.strip()
    if s[:1] in "{[":
        try:
            return json.loads(s)
        except ValueError:
            pass
    if "```" in s:
        for block in _FENCE.findall(s):
            block = block.strip()
            if block[:1] in "{[":
                try:
                    return json.loads(block)
                except ValueError:
                    values = _json_values(block)
                    if values:
                        return values[0] if len(values) == 1 else values
    values = _json_values(s)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _lookup(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def dict_item(d: dict[str, Any], task: Task) -> tuple[dict[str, str] | None, Any, str]:
    """(fields or None, raw label, reason if fields is None)."""
    low = {str(k).strip().lower().replace(" ", "_"): v for k, v in d.items()}
    fields: dict[str, str] = {}
    used: set[str] = set()
    for f in task.fields:
        keys = (f, *(a for a in _FIELD_ALIASES.get(f, ()) if a not in task.fields))
        hit = next((k for k in keys if k in low and k not in used), None)
        if hit is None:
            if not task.is_pair:
                title = _lookup(low, _TITLE_KEYS)
                if isinstance(title, str) and title.strip():
                    fields[f] = title
                    continue
            return None, None, "missing_field"
        used.add(hit)
        value = low[hit]
        if isinstance(value, dict | list) or value is None:
            return None, None, "missing_field"
        fields[f] = str(value)
    title = _lookup(low, _TITLE_KEYS) if not task.is_pair else None
    if isinstance(title, str) and title.strip():
        f = task.fields[0]
        body = fields[f]
        if body != title and not body.lstrip().startswith(title.strip()):
            fields[f] = f"{title.strip()}\n\n{body.strip()}"
    return fields, _lookup(low, _LABEL_KEYS), ""


def candidates(value: Any, depth: int = 0) -> list[Any]:
    if depth > 3:
        return [value]
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            out.extend(candidates(v, depth + 1) if isinstance(v, list) else [v])
        return out
    if isinstance(value, dict):
        low = {str(k).strip().lower(): v for k, v in value.items()}
        if any(isinstance(low.get(k), str) for aliases in _FIELD_ALIASES.values() for k in aliases):
            return [value]
        for k in _LIST_KEYS:
            if isinstance(low.get(k), list):
                return candidates(low[k], depth + 1)
        nested = [v for v in value.values() if isinstance(v, dict | list)]
        if len(nested) == 1:
            return candidates(nested[0], depth + 1)
    return [value]


def _unescape(v: str) -> str:
    try:
        out: str = json.loads(f'"{v}"')
        return out
    except ValueError:
        return v


def broken_json_items(s: str, task: Task) -> tuple[list[tuple[dict[str, str], str | None]], bool]:
    """``"field": "value"`` pairs picked out of JSON that does not decode: (items with their raw label, truncated).

    ``truncated`` says a field's string was cut off (by ``max_tokens``) where no complete item was found.
    """
    per_field: dict[str, list[str]] = {}
    truncated = False
    for f in task.fields:
        keys = "|".join(re.escape(k) for k in (f, *(a for a in _FIELD_ALIASES.get(f, ()) if a not in task.fields)))
        found = re.findall(rf'"(?:{keys})"\s*:\s*"((?:[^"\\]|\\.)*)"', s, re.IGNORECASE)
        if not found and re.search(rf'"(?:{keys})"\s*:\s*"', s, re.IGNORECASE):
            truncated = True
        per_field[f] = [_unescape(v) for v in found]
    n = min(len(v) for v in per_field.values())
    labels = re.findall(r'"(?:label|class|category|sentiment)"\s*:\s*"?([^",}\n]*)', s, re.IGNORECASE) if n else []
    items = []
    for i in range(n):
        fields = {f: per_field[f][i] for f in task.fields}
        items.append((fields, labels[i] if i < len(labels) else None))
    return items, truncated
