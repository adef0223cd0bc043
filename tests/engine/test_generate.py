"""``generate`` end to end against the simulator: exactly N, accounted failures, resume after kill -9, errors."""

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from engine.errors import DataError
from engine.generate import GenerateOptions, generate
from engine.sim.config import SimConfig
from engine.sim.server import running_sim
from engine.store import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def rows(path):
    return list(read_jsonl(path))


async def test_exactly_n_unique_balanced_with_faults(tmp_path):
    async with running_sim(SimConfig(error_rate=0.1, hang_s=5, seed=4)) as sim:
        run = RunConfig(task="bbc-news", n=53, max_tokens=64)
        cfg = ProviderConfig(base_url=sim.url, model="sim", timeout_s=1.0)
        retry = RetryPolicy(max_attempts=3, initial_s=0.01, max_backoff_s=0.05)
        # no backups: this test is about retries and failures being accounted for
        options = GenerateOptions(out_dir=tmp_path, progress=False, reference_real=False, backup_requests=False)
        final = await generate(run, cfg, RateLimit(max_in_flight=16), retry, options)
    data = rows(tmp_path / "data.jsonl")
    assert len(data) == 53
    assert len({r["id"] for r in data}) == 53
    counts = Counter(r["label"] for r in data)
    assert max(counts.values()) - min(counts.values()) <= 1
    for r in data:
        assert {"id", "label", "text", "strategy", "request_id", "model"} <= set(r)
    journal = rows(tmp_path / "requests.jsonl")
    failures = rows(tmp_path / "failures.jsonl")
    # every request is accounted for: ok or failed, and every failure has a reason
    assert sum(1 for j in journal if j["status"] == "failed") == len(failures) == final["failed"]
    assert all(f["reason"] for f in failures)
    assert final["retries"] > 0
    # stats.json agrees with the files it summarises
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["accepted"] == len(data)
    assert stats["rejected"] == len(rows(tmp_path / "rejects.jsonl"))
    assert stats["requests"] == sum(j["attempts"] for j in journal)
    assert stats["prompt_tokens"] == sum(j.get("prompt_tokens", 0) for j in journal)


async def test_the_display_sees_the_phase_change_when_the_target_is_met(tmp_path):
    import contextlib

    phases = []

    @contextlib.contextmanager
    def view(snapshot):
        phases.append(snapshot()["phase"])
        yield
        phases.append(snapshot()["phase"])

    async with running_sim(SimConfig(seed=1)) as sim:
        run = RunConfig(task="bbc-news", n=10, max_tokens=64)
        cfg = ProviderConfig(base_url=sim.url, model="sim")
        options = GenerateOptions(out_dir=tmp_path, progress=False, reference_real=False)
        final = await generate(run, cfg, RateLimit(max_in_flight=4), RetryPolicy(), options, view_factory=view)
    assert phases[0] == "generating"
    assert phases[1].startswith("finishing")  # the target was met; what was in flight is being collected
    assert final["phase"] == "done"


async def test_near_duplicates_from_the_server_are_filtered(tmp_path):
    async with running_sim(SimConfig(dup_rate=0.3, seed=5)) as sim:
        run = RunConfig(task="bbc-news", n=60, max_tokens=64)
        cfg = ProviderConfig(base_url=sim.url, model="sim")
        options = GenerateOptions(out_dir=tmp_path, progress=False, reference_real=False)
        await generate(run, cfg, RateLimit(max_in_flight=4), RetryPolicy(), options)
        planted = sim.state.planted_dups
    rejects = rows(tmp_path / "rejects.jsonl")
    dropped = [r for r in rejects if r["reason"] in ("near_duplicate", "exact_duplicate")]
    assert planted > 5
    assert len(dropped) >= 0.9 * planted
    assert len(rows(tmp_path / "data.jsonl")) == 60


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


