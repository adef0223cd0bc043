"""``generate --ray`` on a real multi-node Ray cluster on this machine (``tests/ray_cluster.py``: one per session),
against the simulator: exact N, disjoint shards, cross-shard dedup with a top-up, a worker and a node killed
mid-run, the driver killed and resumed; and the parts that need no cluster (Ray not imported without --ray,
one-line errors)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from engine.dedup import DedupConfig, DedupFilter
from engine.plan import quotas
from engine.sim.config import SimConfig
from engine.sim.server import running_sim
from engine.tasks import load_task
from engine.types import Example

ROOT = Path(__file__).resolve().parents[2]
LABELS = list(load_task("bbc-news").labels)


def rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _job(url: str, out: Path, n: int, shards: int, *, resume: bool = False):
    from engine.cluster import ClusterRun

    return ClusterRun(
        run=RunConfig(task="bbc-news", n=n, max_tokens=64),
        provider=ProviderConfig(base_url=url, model="sim"),
        api_key_env=None,
        limit=RateLimit(max_in_flight=8),
        retry=RetryPolicy(),
        out_dir=out,
        resume=resume,
        dedup=DedupConfig(),
        reference_real=False,
        shards=shards,
    )


def _check_output(out: Path, n: int) -> list[dict]:
    """Exactly n, unique ids, balanced, no near-duplicates left, the shards' requests disjoint."""
    data = rows(out / "data.jsonl")
    assert len(data) == n
    assert len({r["id"] for r in data}) == n
    assert Counter(r["label"] for r in data) == Counter(quotas(LABELS, n))
    verdicts = DedupFilter(DedupConfig()).check_batch([Example.from_dict(r) for r in data])
    assert verdicts == [None] * n
    seen: set[str] = set()
    for journal in sorted((out / "shards").glob("*/requests.jsonl")):
        ids = {r["request_id"] for r in rows(journal)}
        assert not ids & seen, f"{journal} repeats another shard's requests"
        seen |= ids
    return data


