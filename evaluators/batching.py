"""Tokenizing and batching: texts sorted by length so each batch is padded only to its longest member.

Texts are tokenized with the packaged fast tokenizer (truncated at the model's
``max_seq_length``, 256) and put back in order after the run. A batch holds at
most ``batch_size`` texts and ``MAX_BATCH_TOKENS`` padded tokens: long texts go
in smaller batches, whose attention tensors stay in cache (measured faster for
PyTorch too).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_BATCH_TOKENS", "Tokenized", "load_tokenizer", "tokenize"]

#: Padded tokens per batch at most (16 texts of 256 tokens); short texts still go ``batch_size`` at a time.
MAX_BATCH_TOKENS = 4096


class Tokenized:
    """Token ids of many texts, unpadded; ``batches`` pads length-sorted slices of them."""

    def __init__(self, ids: list[list[int]]) -> None:
        self.ids = ids
        self.order = np.argsort(np.array([len(x) for x in ids], dtype=np.int64), kind="stable")

    def __len__(self) -> int:
        return len(self.ids)

    def batches(
        self, batch_size: int, max_tokens: int = MAX_BATCH_TOKENS
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Yield ``(positions, feeds)``: positions index the original texts.

        A batch holds at most ``batch_size`` texts and ``max_tokens`` padded tokens (at least one text).
        """
        lengths = [len(self.ids[i]) for i in self.order]
        start, total = 0, len(self.ids)
        while start < total:
            end = start + 1
            # sorted ascending: the text added last is the widest, so the batch's padded size is count * its length
            while end < total and end - start < batch_size and (end - start + 1) * lengths[end] <= max_tokens:
                end += 1
            pos = self.order[start:end]
            start = end
            rows = [self.ids[i] for i in pos]
            width = max(len(r) for r in rows)
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, r in enumerate(rows):
                input_ids[j, : len(r)] = r
                mask[j, : len(r)] = 1
            yield pos, {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}


def load_tokenizer(directory: Path, max_seq_length: int) -> Any:
    """The fast tokenizer from ``directory/tokenizer.json``, truncating at ``max_seq_length``, never padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tok.no_padding()  # the packaged file pads to 128; we pad per batch
    tok.enable_truncation(max_length=max_seq_length)
    return tok


def tokenize(tokenizer: Any, texts: Sequence[str]) -> Tokenized:
    return Tokenized([e.ids for e in tokenizer.encode_batch(list(texts))])
