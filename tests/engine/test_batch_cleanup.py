"""Provider files are deleted once a batch's results are on disk; failures never lose data nor fail the run.

In-process against the simulator's Files API (``DELETE /v1/files/{id}``, a
GET of a deleted file is a 404); the CLI part (``batches --delete-files``)
runs the simulator in a child process.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.batch.cleanup import MAX_FAILURES
from engine.batch.poll import PollPolicy
from engine.cli import main
from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from engine.run import GenerateOptions
from engine.sim import SimConfig, running_sim, sim_process
from engine.sources.batch import BatchOptions, SimulatedCrash, generate_batch
from engine.store import read_jsonl

POLL = PollPolicy(initial_s=0.01, max_s=0.05)
RETRY = RetryPolicy(max_attempts=2, initial_s=0.01, max_backoff_s=0.02)
FAST_SIM = SimConfig(batch_phase_s=0.0, batch_error_rate=0.1, seed=4)


async def _generate(
    url: str, out: Path, *, n: int = 30, resume: bool = False, warnings: list[str] | None = None, **batch_kw: Any
) -> dict[str, Any]:
    run = RunConfig(task="bbc-news", n=n, max_tokens=64)
    cfg = ProviderConfig(base_url=url, model="sim", timeout_s=5.0)
    options = GenerateOptions(out_dir=out, progress=False, reference_real=False, resume=resume)
    batch = BatchOptions(poll=POLL, max_requests=12, **batch_kw)
    warn = warnings.append if warnings is not None else lambda _: None
    return await generate_batch(run, cfg, RateLimit(), RETRY, options, batch, warn=warn)


def _ledger(out: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(out / "batches" / "ledger.jsonl"))


def _provider_ids(events: list[dict[str, Any]]) -> set[str]:
    ids = {e["file_id"] for e in events if e["event"] == "uploaded"}
    for e in events:
        if e["event"] == "ended":
            ids |= {e.get("output_file_id"), e.get("error_file_id")} - {None}
    return ids


async def test_every_provider_file_is_deleted_once_ingested(tmp_path: Path) -> None:
    async with running_sim(FAST_SIM) as sim:
        final = await _generate(sim.url, tmp_path)
        state = sim.batches.state
        stored = dict(sim.batches.files)
    events = _ledger(tmp_path)
    ids = _provider_ids(events)
    assert len(ids) >= 4  # several inputs, outputs and error files
    assert stored == {} and state.files_deleted == len(ids)  # nothing left at the provider
    assert final["batch_files_deleted"] == len(ids) and final["batch_files_left"] == 0
    assert len(list(read_jsonl(tmp_path / "data.jsonl"))) == 30
    # never before the file's outcomes are ingested
    ingested: set[str] = set()
    for e in events:
        if e["event"] == "ingested":
            ingested.add(e["file"])
        if e["event"] == "deleted":
            assert e["file"] in ingested


async def test_keep_batch_files_leaves_them_and_says_so(tmp_path: Path) -> None:
    async with running_sim(FAST_SIM) as sim:
        final = await _generate(sim.url, tmp_path, keep_files=True)
        stored = len(sim.batches.files)
        assert sim.batches.state.files_deleted == 0
    assert stored == final["batch_files_left"] == len(_provider_ids(_ledger(tmp_path))) > 0
    assert final["batch_files_deleted"] == 0


@pytest.mark.parametrize("status", [500, 405])
async def test_failed_deletions_warn_once_and_never_fail_the_run_then_resume_deletes(
    tmp_path: Path, status: int
) -> None:
    warnings: list[str] = []
    async with running_sim(FAST_SIM) as sim:
        sim.batches.files_api.delete_status = status
        final = await _generate(sim.url, tmp_path, warnings=warnings)
        refused = sim.batches.state.deletes_refused
        assert final["phase"] == "done" and len(list(read_jsonl(tmp_path / "data.jsonl"))) == 30
        assert len(warnings) == 1 and "--delete-files" in warnings[0] and str(tmp_path) in warnings[0]
        assert final["batch_files_left"] == len(sim.batches.files) > 0
        assert "batch_files_warning" in final
        failed = [e for e in _ledger(tmp_path) if e["event"] == "delete_failed"]
        assert failed and all(e["reason"] for e in failed)
        if status == 405:  # a server without the route: tried once, not once per file
            assert refused == 1 and len(failed) == 1
        else:  # each retried, then skipped; after MAX_FAILURES the session stops trying
            assert len(failed) == MAX_FAILURES < final["batch_files_left"]
        sim.batches.files_api.delete_status = None
        again = await _generate(sim.url, tmp_path, resume=True)  # the run is done: resume only cleans up
        assert sim.batches.files == {} and again["batch_files_left"] == 0
    assert len(list(read_jsonl(tmp_path / "data.jsonl"))) == 30


async def test_a_crash_between_delete_and_its_record_is_finished_by_resume(tmp_path: Path) -> None:
    async with running_sim(FAST_SIM) as sim:
        with pytest.raises(SimulatedCrash):
            await _generate(sim.url, tmp_path, crash_before=("deleted", 2), crash_kill=False)
        deleted_unrecorded = sim.batches.state.files_deleted - sum(
            1 for e in _ledger(tmp_path) if e["event"] == "deleted"
        )
        assert deleted_unrecorded == 1  # gone at the provider, not in the ledger
        final = await _generate(sim.url, tmp_path, resume=True)
        assert sim.batches.files == {} and final["batch_files_left"] == 0
    events = _ledger(tmp_path)
    deleted = [e["file_id"] for e in events if e["event"] == "deleted"]
    assert sorted(deleted) == sorted(set(deleted)) == sorted(_provider_ids(events))  # the 404 recorded as deleted
    assert final["phase"] == "done" and len(list(read_jsonl(tmp_path / "data.jsonl"))) == 30


def _sim_files(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/sim/batch-stats", timeout=10) as r:
        return int(json.loads(r.read())["files_stored"])


def test_batches_lists_files_left_and_delete_files_deletes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with sim_process(SimConfig(batch_phase_s=0.0, seed=2)) as url:
        code = main(
            ["generate", "bbc-news", "--n", "20", "--out", str(out), "--base-url", url, "--model", "sim"]
            + ["--no-progress", "--batch", "--batch-poll-s", "0.01", "--keep-batch-files", "--max-tokens", "64"]
        )
        assert code == 0
        kept = _sim_files(url)
        assert kept >= 2
        capsys.readouterr()
        assert main(["batches", str(out), "--json"]) == 0
        captured = capsys.readouterr()
        rows = [json.loads(line) for line in captured.out.splitlines()]
        assert sum(r["files_left"] for r in rows) == kept
        assert all(i.startswith("file-") for r in rows for i in r["file_ids_left"])
        assert f"{kept} provider file(s)" in captured.err and "--delete-files" in captured.err
        assert main(["batches", str(out), "--delete-files", "--json"]) == 0
        captured = capsys.readouterr()
        assert f"deleted {kept} provider file(s); 0 left" in captured.err
        assert _sim_files(url) == 0
        assert all(json.loads(line)["files_left"] == 0 for line in captured.out.splitlines())
        assert main(["batches", str(out)]) == 0 and "not deleted" not in capsys.readouterr().err
