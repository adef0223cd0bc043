"""The cluster run's output: the shards' data merged in shard order, cross-shard near-duplicates dropped.

The pass is the single-machine filter's (``engine.dedup.DedupFilter``, greedy:
an example is dropped if it is an exact or near-duplicate of one kept before
it), over the shards' ``data.jsonl`` in shard order, then the top-up rounds.
Each shard already filtered itself, so only pairs across shards are found here.
Quotas are enforced last (a label never gets more than its quota), so the
merged file holds exactly N when nothing was dropped; the driver tops up
otherwise. Files are written whole and renamed into place: a merge killed
half way leaves the previous merge (or none), never a torn file.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dedup import DedupConfig, DedupFilter
from ..store import DATA, REJECTS, read_jsonl
from ..types import Example

__all__ = ["MergeResult", "merge"]

CHUNK = 4096


@dataclass(slots=True)
class MergeResult:
    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    #: Examples per shard directory that made it into the merged file.
    per_part: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.kept.values())


def _chunks(path: Path, field_names: Sequence[str]) -> Iterable[list[tuple[dict[str, Any], Example]]]:
    seen: set[str] = set()
    out: list[tuple[dict[str, Any], Example]] = []
    for row in read_jsonl(path):
        rid = str(row.get("id", ""))
        if rid in seen:  # a resumed shard's torn duplicate: the store counts the first only
            continue
        seen.add(rid)
        out.append((row, Example.from_dict(row, list(field_names))))
        if len(out) >= CHUNK:
            yield out
            out = []
    if out:
        yield out


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

    ``quota`` is the run's per-label quota (``balance``) or ``{"": N}`` for an unbalanced run.
    ``references``: also write the kept texts there (what a top-up round must not repeat).
    """
    result = MergeResult()
    filt = DedupFilter(dedup) if dedup is not None else None
    total = sum(quota.values())
    tmp_data = out_dir / f".{DATA}.tmp"
    tmp_rejects = out_dir / f".{REJECTS}.tmp"
    tmp_refs = references.with_name(f".{references.name}.tmp") if references is not None else None
    with (
        open(tmp_data, "w", encoding="utf-8") as data,
        open(tmp_rejects, "w", encoding="utf-8") as rejects,
        open(tmp_refs, "w", encoding="utf-8") if tmp_refs is not None else open(os.devnull, "w") as refs,
    ):
        for part in parts:
            kept_here = 0
            for chunk in _chunks(part / DATA, field_names):
                verdicts = filt.check_batch([ex for _, ex in chunk]) if filt is not None else [None] * len(chunk)
                for (row, ex), reason in zip(chunk, verdicts, strict=True):
                    if reason is None:
                        full = result.kept[ex.label] >= quota.get(ex.label, 0) if balance else result.total >= total
                        reason = "surplus" if full else None
                    if reason is not None:
                        result.dropped[reason] += 1
                        rejects.write(json.dumps({**row, "reason": f"cross_shard:{reason}"}) + "\n")
                        continue
                    result.kept[ex.label] += 1
                    kept_here += 1
                    data.write(json.dumps(row, ensure_ascii=False) + "\n")
                    refs.write(json.dumps({"text": ex.text}, ensure_ascii=False) + "\n")
            result.per_part[part.name] = kept_here
        for f in (data, rejects, refs) if tmp_refs is not None else (data, rejects):
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp_data, out_dir / DATA)
    os.replace(tmp_rejects, out_dir / REJECTS)
    if tmp_refs is not None and references is not None:
        os.replace(tmp_refs, references)
    return result
