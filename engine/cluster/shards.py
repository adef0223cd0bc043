"""What one shard runs: a plain, picklable spec (no secrets), and the split of a run into shard specs.

A shard is the same run as a single machine's (strategies, parse, checks,
dedup, quota, store) over a disjoint slice of the plan (``engine.plan``:
``shard=(k, S)``), in its own run directory ``OUT/shards/<name>/`` with its own
journal, so ``--resume`` continues every shard. A top-up round after the
cross-shard dedup is one more shard with its own namespace and quotas, primed
with the texts already kept. The API key is never in a spec: a shard reads it
from the environment variable named by ``api_key_env``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from ..dedup import DedupConfig

__all__ = ["SHARDS_DIR", "ShardSpec", "split", "topup_spec"]

SHARDS_DIR = "shards"


@dataclass(frozen=True, kw_only=True)
class ShardSpec:
    name: str
    index: int
    count: int
    run: RunConfig
    provider: ProviderConfig
    api_key_env: str | None
    limit: RateLimit
    retry: RetryPolicy
    out_dir: Path
    dedup: DedupConfig | None
    reference_real: bool = True
    data_file: Path | None = None
    workers: int | None = None
    #: Top-up rounds: ids ``<label>-<namespace>-<k>`` and these quotas instead of a slice of the plan.
    namespace: str | None = None
    quota: Mapping[str, int] | None = None
    #: A JSONL file of texts already kept elsewhere: this shard drops copies of them (top-up rounds).
    references: Path | None = None
    #: ``--provider local``: how to start the node's llama.cpp server (``LocalServerConfig`` fields).
    local: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.provider.api_key is not None:
            raise ValueError("a shard spec never carries the API key (it travels through the environment)")


def split(
    *,
    shards: int,
    out_dir: Path,
    run: RunConfig,
    provider: ProviderConfig,
    api_key_env: str | None,
    limit: RateLimit,
    retry: RetryPolicy,
    dedup: DedupConfig | None,
    reference_real: bool,
    data_file: Path | None,
    local: Mapping[str, Any] | None = None,
) -> list[ShardSpec]:
    """The ``shards`` disjoint shard specs of a run into ``out_dir`` (``OUT/shards/0`` ... ``OUT/shards/S-1``)."""
    keyless = replace(provider, api_key=None)
    per_shard = max(1, -(-limit.max_in_flight // shards))
    return [
        ShardSpec(
            name=str(k),
            index=k,
            count=shards,
            run=run,
            provider=keyless,
            api_key_env=api_key_env,
            limit=limit,
            retry=retry,
            out_dir=out_dir / SHARDS_DIR / str(k),
            dedup=dedup,
            reference_real=reference_real,
            data_file=data_file,
            workers=per_shard,
            local=local,
        )
        for k in range(shards)
    ]


def topup_spec(first: ShardSpec, *, round_: int, quota: Mapping[str, int], references: Path) -> ShardSpec:
    """Top-up round ``round_``: ``quota`` more examples per label, none a near-duplicate of ``references``."""
    name = f"topup-{round_}"
    return replace(
        first,
        name=name,
        index=0,
        count=1,
        out_dir=first.out_dir.parent / name,
        namespace=f"t{round_}",
        quota=dict(quota),
        references=references,
        workers=None,
    )