async def _until(predicate, limit_s: float = 60.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_exact_n_from_disjoint_shards_with_cross_shard_duplicates_removed(ray_cluster, tmp_path):
    from engine.cluster import run_cluster

    out = tmp_path / "out"
    # the simulator repeats earlier texts (near-duplicates) 30% of the time, whichever shard asked first
    async with running_sim(SimConfig(dup_rate=0.3, seed=11)) as sim:
        final = await run_cluster(_job(sim.url, out, 60, 2))
        paid = sim.state.ok
    assert final["phase"] == "done" and final["accepted"] == 60
    _check_output(out, 60)
    assert final["cross_shard_dropped"] > 0 and (out / "shards" / "topup-0" / "data.jsonl").exists()
    # the Ray Data pass names the kept twin of every cross-shard drop, and the twin is a near-duplicate of it
    generated = {r["id"]: r for j in (out / "shards").glob("*/data.jsonl") for r in rows(j)}
    drops = [r for r in rows(out / "rejects.jsonl") if r["reason"] == "cross_shard:near_duplicate"]
    assert len(drops) == final["cross_shard_dropped_by_reason"]["near_duplicate"] > 0
    for drop in drops:
        filt = DedupFilter(DedupConfig())
        assert filt.check(Example.from_dict(generated[drop["duplicate_of"]])) is None
        assert filt.check(Example.from_dict(drop)) == "near_duplicate"
    requests = sum(len(rows(j)) for j in (out / "shards").glob("*/requests.jsonl"))
    assert paid == requests  # every request paid for is in some shard's journal: nothing sent twice
    assert {row["node"] for row in final["nodes"]} and final["shards"] >= 2


async def test_a_killed_shard_worker_is_restarted_from_its_journal(ray_cluster, tmp_path):
    from engine.cluster import run_cluster

    out = tmp_path / "out"
    async with running_sim(SimConfig(latency_ms=150, seed=12)) as sim:
        run = asyncio.ensure_future(run_cluster(_job(sim.url, out, 80, 2)))
        shard = out / "shards" / "1"
        await _until(lambda: len(rows(shard / "data.jsonl")) >= 8)
        pid = int((shard / ".lock").read_text().split()[0])  # the store writes its writer's PID there
        os.kill(pid, signal.SIGKILL)
        final = await asyncio.wait_for(run, 120)
        paid = sim.state.ok
    assert final["phase"] == "done" and final["shard_restarts"] >= 1
    _check_output(out, 80)
    # what the killed worker had in flight was paid for and lost: at most the in-flight cap (8), nothing more
    journaled = sum(len(rows(j)) for j in (out / "shards").glob("*/requests.jsonl"))
    assert 0 <= paid - journaled <= 8


async def test_a_node_removed_mid_run_its_shard_finishes_elsewhere(ray_cluster, tmp_path):
    from engine.cluster import run_cluster

    extra = ray_cluster.add_node(num_cpus=1, include_dashboard=False, node_ip_address="127.0.0.1")
    ray_cluster.wait_for_nodes()
    out = tmp_path / "out"
    try:
        async with running_sim(SimConfig(latency_ms=150, seed=13)) as sim:
            # three shards of one CPU on three nodes of one CPU: one of them runs on the extra node
            run = asyncio.ensure_future(run_cluster(_job(sim.url, out, 90, 3)))
            shards = [out / "shards" / str(k) / "data.jsonl" for k in range(3)]
            await _until(lambda: all(len(rows(p)) >= 4 for p in shards))
            ray_cluster.remove_node(extra, allow_graceful=False)
            extra = None
            final = await asyncio.wait_for(run, 180)
            paid = sim.state.ok
    finally:
        if extra is not None:
            ray_cluster.remove_node(extra)
    assert final["phase"] == "done" and final["shard_restarts"] >= 1
    _check_output(out, 90)
    journaled = sum(len(rows(j)) for j in (out / "shards").glob("*/requests.jsonl"))
    assert 0 <= paid - journaled <= 8  # the removed node's requests in flight, at most


async def _cli(*args: str, env: dict[str, str] | None = None, limit_s: float = 120.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    return proc.returncode or 0, out.decode(), err.decode()


def _argv(url: str, out: Path, n: int) -> list[str]:
    return [
        "generate", "bbc-news", "--n", str(n), "--out", str(out), "--base-url", url, "--model", "sim",
        "--no-progress", "--no-reference-real", "--max-tokens", "64", "--concurrency", "8",
    ]  # fmt: skip


async def test_the_driver_killed_and_resumed_finishes_every_shard(ray_cluster, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    async with running_sim(SimConfig(latency_ms=200, seed=14)) as sim:
        argv = [*_argv(sim.url, out, 80), "--ray", "--shards", "2"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", *argv, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await _until(lambda: all(len(rows(out / "shards" / k / "data.jsonl")) >= 6 for k in "01"))
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        assert not (out / "data.jsonl").exists()  # killed before the merge
        stale = out / "shards" / ".merged.tmp-0badc0de"  # what a merge killed half way leaves
        (stale / "dropped").mkdir(parents=True)
        code, stdout, err = await _cli(*argv, "--resume", env=env)
    assert code == 0, err
    _check_output(out, 80)
    assert not stale.exists() and (out / "shards" / "merged" / "_manifest.json").is_file()
    assert "Traceback" not in err


async def test_ray_is_imported_only_with_the_flag(tmp_path):
    script = (
        "import sys\n"
        "from engine.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('RAY' if 'ray' in sys.modules else 'NO-RAY')\n"
        "sys.exit(code)\n"
    )
    async with running_sim(SimConfig(seed=15)) as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, *_argv(sim.url, tmp_path / "o", 3), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip().splitlines()[-1] == "NO-RAY"


async def test_an_unreachable_cluster_is_one_line_with_the_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    async with running_sim(SimConfig(seed=16)) as sim:
        code, _, err = await _cli(*_argv(sim.url, tmp_path / "o", 3), "--ray", "127.0.0.1:9", env=env, limit_s=60)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1, err
    assert lines[0].startswith("corpusforge: error: no Ray cluster at 127.0.0.1:9") and "ray start --head" in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--shards", "2"], "--shards needs --ray"), (["--ray", "--batch"], "do not combine")],
)
async def test_bad_cluster_flags_are_one_line(tmp_path, extra, needle):
    code, _, err = await _cli(*_argv("http://127.0.0.1:9/v1", tmp_path / "o", 3), *extra, limit_s=60)
    assert code != 0 and needle in err and "Traceback" not in err


async def test_local_model_runs_one_server_per_node_not_per_shard(ray_cluster, tmp_path):
    """``--provider local``: the managed server (here its simulator backend) starts once on each node."""
    from dataclasses import replace

    from engine.cluster import run_cluster
    from engine.cluster.driver import LOCAL_MODEL, LOCAL_URL

    job = _job(LOCAL_URL, tmp_path / "out", 40, 4)
    job = replace(
        job,
        provider=ProviderConfig(base_url=LOCAL_URL, model=LOCAL_MODEL, name="local", max_connections=8),
        local={"backend": "sim", "log_path": str(tmp_path / "out" / "nodes")},
    )
    final = await run_cluster(job)
    assert final["phase"] == "done"
    _check_output(tmp_path / "out", 40)
    nodes = {row["node"] for row in final["nodes"]}
    assert final["local_servers"] == len(nodes) <= 2 < final["shards"]  # four shards, one server per node
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "out" / "shards").glob("[0-9]/manifest.json")]
    assert {m["provider"]["base_url"] for m in manifests} == {LOCAL_URL}  # the per-node port is not pinned


async def test_the_api_key_reaches_the_shards_through_the_environment_only(ray_cluster, tmp_path, monkeypatch):
    from dataclasses import replace

    from engine.cluster import ShardSpec, run_cluster

    key = "sk-cluster-test-0123456789abcdef"
    monkeypatch.setenv("CF_TEST_KEY", key)  # set after the cluster started: its workers do not inherit it
    out = tmp_path / "out"
    async with running_sim(SimConfig(require_key=key, seed=17)) as sim:
        job = replace(_job(sim.url, out, 12, 2), api_key_env="CF_TEST_KEY")
        final = await run_cluster(job)
        assert sim.state.unauthorized == 0
    assert final["phase"] == "done"
    _check_output(out, 12)
    for path in out.rglob("*"):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path
    with pytest.raises(ValueError, match="never carries the API key"):
        ShardSpec(
            name="0", index=0, count=1, run=job.run, provider=ProviderConfig(base_url=sim.url, model="m", api_key=key),
            api_key_env=None, limit=job.limit, retry=job.retry, out_dir=out, dedup=None,
        )  # fmt: skip


async def test_a_cluster_run_resumed_without_ray_says_to_add_it(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"version": 1, "cluster": {"shards": 2}}))
    code, _, err = await _cli(*_argv("http://127.0.0.1:9/v1", out, 3), "--resume", limit_s=60)
    assert code != 0 and "was generated with --ray" in err and "Traceback" not in err


async def test_a_local_instance_listens_on_loopback_only_without_a_dashboard():
    """What `generate --ray` without an address starts: every TCP listener of its processes is on 127.0.0.1."""
    script = (
        "import psutil\n"
        "from engine.ray_cluster import connect\n"
        "connect(None, num_cpus=1)\n"
        "for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:\n"
        "    try:\n"
        "        conns = p.net_connections(kind='inet')\n"
        "    except psutil.Error:\n"
        "        continue\n"
        "    for c in conns:\n"
        "        if c.status == psutil.CONN_LISTEN:\n"
        "            print('LISTEN', c.laddr.ip, c.laddr.port, p.name())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    listeners = [line.split() for line in out.decode().splitlines() if line.startswith("LISTEN")]
    assert listeners  # the GCS at least
    for _, ip, port, name in listeners:
        assert ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1"), (ip, port, name)
        assert port != "8265", name  # no dashboard
