"""Model text -> labelled examples, tolerant of what real models write; bad items are dropped with a reason.

Two steps, which the run's chain applies as two stages:

1. ``parse_reply`` (``reply``, ``jsontext``, ``labels``, ``plain``) finds the
   examples in a reply and resolves their labels. Reject reasons of the form:
   ``empty`` (an empty reply), ``refusal`` (a reply that is only a refusal),
   ``missing_field``, ``missing_label``, ``unknown_label``, ``wrong_label``,
   ``truncated``, ``unparseable`` (and ``parser_error``, which would be our bug).
2. ``engine.checks.check_fields`` tests each found text: ``empty``,
   ``placeholder``, ``refusal``, ``prompt_echo``, ``identical_fields``,
   ``too_short``, ``too_long``.

``parse_completion`` applies both to one reply, for callers outside a run.
"""

from __future__ import annotations

from ..checks import CHECK_REASONS, check_fields
from ..tasks import Task
from .jsontext import extract_json
from .labels import match_label
from .reply import ParsedItem, ParseResult, parse_reply, raw_text

__all__ = [
    "REASONS",
    "ParseResult",
    "ParsedItem",
    "extract_json",
    "match_label",
    "parse_completion",
    "parse_reply",
    "raw_text",
]

_FORM_REASONS = (
    "missing_field",
    "missing_label",
    "unknown_label",
    "wrong_label",
    "truncated",
    "unparseable",
    "parser_error",
)
#: Every reason a reply or an item of it can be rejected for.
REASONS = (*CHECK_REASONS, *_FORM_REASONS)


def parse_completion(text: str, task: Task, *, expected_label: str | None, per_request: int = 1) -> ParseResult:
    """Parse one reply and check each item: the items that pass, and every reject with its reason. Never raises."""
    parsed = parse_reply(text, task, expected_label=expected_label, per_request=per_request)
    items = []
    for item in parsed.items:
        reason = check_fields(item.fields, task)
        if reason is None:
            items.append(item)
        else:
            parsed.rejects.append((raw_text(item.raw), reason))
    parsed.items = items
    return parsed
