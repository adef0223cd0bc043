"""engine.endpoint_probe and bench-endpoint: the statistics, the sweep against the simulator, the command, and the real local server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import ProviderConfig
from engine.endpoint_probe import (
    BenchConfig,
    Sample,
    StepResult,
    percentiles,
    run_step,
    run_sweep,
    step_line,
    sweep_report,
    synthetic_prompts,
)
from engine.errors import ConfigError
from engine.llamacpp import LocalServer, LocalServerConfig
from engine.providers.openai import OpenAIProvider, make_session
from engine.sim import SimConfig, running_sim

# -- pure parts --------------------------------------------------------------------------------


def test_percentiles_interpolate_like_numpy() -> None:
    assert percentiles([]) == {}
    p = percentiles([1.0, 2.0, 3.0, 4.0])
    assert p["mean"] == 2.5 and p["p50"] == 2.5
    assert p["p90"] == pytest.approx(3.7) and p["p99"] == pytest.approx(3.97)
    assert percentiles([5.0])["p99"] == 5.0


def test_synthetic_prompts_are_deterministic_and_distinct() -> None:
    a = synthetic_prompts(8, 100, seed=3)
    assert a == synthetic_prompts(8, 100, seed=3)
    assert a != synthetic_prompts(8, 100, seed=4)
    firsts = {p[0]["content"].split()[0:5].__repr__() for p in a}
    assert len(firsts) == 8  # no shared prefixes for a prompt cache to exploit
    assert 80 <= len(a[0][0]["content"].split()) <= 110


@pytest.mark.parametrize(
    "kw",
    [
        {},  # neither concurrency nor rates
        {"concurrency": (1,), "rates": (1.0,)},
        {"concurrency": (0,)},
        {"rates": (-1.0,)},
        {"concurrency": (1,), "requests": None, "duration_s": None},
        {"concurrency": (1,), "requests": 0},
        {"concurrency": (1,), "max_tokens": 0},
    ],
)
def test_config_rejects_nonsense(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        BenchConfig(**kw)  # type: ignore[arg-type]


def test_summary_of_samples_with_server_timings() -> None:
    good = Sample(
        ok=True,
        ttft_s=0.1,
        latency_s=1.1,
        prompt_tokens=10,
        completion_tokens=101,
        gaps_s=[0.01] * 100,
        server={"predicted_per_second": 100.0, "predicted_n": 101, "predicted_ms": 1010.0, "prompt_ms": 50.0},
    )
    bad = Sample(ok=False, error="Timeout")
    step = StepResult.summarise("concurrency", 2, [good, good, bad], cancelled=1, duration_s=2.0)
    assert (step.sent, step.ok, step.errors, step.cancelled) == (4, 2, {"Timeout": 1}, 1)
    assert step.output_tokens_per_s == pytest.approx(101.0)
    assert step.tpot_ms["p50"] == pytest.approx(10.0)
    assert step.itl_ms["p50"] == pytest.approx(10.0)
    assert step.decode_tps["p50"] == pytest.approx(101.0)
    assert step.server["decode_ratio_p50"] == pytest.approx(1.01)
    assert step.server["predicted_n"] == step.server["completion_tokens"] == 202
    json.dumps(step.to_dict())


def test_step_line_and_report_describe_a_step() -> None:
    good = Sample(ok=True, ttft_s=0.25, latency_s=1.5, prompt_tokens=10, completion_tokens=20)
    step = StepResult.summarise("rate", 2.5, [good, Sample(ok=False, error="Timeout")], cancelled=1, duration_s=1.0)
    assert step.label == "2.5/s"
    line = step_line(step)
    assert "2.5/s" in line and "1/3 ok, 2 failed" in line and "TTFT p50 250 ms" in line and "E2E p50 1,500 ms" in line
    pcfg = ProviderConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key="sk-secret-value")
    cfg = BenchConfig(rates=(2.5,), requests=3)
    report = sweep_report(pcfg, cfg, [step], started=0.0, local_server={"parallel": 2})
    assert report["endpoint"] == {"base_url": "http://127.0.0.1:9/v1", "model": "m", "local": {"parallel": 2}}
    assert report["config"]["rates"] == (2.5,) and report["steps"] == [step.to_dict()]
    assert "sk-secret" not in json.dumps(report)


# -- against the simulator ---------------------------------------------------------------------


async def test_concurrency_sweep_against_the_simulator() -> None:
    async with running_sim(SimConfig(latency_ms=5, token_delay_ms=0.2)) as sim:
        pcfg = ProviderConfig(base_url=sim.url, model="sim", max_connections=8)
        cfg = BenchConfig(concurrency=(1, 4), requests=12, max_tokens=32, prompt_tokens=40, warmup=1)
        seen: list[StepResult] = []
        async with make_session(pcfg) as session:
            steps = await run_sweep(OpenAIProvider(session, pcfg), cfg, on_step=seen.append)
        assert steps == seen and [s.level for s in steps] == [1.0, 4.0]
        for s in steps:
            assert s.sent == s.ok == 12 and not s.errors and not s.cancelled
            assert s.output_tokens > 0 and s.output_tokens_per_s > 0 and s.requests_per_s > 0
            assert set(s.ttft_ms) == {"mean", "p50", "p90", "p99"}
            assert s.ttft_ms["p50"] <= s.e2e_ms["p50"]
            assert s.server == {}  # the simulator reports no llama.cpp timings
        assert sim.state.streams == 12 * 2 + 1


async def test_rate_step_is_bounded_by_duration_and_counts_errors() -> None:
    async with running_sim(SimConfig(faults={"500": 0.3}, seed=1)) as sim:
        pcfg = ProviderConfig(base_url=sim.url, model="sim")
        cfg = BenchConfig(rates=(50.0,), requests=None, duration_s=0.4, max_tokens=16, warmup=0, seed=2)
        async with make_session(pcfg) as session:
            step = await run_step(OpenAIProvider(session, pcfg), cfg, 50.0)
    assert step.mode == "rate" and step.sent > 0
    assert step.sent == step.ok + sum(step.errors.values()) + step.cancelled
    assert step.errors.get("ProviderUnavailable", 0) > 0


async def test_step_timeout_cancels_what_is_in_flight() -> None:
    async with running_sim(SimConfig(faults={"timeout": 1.0}, hang_s=30)) as sim:
        pcfg = ProviderConfig(base_url=sim.url, model="sim")
        cfg = BenchConfig(concurrency=(2,), requests=4, step_timeout_s=0.3, warmup=0)
        async with make_session(pcfg) as session:
            step = await run_step(OpenAIProvider(session, pcfg), cfg, 2)
    assert step.ok == 0 and step.cancelled == 2 and step.sent == 2


def test_command_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import threading

    ready = threading.Event()
    stop = threading.Event()
    url: list[str] = []

    def serve() -> None:
        async def go() -> None:
            async with running_sim(SimConfig(model="m")) as sim:
                url.append(sim.url)
                ready.set()
                await asyncio.to_thread(stop.wait)

        asyncio.run(go())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        argv = ["bench-endpoint", "--base-url", url[0], "--model", "m", "--concurrency", "1,2"]
        code = main([*argv, "--requests-per-step", "4", "--max-tokens", "16", "--out", str(tmp_path)])
    finally:
        stop.set()
        thread.join(10)
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [s["level"] for s in report["steps"]] == [1.0, 2.0]
    assert report["endpoint"] == {"base_url": url[0], "model": "m", "local": None}
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "c=2" in out and "TTFT" in out


def test_command_rejects_both_modes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench-endpoint", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--concurrency", "1"]
    assert main([*argv, "--rates", "1"]) == 2
    assert "exclusive" in capsys.readouterr().err


def test_api_key_is_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BENCH_TEST_KEY", "sk-secret-value")
    argv = ["bench-endpoint", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--api-key-env", "BENCH_TEST_KEY"]
    code = main([*argv, "--concurrency", "1", "--requests-per-step", "1", "--timeout", "2", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code != 0
    assert "sk-secret-value" not in captured.out + captured.err
    assert not (tmp_path / "bench.json").exists() or "sk-secret" not in (tmp_path / "bench.json").read_text()


# -- the real local server ---------------------------------------------------------------------


@pytest.mark.llm
async def test_local_server_agrees_with_its_own_timings(tmp_path: Path) -> None:
    """Our per-request decode speed agrees with llama.cpp's ``timings`` within 10%, token counts exactly."""
    async with LocalServer(LocalServerConfig(ctx=4096, parallel=2, log_path=tmp_path / "llama.log")) as server:
        pcfg = ProviderConfig(base_url=server.base_url, model=server.model, name="local")
        cfg = BenchConfig(concurrency=(1, 2), requests=4, max_tokens=48, prompt_tokens=64, warmup=1)
        async with make_session(pcfg) as session:
            steps = await run_sweep(OpenAIProvider(session, pcfg), cfg)
    for s in steps:
        assert s.ok == s.sent == 4, s.errors
        assert s.server["predicted_n"] == s.server["completion_tokens"] == s.output_tokens
        assert s.server["decode_ratio_p50"] == pytest.approx(1.0, rel=0.10)
