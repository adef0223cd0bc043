"""The shared rate budget without Ray: the Budget alone under a test clock, and shards leasing from it against the
simulator (a server-side RPM limit the client is not told)."""

from __future__ import annotations

import asyncio
import functools
import math
from collections import Counter

import pytest

from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from engine.limits.budget import Budget, Report
from engine.limits.leased import LeasedAdmission
from engine.plan import Planner, shard_quotas
from engine.providers.openai import OpenAIProvider, make_session
from engine.run import GenerateOptions, manifest_for, open_run
from engine.sim.config import SimConfig
from engine.sim.server import running_sim
from engine.sources.online import run_online


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# -- the plan split into shards -------------------------------------------------------------------


def _drain(planner: Planner) -> list[str]:
    ids = []
    while (req := planner.next()) is not None:
        ids.append(req.id)
        planner.record(req.label, kept=1)
    return ids


def test_shards_split_the_plan_into_disjoint_slices_with_the_quotas_adding_up():
    labels = ["a", "b", "c"]
    whole = Planner(labels, n=10, cap=1000)
    plain = _drain(whole)
    parts = [Planner(labels, n=10, cap=1000, shard=(k, 3)) for k in range(3)]
    slices = [_drain(p) for p in parts]
    assert sum(len(s) for s in slices) == 10
    assert len(set().union(*map(set, slices))) == 10  # disjoint
    total = Counter()
    for p in parts:
        total.update(p.quota)
    assert total == Counter(whole.quota)
    # a shard's ids are the single plan's ids with index g % S == k; S = 1 is the plain plan
    for k, ids in enumerate(slices):
        assert all(int(rid.rsplit("-", 1)[1]) % 3 == k for rid in ids)
    assert _drain(Planner(labels, n=10, cap=1000, shard=(0, 1))) == plain


def test_remainders_of_several_labels_land_on_different_shards():
    parts = [shard_quotas({"a": 4, "b": 4, "c": 4}, (k, 3)) for k in range(3)]
    assert [sum(p.values()) for p in parts] == [4, 4, 4]
    assert parts[0] == {"a": 2, "b": 1, "c": 1}


def test_a_top_up_round_has_its_own_ids_and_quotas():
    p = Planner(["a", "b"], n=10, cap=100, namespace="t0", quota={"a": 2})
    assert _drain(p) == ["a-t0-0000000", "a-t0-0000001"]


# -- the budget alone -----------------------------------------------------------------------------


def test_budget_grants_chunks_then_says_when_to_ask_again():
    clock = Clock()
    budget = Budget(limit=RateLimit(rpm=60), shards=2, clock=clock)  # 1 request/s; a lease is 2 s / 2 shards
    grants = [budget.lease(Report(shard=0, want_requests=True)) for _ in range(60)]
    assert all(g.requests == 1.0 for g in grants)  # the full bucket, one chunk at a time
    empty = budget.lease(Report(shard=1, want_requests=True))
    assert empty.requests == 0 and empty.retry_in == pytest.approx(1.0)
    clock.t += 1.0
    assert budget.lease(Report(shard=1, want_requests=True)).requests == 1.0


def test_no_limit_known_grants_without_limit_and_learns_from_headers():
    clock = Clock()
    budget = Budget(limit=RateLimit(max_in_flight=64), shards=2, clock=clock)
    first = budget.lease(Report(shard=0, want_requests=True))
    assert math.isinf(first.requests) and first.concurrency == 4  # AIMD start (8) split between two shards
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "100",
        "x-ratelimit-reset-requests": "50s",
    }
    learned = budget.lease(Report(shard=0, want_requests=True, headers=headers, in_flight=4))
    assert learned.learned and learned.rpm_limit == 600 and learned.concurrency == 32
    # level: 100 remaining, minus the 4 in flight, minus headroom; a chunk is 2 s of 10/s over two shards
    assert learned.requests == 10.0
    granted = 10.0
    while budget.lease(Report(shard=1, want_requests=True)).requests:
        granted += 10
    assert granted == 90.0


def test_a_429_empties_the_budget_and_tells_every_holder():
    clock = Clock()
    budget = Budget(limit=RateLimit(rpm=600), shards=2, clock=clock)
    before = budget.lease(Report(shard=0, want_requests=True))
    after = budget.lease(Report(shard=1, limited=1, retry_after=2.0, want_requests=True))
    assert after.epoch == before.epoch + 1 and after.requests == 0 and after.pause_s == pytest.approx(2.0)
    clock.t += 0.5
    paused = budget.lease(Report(shard=0, want_requests=True))
    assert paused.requests == 0 and paused.retry_in == pytest.approx(1.5)
    clock.t += 1.5
    assert budget.lease(Report(shard=0, want_requests=True)).requests == 10  # refilled from empty: 2 s of 10/s


