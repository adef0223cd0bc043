"""The sentence encoder: texts in, L2-normalised all-MiniLM-L6-v2 embeddings out, on CPU with onnxruntime.

The parts live in their own modules: :mod:`evaluators.export` (the ONNX export
and its variants), :mod:`evaluators.batching` (tokenizing, length-sorted
batches), :mod:`evaluators.runtime` (the onnxruntime session) and
:mod:`evaluators.embcache` (the on-disk embedding cache). This module joins
them into :class:`Encoder` and re-exports their public names, so existing
imports keep working. ``python -m evaluators.encoder`` prepares every variant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.assets import cache_dir

from .batching import MAX_BATCH_TOKENS, Tokenized, load_tokenizer, tokenize
from .embcache import EmbeddingCache
from .export import (
    DEFAULT_VARIANT,
    EMBEDDINGS_OUTPUT,
    MODEL_FILES,
    MODEL_NAME,
    TOKENIZER_FILES,
    VARIANT_HELP,
    VARIANTS,
    append_pooling,
    export_dir,
    export_key,
    ffn_down_projections,
    main,
    model_path,
    optimum_export,
    prune_stale,
    source_dir,
)
from .runtime import make_session, ort_session, run_session

__all__ = [
    "DEFAULT_VARIANT",
    "EMBEDDINGS_OUTPUT",
    "MAX_BATCH_TOKENS",
    "MODEL_NAME",
    "TOKENIZER_FILES",
    "VARIANTS",
    "VARIANT_HELP",
    "EmbeddingCache",
    "Encoder",
    "Tokenized",
    "append_pooling",
    "export_dir",
    "export_key",
    "ffn_down_projections",
    "join_fields",
    "load_tokenizer",
    "main",
    "make_session",
    "model_path",
    "optimum_export",
    "ort_session",
    "prune_stale",
    "run_session",
    "source_dir",
    "tokenize",
]

ProgressFn = Callable[[int, int], None]


def join_fields(fields: dict[str, str]) -> str:
    """The one string the encoder sees for a record's text fields.

    A single field is used as is; several (a premise and a hypothesis) are joined
    with a newline in the order given, the same form as ``Example.text``.
    """
    if len(fields) == 1:
        return next(iter(fields.values()))
    return "\n".join(fields.values())


class Encoder:
    """Texts in, L2-normalised sentence embeddings out, ``(n, dim)`` float32."""

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        *,
        variant: str,
        dim: int,
        max_seq_length: int,
        directory: Path,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.variant = variant
        self.dim = dim
        self.max_seq_length = max_seq_length
        self.directory = directory
        self.cache = cache

    @classmethod
    def load(
        cls,
        variant: str = DEFAULT_VARIANT,
        cache: bool = True,
        *,
        threads: int | None = None,
        root: Path | None = None,
        cache_root: Path | None = None,
    ) -> Encoder:
        """Load (exporting on first use) the ``variant`` encoder; ``cache`` turns the embedding cache on."""
        path = model_path(variant, root)
        directory = path.parent
        config = json.loads((directory / "encoder.json").read_text())
        dim, max_len = int(config["dim"]), int(config["max_seq_length"])
        emb_cache = None
        if cache:
            where = cache_root if cache_root is not None else cache_dir("embeddings")
            emb_cache = EmbeddingCache(where / f"{config['key']}-{variant}-{max_len}.sqlite", dim)
        return cls(
            ort_session(path, threads),
            load_tokenizer(directory, max_len),
            variant=variant,
            dim=dim,
            max_seq_length=max_len,
            directory=directory,
            cache=emb_cache,
        )

    @property
    def model_file(self) -> Path:
        return self.directory / MODEL_FILES[self.variant]

    def embed(self, texts: list[str], batch_size: int = 64, progress: ProgressFn | None = None) -> np.ndarray:
        """Embed ``texts`` in order; ``progress(done, total)`` is called after each batch."""
        total = len(texts)
        out = np.zeros((total, self.dim), dtype=np.float32)
        if total == 0:
            return out
        todo = list(range(total))
        keys: list[bytes] = []
        if self.cache is not None:
            keys = [EmbeddingCache.key(t) for t in texts]
            hits = self.cache.get(keys)
            todo = []
            for i, k in enumerate(keys):
                if k in hits:
                    out[i] = hits[k]
                else:
                    todo.append(i)
        done = total - len(todo)
        if progress is not None:
            progress(done, total)
        if todo:
            # Identical texts are embedded once.
            first: dict[str, int] = {}
            for i in todo:
                first.setdefault(texts[i], i)
            uniq = list(first)
            vecs = self._embed_uncached(uniq, batch_size, lambda n: progress(done + n, total) if progress else None)
            index = {t: j for j, t in enumerate(uniq)}
            for i in todo:
                out[i] = vecs[index[texts[i]]]
            if self.cache is not None:
                self.cache.put([keys[first[t]] for t in uniq], vecs)
            if progress is not None:
                progress(total, total)
        return out

    def _embed_uncached(self, texts: list[str], batch_size: int, step: Callable[[int], object]) -> np.ndarray:
        tokens = tokenize(self.tokenizer, texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        for pos, feeds in tokens.batches(batch_size):
            (emb,) = run_session(self.session, feeds, [EMBEDDINGS_OUTPUT])
            out[pos] = emb
            done += len(pos)
            step(done)
        return out

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


if __name__ == "__main__":
    sys.exit(main())
