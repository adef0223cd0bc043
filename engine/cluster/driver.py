"""The cluster driver: one budget, S shard actors, restarts from the journals, the merge, top-ups, progress.

::

    driver ─► BudgetActor (RPM/TPM, in-flight, pause)  ◄── leases ── ShardActor k  (OUT/shards/k, its own journal)
       │                                                               │ the online source + the chain of stages
       ├─ polls every shard's snapshot ─► the live view (sums, per-node rows)
       ├─ a shard whose worker or node died ─► a new actor (anywhere) resumes OUT/shards/k
       └─ all done ─► cross-shard dedup on Ray Data, merge in shard order ─► OUT/data.jsonl; short? ─► a top-up round

The run directory must be on storage every node sees at the same path (NFS or
similar): shards write there and a restarted shard resumes there, on
whichever node it lands. The driver writes ``OUT/manifest.json`` (the run and
the shard count), ``OUT/data.jsonl``, ``OUT/rejects.jsonl`` (cross-shard drops)
and ``OUT/stats.json``; ``--resume`` continues every shard and merges again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import (
    ActorUnschedulableError,
    NodeDiedError,
    ObjectLostError,
    OwnerDiedError,
    RayActorError,
    RayTaskError,
    WorkerCrashedError,
)

from ..config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from ..dedup import DedupConfig
from ..errors import ConfigError, EngineError, FatalError
from ..plan import quotas
from ..run import manifest_for
from ..store import MANIFEST, STATS, atomic_write_json, config_differences, lock_directory
from ..tasks import load_task
from .budget import start_budget
from .merge import MergeResult, merge
from .shard import NodeServer, ShardActor
from .shards import SHARDS_DIR, ShardSpec, split, topup_spec

__all__ = ["LOCAL_MODEL", "LOCAL_URL", "ClusterRun", "default_shards", "run_cluster"]

#: Seconds between snapshot polls of the shard actors.
POLL_S = 1.0
#: A shard is started again at most this many times (worker or node deaths) before the run stops.
MAX_RESTARTS = 5
#: Seconds a new shard actor waits for its run directory's lock (a killed driver's actors take a while to go).
LOCK_WAIT_S = 60.0
#: Top-up rounds after the cross-shard dedup before the run stops short.
MAX_TOPUPS = 5
_DEAD = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError, OwnerDiedError)
#: Counters summed across shards for the display and stats.json.
_SUMMED = (
    "requests",
    "accepted",
    "rejected",
    "failed",
    "retries",
    "rate_limited",
    "prompt_tokens",
    "completion_tokens",
    "in_flight",
    "waiting",
    "rpm_used",
    "tpm_used",
    "examples_parsed",
    "cpu_s",
)
LOCK = ".cluster.lock"
#: The model name of ``--provider local`` until the node's server says its own.
LOCAL_MODEL = "local-model"
#: Where ``--provider local`` is configured before a node's server gives its URL.
LOCAL_URL = "http://127.0.0.1/v1"
VIEW = Callable[[Callable[[], dict[str, Any]]], contextlib.AbstractContextManager[Any]]


@dataclass(frozen=True, kw_only=True)
class ClusterRun:
    """Everything the driver needs; the API key is not here (shards read ``api_key_env``)."""

    run: RunConfig
    provider: ProviderConfig
    api_key_env: str | None
    limit: RateLimit
    retry: RetryPolicy
    out_dir: Path
    resume: bool
    dedup: DedupConfig | None
    reference_real: bool = True
    data_file: Path | None = None
    shards: int | None = None
    #: ``--provider local``: ``LocalServerConfig`` fields; one server per node that runs shards.
    local: Mapping[str, Any] | None = None


def default_shards() -> int:
    """One shard per node of a cluster, or one per CPU of a single-node (local) instance."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    if len(nodes) > 1:
        return len(nodes)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]


def _env(api_key_env: str | None) -> dict[str, Any]:
    """The runtime environment of the shards: the API key travels as an environment variable, never an argument."""
    if not api_key_env:
        return {}
    value = os.environ.get(api_key_env)
    return {"env_vars": {api_key_env: value}} if value else {}


