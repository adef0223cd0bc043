"""Text normalisation and the exact-duplicate key.

Two texts that differ only in Unicode form, case, punctuation or spacing
normalise to the same string and therefore share an exact key. The
normalised text is also what :mod:`engine.dedup.shingle` cuts into shingles.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["exact_key", "normalize"]

# Apostrophes vanish ("don't" == "dont"); every other non-word character
# (punctuation, symbols, emoji) becomes a space, so "state-of-the-art" reads
# as four words rather than one.
_APOSTROPHES = re.compile(r"['\u2019\u02bc`]")
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, lower case, punctuation stripped, whitespace collapsed to single spaces.

    A text made only of punctuation or symbols would normalise to ``""`` and
    collide with every other such text, so it falls back to its NFKC,
    lower-cased, whitespace-collapsed form instead.
    """
    folded = unicodedata.normalize("NFKC", text).lower()
    stripped = _NON_WORD.sub(" ", _APOSTROPHES.sub("", folded))
    out = _SPACES.sub(" ", stripped).strip()
    if out:
        return out
    return _SPACES.sub(" ", folded).strip()


def exact_key(text: str, *, normalized: bool = False) -> int:
    """A 64-bit key (blake2b, 8 bytes) of the normalised text; pass ``normalized=True`` if it already is."""
    norm = text if normalized else normalize(text)
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "little")
