"""The embedding step of ``eval``/``experiment`` on Ray Data: the texts the cache lacks, embedded by an actor pool.

::

    driver: Encoder.embed ─ cache hits (sqlite) ─► kept
                          └ misses, de-duplicated ─► sorted by length ─► blocks of ACTOR_BATCH texts
                              ─► actor pool: Encoder.embed on length-sorted batches (cache off), model loaded once
                              ─► vectors stream back ─► driver writes them to the cache (the only writer)

:class:`RayEncoder` is an :class:`~evaluators.encoder.Encoder` whose uncached
texts go to the connected Ray cluster instead of the local session: the cache
lookups, the de-duplication of identical texts and the single cache write stay
in :meth:`Encoder.embed`, in the driver, so no worker ever opens the cache and a
text found there is never sent. Each actor loads the driver's encoder files
(same variant, same export) once, with ``threads`` onnxruntime threads, and
embeds its blocks exactly as the single-machine encoder does; the driver sorts
the texts by length first, so every block holds texts of similar length and pads
little. Vectors equal the single-machine ones up to float rounding (the padding
of a batch differs). Ray is imported only when a pass runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .encoder import Encoder, ProgressFn

__all__ = ["ACTOR_BATCH", "RayEmbedStats", "RayEncoder", "ray_embed"]

#: Texts per block handed to an actor; the actor sorts them by tokens and runs ``batch_size`` at a time.
ACTOR_BATCH = 1024

Batch = dict[str, NDArray[Any]]


@dataclass(slots=True)
class RayEmbedStats:
    """What the Ray-backed encoder did: texts asked for, texts sent to Ray, Ray passes run, actors per pass."""

    asked: int = 0
    embedded: int = 0
    passes: int = 0
    actors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"asked": self.asked, "embedded_on_ray": self.embedded, "passes": self.passes, "actors": self.actors}


class _Embedder:
    """One actor: the encoder loaded once (no cache), then block after block."""

    def __init__(self, root: str, variant: str, threads: int, batch_size: int) -> None:
        self.encoder = Encoder.load(variant, cache=False, threads=threads, root=Path(root))
        self.batch_size = batch_size

    def __call__(self, batch: Batch) -> Batch:
        texts = [str(t) for t in batch["text"].tolist()]
        return {"i": batch["i"], "emb": self.encoder.embed(texts, self.batch_size)}


def ray_embed(
    texts: list[str],
    *,
    root: Path,
    variant: str,
    dim: int,
    batch_size: int = 64,
    actors: int = 1,
    threads: int = 1,
    block: int = ACTOR_BATCH,
    step: Callable[[int, int], object] | None = None,
) -> NDArray[np.float32]:
    """Embed ``texts`` (in order) on the connected cluster with ``actors`` actors loading the export under ``root``.

    The texts go to the actors ``block`` at a time; ``step(done, total)`` is called as vectors come back.
    """
    import pyarrow as pa
    import ray.data as rd

    from engine.dedup.ray_dedup import one_line

    total = len(texts)
    out = np.zeros((total, dim), dtype=np.float32)
    if total == 0:
        return out
    block = max(1, min(block, -(-total // actors)))  # small inputs still reach every actor
    order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=total), kind="stable")
    blocks = [
        pa.table({"i": order[s : s + block], "text": pa.array([texts[i] for i in order[s : s + block]])})
        for s in range(0, total, block)
    ]
    done = 0
    try:
        vectors = rd.from_arrow(blocks).map_batches(
            _Embedder,
            batch_size=block,
            batch_format="numpy",
            fn_constructor_kwargs={"root": str(root), "variant": variant, "threads": threads, "batch_size": batch_size},
            compute=rd.ActorPoolStrategy(size=min(actors, len(blocks))),
            num_cpus=threads,
        )
        for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
            index = np.asarray(batch["i"], dtype=np.int64)
            out[index] = np.asarray(batch["emb"], dtype=np.float32)
            done += len(index)
            if step is not None:
                step(done, total)
    except BaseException as exc:
        err = one_line(exc)
        if err is exc:
            raise
        raise err from exc
    return out


class RayEncoder(Encoder):
    """An :class:`Encoder` whose uncached texts are embedded on Ray (see the module doc); counts in ``stats``."""

    actors: int
    threads: int
    block: int
    stats: RayEmbedStats

    @classmethod
    def attach(
        cls, encoder: Encoder, *, actors: int | None = None, threads: int = 1, block: int = ACTOR_BATCH
    ) -> RayEncoder:
        """``encoder`` (its files, variant and cache) sending its misses to the connected cluster.

        ``actors`` defaults to one per cluster CPU divided by ``threads``; ``block`` texts go to an actor at a time.
        """
        from engine.ray_cluster import cluster_cpus

        ray_encoder = cls(
            encoder.session,
            encoder.tokenizer,
            variant=encoder.variant,
            dim=encoder.dim,
            max_seq_length=encoder.max_seq_length,
            directory=encoder.directory,
            cache=encoder.cache,
        )
        ray_encoder.threads = threads
        ray_encoder.block = block
        ray_encoder.actors = actors or max(1, cluster_cpus() // max(1, threads))
        ray_encoder.stats = RayEmbedStats(actors=ray_encoder.actors)
        return ray_encoder

    def embed(self, texts: list[str], batch_size: int = 64, progress: ProgressFn | None = None) -> np.ndarray:
        self.stats.asked += len(texts)
        return super().embed(texts, batch_size, progress)

    def _embed_uncached(self, texts: list[str], batch_size: int, step: Callable[[int], object]) -> np.ndarray:
        self.stats.passes += 1
        self.stats.embedded += len(texts)
        return ray_embed(
            texts,
            root=self.directory.parent,
            variant=self.variant,
            dim=self.dim,
            batch_size=batch_size,
            actors=self.actors,
            threads=self.threads,
            block=self.block,
            step=lambda done, _total: step(done),
        )