def test_what_a_shard_gives_back_is_there_for_the_others():
    clock = Clock()
    budget = Budget(limit=RateLimit(rpm=60), shards=1, clock=clock)
    while budget.lease(Report(shard=0, want_requests=True)).requests:
        pass
    budget.lease(Report(shard=0, returned_requests=2.0, done=True))
    assert budget.lease(Report(shard=1, want_requests=True)).requests == 2.0  # a chunk: 2 s of 1/s


async def test_a_leased_controller_admits_from_its_allowance_and_returns_the_rest():
    budget = Budget(limit=RateLimit(rpm=600), shards=1)
    calls = 0

    async def lease(report: Report):
        nonlocal calls
        calls += 1
        return budget.lease(report)

    controller = LeasedAdmission(RateLimit(rpm=600), lease, shard=0)
    tickets = [await controller.acquire() for _ in range(25)]
    for ticket in tickets:
        controller.release(ticket)
    assert calls <= 4  # chunks of 20: a round trip per lease, not per request
    await controller.aclose()
    assert budget.snapshot()["budget_granted_requests"] == 40  # two chunks of 20 ...
    level = budget.lease(Report(shard=1)).requests_mark  # (any call) ... of which 15 came back:
    assert level == 40 and 600 - budget._rpm.refill() == pytest.approx(25, abs=0.5)


async def test_while_no_limit_is_known_reports_do_not_take_the_allowance_away():
    budget = Budget(limit=RateLimit(), shards=1)
    asked = 0

    async def lease(report: Report):
        nonlocal asked
        asked += report.want_requests
        return budget.lease(report)

    controller = LeasedAdmission(RateLimit(), lease, shard=0, report_every_s=0.005)
    controller.release(await controller.acquire())
    await asyncio.sleep(0.05)  # several reports without a want go and come back
    for _ in range(20):
        controller.release(await controller.acquire())
    await controller.aclose()
    assert asked == 1 and budget.leases > 3


# -- shards against the simulator -----------------------------------------------------------------

RPM = 600
N = 630  # the server's bucket starts full (600): the last 30 requests wait for its refill, about 3 s


async def _shard(k: int, shards: int, url: str, tmp_path, budget: Budget | None) -> dict:
    cfg = ProviderConfig(base_url=url, model="sim")
    run = RunConfig(task="bbc-news", n=N, max_tokens=64)
    limit = RateLimit()
    opts = GenerateOptions(out_dir=tmp_path / f"s{k}", progress=False)

    async def lease(report: Report):
        await asyncio.sleep(0.001)  # a round trip, so leases interleave as they would between processes
        assert budget is not None
        return budget.lease(report)

    async with make_session(cfg) as session:
        planner = functools.partial(Planner, shard=(k, shards))
        manifest = manifest_for(run, cfg, limit, opts.dedup)
        with open_run(run, model="sim", manifest=manifest, options=opts, planner_factory=planner) as active:
            controller = LeasedAdmission(limit, lease, shard=k) if budget is not None else None
            await run_online(
                active, OpenAIProvider(session, cfg), limit=limit, retry=RetryPolicy(), controller=controller
            )
            if controller is not None:
                await controller.aclose()
            return active.final_snapshot()


async def _run(tmp_path, shards: int, shared: bool) -> tuple[int, int]:
    async with running_sim(SimConfig(rpm_limit=RPM, seed=3)) as sim:
        budget = Budget(limit=RateLimit(), shards=shards) if shared else None
        finals = await asyncio.gather(*(_shard(k, shards, sim.url, tmp_path, budget) for k in range(shards)))
        assert sum(f["accepted"] for f in finals) == N
        return sim.state.rate_limited, sim.state.ok


async def test_shards_sharing_a_budget_see_no_more_429s_than_one_process(tmp_path):
    single_429, single_ok = await _run(tmp_path / "one", 1, shared=False)
    shared_429, shared_ok = await _run(tmp_path / "two", 3, shared=True)
    assert shared_429 <= single_429
    assert shared_ok == single_ok == N


@pytest.mark.slow
async def test_shards_with_their_own_budgets_do_see_429s(tmp_path):
    """The contrast that shows the test above can fail: each shard learning the limit alone overshoots it."""
    separate_429, _ = await _run(tmp_path / "sep", 3, shared=False)
    assert separate_429 > 0


def test_the_live_view_shows_a_row_per_node():
    import io

    from rich.console import Console

    from engine.ui import render

    snap = {
        "phase": "generating",
        "accepted": 5,
        "target": 10,
        "nodes": [
            {"node": "n-one", "shards": 2, "requests": 10, "requests_per_s": 2.5, "accepted": 5, "rate_limited": 1},
            {"node": "n-two", "shards": 1, "requests": 4, "requests_per_s": 1.0, "accepted": 0, "rate_limited": 0},
        ],
    }
    buf = io.StringIO()
    Console(file=buf, width=120).print(render(snap))
    lines = buf.getvalue().splitlines()
    one = next(line for line in lines if "n-one" in line).split()
    assert one[1:8] == ["n-one", "2", "10", "2.5", "-", "5", "1"]
    assert any("n-two" in line for line in lines)