class _Driver:
    def __init__(self, job: ClusterRun, shards: int, out: Path) -> None:
        self.job = job
        self.shards = shards
        self.out = out
        self.budget = start_budget(job.limit, shards)
        self.snaps: dict[str, dict[str, Any]] = {}
        self.finals: dict[str, dict[str, Any]] = {}
        self.restarts = 0
        self.phase = "generating"
        self.t0 = time.monotonic()
        self.budget_snap: dict[str, Any] = {}
        self.merged: MergeResult | None = None
        self.merge_s = 0.0
        self._servers: dict[str, Any] = {}
        self._server_urls: dict[str, tuple[str, str]] = {}
        self._server_lock = asyncio.Lock()
        self._live: dict[str, Any] = {}
        cpus = float(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        self._cpus = max(0.01, min(1.0, round(cpus / shards, 2)))

    # -- running shards -------------------------------------------------------------------------

    async def _base_url(self, actor: Any) -> tuple[str, str] | None:
        """``--provider local``: the URL of the llama.cpp server on the actor's node (started once per node)."""
        if self.job.local is None:
            return None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = await actor.node.remote()
        async with self._server_lock:
            if node not in self._server_urls:
                strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
                server = NodeServer.options(scheduling_strategy=strategy).remote()  # type: ignore[attr-defined]
                self._servers[node] = server
                self._server_urls[node] = await server.start.remote(dict(self.job.local))
            return self._server_urls[node]

    async def run_shard(self, spec: ShardSpec) -> dict[str, Any]:
        """Run one shard to its end, starting it again (from its journal) when its worker or node dies."""
        attempts, waited = 0, 0.0
        while True:
            actor = ShardActor.options(  # type: ignore[attr-defined]
                num_cpus=self._cpus, scheduling_strategy="SPREAD", runtime_env=_env(spec.api_key_env) or None
            ).remote()
            self._live[spec.name] = actor
            try:
                local = await self._base_url(actor)
                run_spec = spec
                url = None
                if local is not None:
                    url, model = local
                    if spec.provider.model == LOCAL_MODEL:
                        run_spec = replace(spec, provider=replace(spec.provider, model=model))
                final: dict[str, Any] = await actor.run.remote(run_spec, self.budget, url)
                self.finals[spec.name] = final
                return final
            except RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, ConfigError) and "in use by another" in cause.message and waited < LOCK_WAIT_S:
                    waited += 1.0  # the dead worker (or a killed driver's actor) still holds the lock
                    await asyncio.sleep(1.0)
                    continue
                if isinstance(cause, EngineError):
                    raise cause from None
                raise FatalError(f"shard {spec.name} failed: {cause!r}") from exc
            except (*_DEAD, ActorUnschedulableError) as exc:
                attempts += 1
                self.restarts += 1
                if attempts > MAX_RESTARTS:
                    raise FatalError(
                        f"shard {spec.name} died {attempts} times ({type(exc).__name__})",
                        hint="check the nodes (`ray status`), then rerun with --resume: nothing accepted is lost",
                    ) from exc
                await asyncio.sleep(min(5.0, 0.5 * attempts))
            finally:
                self._live.pop(spec.name, None)
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)

    async def run_shards(self, specs: list[ShardSpec]) -> None:
        tasks = [asyncio.ensure_future(self.run_shard(spec)) for spec in specs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def poll(self) -> None:
        """Refresh every live shard's snapshot and the budget's, forever (cancelled by the caller)."""
        while True:
            names = list(self._live.items())
            refs = [actor.snapshot.remote() for _, actor in names]
            for (name, _), ref in zip(names, refs, strict=True):
                with contextlib.suppress(Exception):
                    self.snaps[name] = await asyncio.wait_for(ref, timeout=POLL_S * 2)
            await self.refresh_budget()
            await asyncio.sleep(POLL_S)

    async def refresh_budget(self) -> None:
        with contextlib.suppress(Exception):
            self.budget_snap = await asyncio.wait_for(self.budget.snapshot.remote(), timeout=POLL_S * 2)

    async def stop_servers(self) -> None:
        for server in self._servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.stop.remote(), timeout=30)
            with contextlib.suppress(Exception):
                ray.kill(server, no_restart=True)

    # -- the view -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The cluster's snapshot: the shards' counters summed, the budget's limits, one row per node."""
        shards = {**self.snaps, **self.finals}
        snap: dict[str, Any] = {}
        for key in _SUMMED:
            values = [s[key] for s in shards.values() if isinstance(s.get(key), (int, float))]
            snap[key] = sum(values) if values else 0
        if self.merged is not None:
            snap["accepted"] = self.merged.total
        elapsed = time.monotonic() - self.t0
        live = [s for name, s in self.snaps.items() if name not in self.finals]
        rate = sum(float(s.get("requests_per_s", 0) or 0) for s in live)
        snap.update(
            phase=self.phase,
            target=self.job.run.n,
            elapsed_s=round(elapsed, 1),
            requests_per_s=round(rate, 3) if live else round(snap["requests"] / max(elapsed, 1e-9), 3),
            shards=len(shards),
            shard_restarts=self.restarts,
        )
        if self.job.local is not None:
            snap["local_servers"] = len(self._server_urls)
        if self.finals:  # the longest shard's time generating (its model server and imports not counted)
            snap["generating_s"] = max(float(f.get("generating_s", 0.0) or 0.0) for f in self.finals.values())
        snap.update({k: v for k, v in self.budget_snap.items() if v is not None or k not in snap})
        nodes: dict[str, Counter[str]] = {}
        for s in shards.values():
            row = nodes.setdefault(str(s.get("node", "?"))[:12], Counter())
            row["shards"] += 1
            for key in ("requests", "accepted", "rate_limited", "in_flight"):
                row[key] += int(s.get(key, 0) or 0)
        snap["nodes"] = [
            {"node": node, **row, "requests_per_s": round(row["requests"] / max(elapsed, 1e-9), 2)}
            for node, row in sorted(nodes.items())
        ]
        if self.merged is not None:
            snap["cross_shard_dropped"] = sum(self.merged.dropped.values())
        return snap


