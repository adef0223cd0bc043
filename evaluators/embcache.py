"""The embedding cache: vectors on disk keyed by (model variant, sha256 of the text), one sqlite file per variant.

The one cache of embeddings: :class:`evaluators.encoder.Encoder` reads and writes
it, so every command (``eval``, ``run``, ``experiment``, ``inspect``) re-embeds
a text at most once per variant.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache"]

_CACHE_CHUNK = 500


class EmbeddingCache:
    """Embeddings on disk, keyed by (model variant, sha256 of the text); one sqlite file per variant."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self._db = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (h BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CACHE_CHUNK):
            chunk = unique[start : start + _CACHE_CHUNK]
            marks = ",".join("?" * len(chunk))
            for h, v in self._db.execute(f"SELECT h, v FROM emb WHERE h IN ({marks})", chunk):
                vec = np.frombuffer(v, dtype=np.float32)
                if vec.shape == (self.dim,):
                    found[h] = vec
        return found

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in zip(keys, vectors, strict=True)]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO emb (h, v) VALUES (?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
