"""The cluster run's output: the shards' data merged in shard order, cross-shard near-duplicates dropped.

Two passes::

    shards' data.jsonl ─► the Ray Data dedup pass (engine.dedup.ray_dedup, components) ─► OUT/shards/merged/
                       ─► in shard order: quotas (a label never gets more than its quota) ─► OUT/data.jsonl

The dedup pass runs on the cluster, so no process holds every signature: it
keeps the first example of each group of near-duplicates, in shard order
(then the top-up rounds). Each shard already filtered itself (greedy), so
only pairs across shards are found there. A dropped example goes to
``OUT/rejects.jsonl`` as ``cross_shard:near_duplicate`` (or ``exact_duplicate``)
with ``duplicate_of``, the id of the example kept in its place. The merged
file holds exactly N when nothing was dropped; the driver tops up otherwise.
Files are written whole and renamed into place: a merge killed half way leaves
the previous merge (or none), never a torn file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dedup import DedupConfig
from ..store import DATA, REJECTS, read_jsonl
from ..types import Example

__all__ = ["MERGED_DIR", "MergeResult", "merge"]

#: The dedup pass's output, under ``OUT/shards/``.
MERGED_DIR = "merged"


@dataclass(slots=True)
class MergeResult:
    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    #: Examples per shard directory that made it into the merged file.
    per_part: dict[str, int] = field(default_factory=dict)
    #: The dedup pass: near-duplicate pairs verified, component rounds (0 without dedup).
    edges: int = 0
    rounds: int = 0

    @property
    def total(self) -> int:
        return sum(self.kept.values())


@dataclass(frozen=True, slots=True)
class _Source:
    """One shard's rows as the quota pass reads them: kept by the dedup pass, and those it dropped."""

    name: str
    kept: Path | None
    dropped: Path | None


def _dedup_pass(
    parts: Sequence[Path], scratch: Path, *, dedup: DedupConfig, field_names: Sequence[str]
) -> tuple[list[_Source], int, int]:
    """Run the Ray Data pass over the shards that hold data; ``(sources in shard order, edges, rounds)``."""
    from ..dedup.ray_dedup import ray_dedup
    from ..dedup.ray_write import DROPPED, part_name
    from ..dedup.records import Part

    for stale in scratch.parent.glob(f".{scratch.name}.*"):  # a killed merge's temporary folders (the run is locked)
        shutil.rmtree(stale, ignore_errors=True)
    present = [p for p in parts if (p / DATA).is_file() and (p / DATA).stat().st_size]
    if not present:
        return [_Source(p.name, None, None) for p in parts], 0, 0
    columns = ("id", "label", *field_names)
    result = ray_dedup(
        [Part(p / DATA, "jsonl", columns) for p in present], fields=field_names, out=scratch, fmt="jsonl", config=dedup
    )
    index = {p: i for i, p in enumerate(present)}
    sources = []
    for p in parts:
        i = index.get(p)
        if i is None:
            sources.append(_Source(p.name, None, None))
        else:
            sources.append(_Source(p.name, scratch / part_name(i, "jsonl"), scratch / DROPPED / part_name(i, "jsonl")))
    return sources, result.edges, result.rounds


def _rows(path: Path | None) -> Iterator[dict[str, Any]]:
    if path is not None and path.is_file():
        yield from read_jsonl(path)


def _unique(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows with an id not seen before (a resumed shard's torn duplicate: the store counts the first only)."""
    seen: set[str] = set()
    for row in rows:
        rid = str(row.get("id", ""))
        if rid not in seen:
            seen.add(rid)
            yield row


def merge(
    parts: Sequence[Path],
    out_dir: Path,
    *,
    quota: Mapping[str, int],
    balance: bool,
    dedup: DedupConfig | None,
    field_names: Sequence[str],
    references: Path | None = None,
) -> MergeResult:
    """Merge ``parts`` (shard run directories, in order) into ``out_dir/data.jsonl`` (see the module doc).

    ``quota`` is the run's per-label quota (``balance``) or ``{"": N}`` for an unbalanced run. The dedup pass needs a
    connected Ray cluster and writes to ``out_dir/shards/merged``.
    ``references``: also write the kept texts there (what a top-up round must not repeat).
    """
    result = MergeResult()
    if dedup is not None:
        sources, result.edges, result.rounds = _dedup_pass(
            parts, out_dir / "shards" / MERGED_DIR, dedup=dedup, field_names=field_names
        )
    else:
        sources = [_Source(p.name, p / DATA, None) for p in parts]
    total = sum(quota.values())
    tmp_data = out_dir / f".{DATA}.tmp"
    tmp_rejects = out_dir / f".{REJECTS}.tmp"
    tmp_refs = references.with_name(f".{references.name}.tmp") if references is not None else None
    with (
        open(tmp_data, "w", encoding="utf-8") as data,
        open(tmp_rejects, "w", encoding="utf-8") as rejects,
        open(tmp_refs, "w", encoding="utf-8") if tmp_refs is not None else open(os.devnull, "w") as refs,
    ):
        for source in sources:
            kept_here = 0
            for row in _unique(_rows(source.kept)):
                label = str(row.get("label", ""))
                full = result.kept[label] >= quota.get(label, 0) if balance else result.total >= total
                if full:
                    result.dropped["surplus"] += 1
                    rejects.write(json.dumps({**row, "reason": "cross_shard:surplus"}, ensure_ascii=False) + "\n")
                    continue
                result.kept[label] += 1
                kept_here += 1
                data.write(json.dumps(row, ensure_ascii=False) + "\n")
                text = Example.from_dict(row, list(field_names)).text
                refs.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            for entry in _rows(source.dropped):
                row, twin = entry["record"], str(entry["duplicate_of"])
                if str(row.get("id", "")) == twin:
                    continue  # a torn duplicate line of the example itself, not a second example
                result.dropped[entry["reason"]] += 1
                reject = {**row, "reason": f"cross_shard:{entry['reason']}", "duplicate_of": twin}
                rejects.write(json.dumps(reject, ensure_ascii=False) + "\n")
            result.per_part[source.name] = kept_here
        for f in (data, rejects, refs) if tmp_refs is not None else (data, rejects):
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp_data, out_dir / DATA)
    os.replace(tmp_rejects, out_dir / REJECTS)
    if tmp_refs is not None and references is not None:
        os.replace(tmp_refs, references)
    return result
