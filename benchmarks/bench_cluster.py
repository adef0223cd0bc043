"""Cluster benchmark: generate --ray on a local multi-node Ray cluster, one shared rate budget, against the simulator.

Three measurements, each against its baseline in the same run:

* **Utilisation** of a server-side RPM limit the client is not told (it learns it from the headers), by 1, 2
  and 4 shards on a four-node cluster (nodes of one CPU each, all on this machine), and by the plain process:
  successful requests over what the server could admit between the first and the last one (its bucket starts
  full: one minute's worth plus the refill), and the share of requests answered 429. Counted by the simulator
  itself, which runs in a thread of this process.
* **Overhead**: client CPU seconds per 1,000 requests with no limit, Ray with one shard vs the plain process
  (the simulator in a child process, not counted). For Ray: the engine's processes (shard, budget actor,
  driver) and, separately, everything Ray runs (raylets, GCS, idle workers).
* **Local model** (``BENCH_LOCAL=1``, default on when the packaged model is installed): accepted examples/s of
  the managed llama.cpp server on two simulated nodes of one CPU each (two servers, two shards) vs one node of two
  CPUs (one server, one shard). Then, on paper, 10 and 100 nodes from the per-node rate and the driver's CPU per
  result.

    python -m benchmarks.bench_cluster
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from .markdown import Headline, fmt, table
from .record import write_results

# read by ray when it is imported (whoever imports it first): its node-IP detection stays on loopback
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

#: The server's limit (never given to the client) and the steady seconds after its first minute's burst.
RPM_LIMIT = 600
STEADY_S = float(os.environ.get("BENCH_STEADY_S", "40"))
SHARDS = (1, 2, 4)
NODES = 4
#: Requests in the overhead comparison.
OVERHEAD_N = int(os.environ.get("BENCH_OVERHEAD_N", "3000"))
#: Adjacent (plain, Ray) pairs in the overhead comparison; the median pair's ratio is reported.
ROUNDS = 3
#: Local model: examples per run.
LOCAL_N = int(os.environ.get("BENCH_LOCAL_N", "40"))
MAX_TOKENS = 64
#: The local model writes whole articles: 64 tokens would cut most of them (dropped as truncated).
LOCAL_MAX_TOKENS = 512


class SimThread:
    """The simulator on its own event loop in a thread of this process, so its counters can be read."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.sim: Any = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from engine.sim.server import running_sim

        async def serve() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            async with running_sim(self.cfg) as sim:
                self.sim = sim
                self._ready.set()
                await self._stop.wait()

        asyncio.run(serve())

    def __enter__(self) -> Any:
        self._thread.start()
        self._ready.wait(30)
        return self.sim

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


