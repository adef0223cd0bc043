"""Labels in model replies: case, spacing, typos, yes/no for true/false, a label named inside a phrase."""

from __future__ import annotations

import difflib
import functools
from typing import Any

from ..tasks import Task
from .vocab import _BOOL_ALIASES, _WRAP_QUOTES, _WS_LABEL

__all__ = ["match_label"]


def _norm_label(s: str) -> str:
    return _WS_LABEL.sub("_", s.strip().strip(_WRAP_QUOTES + ".,;:!*").strip().lower())


@functools.lru_cache(maxsize=64)
def _label_table(task: Task) -> dict[str, str]:
    return {_norm_label(lab): lab for lab in task.labels}


def match_label(raw: Any, task: Task) -> str | None:
    """The task label ``raw`` means (case, spacing, a typo, yes/no for true/false), or None."""
    if isinstance(raw, list) and raw:
        raw = raw[0]
    if isinstance(raw, bool):
        raw = "true" if raw else "false"
    if raw is None or isinstance(raw, dict | list):
        return None
    norm = _norm_label(str(raw))
    if not norm:
        return None
    table = _label_table(task)
    if norm in table:
        return table[norm]
    if set(table) == {"true", "false"} and norm in _BOOL_ALIASES:
        return table[_BOOL_ALIASES[norm]]
    close = difflib.get_close_matches(norm, list(table), n=1, cutoff=0.75)
    if close:
        return table[close[0]]
    # "positive sentiment", "label: sport": exactly one label as a whole word, the longest wins.
    words = f"_{norm}_"
    hits = [lab for lab in table if f"_{lab}_" in words]
    hits = [h for h in hits if not any(h != other and h in other for other in hits)]
    return table[hits[0]] if len(hits) == 1 else None
