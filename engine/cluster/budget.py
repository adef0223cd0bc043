"""The budget actor: one :class:`~engine.limits.budget.Budget` for the whole cluster, leased by the shards."""

from __future__ import annotations

import time
from typing import Any

import ray

from ..config import RateLimit
from ..limits.budget import Budget, Grant, Report

__all__ = ["BudgetActor", "start_budget"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class BudgetActor:
    """Holds the RPM/TPM buckets, the in-flight cap and the pause; calls are served one at a time."""

    def __init__(self, limit: RateLimit, shards: int) -> None:
        self.budget = Budget(limit=limit, shards=shards)
        self._cpu0 = time.process_time()

    def lease(self, report: Report) -> Grant:
        return self.budget.lease(report)

    def add_shards(self, more: int) -> None:
        """A top-up round joins: count it among the active shards."""
        self.budget.shards += more

    def snapshot(self) -> dict[str, Any]:
        snap = self.budget.snapshot()
        snap["budget_cpu_s"] = round(time.process_time() - self._cpu0, 3)  # since it started serving
        return snap


def start_budget(limit: RateLimit, shards: int) -> Any:
    """The budget actor, on the driver's node (it dies with the driver; a restart re-learns the limits)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=True)
    return BudgetActor.options(scheduling_strategy=strategy).remote(limit, shards)  # type: ignore[attr-defined]
