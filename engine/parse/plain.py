"""Plain-text replies: ``Text: ... / Label: ...`` blocks, numbered or bulleted lists, or the whole reply as one text.

Before looking for examples, "Sure, here is ..." preambles, "As an AI ..." openers
and "I hope this helps" endings are stripped; a reply that is only a refusal is
rejected as one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..checks import REFUSAL as _REFUSAL
from .vocab import (
    _AS_AN_AI,
    _FIELD_ALIASES,
    _KEY_LINE,
    _LABEL_INLINE,
    _LABEL_KEYS,
    _LIST_ITEM,
    _OUTRO,
    _PREAMBLE,
    _SEPARATOR,
)

if TYPE_CHECKING:
    from .reply import Collector

__all__ = ["from_plain"]


def from_plain(c: Collector, s: str, per_request: int) -> None:
    lines = _strip_wrapping(s.splitlines())
    body = "\n".join(lines).strip()
    if not body:
        return c.reject(s, "refusal" if _REFUSAL.match(s) or _AS_AN_AI.match(s) else "empty")
    if _REFUSAL.match(body) and len(body) < 400:
        return c.reject(s, "refusal")
    if _key_blocks(c, lines):
        return None
    if per_request > 1 and _list_items(c, lines):
        return None
    label = None
    last = lines[-1] if lines else ""
    m = _LABEL_INLINE.search(last)
    if m and len(lines) > 1 and _KEY_LINE.match(last):
        label, lines = m.group("label"), lines[:-1]
    elif m and m.start() > 0:
        label, lines = m.group("label"), [*lines[:-1], last[: m.start()]]
    text = "\n".join(lines).strip()
    if c.task.is_pair or not any(ch.isalpha() for ch in text):
        return c.reject(s, "unparseable")
    return c.add(s, {c.task.fields[0]: _strip_key_prefix(text)}, label)


def _key_blocks(c: Collector, lines: list[str]) -> bool:
    """``Text: ... / Label: ...`` blocks (one key per line, values may continue on later lines)."""
    t = c.task
    field_of: dict[str, str] = {}
    for f in reversed(t.fields):
        for a in (*_FIELD_ALIASES.get(f, ()), f):
            if a not in t.fields or a == f:
                field_of[a] = f
    items: list[tuple[dict[str, str], str | None]] = []
    cur: dict[str, str] = {}
    label: str | None = None
    key: str | None = None
    seen_field = False
    for line in lines:
        if _SEPARATOR.match(line):
            if cur:
                items.append((cur, label))
            cur, label, key = {}, None, None
            continue
        m = _KEY_LINE.match(line)
        name = m.group("key").strip().lower().replace(" ", "_") if m else ""
        if m and name in field_of:
            f = field_of[name]
            seen_field = True
            if f in cur:
                items.append((cur, label))
                cur, label = {}, None
            cur[f] = m.group("val")
            key = f
        elif m and name in _LABEL_KEYS:
            label = m.group("val").strip()
            key = None
        elif key is not None:
            cur[key] += "\n" + line
    if cur:
        items.append((cur, label))
    if not seen_field:
        return False
    for fields, lab in items:
        if any(f not in fields for f in t.fields):
            c.reject(json.dumps(fields, ensure_ascii=False), "missing_field")
        else:
            c.add(json.dumps({**fields, "label": lab}, ensure_ascii=False), fields, lab)
    return True


def _list_items(c: Collector, lines: list[str]) -> bool:
    items: list[str] = []
    for line in lines:
        m = _LIST_ITEM.match(line)
        if m:
            items.append(m.group("val"))
        elif items and line.strip():
            items[-1] += "\n" + line.strip()
    if len(items) < 2 or c.task.is_pair:
        return False
    for raw in items:
        label = None
        m = _LABEL_INLINE.search(raw)
        if m and m.start() > 0:
            label, raw = m.group("label"), raw[: m.start()]
        c.add(raw, {c.task.fields[0]: _strip_key_prefix(raw)}, label)
    return True


def _strip_key_prefix(text: str) -> str:
    m = _KEY_LINE.match(text)
    if m and m.group("key").strip().lower() in _FIELD_ALIASES["text"]:
        return text[m.start("val") :].strip()
    return text


def _strip_wrapping(lines: list[str]) -> list[str]:
    """Drop blank edges, "Sure, here is ..." preambles, "As an AI ..." openers and "I hope this helps" endings."""
    lines = [ln.rstrip() for ln in lines]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and (
        (_PREAMBLE.match(lines[0]) and len(lines[0]) < 200 and (len(lines) > 1 or lines[0].rstrip().endswith(":")))
        or not lines[0].strip()
        or lines[0].strip().startswith("```")
    ):
        lines.pop(0)
    if lines and _AS_AN_AI.match(lines[0]) and not _REFUSAL.match(_AS_AN_AI.sub("", lines[0])):
        rest = _AS_AN_AI.sub("", lines[0]).strip()
        lines[0] = rest[:1].upper() + rest[1:]
    while lines and (not lines[-1].strip() or _OUTRO.match(lines[-1]) or lines[-1].strip().startswith("```")):
        lines.pop()
    return lines
