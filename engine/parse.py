"""Model text -> labelled examples, tolerant of what real models write; bad items are dropped with a reason.

``parse_completion`` never raises on model text. It tries the cheap path first
(``json.loads`` of the whole reply) and only then the fallbacks, in order:

1. JSON: an object, an array, ``{"examples": [...]}`` (or any single list-valued
   key), JSON inside code fences, JSON followed or preceded by prose, several
   objects in a row;
2. broken JSON: ``"text": "..."`` pairs picked out with a regex (a string cut off
   by ``max_tokens`` is rejected as ``truncated``);
3. plain text: ``Text: ... Label: ...`` blocks, numbered or bulleted lists (when
   several examples were asked for), or the whole reply as one text, after
   stripping "Sure, here is ..." preambles and "I hope this helps" endings.

Labels are matched to the task's label set ignoring case, spaces and hyphens,
then fuzzily (``difflib``); a missing label means the requested one. Reject
reasons: ``empty``, ``placeholder``, ``too_short``, ``too_long``, ``refusal``,
``missing_field``, ``missing_label``, ``unknown_label``, ``wrong_label``,
``prompt_echo`` (the text is, or nearly is, a label's description or the
task's, as small models often answer), ``identical_fields`` (a pair task's
texts are the same), ``truncated``, ``unparseable`` (and ``parser_error``,
which would be our bug).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .tasks import Task

__all__ = ["REASONS", "ParseResult", "ParsedItem", "extract_json", "match_label", "parse_completion"]

REASONS = (
    "empty",
    "placeholder",
    "too_short",
    "too_long",
    "refusal",
    "missing_field",
    "missing_label",
    "unknown_label",
    "wrong_label",
    "prompt_echo",
    "identical_fields",
    "truncated",
    "unparseable",
    "parser_error",
)


@dataclass(slots=True)
class ParsedItem:
    fields: dict[str, str]
    label: str


@dataclass(slots=True)
class ParseResult:
    items: list[ParsedItem] = field(default_factory=list)
    #: (raw text of the rejected item or reply, reason)
    rejects: list[tuple[str, str]] = field(default_factory=list)


# -- vocabulary ---------------------------------------------------------------

_FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "text": (
        "text", "sentence", "review", "tweet", "article", "content", "body", "message", "post", "comment",
        "example", "input", "news", "story", "document",
    ),
    "premise": ("premise", "sentence1", "text1", "context", "passage"),
    "hypothesis": ("hypothesis", "sentence2", "text2", "claim", "statement"),
    "passage": ("passage", "context", "paragraph", "text", "article"),
    "question": ("question", "query", "q"),
}  # fmt: skip
_TITLE_KEYS = ("title", "headline")
_LABEL_KEYS = ("label", "class", "category", "sentiment", "emotion", "answer", "labels")
_LIST_KEYS = ("examples", "data", "items", "results", "samples", "outputs", "reviews", "tweets", "texts", "articles")
_BOOL_ALIASES = {"yes": "true", "no": "false", "y": "true", "n": "false"}

_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|absolutely|great|alright|here(?:'s|\s+is|\s+are)|below\s+(?:is|are)"
    r"|i(?:'d|\s+would)\s+be\s+happy|i(?:'ll|\s+will)\s+(?:write|generate|create))\b",
    re.IGNORECASE,
)
_AS_AN_AI = re.compile(r"^\s*as an ai(?: language model)?\b[^.!\n]*[.!,]?\s*", re.IGNORECASE)
_CANT = r"(?:can'?t|cannot|can not|am unable|'?m unable|am not able|'?m not able|won'?t|will not)"
#: Refusals, not tweets that merely start "I can't believe ...": an apology or "as an AI" with a can't, or
#: a can't followed by a verb of doing the task.
_REFUSAL = re.compile(
    rf"^\s*(?:(?:i'?m|i am) sorry|sorry|i apologi[sz]e|unfortunately)\b[^.!?\n]{{0,40}}\b(?:i\s*)?{_CANT}"
    rf"|^\s*i\s*{_CANT}\s+(?:to\s+)?(?:help|assist|provide|create|write|generate|produce|comply|fulfil|do that|"
    r"complete|engage|support|answer|continue)"
    rf"|^\s*as an ai\b[^.!\n]*\b{_CANT}",
    re.IGNORECASE,
)
_OUTRO = re.compile(
    r"^\s*(?:i hope|hope this|let me know|feel free|note:|please note|this (?:example|text|review|article|tweet|"
    r"passage|sentence) (?:is|has|was|expresses|shows|would)|in this (?:example|text))",
    re.IGNORECASE,
)
_KEY_LINE = re.compile(
    r"^\s*(?:[-*\u2022]\s*|\d+[.)]\s*)?(?:\*\*|__)?(?P<key>[A-Za-z][A-Za-z0-9 _-]{0,24}?)(?:\*\*|__)?\s*:\s*"
    r"(?:\*\*|__)?\s*(?P<val>.*)$"
)
_SEPARATOR = re.compile(r"^\s*(?:#+\s*)?(?:\*\*)?(?:example|sample|item)\s*#?\d*\s*[:.]?\s*(?:\*\*)?\s*$", re.I)
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*\u2022])\s+(?P<val>.*)$")
_PLACEHOLDER = re.compile(
    r"^[\s.\u2026_\-]*$|^[<\[{(]?\s*(?:your |the )?(?:text|example|\.\.\.)\s*(?:here)?\s*[>\]})]?$", re.I
)
_WRAP_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
_LABEL_INLINE = re.compile(r"\(?\s*(?:\*\*)?label(?:\*\*)?\s*[:=]\s*(?P<label>[^)\n]+?)\s*\)?\s*$", re.IGNORECASE)
_WS_LABEL = re.compile(r"[\s\-/]+")
_NON_WORD = re.compile(r"[\W_]+")
#: Similarity (difflib ratio) above which a short text counts as an echo of a description from the prompt.
_ECHO_RATIO = 0.85


#: ASCII bytes -> themselves for letters and digits, a space for everything else (what ``_NON_WORD`` matches).
_ASCII_WORD_BYTES = bytes(b if chr(b).isascii() and chr(b).isalnum() else 0x20 for b in range(256))


def _echo_key(text: str) -> str:
    """Lower-case words joined by single spaces (runs of anything else, ``_`` included, become one space)."""
    if text.isascii():  # the common case, four times faster than the regex (bytes.translate is a C table lookup)
        return " ".join(text.encode().translate(_ASCII_WORD_BYTES).decode().lower().split())
    return _NON_WORD.sub(" ", text.lower()).strip()


# -- JSON ------------------------------------------------------------------------

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


# -- labels ----------------------------------------------------------------------


def _norm_label(s: str) -> str:
    return _WS_LABEL.sub("_", s.strip().strip(_WRAP_QUOTES + ".,;:!*").strip().lower())


@functools.lru_cache(maxsize=64)
def _label_table(task: Task) -> dict[str, str]:
    return {_norm_label(lab): lab for lab in task.labels}


class _Echoes:
    """A task's prompt descriptions, normalised, with what the echo test's cheap filters need before difflib."""

    __slots__ = ("entries", "lo", "hi")

    def __init__(self, task: Task) -> None:
        descriptions = (*task.label_descriptions.values(), task.description, task.domain)
        keys = sorted({_echo_key(d) for d in descriptions if d} - {""})
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


# -- items -------------------------------------------------------------------------


def _clean_text(value: str) -> str:
    s = value.strip().replace("**", "")
    while len(s) >= 2 and s[0] in _WRAP_QUOTES and s[-1] in _WRAP_QUOTES:
        s = s[1:-1].strip()
    return s


def _lookup(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def _dict_item(d: dict[str, Any], task: Task) -> tuple[dict[str, str] | None, Any, str]:
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


def _candidates(value: Any, depth: int = 0) -> list[Any]:
    if depth > 3:
        return [value]
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            out.extend(_candidates(v, depth + 1) if isinstance(v, list) else [v])
        return out
    if isinstance(value, dict):
        low = {str(k).strip().lower(): v for k, v in value.items()}
        if any(isinstance(low.get(k), str) for aliases in _FIELD_ALIASES.values() for k in aliases):
            return [value]
        for k in _LIST_KEYS:
            if isinstance(low.get(k), list):
                return _candidates(low[k], depth + 1)
        nested = [v for v in value.values() if isinstance(v, dict | list)]
        if len(nested) == 1:
            return _candidates(nested[0], depth + 1)
    return [value]


class _Parser:
    def __init__(self, task: Task, expected_label: str | None) -> None:
        self.task = task
        self.expected = expected_label
        self.result = ParseResult()
        self.echoes = _task_echoes(task)

    def _echoes(self, value: str) -> bool:
        """The value is one of the prompt's descriptions, give or take a few words."""
        key = _echo_key(value)
        for echo in self.echoes.candidates(key):  # under half the words shared: no 0.85 ratio in practice
            if key == echo:
                return True
            matcher = difflib.SequenceMatcher(None, key, echo, autojunk=False)
            if matcher.quick_ratio() >= _ECHO_RATIO and matcher.ratio() >= _ECHO_RATIO:
                return True
        return False

    def reject(self, raw: Any, reason: str) -> None:
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
        self.result.rejects.append((text, reason))

    def add(self, raw: Any, fields: dict[str, str], label_raw: Any) -> None:
        """Validate one candidate and keep it or reject it."""
        t = self.task
        cleaned = {f: _clean_text(fields.get(f, "")) for f in t.fields}
        values = list(cleaned.values())
        # plain loops, not any(<generator>): this runs once per example
        for v in values:
            if not v:
                return self.reject(raw, "empty")
        for v in values:
            if _PLACEHOLDER.match(v):
                return self.reject(raw, "placeholder")
        joined = "\n".join(values) if len(values) > 1 else values[0]
        if len(joined) < 200 and _REFUSAL.match(joined):
            return self.reject(raw, "refusal")
        if len(joined) < 300:
            for v in values:
                if self._echoes(v):
                    return self.reject(raw, "prompt_echo")
        if len(values) > 1 and len({_echo_key(v) for v in values}) == 1:
            return self.reject(raw, "identical_fields")
        if label_raw is None or (isinstance(label_raw, str) and not label_raw.strip()):
            if self.expected is None:
                return self.reject(raw, "missing_label")
            label = self.expected
        else:
            matched = match_label(label_raw, t)
            if matched is None:
                return self.reject(raw, "unknown_label")
            if self.expected is not None and matched != self.expected:
                return self.reject(raw, "wrong_label")
            label = matched
        if len(joined) < t.min_chars:
            return self.reject(raw, "too_short")
        if t.max_chars is not None and len(joined) > t.max_chars:
            return self.reject(raw, "too_long")
        self.result.items.append(ParsedItem(fields=cleaned, label=label))
        return None

    # -- the three paths ---------------------------------------------------

    def from_json(self, value: Any) -> None:
        for cand in _candidates(value):
            if isinstance(cand, str):
                if self.task.is_pair:
                    self.reject(cand, "missing_field")
                else:
                    self.add(cand, {self.task.fields[0]: cand}, None)
            elif isinstance(cand, dict):
                fields, label_raw, reason = _dict_item(cand, self.task)
                if fields is None:
                    self.reject(cand, reason)
                else:
                    self.add(cand, fields, label_raw)
            else:
                self.reject(cand, "unparseable")

    def from_broken_json(self, s: str) -> bool:
        """Pick ``"field": "value"`` pairs out of JSON that does not decode; False if there are none."""
        t = self.task
        per_field: dict[str, list[str]] = {}
        truncated = False
        for f in t.fields:
            keys = "|".join(re.escape(k) for k in (f, *(a for a in _FIELD_ALIASES.get(f, ()) if a not in t.fields)))
            found = re.findall(rf'"(?:{keys})"\s*:\s*"((?:[^"\\]|\\.)*)"', s, re.IGNORECASE)
            if not found and re.search(rf'"(?:{keys})"\s*:\s*"', s, re.IGNORECASE):
                truncated = True
            per_field[f] = [_unescape(v) for v in found]
        n = min(len(v) for v in per_field.values())
        if n == 0:
            if truncated:
                self.reject(s, "truncated")
                return True
            return False
        labels = re.findall(r'"(?:label|class|category|sentiment)"\s*:\s*"?([^",}\n]*)', s, re.IGNORECASE)
        for i in range(n):
            fields = {f: per_field[f][i] for f in t.fields}
            label = labels[i] if i < len(labels) else None
            self.add(fields, fields, label)
        return True

    def from_plain(self, s: str, per_request: int) -> None:
        lines = _strip_wrapping(s.splitlines())
        body = "\n".join(lines).strip()
        if not body:
            return self.reject(s, "refusal" if _REFUSAL.match(s) or _AS_AN_AI.match(s) else "empty")
        if _REFUSAL.match(body) and len(body) < 400:
            return self.reject(s, "refusal")
        if self._key_blocks(lines):
            return None
        if per_request > 1 and self._list_items(lines):
            return None
        label = None
        last = lines[-1] if lines else ""
        m = _LABEL_INLINE.search(last)
        if m and len(lines) > 1 and _KEY_LINE.match(last):
            label, lines = m.group("label"), lines[:-1]
        elif m and m.start() > 0:
            label, lines = m.group("label"), [*lines[:-1], last[: m.start()]]
        text = "\n".join(lines).strip()
        if self.task.is_pair or not any(ch.isalpha() for ch in text):
            return self.reject(s, "unparseable")
        return self.add(s, {self.task.fields[0]: _strip_key_prefix(text)}, label)

    def _key_blocks(self, lines: list[str]) -> bool:
        """``Text: ... / Label: ...`` blocks (one key per line, values may continue on later lines)."""
        t = self.task
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
                self.reject(json.dumps(fields, ensure_ascii=False), "missing_field")
            else:
                self.add(json.dumps({**fields, "label": lab}, ensure_ascii=False), fields, lab)
        return True

    def _list_items(self, lines: list[str]) -> bool:
        items: list[str] = []
        for line in lines:
            m = _LIST_ITEM.match(line)
            if m:
                items.append(m.group("val"))
            elif items and line.strip():
                items[-1] += "\n" + line.strip()
        if len(items) < 2 or self.task.is_pair:
            return False
        for raw in items:
            label = None
            m = _LABEL_INLINE.search(raw)
            if m and m.start() > 0:
                label, raw = m.group("label"), raw[: m.start()]
            self.add(raw, {self.task.fields[0]: _strip_key_prefix(raw)}, label)
        return True


