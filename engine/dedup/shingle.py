"""Shingling for short and long texts, hashed to uint32 for a whole batch at once.

The choice (``mode="auto"``, the default):

* **Short texts** (fewer than ``long_text_words`` words: sentences, tweets,
  reviews) become **character 5-grams** of the normalised text. A 12-word
  tweet has about 60 of them, so changing, adding or removing one word still
  leaves a Jaccard similarity around 0.7-0.8 with the original, whereas word
  n-grams of a 12-word text fall apart (one changed word kills three of ten
  word 3-grams). Character grams also shrug off typos and spelling variants.
* **Long texts** (news articles, essays) become **word 3-grams**: an edit
  touches three of several hundred shingles, the similarity of unrelated
  articles on the same topic stays near zero, and there are five times fewer
  shingles to hash than with character grams.

A text shorter than one n-gram is a single shingle (the whole text).

Limitation of ``auto``: two near-copies on either side of ``long_text_words``
are compared in different shingle spaces and will not match. Pass
``mode="char"`` to use character grams for everything (slower on long texts).

Hashing is vectorised: each window of n values (code points, or word hashes)
is combined with fixed odd 64-bit multipliers, passed through the 64-bit
MurmurHash3 finaliser and truncated to 32 bits. The constants come from a
splitmix64 sequence written out here, so hashes are stable across platforms,
processes and numpy versions (unlike Python's salted ``hash``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_CHAR_NGRAM",
    "DEFAULT_LONG_TEXT_WORDS",
    "DEFAULT_WORD_NGRAM",
    "ShingleBatch",
    "ShingleMode",
    "shingle_batch",
    "shingle_strings",
]

DEFAULT_CHAR_NGRAM = 5
DEFAULT_WORD_NGRAM = 3
#: Texts with at least this many words use word n-grams in ``auto`` mode.
DEFAULT_LONG_TEXT_WORDS = 64

ShingleMode = Literal["auto", "char", "word"]

U64 = NDArray[np.uint64]


def _splitmix64(seed: int, n: int) -> list[int]:
    out, state, mask = [], seed, (1 << 64) - 1
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append((z ^ (z >> 31)) | 1)  # odd multipliers
    return out


_MAX_N = 16
_CHAR_MULT = np.array(_splitmix64(0xC4A2, _MAX_N), dtype=np.uint64)
_WORD_MULT = np.array(_splitmix64(0x3042D, _MAX_N), dtype=np.uint64)
_TOKEN_BASE = np.uint64(_splitmix64(0x70CE2, 1)[0])


def _fmix64(h: U64) -> U64:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


@dataclass(slots=True)
class ShingleBatch:
    """Shingle hashes of several documents: document ``i`` owns ``hashes[offsets[i]:offsets[i+1]]``.

    Every document has at least one shingle, so ``np.minimum.reduceat`` over
    ``offsets[:-1]`` is always well defined.
    """

    hashes: NDArray[np.uint32]
    offsets: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def doc(self, i: int) -> NDArray[np.uint32]:
        return self.hashes[self.offsets[i] : self.offsets[i + 1]]


def _windows(
    values: U64, lengths: NDArray[np.int64], n: int, mult: U64
) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Hash every window of ``n`` consecutive values inside each document (one window if shorter)."""
    counts = np.maximum(lengths - n + 1, 1)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    win_doc = np.repeat(np.arange(len(lengths)), counts)
    first_win = np.cumsum(counts) - counts
    pos = starts[win_doc] + (np.arange(int(counts.sum())) - first_win[win_doc])
    end = ends[win_doc]
    padded = np.concatenate([values, np.zeros(n, dtype=np.uint64)])
    acc = np.zeros(len(pos), dtype=np.uint64)
    for j in range(n):
        idx = pos + j
        acc += np.where(idx < end, padded[idx], np.uint64(0)) * mult[j]
    return (_fmix64(acc) >> np.uint64(32)).astype(np.uint32), counts.astype(np.int64)


def _codepoints(text: str) -> U64:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) + np.uint64(1)


def _char_shingles(texts: Sequence[str], n: int) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    return _windows(_codepoints("".join(texts)), lengths, n, _CHAR_MULT)


