"""Generation past one machine: shards of the plan on a Ray cluster, one shared rate budget.

Imported only by ``corpusforge generate --ray`` (it imports Ray). ``shards``
splits a run, ``budget`` is the budget actor (``engine.limits.leased`` holds
the logic), ``shard`` the shard actor and the per-node model server, ``merge``
the final merge with the cross-shard dedup, ``driver`` runs it all, ``launch``
is the command's entry.
"""

from .driver import ClusterRun, default_shards, run_cluster
from .merge import MergeResult, merge
from .shards import ShardSpec, split, topup_spec

__all__ = ["ClusterRun", "MergeResult", "ShardSpec", "default_shards", "merge", "run_cluster", "split", "topup_spec"]
