"""Quality checks of one parsed example: is it a real text of the task, or filler the model wrote instead?

Run after parsing (the text is found and its label resolved) and before
deduplication. Reasons, in the order they are tested: ``empty``, ``placeholder``
(``<text here>``, ``...``), ``refusal`` ("I'm sorry, I can't ..."),
``prompt_echo`` (the text is, or nearly is, a label's description or the
task's, as small models often answer), ``identical_fields`` (a pair task's
texts are the same), ``too_short`` and ``too_long`` (the task's bounds).
"""

from __future__ import annotations

import difflib
import functools
import re

from .tasks import Task

__all__ = ["CHECK_REASONS", "REFUSAL", "check_fields", "echo_key"]

CHECK_REASONS = ("empty", "placeholder", "refusal", "prompt_echo", "identical_fields", "too_short", "too_long")

_NON_WORD = re.compile(r"[\W_]+")
_CANT = r"(?:can'?t|cannot|can not|am unable|'?m unable|am not able|'?m not able|won'?t|will not)"
#: Refusals, not tweets that merely start "I can't believe ...": an apology or "as an AI" with a can't, or
#: a can't followed by a verb of doing the task.
REFUSAL = re.compile(
    rf"^\s*(?:(?:i'?m|i am) sorry|sorry|i apologi[sz]e|unfortunately)\b[^.!?\n]{{0,40}}\b(?:i\s*)?{_CANT}"
    rf"|^\s*i\s*{_CANT}\s+(?:to\s+)?(?:help|assist|provide|create|write|generate|produce|comply|fulfil|do that|"
    r"complete|engage|support|answer|continue)"
    rf"|^\s*as an ai\b[^.!\n]*\b{_CANT}",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(
    r"^[\s.\u2026_\-]*$|^[<\[{(]?\s*(?:your |the )?(?:text|example|\.\.\.)\s*(?:here)?\s*[>\]})]?$", re.I
)
#: Similarity (difflib ratio) above which a short text counts as an echo of a description from the prompt.
_ECHO_RATIO = 0.85

#: ASCII bytes -> themselves for letters and digits, a space for everything else (what ``_NON_WORD`` matches).
_ASCII_WORD_BYTES = bytes(b if chr(b).isascii() and chr(b).isalnum() else 0x20 for b in range(256))


def echo_key(text: str) -> str:
    """Lower-case words joined by single spaces (runs of anything else, ``_`` included, become one space)."""
    if text.isascii():  # the common case, four times faster than the regex (bytes.translate is a C table lookup)
        return " ".join(text.encode().translate(_ASCII_WORD_BYTES).decode().lower().split())
    return _NON_WORD.sub(" ", text.lower()).strip()


class _Echoes:
    """A task's prompt descriptions, normalised, with what the echo test's cheap filters need before difflib."""

    __slots__ = ("entries", "lo", "hi")

    def __init__(self, task: Task) -> None:
        descriptions = (*task.label_descriptions.values(), task.description, task.domain)
        keys = sorted({echo_key(d) for d in descriptions if d} - {""})
        #: (key, its words, its length, its number of distinct words)
        words = [frozenset(key.split()) for key in keys]
        self.entries = tuple((key, ws, len(key), len(ws)) for key, ws in zip(keys, words, strict=True))
        # key lengths outside these cannot reach a 0.85 ratio with any description: 2*min(a, b) < 0.85*(a + b)
        lengths = [len(key) for key in keys] or [0]
        self.lo = min(lengths) * _ECHO_RATIO / (2 - _ECHO_RATIO)
        self.hi = max(lengths) * (2 - _ECHO_RATIO) / _ECHO_RATIO

    def candidates(self, key: str) -> list[str]:
        """Descriptions ``key`` may be an echo of: lengths close enough and at least half the words shared."""
        n = len(key)
        if not self.lo <= n <= self.hi:
            return []
        words = set(key.split())
        size = len(words)
        return [
            echo
            for echo, echo_words, length, echo_size in self.entries
            # difflib's real_quick_ratio bound on lengths, then 2 |A & B| >= |A | B| (= |A| + |B| - |A & B|)
            if 2 * min(n, length) >= _ECHO_RATIO * (n + length) and 3 * len(words & echo_words) >= size + echo_size
        ]


@functools.lru_cache(maxsize=64)
def _task_echoes(task: Task) -> _Echoes:
    return _Echoes(task)


def _echoes(task: Task, value: str) -> bool:
    """The value is one of the prompt's descriptions, give or take a few words."""
    key = echo_key(value)
    for echo in _task_echoes(task).candidates(key):  # under half the words shared: no 0.85 ratio in practice
        if key == echo:
            return True
        matcher = difflib.SequenceMatcher(None, key, echo, autojunk=False)
        if matcher.quick_ratio() >= _ECHO_RATIO and matcher.ratio() >= _ECHO_RATIO:
            return True
    return False


def check_fields(fields: dict[str, str], task: Task) -> str | None:
    """The reason ``fields`` (cleaned texts, one per task field) is not a usable example, or None."""
    values = list(fields.values())
    # plain loops, not any(<generator>): this runs once per example
    for v in values:
        if not v:
            return "empty"
    for v in values:
        if _PLACEHOLDER.match(v):
            return "placeholder"
    joined = "\n".join(values) if len(values) > 1 else values[0]
    if len(joined) < 200 and REFUSAL.match(joined):
        return "refusal"
    if len(joined) < 300:
        for v in values:
            if _echoes(task, v):
                return "prompt_echo"
    if len(values) > 1 and len({echo_key(v) for v in values}) == 1:
        return "identical_fields"
    if len(joined) < task.min_chars:
        return "too_short"
    if task.max_chars is not None and len(joined) > task.max_chars:
        return "too_long"
    return None