def _word_shingles(texts: Sequence[str], n: int) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    # Normalised texts hold single spaces between words and none at the ends.
    lengths = np.fromiter((t.count(" ") + 1 if t else 0 for t in texts), dtype=np.int64, count=len(texts))
    cps = _codepoints(" ".join(t for t in texts if t))
    if cps.size == 0:
        return _windows(np.zeros(0, dtype=np.uint64), lengths, n, _WORD_MULT)
    is_space = cps == np.uint64(33)  # code point of " " plus one
    chars = np.flatnonzero(~is_space)
    is_start = ~is_space & np.concatenate([[True], is_space[:-1]])
    tok_start = np.flatnonzero(is_start)
    tok_of_char = np.cumsum(is_start)[chars] - 1
    pos_in_tok = chars - tok_start[tok_of_char]
    powers = np.cumprod(np.full(int(pos_in_tok.max()) + 1, _TOKEN_BASE, dtype=np.uint64))
    weighted = cps[chars] * powers[pos_in_tok]
    tokens = _fmix64(np.add.reduceat(weighted, np.searchsorted(chars, tok_start)))
    return _windows(tokens, lengths, n, _WORD_MULT)


def _is_long(text: str, long_text_words: int) -> bool:
    return text.count(" ") + 1 >= long_text_words


def shingle_batch(
    texts: Sequence[str],
    *,
    mode: ShingleMode = "auto",
    char_ngram: int = DEFAULT_CHAR_NGRAM,
    word_ngram: int = DEFAULT_WORD_NGRAM,
    long_text_words: int = DEFAULT_LONG_TEXT_WORDS,
) -> ShingleBatch:
    """Shingle hashes of already-normalised ``texts`` (see :func:`engine.dedup.normalize`)."""
    if not 1 <= char_ngram <= _MAX_N or not 1 <= word_ngram <= _MAX_N:
        raise ValueError(f"n-gram sizes must be in 1..{_MAX_N}")
    if mode == "char":
        hashes, counts = _char_shingles(texts, char_ngram)
    elif mode == "word":
        hashes, counts = _word_shingles(texts, word_ngram)
    else:
        long = np.fromiter((_is_long(t, long_text_words) for t in texts), dtype=bool, count=len(texts))
        long_idx, short_idx = np.flatnonzero(long), np.flatnonzero(~long)
        if not len(long_idx):
            hashes, counts = _char_shingles(texts, char_ngram)
        elif not len(short_idx):
            hashes, counts = _word_shingles(texts, word_ngram)
        else:
            hs, cs = _char_shingles([texts[int(i)] for i in short_idx], char_ngram)
            hl, cl = _word_shingles([texts[int(i)] for i in long_idx], word_ngram)
            hashes, counts = _interleave(len(texts), (short_idx, hs, cs), (long_idx, hl, cl))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return ShingleBatch(hashes=hashes, offsets=offsets)


def _interleave(
    n_docs: int, *groups: tuple[NDArray[np.intp], NDArray[np.uint32], NDArray[np.int64]]
) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Merge per-group shingle runs back into document order."""
    counts = np.zeros(n_docs, dtype=np.int64)
    src_start = np.zeros(n_docs, dtype=np.int64)
    pieces, base = [], 0
    for idx, hashes, group_counts in groups:
        counts[idx] = group_counts
        src_start[idx] = base + np.cumsum(group_counts) - group_counts
        pieces.append(hashes)
        base += len(hashes)
    merged = np.concatenate(pieces)
    dst_start = np.cumsum(counts) - counts
    src = np.repeat(src_start - dst_start, counts) + np.arange(int(counts.sum()))
    return merged[src], counts


def shingle_strings(
    text: str,
    *,
    mode: ShingleMode = "auto",
    char_ngram: int = DEFAULT_CHAR_NGRAM,
    word_ngram: int = DEFAULT_WORD_NGRAM,
    long_text_words: int = DEFAULT_LONG_TEXT_WORDS,
) -> list[str]:
    """The same shingles as :func:`shingle_batch`, as strings and in the same order.

    For the datasketch baseline and for tests; the hot path never builds these.
    """
    word = mode == "word" or (mode == "auto" and _is_long(text, long_text_words))
    if word:
        words = text.split(" ") if text else []
        if len(words) <= word_ngram:
            return [" ".join(words)]
        return [" ".join(words[i : i + word_ngram]) for i in range(len(words) - word_ngram + 1)]
    if len(text) <= char_ngram:
        return [text]
    return [text[i : i + char_ngram] for i in range(len(text) - char_ngram + 1)]
