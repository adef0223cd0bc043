"""``score --ray``: label corpus parts on Ray Data with a pool of actors that each load the classifier once.

::

    parts ─► rows (doc id, record as JSON, text) ─► actor pool: Classifier.predict_proba on length-sorted
          batches (evaluators/classifier.py, as `score` does) ─► shuffle by part ─► one JSONL part per input part

Each actor holds one onnxruntime session (``threads`` intra-op threads) for its
whole life, so the model is read once per actor, not once per batch. The
classifier graph includes the encoder: scoring never touches the embedding
cache, so no two processes write it (the cache itself is sqlite in WAL mode
with ``BEGIN IMMEDIATE`` writes, safe for several processes; tested).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from .dedup.records import Part, iter_rows

__all__ = ["MANIFEST", "ScoreResult", "ray_score"]

ROW_BITS = 40
MANIFEST = "_manifest.json"
READ_CHUNK = 4096
#: Texts handed to an actor per call; the classifier sorts them by length and runs ``batch_size`` at a time.
ACTOR_BATCH = 1024

Batch = dict[str, NDArray[Any]]


@dataclass(frozen=True, slots=True)
class ScoreResult:
    rows: int
    parts: int
    actors: int


def _read_parts(batch: Batch, *, fields: Sequence[str]) -> Iterator[Batch]:
    from evaluators.data import record_texts

    for index, path in zip(batch["part"].tolist(), batch["path"].tolist(), strict=True):
        row = 0
        for rows, _ in iter_rows(Path(path), READ_CHUNK):
            texts = record_texts(rows, fields)
            yield {
                "doc": np.arange(row, row + len(rows), dtype=np.uint64) | np.uint64(index << ROW_BITS),
                "part": np.full(len(rows), index, dtype=np.int64),
                "record": np.array([json.dumps(r, ensure_ascii=False, default=str) for r in rows], dtype=object),
                "text": np.array(texts, dtype=object),
            }
            row += len(rows)


def load_classifier(model: Path, threads: int | None) -> Any:
    """The saved classifier at ``model``: the one-graph encoder + head, or a fine-tuned model."""
    from evaluators.classifier import Classifier
    from evaluators.finetune import FinetunedClassifier

    if (model / "finetune.json").exists():  # written by `eval --finetune`
        return FinetunedClassifier.load(model)
    return Classifier.load(model, threads=threads)


class _Scorer:
    """One actor: the classifier loaded once, then batch after batch."""

    def __init__(self, model: str, threads: int, batch_size: int) -> None:
        self.classifier = load_classifier(Path(model), threads)
        self.batch_size = batch_size

    def __call__(self, batch: Batch) -> Batch:
        texts = [str(t) for t in batch["text"].tolist()]
        probs = np.asarray(self.classifier.predict_proba(texts, self.batch_size), dtype=np.float32)
        return {"doc": batch["doc"], "part": batch["part"], "record": batch["record"], "probs": probs}


def _write_part(batch: Batch, *, out: str, labels: Sequence[str]) -> Batch:
    order = np.argsort(np.asarray(batch["doc"], dtype=np.uint64), kind="stable")
    part = int(batch["part"][0])
    probs = np.asarray(batch["probs"])
    with (Path(out) / f"part-{part:05d}.jsonl").open("w", encoding="utf-8") as fh:
        for i in order.tolist():
            row = json.loads(batch["record"][i])
            p = probs[i]
            row["pred"] = labels[int(p.argmax())] if len(p) else ""
            row["probs"] = {label: round(float(v), 6) for label, v in zip(labels, p, strict=True)}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"part": np.array([part]), "rows": np.array([len(order)])}


def ray_score(
    parts: Sequence[Part],
    *,
    model: Path,
    fields: Sequence[str],
    out: Path,
    batch_size: int = 64,
    actors: int | None = None,
    threads: int = 1,
) -> ScoreResult:
    """Score every row of ``parts`` on the connected cluster; ``out`` gets one JSONL part per input part."""
    import ray.data as rd
    from ray.data.context import ShuffleStrategy

    from .dedup.ray_dedup import one_line
    from .ray_cluster import cluster_cpus
    from .staging import staged_dir

    labels = list(load_classifier(model, 1).labels)  # fail on a bad model before starting actors
    pool = actors or max(1, cluster_cpus() // max(1, threads))
    rd.DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    paths = [str(p.path) for p in parts]
    try:
        with staged_dir(out, marker=MANIFEST, what="score") as tmp:
            files = rd.from_items([{"part": i, "path": p} for i, p in enumerate(paths)], override_num_blocks=len(paths))
            written = (
                files.map_batches(
                    cast(Any, _read_parts), batch_size=1, batch_format="numpy", fn_kwargs={"fields": list(fields)}
                )
                .map_batches(
                    _Scorer,
                    batch_size=ACTOR_BATCH,
                    batch_format="numpy",
                    fn_constructor_kwargs={"model": str(model), "threads": threads, "batch_size": batch_size},
                    compute=rd.ActorPoolStrategy(size=pool),
                    num_cpus=threads,
                )
                .groupby("part", num_partitions=max(1, min(len(paths), 4 * pool)))
                .map_groups(cast(Any, _write_part), fn_kwargs={"out": str(tmp), "labels": labels}, batch_format="numpy")
                .take_all()
            )
            rows = sum(int(w["rows"]) for w in written)
            manifest = {"inputs": paths, "model": str(model), "fields": list(fields), "labels": labels, "rows": rows}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return ScoreResult(rows=rows, parts=len(written), actors=pool)
    except BaseException as exc:
        err = one_line(exc)
        if err is exc:
            raise
        raise err from exc