def _unescape(v: str) -> str:
    try:
        out: str = json.loads(f'"{v}"')
        return out
    except ValueError:
        return v


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


@functools.lru_cache(maxsize=64)
def _exact_keys(task: Task) -> frozenset[str]:
    return frozenset((*task.fields, "label"))


def _fast_path(parser: _Parser, s: str, task: Task) -> bool:
    """The common reply under a JSON schema: one object with exactly the task's fields and ``label``, all strings.

    Validated like any other item; returns False (nothing done) for anything else, which takes the general path.
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
    parser.add(value, {f: value[f] for f in task.fields}, value["label"])
    return True


def parse_completion(text: str, task: Task, *, expected_label: str | None, per_request: int = 1) -> ParseResult:
    """Turn one model reply into examples; everything unusable becomes a (raw, reason) reject. Never raises."""
    parser = _Parser(task, expected_label)
    try:
        s = (text or "").strip()
        if not s:
            parser.reject(text or "", "empty")
            return parser.result
        if s[0] == "{" and s[-1] == "}" and _fast_path(parser, s, task):
            return parser.result
        value = extract_json(s)
        if value is not None and any(isinstance(c, dict | str) for c in _candidates(value)):
            parser.from_json(value)
        elif '"' in s and ("{" in s) and parser.from_broken_json(s):
            pass
        else:
            parser.from_plain(s, per_request)
        if not parser.result.items and not parser.result.rejects:
            parser.reject(s, "unparseable")
    except Exception:  # noqa: BLE001 - the contract: model text never raises; the reason makes our bug visible
        return ParseResult(rejects=[(text, "parser_error")])
    return parser.result
