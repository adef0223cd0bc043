"""The vocabulary of model replies: field and label key aliases, and the patterns of prose around examples."""

from __future__ import annotations

import re

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
_WRAP_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
_LABEL_INLINE = re.compile(r"\(?\s*(?:\*\*)?label(?:\*\*)?\s*[:=]\s*(?P<label>[^)\n]+?)\s*\)?\s*$", re.IGNORECASE)
_WS_LABEL = re.compile(r"[\s\-/]+")
