"""What the simulator says: plausible random sentences and JSON that conforms to a schema.

The vocabulary is built once, deterministically, from syllables (no files, no
downloads), large enough that two random texts share few words. A schema is
compiled once into a tree of small generator closures and cached by its JSON
text, so the hot path never walks a schema twice.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_WORDS", "MIN_WORDS", "VOCABULARY", "TextSource", "compile_schema"]

MIN_WORDS = 12
MAX_WORDS = 40
_VOCAB_SIZE = 3000
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "st", "tr")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "n", "r", "s", "t", "l", "m", "nd", "st")


def _build_vocabulary(size: int) -> tuple[str, ...]:
    rng = random.Random(20240501)
    words: set[str] = set()
    while len(words) < size:
        n = rng.choice((1, 2, 2, 3))
        words.add("".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS) for _ in range(n)))
    return tuple(sorted(words))


VOCABULARY = _build_vocabulary(_VOCAB_SIZE)

Gen = Callable[[], Any]


class TextSource:
    """Random sentences, some of them planted near-duplicates of earlier ones.

    With probability ``dup_rate`` a text is an earlier text (from a bounded ring
    of recent ones) with its last word replaced or one word inserted before it: a
    one-word edit at the end, the near-duplicate a MinHash filter should catch.
    """

    def __init__(self, rng: random.Random, *, dup_rate: float = 0.0, ring: int = 1024) -> None:
        self.rng = rng
        self.dup_rate = dup_rate
        self.recent: deque[str] = deque(maxlen=ring)
        self.planted = 0

    def sentence(self) -> str:
        rng = self.rng
        if self.dup_rate and self.recent and rng.random() < self.dup_rate:
            self.planted += 1
            return self._near_duplicate(rng.choice(self.recent))
        words = rng.choices(VOCABULARY, k=rng.randint(MIN_WORDS, MAX_WORDS))
        text = " ".join(words).capitalize() + "."
        self.recent.append(text)
        return text

    def _near_duplicate(self, text: str) -> str:
        words = text[:-1].split(" ")
        new = self.rng.choice(VOCABULARY)
        if self.rng.random() < 0.5:
            words[-1] = new if new != words[-1] else new + "s"
        else:
            words.insert(len(words) - 1, new)
        return " ".join(words) + "."


def compile_schema(schema: dict[str, Any], text: TextSource) -> Gen:
    """A zero-argument function producing random values that conform to ``schema``.

    Supports ``type`` object (all properties emitted, so ``required`` holds),
    array (``items``, ``minItems``, ``maxItems``), string (``enum`` drawn
    uniformly, else a sentence), integer, number, boolean, null, plus ``enum``
    and ``const`` on any node and ``anyOf``/``oneOf`` (first branch).
    """
    rng = text.rng
    if "const" in schema:
        const = schema["const"]
        return lambda: const
    if "enum" in schema:
        choices = list(schema["enum"])
        if not choices:
            raise ValueError("enum must not be empty")
        return lambda: rng.choice(choices)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return compile_schema(schema[key][0], text)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = [(name, compile_schema(sub, text)) for name, sub in schema.get("properties", {}).items()]
        return lambda: {name: gen() for name, gen in props}
    if kind == "array":
        item = compile_schema(schema.get("items", {"type": "string"}), text)
        lo = int(schema.get("minItems", 1))
        hi = int(schema.get("maxItems", max(lo, 3)))
        return lambda: [item() for _ in range(rng.randint(lo, hi))]
    if kind == "string":
        return text.sentence
    if kind == "integer":
        ilo, ihi = int(schema.get("minimum", 0)), int(schema.get("maximum", 100))
        return lambda: rng.randint(ilo, ihi)
    if kind == "number":
        flo, fhi = float(schema.get("minimum", 0.0)), float(schema.get("maximum", 1.0))
        return lambda: round(rng.uniform(flo, fhi), 4)
    if kind == "boolean":
        return lambda: rng.random() < 0.5
    if kind == "null":
        return lambda: None
    raise ValueError(f"unsupported schema type {kind!r}")


class SchemaCache:
    """Compiled generators keyed by the schema's JSON text."""

    def __init__(self, text: TextSource) -> None:
        self.text = text
        self._cache: dict[str, Gen] = {}

    def get(self, schema: dict[str, Any]) -> Gen:
        key = json.dumps(schema, sort_keys=True)
        gen = self._cache.get(key)
        if gen is None:
            gen = self._cache[key] = compile_schema(schema, self.text)
        return gen
