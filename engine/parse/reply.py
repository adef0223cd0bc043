"""One model reply -> candidate examples with resolved labels, or rejects with the reason the form was unusable.

``parse_reply`` never raises on model text. It tries the cheap path first
(``json.loads`` of the whole reply as one schema-shaped object) and only then
the fallbacks, in order: JSON anywhere in the reply (``jsontext``), broken JSON
(``"text": "..."`` pairs; a string cut off by ``max_tokens`` is ``truncated``),
plain text (``plain``). Labels are resolved by ``labels.match_label``; a
missing label means the requested one. Whether a found text is any good
(empty, a refusal, an echo of the prompt, too short) is the next stage's
question (``engine.checks``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from ..tasks import Task
from .jsontext import broken_json_items, candidates, dict_item, extract_json
from .labels import match_label
from .plain import from_plain
from .vocab import _WRAP_QUOTES

__all__ = ["ParseResult", "ParsedItem", "parse_reply", "raw_text"]


@dataclass(slots=True)
class ParsedItem:
    fields: dict[str, str]
    label: str
    #: What the item was parsed from (a dict or a string), kept for the reject record if a later check drops it.
    raw: Any = None


@dataclass(slots=True)
class ParseResult:
    items: list[ParsedItem] = field(default_factory=list)
    #: (raw text of the rejected item or reply, reason)
    rejects: list[tuple[str, str]] = field(default_factory=list)


def raw_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)


def _clean_text(value: str) -> str:
    s = value.strip().replace("**", "")
    while len(s) >= 2 and s[0] in _WRAP_QUOTES and s[-1] in _WRAP_QUOTES:
        s = s[1:-1].strip()
    return s


class Collector:
    """Collects the items of one reply: cleans their texts and resolves their labels."""

    __slots__ = ("expected", "result", "task")

    def __init__(self, task: Task, expected_label: str | None) -> None:
        self.task = task
        self.expected = expected_label
        self.result = ParseResult()

    def reject(self, raw: Any, reason: str) -> None:
        self.result.rejects.append((raw_text(raw), reason))

    def add(self, raw: Any, fields: dict[str, str], label_raw: Any) -> None:
        cleaned = {f: _clean_text(fields.get(f, "")) for f in self.task.fields}
        if label_raw is None or (isinstance(label_raw, str) and not label_raw.strip()):
            if self.expected is None:
                return self.reject(raw, "missing_label")
            label = self.expected
        else:
            matched = match_label(label_raw, self.task)
            if matched is None:
                return self.reject(raw, "unknown_label")
            if self.expected is not None and matched != self.expected:
                return self.reject(raw, "wrong_label")
            label = matched
        self.result.items.append(ParsedItem(fields=cleaned, label=label, raw=raw))
        return None

    def from_json(self, value: Any) -> None:
        for cand in candidates(value):
            if isinstance(cand, str):
                if self.task.is_pair:
                    self.reject(cand, "missing_field")
                else:
                    self.add(cand, {self.task.fields[0]: cand}, None)
            elif isinstance(cand, dict):
                fields, label_raw, reason = dict_item(cand, self.task)
                if fields is None:
                    self.reject(cand, reason)
                else:
                    self.add(cand, fields, label_raw)
            else:
                self.reject(cand, "unparseable")

    def from_broken_json(self, s: str) -> bool:
        """Pick ``"field": "value"`` pairs out of JSON that does not decode; False if there are none."""
        items, truncated = broken_json_items(s, self.task)
        if not items:
            if truncated:
                self.reject(s, "truncated")
                return True
            return False
        for fields, label in items:
            self.add(fields, fields, label)
        return True


@functools.lru_cache(maxsize=64)
def _exact_keys(task: Task) -> frozenset[str]:
    return frozenset((*task.fields, "label"))


def _fast_path(collector: Collector, s: str, task: Task) -> bool:
    """The common reply under a JSON schema: one object with exactly the task's fields and ``label``, all strings.

    Returns False (nothing done) for anything else, which takes the general path.
    """
    try:
        value = json.loads(s)
    except ValueError:
        return False
    if not isinstance(value, dict) or value.keys() != _exact_keys(task):
        return False
    for v in value.values():
        if not isinstance(v, str):
            return False
    collector.add(value, {f: value[f] for f in task.fields}, value["label"])
    return True


def parse_reply(text: str, task: Task, *, expected_label: str | None, per_request: int = 1) -> ParseResult:
    """Turn one model reply into candidate examples; every unusable part becomes a (raw, reason) reject."""
    collector = Collector(task, expected_label)
    try:
        s = (text or "").strip()
        if not s:
            collector.reject(text or "", "empty")
            return collector.result
        if s[0] == "{" and s[-1] == "}" and _fast_path(collector, s, task):
            return collector.result
        value = extract_json(s)
        if value is not None and any(isinstance(c, dict | str) for c in candidates(value)):
            collector.from_json(value)
        elif '"' in s and ("{" in s) and collector.from_broken_json(s):
            pass
        else:
            from_plain(collector, s, per_request)
        if not collector.result.items and not collector.result.rejects:
            collector.reject(s, "unparseable")
    except Exception:  # noqa: BLE001 - the contract: model text never raises; the reason makes our bug visible
        return ParseResult(rejects=[(text, "parser_error")])
    return collector.result