async def _until(predicate, limit_s=60.0):
    """Poll ``predicate`` until it holds (a file a child process writes), for at most ``limit_s``."""
    for _ in range(int(limit_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)


async def _run(argv, limit_s=60.0):
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    return proc.returncode, out.decode(), err.decode()


async def test_kill_9_and_resume_five_times(tmp_path):
    n, concurrency = 240, 8
    out = tmp_path / "run"
    rng = random.Random(11)
    async with running_sim(SimConfig(latency_ms=40, seed=6)) as sim:
        argv = _cli(
            "generate",
            "bbc-news",
            "--n",
            str(n),
            "--out",
            str(out),
            "--base-url",
            sim.url,
            "--model",
            "sim",
            "--concurrency",
            str(concurrency),
            "--no-progress",
            "--no-reference-real",
            "--max-tokens",
            "64",
        )
        kills = 0
        while kills < 5:
            resume = ["--resume"] if (out / "manifest.json").exists() else []
            proc = await asyncio.create_subprocess_exec(
                *argv, *resume, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT
            )
            # wait until it is writing, then kill it at a random moment
            deadline = time.monotonic() + 60
            start_lines = len(rows(out / "data.jsonl")) if (out / "data.jsonl").exists() else 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if (out / "data.jsonl").exists() and len(rows(out / "data.jsonl")) > start_lines:
                    break
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            await proc.wait()
            if len(rows(out / "data.jsonl")) >= n:
                break
        code, _, err = await _run([*argv, "--resume"], limit_s=120)
        assert code == 0, err
        paid = sim.state.ok
    data = rows(out / "data.jsonl")
    assert len(data) == n
    assert len({r["id"] for r in data}) == n
    # an uninterrupted run pays for n requests (one example each, nothing dropped here); each kill may
    # waste at most what was in flight: sent and not yet on disk, i.e. the workers' requests plus the
    # answers queued for the writer (a queue as long as the worker count)
    assert paid <= n + kills * 2 * concurrency + len(rows(out / "rejects.jsonl"))


async def test_wrong_key_exits_fast_with_one_line_and_no_key(tmp_path):
    secret = "sk-wrong-0123456789abcdef"
    async with running_sim(SimConfig(require_key="sk-right")) as sim:
        env_argv = _cli(
            "generate",
            "bbc-news",
            "--n",
            "5",
            "--out",
            str(tmp_path / "o"),
            "--base-url",
            sim.url,
            "--model",
            "sim",
            "--no-progress",
        )
        proc = await asyncio.create_subprocess_exec(
            *env_argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "OPENAI_API_KEY": secret},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    assert proc.returncode != 0
    assert secret not in text
    assert "Traceback" not in text
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and "API key" in lines[0], lines
    assert not (tmp_path / "o" / "manifest.json").exists()  # nothing started, so nothing to resume


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["no-such-task", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"], "no-such-task"),
        (["bbc-news", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"], "cannot connect"),
        (["bbc-news", "--base-url", "ftp://x", "--model", "m"], "base URL"),
    ],
)
async def test_bad_input_gives_one_line_error(tmp_path, args, needle):
    code, out, err = await _run(_cli("generate", *args, "--n", "5", "--out", str(tmp_path / "o"), "--no-progress"))
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


async def test_zero_shot_needs_no_real_data_but_few_shot_says_what_to_pass(tmp_path):
    async with running_sim(SimConfig(seed=8)) as sim:
        cfg = ProviderConfig(base_url=sim.url, model="sim")
        options = GenerateOptions(out_dir=tmp_path / "zs", progress=False)
        final = await generate(RunConfig(task="sst2", n=6, max_tokens=64), cfg, RateLimit(), RetryPolicy(), options)
        assert final["accepted"] == 6
        few = RunConfig(task="sst2", strategy="few-shot", n=6, max_tokens=64)
        with pytest.raises(DataError, match="--data"):
            await generate(few, cfg, RateLimit(), RetryPolicy(), GenerateOptions(out_dir=tmp_path / "fs"))
    assert not (tmp_path / "fs").exists()


async def test_counters_after_kill_and_resume_match_the_files(tmp_path):
    """Issue 14 item 2: after kill -9 + --resume, accepted is the data's line count and requests the journal's."""
    out = tmp_path / "run"
    async with running_sim(SimConfig(latency_ms=30, seed=3)) as sim:
        argv = _cli(
            "generate", "bbc-news", "--n", "150", "--out", str(out), "--base-url", sim.url, "--model", "sim",
            "--concurrency", "4", "--no-progress", "--no-reference-real", "--max-tokens", "64",
        )  # fmt: skip
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL, cwd=ROOT)
        await _until(lambda: (out / "data.jsonl").exists() and len(rows(out / "data.jsonl")) >= 40)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        code, _, err = await _run([*argv, "--resume"], limit_s=120)
        assert code == 0, err
    data, journal = rows(out / "data.jsonl"), rows(out / "requests.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accepted"] == len(data) == 150
    assert stats["requests"] == sum(j["attempts"] for j in journal)
    assert stats["prompt_tokens"] == sum(j.get("prompt_tokens", 0) for j in journal)
    assert stats["rejected"] == len(rows(out / "rejects.jsonl"))


async def test_a_second_writer_on_the_same_run_is_refused_with_one_line(tmp_path):
    """Issue 14 item 1: a running generate and a second one with --resume on the same --out."""
    out = tmp_path / "run"
    async with running_sim(SimConfig(latency_ms=400, seed=2)) as sim:
        argv = _cli(
            "generate", "bbc-news", "--n", "40", "--concurrency", "4", "--out", str(out),
            "--base-url", sim.url, "--model", "sim", "--no-progress", "--max-tokens", "64",
        )  # fmt: skip
        first = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL, cwd=ROOT)
        await _until(lambda: (out / "manifest.json").exists())
        code, _, err = await _run([*argv, "--resume"])
        assert code != 0
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and f"in use by another corpusforge process (PID {first.pid})" in lines[0], lines
        assert await first.wait() == 0
    data = rows(out / "data.jsonl")
    assert len(data) == 40 and len({r["id"] for r in data}) == 40