def _lock(out: Path) -> int:
    return lock_directory(out, LOCK, holder="corpusforge driver")


def _open_out(job: ClusterRun, manifest: dict[str, Any]) -> int:
    """Check (resume) or write (new run) ``OUT/manifest.json``; returns the shard count to use."""
    out = job.out_dir
    path = out / MANIFEST
    if path.exists():
        if not job.resume:
            raise ConfigError(
                f"{out} already holds a run", hint="pass --resume to continue it, or choose another --out"
            )
        try:
            old = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"{path} is corrupt", hint="choose another --out") from exc
        cluster = old.get("cluster")
        if not isinstance(cluster, dict):
            raise ConfigError(
                f"{out} holds a run made without --ray", hint="resume it without --ray, or choose another --out"
            )
        differences = config_differences(old.get("fingerprint", {}), manifest["fingerprint"])
        if differences:
            raise ConfigError(
                f"cannot resume: the configuration differs from the run in {out} ({'; '.join(differences[:5])})",
                hint="use the original settings, or choose another --out",
            )
        shards = int(cluster["shards"])
        if job.shards is not None and job.shards != shards:
            raise ConfigError(
                f"{out} was split into {shards} shards, not {job.shards}",
                hint=f"resume with --shards {shards} (or without --shards)",
            )
        return shards
    if out.exists() and any(p.name != LOCK for p in out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no run", hint="choose an empty --out")
    shards = job.shards or default_shards()
    manifest["cluster"] = {"shards": shards}
    atomic_write_json(path, manifest)
    return shards


async def run_cluster(job: ClusterRun, *, view_factory: VIEW | None = None) -> dict[str, Any]:
    """Generate ``job.run.n`` examples on the connected Ray cluster into ``job.out_dir``; the final snapshot."""
    task = load_task(job.run.task)
    out = job.out_dir.resolve()
    job = replace(job, out_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        manifest = manifest_for(job.run, job.provider, job.limit, job.dedup)
        shards = _open_out(job, manifest)
        specs = split(
            shards=shards,
            out_dir=out,
            run=job.run,
            provider=job.provider,
            api_key_env=job.api_key_env,
            limit=job.limit,
            retry=job.retry,
            dedup=job.dedup,
            reference_real=job.reference_real,
            data_file=job.data_file,
            local=job.local,
        )
        driver = _Driver(job, shards, out)
        quota = quotas(list(task.labels), job.run.n) if job.run.balance else {"": job.run.n}
        view = view_factory(driver.snapshot) if view_factory else contextlib.nullcontext()
        poller = asyncio.ensure_future(driver.poll())
        try:
            with view:
                await driver.run_shards(specs)
                await driver.refresh_budget()
                parts = [spec.out_dir for spec in specs]
                refs = out / SHARDS_DIR / "kept.jsonl"
                for round_ in range(MAX_TOPUPS + 1):
                    driver.phase = "cross-shard dedup and merge"
                    t_merge = time.monotonic()
                    merged = await asyncio.to_thread(
                        merge,
                        parts,
                        out,
                        quota=quota,
                        balance=job.run.balance,
                        dedup=job.dedup,
                        field_names=task.fields,
                        references=refs,
                    )
                    driver.merged = merged
                    driver.merge_s += time.monotonic() - t_merge
                    if job.run.balance:
                        short = {lb: q - merged.kept[lb] for lb, q in quota.items() if merged.kept[lb] < q}
                    else:
                        short = {"": job.run.n - merged.total} if merged.total < job.run.n else {}
                    if not short or round_ == MAX_TOPUPS:
                        break
                    if not all(f.get("phase") == "done" for f in driver.finals.values()):
                        break  # a shard stopped short (request cap): more rounds would not help
                    driver.phase = f"top-up {round_ + 1}: {sum(short.values())} more"
                    top = topup_spec(specs[0], round_=round_, quota=short, references=refs)
                    if not job.run.balance:
                        top = replace(top, run=replace(top.run, n=sum(short.values())), quota=None)
                    await driver.budget.add_shards.remote(1)
                    await driver.run_shard(top)
                    parts.append(top.out_dir)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await driver.stop_servers()
        final = driver.snapshot()
        finals = driver.finals.values()
        done = all(f.get("phase") == "done" for f in finals) and final["accepted"] == job.run.n
        final["phase"] = "done" if done else "stopped"
        final["cross_shard_dropped_by_reason"] = dict(merged.dropped)
        final["per_shard_kept"] = merged.per_part
        final["limits"] = asdict(job.limit)
        final["merge_s"] = round(driver.merge_s, 3)
        final["cross_shard_pairs"] = merged.edges
        atomic_write_json(out / STATS, final)
        return final
    finally:
        os.close(lock)
