"""``generate --batch`` in-process against the simulator's Batch API: exactly N, re-planned failures, limits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.batch.poll import PollPolicy
from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from engine.errors import BadRequest, NotFound
from engine.run import GenerateOptions
from engine.sim import SimConfig, running_sim
from engine.sources.batch import BatchOptions, SimulatedCrash, generate_batch, limit_from, pending_batches
from engine.store import read_jsonl

FAST = BatchOptions(poll=PollPolicy(initial_s=0.01, max_s=0.05))
RETRY = RetryPolicy(max_attempts=3, initial_s=0.01, max_backoff_s=0.05)


def _rows(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(path))


async def _generate(
    url: str, out: Path, *, n: int = 40, batch: BatchOptions = FAST, resume: bool = False, **run_kw: Any
) -> dict[str, Any]:
    run = RunConfig(task="bbc-news", n=n, max_tokens=64, **run_kw)
    cfg = ProviderConfig(base_url=url, model="sim", timeout_s=5.0)
    options = GenerateOptions(out_dir=out, progress=False, reference_real=False, resume=resume)
    return await generate_batch(run, cfg, RateLimit(), RETRY, options, batch)


async def _sim_stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/sim/batch-stats") as r:
        data: dict[str, Any] = await r.json()
        return data


def _check_exactly(out: Path, n: int) -> list[dict[str, Any]]:
    data = _rows(out / "data.jsonl")
    assert len(data) == n and len({r["id"] for r in data}) == n
    counts = Counter(r["label"] for r in data)
    assert max(counts.values()) - min(counts.values()) <= 1
    return data


async def test_batch_run_reaches_exactly_n_with_batch_prices(tmp_path: Path) -> None:
    async with running_sim(SimConfig(batch_phase_s=0.0, seed=2)) as sim:
        final = await _generate(sim.url, tmp_path, n=40, price_in=2.0, price_out=8.0)
        stats = await _sim_stats(sim.url)
    _check_exactly(tmp_path, 40)
    assert final["phase"] == "done" and final["batches_submitted"] >= 1 and final["batches_completed"] >= 1
    expected = final["prompt_tokens"] * 1.0 / 1e6 + final["completion_tokens"] * 4.0 / 1e6
    assert final["cost_usd"] == pytest.approx(expected, rel=1e-6)  # half of --price-in/--price-out
    assert stats["executed_twice"] == 0 and stats["executed_custom_ids"] == final["requests"]
    assert final["batch_http_calls"] < 20  # a handful of calls, not one per request
    assert json.loads((tmp_path / "stats.json").read_text())["batches_completed"] == final["batches_completed"]
    ledger = _rows(tmp_path / "batches" / "ledger.jsonl")
    assert [e["event"] for e in ledger][:4] == ["written", "uploaded", "creating", "created"]
    assert pending_batches(tmp_path) == []


async def test_expired_batches_and_error_lines_are_planned_again(tmp_path: Path) -> None:
    cfg = SimConfig(batch_phase_s=0.0, batch_expire_every=2, batch_error_rate=0.2, seed=5)
    async with running_sim(cfg) as sim:
        final = await _generate(sim.url, tmp_path, n=60)
        stats = await _sim_stats(sim.url)
    _check_exactly(tmp_path, 60)
    failures = _rows(tmp_path / "failures.jsonl")
    assert any("batch_expired" in f["reason"] for f in failures)
    assert any("server" in f["reason"].lower() for f in failures)
    assert final["batches_expired"] >= 1 and final["failed"] == len(failures)
    assert stats["executed_twice"] == 0  # a failed request is planned again under a new id, never resent


async def test_enqueued_token_limit_is_learned_and_never_fails_the_run(tmp_path: Path) -> None:
    # each request is about 60-70 prompt tokens as the sim counts them: 4,000 tokens hold ~60 requests
    cfg = SimConfig(batch_phase_s=0.0, batch_rps=2000, batch_token_limit=4000, seed=7)
    async with running_sim(cfg) as sim:
        final = await _generate(sim.url, tmp_path, n=200)
        stats = await _sim_stats(sim.url)
    _check_exactly(tmp_path, 200)
    assert stats["token_limit_failures"] >= 1 and final["enqueued_token_limit"] == 4000
    assert final["batches_submitted"] > 2 and stats["executed_twice"] == 0
    events = _rows(tmp_path / "batches" / "ledger.jsonl")
    assert {"event": "limit", "tokens": 4000} in events


async def test_a_known_enqueued_token_limit_is_respected_without_refusals(tmp_path: Path) -> None:
    cfg = SimConfig(batch_phase_s=0.0, batch_rps=2000, batch_token_limit=4000, seed=7)
    known = BatchOptions(max_enqueued_tokens=4000, poll=FAST.poll)
    async with running_sim(cfg) as sim:
        final = await _generate(sim.url, tmp_path, n=120, batch=known)
        stats = await _sim_stats(sim.url)
    _check_exactly(tmp_path, 120)
    assert stats["token_limit_failures"] == 0 and final["batches_submitted"] > 2


async def test_a_refusal_at_creation_is_learned_the_same_way(tmp_path: Path) -> None:
    cfg = SimConfig(batch_phase_s=0.0, batch_token_limit=4000, batch_token_limit_on_create=True, seed=7)
    async with running_sim(cfg) as sim:
        final = await _generate(sim.url, tmp_path, n=200)
        stats = await _sim_stats(sim.url)
    _check_exactly(tmp_path, 200)
    assert stats["token_limit_failures"] >= 1 and final["enqueued_token_limit"] == 4000
    assert stats["executed_twice"] == 0 and final["batches_failed"] == 0


async def test_a_server_without_the_batch_api_is_one_line_before_touching_out(tmp_path: Path) -> None:
    async with running_sim(SimConfig(batch_api=False)) as sim:
        with pytest.raises(NotFound) as info:
            await _generate(sim.url, tmp_path / "run")
    assert "no Batch API" in str(info.value) and "without --batch" in str(info.value)
    assert not (tmp_path / "run").exists()


async def test_a_batch_that_fails_validation_stops_with_the_reason_and_resumes(tmp_path: Path) -> None:
    async with running_sim(SimConfig(batch_phase_s=0.0, batch_fail_every=1)) as sim:
        with pytest.raises(BadRequest) as info:
            await _generate(sim.url, tmp_path, n=10)
        assert "failed validation" in str(info.value) and "Simulated validation failure" in str(info.value)
    failures = _rows(tmp_path / "failures.jsonl")
    assert len(failures) == 10 and pending_batches(tmp_path) == []
    async with running_sim(SimConfig(batch_phase_s=0.0)) as sim:  # the cause is gone: resume completes
        await _generate(sim.url, tmp_path, n=10, resume=True)
    _check_exactly(tmp_path, 10)


async def test_files_are_split_by_max_requests(tmp_path: Path) -> None:
    async with running_sim(SimConfig(batch_phase_s=0.0)) as sim:
        final = await _generate(sim.url, tmp_path, n=50, batch=BatchOptions(max_requests=15, poll=FAST.poll))
    _check_exactly(tmp_path, 50)
    inputs = sorted((tmp_path / "batches").glob("input-?????.jsonl"))
    assert len(inputs) >= 4 and all(len(p.read_text().splitlines()) <= 15 for p in inputs)
    assert final["batches_submitted"] == len(inputs)


def test_limit_is_read_from_the_providers_messages() -> None:
    openai = "Enqueued token limit reached for gpt-4o in organization org-x. Limit: 90,000 enqueued tokens. Please"
    azure = "The number of enqueued tokens has surpassed the configured limit of 30K for the deployment 'x'."
    assert limit_from(openai) == 90_000 and limit_from(azure) == 30_000 and limit_from("no number") is None


@pytest.mark.parametrize(("event", "k"), [("created", 2), ("downloaded", 1), ("ingested", 1), ("written", 2)])
async def test_a_crash_at_a_step_then_resume_loses_and_repeats_nothing(tmp_path: Path, event: str, k: int) -> None:
    # in-process (the crash hook raises instead of SIGKILL); test_batch_resume.py kills a real process
    crash = BatchOptions(poll=FAST.poll, max_requests=15, crash_before=(event, k), crash_kill=False)
    async with running_sim(SimConfig(batch_phase_s=0.0, batch_error_rate=0.05, seed=3)) as sim:
        with pytest.raises(SimulatedCrash):
            await _generate(sim.url, tmp_path, n=45, batch=crash)
        await _generate(sim.url, tmp_path, n=45, batch=BatchOptions(poll=FAST.poll, max_requests=15), resume=True)
        async with aiohttp.ClientSession() as s, s.get(sim.url.removesuffix("/v1") + "/sim/batch-stats?ids=1") as r:
            stats = await r.json()
    _check_exactly(tmp_path, 45)
    journal = _rows(tmp_path / "requests.jsonl")
    assert len(journal) == len({row["request_id"] for row in journal})
    assert stats["executed_twice"] == 0
    assert set(stats["answered_ids"]) <= {row["request_id"] for row in journal if row["status"] == "ok"}