class Window:
    """First and last moment the simulator's ``ok`` count moved (polled every 20 ms in a thread)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seen = self.sim.state.ok
        while not self._stop.is_set():
            ok = self.sim.state.ok
            if ok != seen:
                now = time.perf_counter()
                self.first = self.first if self.first is not None else now
                self.last, seen = now, ok
            self._stop.wait(0.02)

    def __enter__(self) -> Window:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run_config(n: int, max_tokens: int = MAX_TOKENS) -> Any:
    from engine.config import RunConfig

    return RunConfig(task="bbc-news", n=n, max_tokens=max_tokens, max_requests=8 * n + 50)


async def plain(url: str, out: Path, n: int) -> dict[str, Any]:
    from engine.config import ProviderConfig, RateLimit, RetryPolicy
    from engine.generate import GenerateOptions, generate

    options = GenerateOptions(out_dir=out, progress=False, reference_real=False)
    return await generate(
        _run_config(n), ProviderConfig(base_url=url, model="sim"), RateLimit(), RetryPolicy(), options
    )


async def on_ray(url: str, out: Path, n: int, shards: int, *, local: dict[str, Any] | None = None) -> dict[str, Any]:
    from engine.cluster import ClusterRun, run_cluster
    from engine.cluster.driver import LOCAL_MODEL
    from engine.config import ProviderConfig, RateLimit, RetryPolicy
    from engine.dedup import DedupConfig

    provider = (
        ProviderConfig(base_url=url, model=LOCAL_MODEL, name="local", max_connections=8)
        if local is not None
        else ProviderConfig(base_url=url, model="sim")
    )
    job = ClusterRun(
        run=_run_config(n, LOCAL_MAX_TOKENS if local is not None else MAX_TOKENS),
        provider=provider,
        api_key_env=None,
        limit=RateLimit(max_in_flight=8 * shards if local is not None else 64),
        retry=RetryPolicy(),
        out_dir=out,
        resume=False,
        dedup=DedupConfig(),
        reference_real=False,
        shards=shards,
        local=local,
    )
    return await run_cluster(job)


@contextlib.contextmanager
def cluster(nodes: int, cpus: int = 1) -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": cpus, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args=dict(node))
    try:
        for _ in range(nodes - 1):
            c.add_node(**node)
        c.wait_for_nodes()
        ray.init(address=c.address, _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _utilisation(sim: Any, window: Window) -> dict[str, Any]:
    ok, limited = sim.state.ok, sim.state.rate_limited
    span = (window.last or 0.0) - (window.first or 0.0)
    allowed = RPM_LIMIT + RPM_LIMIT * span / 60.0
    return {
        "ok_requests": ok,
        "rate_limited": limited,
        "rate_limited_pct": round(100 * limited / max(ok + limited, 1), 2),
        "seconds": round(span, 1),
        "utilisation_pct": round(100 * ok / allowed, 1),
    }


def utilisation(tmp: Path) -> dict[str, Any]:
    from engine.sim.config import SimConfig

    n = int(RPM_LIMIT + RPM_LIMIT / 60.0 * STEADY_S)
    out: dict[str, Any] = {"rpm_limit": RPM_LIMIT, "requests": n, "nodes": NODES}
    with SimThread(SimConfig(rpm_limit=RPM_LIMIT, seed=1)) as sim, Window(sim) as window:
        asyncio.run(plain(sim.url, tmp / "plain", n))
    out["plain"] = _utilisation(sim, window)
    print("plain", out["plain"], flush=True)
    with cluster(NODES):
        for shards in SHARDS:
            with SimThread(SimConfig(rpm_limit=RPM_LIMIT, seed=1)) as sim, Window(sim) as window:
                final = asyncio.run(on_ray(sim.url, tmp / f"ray{shards}", n, shards))
            row = _utilisation(sim, window)
            row["accepted"] = final["accepted"]
            row["budget_leases"] = final.get("budget_leases")
            out[f"ray_{shards}"] = row
            print(f"ray {shards}", row, flush=True)
    return out


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def overhead(tmp: Path) -> dict[str, Any]:
    """``ROUNDS`` adjacent pairs (plain process, then Ray with one shard) on one simulator; the median pair's ratio.

    Ray's CPU is the engine's processes: the driver (this process), the shard's worker and the budget actor,
    each measured inside its own process. Ray's daemons (GCS, raylet) are not counted.
    """
    import statistics

    from engine.sim.config import SimConfig
    from engine.sim.process import sim_process

    me = psutil.Process()
    pairs: list[dict[str, Any]] = []
    with sim_process(SimConfig(seed=2)) as url, cluster(1, cpus=1):
        for i in range(ROUNDS):
            c0 = _cpu(me)
            asyncio.run(plain(url, tmp / f"plain-cpu-{i}", OVERHEAD_N))
            plain_cpu = _cpu(me) - c0
            c0, t0 = _cpu(me), time.perf_counter()
            final = asyncio.run(on_ray(url, tmp / f"ray-cpu-{i}", OVERHEAD_N, 1))
            driver, wall = _cpu(me) - c0, time.perf_counter() - t0
            engine_cpu = driver + float(final.get("cpu_s", 0.0)) + float(final.get("budget_cpu_s", 0.0))
            requests = int(final.get("requests", OVERHEAD_N)) or OVERHEAD_N
            pair = {
                "plain_cpu_s_per_1k_requests": round(1000 * plain_cpu / OVERHEAD_N, 3),
                "ray_cpu_s_per_1k_requests": round(1000 * engine_cpu / requests, 3),
                "driver_cpu_s": round(driver, 3),
                "shard_cpu_s": final.get("cpu_s"),
                "budget_cpu_s": final.get("budget_cpu_s"),
                "merge_s": final.get("merge_s"),
                "ray_wall_s": round(wall, 1),
                "driver_cpu_s_per_result": round(driver / max(1, int(final["accepted"])), 6),
            }
            pair["ratio"] = round(pair["ray_cpu_s_per_1k_requests"] / pair["plain_cpu_s_per_1k_requests"], 3)
            pairs.append(pair)
            print("overhead pair", pair, flush=True)
    median = sorted(pairs, key=lambda p: p["ratio"])[len(pairs) // 2]
    out: dict[str, Any] = {
        "requests": OVERHEAD_N,
        "rounds": pairs,
        "plain": {"cpu_s_per_1k_requests": median["plain_cpu_s_per_1k_requests"]},
        "ray_1_shard": {
            "cpu_s_per_1k_requests": median["ray_cpu_s_per_1k_requests"],
            "driver_cpu_s_per_result": statistics.median(p["driver_cpu_s_per_result"] for p in pairs),
            "merge_s": median["merge_s"],
        },
        "ratio_ray_vs_plain_cpu_per_request": median["ratio"],
    }
    print("overhead", out, flush=True)
    return out


def local_model(tmp: Path) -> dict[str, Any] | None:
    from engine.cluster.driver import LOCAL_URL

    try:
        from engine.llamacpp import default_model_path

        if not default_model_path().is_file():
            return None
    except Exception:
        return None
    out: dict[str, Any] = {"examples": LOCAL_N}
    for name, nodes, cpus in (("two_nodes_of_1_cpu", 2, 1), ("one_node_of_2_cpus", 1, 2)):
        local = {"log_path": str(tmp / name / "nodes"), "threads": cpus}
        with cluster(nodes, cpus=cpus):
            t0 = time.perf_counter()
            final = asyncio.run(on_ray(LOCAL_URL, tmp / name / "out", LOCAL_N, nodes, local=local))
            wall = time.perf_counter() - t0
        gen = float(final.get("generating_s") or wall)
        out[name] = {
            "accepted": final["accepted"],
            "wall_s": round(wall, 1),
            "generating_s": round(gen, 1),
            "accepted_per_s": round(final["accepted"] / gen, 3),
            "servers": final.get("local_servers"),
        }
        print(name, out[name], flush=True)
    out["ratio_two_nodes_vs_one"] = round(
        out["two_nodes_of_1_cpu"]["accepted_per_s"] / out["one_node_of_2_cpus"]["accepted_per_s"], 2
    )
    return out


def on_paper(result: dict[str, Any]) -> dict[str, Any]:
    """10 and 100 nodes: the per-node rate times the nodes, and the driver's CPU that many results cost it."""
    per_result = result["overhead"]["ray_1_shard"]["driver_cpu_s_per_result"]
    local = result.get("local_model")
    # a node of two cores runs one llama.cpp server: its rate is the one-node figure, else the end-to-end
    # benchmark's single process on this machine (the same two cores, the same model)
    per_node = local["one_node_of_2_cpus"]["accepted_per_s"] if local and "one_node_of_2_cpus" in local else None
    source = "local_model.one_node_of_2_cpus"
    if not per_node:
        from .record import load_results, results_path

        e2e = load_results(results_path("e2e")) or {}
        per_node = (e2e.get("engine") or {}).get("accepted_per_s")
        source = "e2e.engine.accepted_per_s"
    rows = {}
    for nodes in (10, 100):
        rate = per_node * nodes if per_node else None
        rows[f"{nodes}_nodes"] = {
            "accepted_per_s": round(rate, 2) if rate else None,
            "driver_cores_busy": round(rate * per_result, 4) if rate else None,
            "hours_for_1M": round(1e6 / rate / 3600, 1) if rate else None,
        }
    # API mode: the rate is the provider's limit, whatever the node count; the driver's cost per result bounds it
    rows["driver_results_per_s_per_core"] = round(1 / per_result) if per_result else None
    rows["per_node_accepted_per_s"] = per_node
    rows["per_node_source"] = source
    return rows