async def test_stragglers_get_backups_so_hung_requests_do_not_hold_the_run(tmp_path):
    """Issue 14 item 10: a few requests hang for minutes; the run ends without waiting for them."""
    async with running_sim(SimConfig(faults={"timeout": 0.02}, hang_s=600, seed=9)) as sim:
        run = RunConfig(task="bbc-news", n=300, max_tokens=64)
        cfg = ProviderConfig(base_url=sim.url, model="sim", timeout_s=600)
        options = GenerateOptions(out_dir=tmp_path, progress=False, reference_real=False)
        final = await generate(run, cfg, RateLimit(max_in_flight=16), RetryPolicy(), options)
        hung = sim.state.faults["timeout"]
    assert hung > 0 and final["accepted"] == 300
    assert 0 < final["backup_requests"] <= max(1, 0.01 * final["requests"]) + 1
    assert len({r["id"] for r in rows(tmp_path / "data.jsonl")}) == 300


async def test_resume_of_a_directory_that_does_not_exist_says_so(tmp_path):
    code, _, err = await _run(
        _cli("generate", "bbc-news", "--resume", "--out", str(tmp_path / "nope"), "--base-url", "http://127.0.0.1:9/v1",
             "--model", "m")
    )  # fmt: skip
    assert code != 0 and "nothing to resume" in err and "Traceback" not in err
    assert not (tmp_path / "nope").exists()


async def test_a_start_that_fails_leaves_no_run_directory(tmp_path):
    """Issue 14 item 6: a wrong --model; fixing the typo then works without --resume."""
    async with running_sim(SimConfig(strict_model=True, seed=1)) as sim:
        base = [
            "generate",
            "bbc-news",
            "--n",
            "5",
            "--out",
            str(tmp_path / "o"),
            "--base-url",
            sim.url,
            "--no-progress",
        ]
        code, _, err = await _run(_cli(*base, "--model", "typo"))
        assert code != 0 and "Traceback" not in err
        assert not (tmp_path / "o").exists()
        code, _, err = await _run(_cli(*base, "--model", "sim"))
        assert code == 0, err


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only): a disk that fills up for real. Yields (path, grow) where grow() enlarges it."""
    import shutil
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)

    try:
        yield mnt, grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


async def test_a_full_disk_is_one_line_and_resume_gives_exactly_n(small_disk):
    """Issue 14 item 5: a full disk mid-run, then free space and --resume."""
    disk, grow = small_disk
    out = disk / "run"
    async with running_sim(SimConfig(seed=12)) as sim:
        argv = _cli(
            "generate", "bbc-news", "--n", "4000", "--out", str(out), "--base-url", sim.url, "--model", "sim",
            "--no-progress", "--no-reference-real", "--max-tokens", "64",
        )  # fmt: skip
        code, _, err = await _run(argv, limit_s=120)
        assert code != 0 and "Traceback" not in err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "No space left on device" in lines[0] and "--resume" in lines[0], lines
        assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
        grow()
        code, _, err = await _run([*argv, "--resume"], limit_s=120)
        assert code == 0, err
    data = rows(out / "data.jsonl")
    assert len(data) == 4000 and len({r["id"] for r in data}) == 4000
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accepted"] == 4000
    assert stats["requests"] == sum(j["attempts"] for j in rows(out / "requests.jsonl"))


@contextlib.asynccontextmanager
async def _one_answer_server(status: int, body: str, content_type: str):
    """A server that answers every chat completion the same way (an HTML error page, a refusal, ...)."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def _refusal_body() -> str:
    message = {"role": "assistant", "content": "I'm sorry, but I can't help with that request."}
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }
    )


@pytest.mark.parametrize(
    ("status", "body", "content_type", "needle"),
    [
        (200, "<html><body>Welcome to nginx!</body></html>", "text/html", "requests failed after their retries"),
        (501, "<html>Not Implemented</html>", "text/html", "requests failed after their retries"),
        (200, _refusal_body(), "application/json", "dropped as refusal"),
    ],
)
async def test_a_run_that_ends_short_says_why_in_its_last_line(tmp_path, status, body, content_type, needle):
    """Issue 14 item 3: not N-1 and a bare table, but the cause and the fix."""
    async with _one_answer_server(status, body, content_type) as url:
        code, out, err = await _run(
            _cli(
                "generate", "bbc-news", "--n", "5", "--out", str(tmp_path / "o"), "--base-url", url, "--model", "m",
                "--no-progress", "--max-attempts", "1", "--max-requests", "8", "--no-backup-requests",
            )
        )  # fmt: skip
    assert code == 1 and "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("corpusforge: stopped at 0/5") and needle in last and "Fix:" in last, last
    assert "--resume" in last
