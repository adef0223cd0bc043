"""The shard actor (the online source in its own run directory, admitted by leases) and the per-node model server.

``ShardActor.run`` is ``engine.generate`` for one shard: the same provider
stack and chain of stages, with :class:`~engine.limits.leased.LeasedAdmission`
in place of the local buckets, so every shard spends from the one budget. The
driver polls ``snapshot`` while it runs. ``NodeServer`` runs one managed
llama.cpp server on its node, on loopback; every shard on that node uses it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from ..errors import EngineError
from ..limits.leased import Grant, LeasedAdmission, Report
from ..plan import Planner
from ..run import GenerateOptions, Run, manifest_for, open_run
from ..stages import DedupStage
from ..stats import Stats
from ..store import read_jsonl
from .shards import ShardSpec

__all__ = ["NodeServer", "ShardActor"]


def _api_key(var: str | None) -> str | None:
    value = os.environ.get(var) if var else None
    return value.strip() if value and value.strip() else None


def _prime(run: Run, references: Path | None) -> None:
    """Make the run's dedup stage drop near-duplicates of texts kept elsewhere (a top-up round)."""
    if references is None:
        return
    texts = [str(row.get("text", "")) for row in read_jsonl(references)]
    for stage in run.chain.stages:
        if isinstance(stage, DedupStage):
            stage.dedup.add_reference(texts)


@ray.remote(num_cpus=1, max_restarts=0)
class ShardActor:
    """One shard of a cluster run (see the module doc)."""

    def __init__(self) -> None:
        self._run: Run | None = None
        self._controller: LeasedAdmission | None = None
        self._stats = Stats()

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def pid(self) -> int:
        return os.getpid()

    async def snapshot(self) -> dict[str, Any]:
        if self._run is None:
            return {"phase": "starting"}
        snap = self._run.snapshot()
        snap["node"] = self.node()
        return snap

    async def run(self, spec: ShardSpec, budget: Any, base_url: str | None = None) -> dict[str, Any]:
        from ..providers.openai import OpenAIProvider, make_session
        from ..sources.online import run_online

        cpu0 = time.process_time()
        provider = spec.provider
        if base_url is not None:
            provider = replace(provider, base_url=base_url)
        provider = replace(provider, api_key=_api_key(spec.api_key_env) if provider.name != "local" else None)
        options = GenerateOptions(
            out_dir=spec.out_dir,
            resume=True,  # the driver decided whether the run is new: a shard's directory continues if it exists
            progress=False,
            data_file=spec.data_file,
            dedup=spec.dedup,
            reference_real=spec.reference_real,
        )
        manifest = manifest_for(spec.run, provider, spec.limit, spec.dedup)
        manifest["fingerprint"]["shard"] = [spec.name, spec.index, spec.count]
        manifest["provider"] = spec.provider.public()  # the per-node URL of a local model changes on restart
        planner = functools.partial(Planner, shard=(spec.index, spec.count), namespace=spec.namespace, quota=spec.quota)

        async def lease(report: Report) -> Grant:
            grant: Grant = await budget.lease.remote(report)
            return grant

        async with make_session(provider) as session:
            base = OpenAIProvider(session, provider)
            with open_run(
                spec.run,
                model=provider.model,
                manifest=manifest,
                options=options,
                stats=self._stats,
                planner_factory=planner,
            ) as active:
                _prime(active, spec.references)
                controller = LeasedAdmission(spec.limit, lease, shard=_shard_key(spec))
                self._run, self._controller = active, controller
                failed = True
                t_gen = time.monotonic()
                try:
                    await run_online(
                        active, base, limit=spec.limit, retry=spec.retry, workers=spec.workers, controller=controller
                    )
                    failed = False
                finally:
                    await controller.aclose()
                    final = active.final_snapshot()
                    final["generating_s"] = round(time.monotonic() - t_gen, 3)
                    with contextlib.suppress(EngineError) if failed else contextlib.nullcontext():
                        active.store.write_stats(final)
        final["node"] = self.node()
        final["cpu_s"] = round(time.process_time() - cpu0, 3)  # this shard's process: what a result cost here
        return final


def _shard_key(spec: ShardSpec) -> int:
    """The budget's key for this shard (top-up rounds after the plan's shards)."""
    if spec.namespace is None:
        return spec.index
    return 10_000 + int(spec.namespace.lstrip("t") or 0)


@ray.remote(num_cpus=0, max_restarts=0)
class NodeServer:
    """The managed llama.cpp server of one node, on 127.0.0.1 (only the shards on this node reach it)."""

    def __init__(self) -> None:
        self._server: Any = None

    async def start(self, fields: dict[str, Any]) -> tuple[str, str]:
        """Start the server once; returns ``(base_url, model)``."""
        from ..llamacpp import LocalServer, LocalServerConfig

        if self._server is None:
            cfg = dict(fields)
            if cfg.get("log_path") is not None:
                log = Path(cfg["log_path"]) / f"llama-server-{self._node()[:12]}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                cfg["log_path"] = log
            server = LocalServer(LocalServerConfig(**cfg))
            await server.__aenter__()
            self._server = server
        return str(self._server.base_url), str(self._server.model)

    def _node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.__aexit__(None, None, None)