def _loaded(name: str, result: dict[str, Any], part: Any, *args: Any) -> None:
    """Run one part, recording the machine's load average around it (other work on the machine shows there)."""
    before = os.getloadavg()[0]
    value = part(*args)
    if value is not None:
        value["loadavg_1m_before_after"] = [round(before, 2), round(os.getloadavg()[0], 2)]
        result[name] = value


def main() -> dict[str, Any]:
    result: dict[str, Any] = {}
    parts = os.environ.get("BENCH_PARTS", "utilisation,overhead,local_model").split(",")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if "utilisation" in parts:
            _loaded("utilisation", result, utilisation, base)
        if "overhead" in parts:
            _loaded("overhead", result, overhead, base)
        if "local_model" in parts and os.environ.get("BENCH_LOCAL", "1") == "1":
            _loaded("local_model", result, local_model, base)
    if "utilisation" not in result:  # a partial rerun keeps the other parts of the last full one
        from .record import load_results, results_path

        last = load_results(results_path("cluster")) or {}
        for name in ("utilisation", "overhead", "local_model"):
            if name not in result and name in last:
                result[name] = last[name]
    result["on_paper"] = on_paper(result)
    write_results("cluster", result)
    print(render(result))
    return result


def headline(data: dict[str, Any]) -> Headline:
    u = data.get("utilisation", {})
    worst = min((u[k]["utilisation_pct"] for k in u if k.startswith("ray_")), default=None)
    o = data.get("overhead", {})
    return [
        ("cluster: worst utilisation over 1/2/4 shards", fmt(worst, "%")),
        ("cluster: CPU per request, Ray 1 shard / plain", fmt(o.get("ratio_ray_vs_plain_cpu_per_request"), "x")),
    ]


