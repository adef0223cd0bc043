"""Generation past one machine: shards of the plan on a Ray cluster, one shared rate budget.

Imported only by ``corpusforge generate --ray`` (it imports Ray). ``shards``
splits a run, ``budget`` is the budget actor (``engine.limits.budget`` holds
the logic, ``engine.limits.leased`` the shard side), ``shard`` the shard actor
and the per-node model server, ``merge`` the final merge with the cross-shard
dedup, ``driver`` runs it all, ``launch`` is the command's entry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .driver import ClusterRun, default_shards, run_cluster
    from .merge import MergeResult, merge
    from .shards import ShardSpec, split, topup_spec

__all__ = ["ClusterRun", "MergeResult", "ShardSpec", "default_shards", "merge", "run_cluster", "split", "topup_spec"]

#: Where each public name lives; loaded on first use, so importing the package (a test walking every package,
#: ``--help``) does not import Ray.
_HOMES = {
    "ClusterRun": "driver",
    "default_shards": "driver",
    "run_cluster": "driver",
    "MergeResult": "merge",
    "merge": "merge",
    "ShardSpec": "shards",
    "split": "shards",
    "topup_spec": "shards",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