def render(data: dict[str, Any]) -> str:
    u = data["utilisation"]
    lines = [
        f"Utilisation of a {u['rpm_limit']} RPM server-side limit (learned, never given), {u['requests']} requests, "
        f"{u['nodes']}-node local cluster:",
        "",
        *table(
            ["run", "utilisation", "429 share", "ok requests", "429s", "seconds"],
            [
                [
                    name,
                    fmt(u[name]["utilisation_pct"], "%"),
                    fmt(u[name]["rate_limited_pct"], "%"),
                    fmt(u[name]["ok_requests"]),
                    fmt(u[name]["rate_limited"]),
                    fmt(u[name]["seconds"]),
                ]
                for name in ("plain", *[f"ray_{s}" for s in SHARDS])
                if name in u
            ],
        ),
    ]
    o = data.get("overhead")
    if o:
        r = o["ray_1_shard"]
        lines += [
            "",
            f"Client CPU per 1,000 requests ({o['requests']} requests, no limit, median of "
            f"{len(o.get('rounds', [])) or 1} adjacent pairs): plain {o['plain']['cpu_s_per_1k_requests']} s; Ray, "
            f"1 shard: {r['cpu_s_per_1k_requests']} s in the engine's processes (driver, shard, budget actor; Ray's "
            f"daemons not counted): {o['ratio_ray_vs_plain_cpu_per_request']}x. The driver: "
            f"{r['driver_cpu_s_per_result'] * 1000:.3f} ms CPU per result (polling, merge and cross-shard dedup).",
        ]
    loc = data.get("local_model")
    if loc:
        lines += [
            "",
            *table(
                ["local model", "accepted/s", "servers", "wall s"],
                [
                    [k, fmt(loc[k]["accepted_per_s"]), fmt(loc[k]["servers"]), fmt(loc[k]["wall_s"])]
                    for k in ("two_nodes_of_1_cpu", "one_node_of_2_cpus")
                    if k in loc
                ],
            ),
            f"two simulated nodes / one node: {fmt(loc.get('ratio_two_nodes_vs_one'), 'x')} (the same two cores "
            f"either way; load average before/after: {loc.get('loadavg_1m_before_after')})",
        ]
    p = data.get("on_paper")
    if p and p.get("10_nodes", {}).get("accepted_per_s"):
        lines += [
            "",
            f"On paper, from {p.get('per_node_accepted_per_s')} accepted/s per 2-core node "
            f"({p.get('per_node_source')}): 10 nodes ~{p['10_nodes']['accepted_per_s']} accepted/s "
            f"({p['10_nodes']['hours_for_1M']} h per million), 100 nodes ~{p['100_nodes']['accepted_per_s']}/s ({p['100_nodes']['hours_for_1M']} h); the "
            f"driver then spends {p['100_nodes']['driver_cores_busy']} of a core; one driver core handles "
            f"~{p['driver_results_per_s_per_core']:,} results/s.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
