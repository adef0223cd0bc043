"""The managed llama.cpp server: config, startup errors, one real completion, no child left behind, supervision."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from engine.config import ProviderConfig, RetryPolicy
from engine.errors import ConfigError, ProviderUnavailable
from engine.llamacpp import LocalServer, LocalServerConfig, LocalServerGone, default_model_path
from engine.providers.base import Provider
from engine.providers.openai import OpenAIProvider, make_session
from engine.providers.retrying import RetryingProvider
from engine.providers.supervised import SupervisedProvider
from engine.stats import Stats
from engine.types import Completion, Request

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "label": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["text", "label"],
}


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for a reaper that is not us)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pid: int, limit_s: float = 20.0) -> bool:
    for _ in range(int(limit_s / 0.1)):
        if gone(pid):
            return True
        await asyncio.sleep(0.1)
    return gone(pid)


def spawn_python(script: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, cwd=ROOT)


def small(tmp_path: Path, **kw: object) -> LocalServerConfig:
    return LocalServerConfig(ctx=2048, parallel=2, log_path=tmp_path / "llama.log", **kw)  # type: ignore[arg-type]


# -- no server needed ---------------------------------------------------------------------------


def test_default_model_is_the_packaged_gguf() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()


@pytest.mark.parametrize(
    "kw",
    [{"parallel": 0}, {"ctx": 0}, {"threads": -1}, {"port": 70000}, {"batch": -1}, {"ctx": 512, "parallel": 4}],
)
def test_config_rejects_nonsense(kw: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        LocalServerConfig(**kw)  # type: ignore[arg-type]


async def test_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        await LocalServer(LocalServerConfig(model_path=tmp_path / "nope.gguf")).start()


async def test_unloadable_model_fails_fast_with_the_log_tail(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a gguf file" * 100)
    server = LocalServer(small(tmp_path, model_path=bogus, startup_timeout_s=60))
    with pytest.raises(ProviderUnavailable, match="exited during startup") as info:
        async with server:
            pytest.fail("should not start")
    assert str(tmp_path / "llama.log") in str(info.value)
    assert "invalid magic" in str(info.value)  # llama.cpp's own first error line
    assert "local_server: error" in str(info.value)  # and the tail of the log
    assert server.pid is None and not server.running


# -- the real server ----------------------------------------------------------------------------


@pytest.mark.llm
async def test_start_complete_with_json_schema_and_stop(tmp_path: Path) -> None:
    async with LocalServer(small(tmp_path)) as server:
        pid = server.pid
        assert pid is not None and server.running
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        assert server.model == "SmolLM2-135M-Instruct.Q4_1"
        cfg = ProviderConfig(base_url=server.base_url, model=server.model, name="local")
        async with make_session(cfg) as session:
            provider = OpenAIProvider(session, cfg)
            assert server.model in await provider.list_models()
            fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA}}
            request = Request(
                id="r1",
                messages=[{"role": "user", "content": "Write a two-sentence positive movie review as JSON."}],
                max_tokens=120,
                temperature=0.7,
                seed=1,
                response_format=fmt,
            )
            done = await provider.complete(request)
    assert await wait_gone(pid)
    assert not server.running and server.pid is None
    assert done.completion_tokens > 0 and done.prompt_tokens > 0
    assert done.server_timings["predicted_n"] == done.completion_tokens
    assert done.server_timings["predicted_per_second"] > 0
    assert done.text.lstrip().startswith("{")  # the grammar forces JSON from the first token
    if done.finish_reason == "stop":
        parsed = json.loads(done.text)
        assert set(parsed) >= {"text", "label"} and parsed["label"] in ("positive", "negative")
    assert "local_server: stopped" in (tmp_path / "llama.log").read_text()


@pytest.mark.llm
async def test_child_is_gone_after_an_exception_inside_the_block(tmp_path: Path) -> None:
    server = LocalServer(small(tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        async with server:
            pid = server.pid
            raise RuntimeError("boom")
    assert pid is not None and await wait_gone(pid)


@pytest.mark.llm
async def test_child_is_gone_after_cancellation(tmp_path: Path) -> None:
    started = asyncio.Event()
    server = LocalServer(small(tmp_path))

    async def hold() -> None:
        async with server:
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    await asyncio.wait_for(started.wait(), 120)
    pid = server.pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pid is not None and await wait_gone(pid)


@pytest.mark.llm
async def test_child_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL the process that owns the server: the kernel (PDEATHSIG) must take the server down too."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from engine.llamacpp import LocalServer, LocalServerConfig

        async def main():
            cfg = LocalServerConfig(ctx=2048, parallel=2, log_path=Path({str(tmp_path / "llama.log")!r}))
            async with LocalServer(cfg) as server:
                print(server.pid, flush=True)
                await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    parent = spawn_python(script)
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 120)
        child = int(line)
        assert not gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert await wait_gone(child), "the llama.cpp server outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()


@pytest.mark.llm
async def test_two_servers_get_different_ports(tmp_path: Path) -> None:
    async with LocalServer(small(tmp_path / "a")) as a, LocalServer(small(tmp_path / "b")) as b:
        assert a.base_url != b.base_url
        pids = [a.pid, b.pid]
    for pid in pids:
        assert pid is not None and await wait_gone(pid)


@pytest.mark.llm
async def test_streamed_requests_back_to_back(tmp_path: Path) -> None:
    """llama.cpp closes the connection after a stream; the provider must not reuse it (regression)."""
    async with LocalServer(small(tmp_path)) as server:
        cfg = ProviderConfig(base_url=server.base_url, model=server.model, name="local")
        async with make_session(cfg) as session:
            provider = OpenAIProvider(session, cfg)
            for i in range(4):
                request = Request(
                    id=f"s{i}", messages=[{"role": "user", "content": f"Count to {i + 3}."}], max_tokens=12, stream=True
                )
                done = await provider.complete(request)
                # a token may decode to no text (an end-of-turn token): chunks with content <= tokens
                assert 0 < len(done.chunk_times) <= done.completion_tokens
                assert done.server_timings["predicted_n"] == done.completion_tokens
                assert 0 < done.ttft_s <= done.latency_s


# -- supervision ---------------------------------------------------------------------------------


def sim_child(tmp_path: Path, **kw: object) -> LocalServerConfig:
    """The simulator as the managed child: the same process protocol and supervision, no model, a second to start."""
    return LocalServerConfig(backend="sim", threads=1, log_path=tmp_path / "server.log", **kw)  # type: ignore[arg-type]


async def wait_for(condition: Callable[[], bool], limit_s: float = 60.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def kill_child(server: LocalServer) -> int:
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_gone(pid)
    return pid


def ask(i: int, max_tokens: int = 24) -> Request:
    return Request(
        id=f"q{i}", messages=[{"role": "user", "content": "Write one sentence.\nLabel: sport"}], max_tokens=max_tokens
    )


async def test_a_killed_child_is_restarted_on_the_same_port_and_requests_go_on(tmp_path: Path) -> None:
    async with LocalServer(sim_child(tmp_path)) as server:
        url, first = server.base_url, server.pid
        cfg = ProviderConfig(base_url=url, model=server.model, name="local", timeout_s=10)
        stats = Stats()
        async with make_session(cfg) as session:
            policy = RetryPolicy(max_attempts=3, initial_s=0.05, max_backoff_s=0.5)  # a restart costs one attempt
            provider = RetryingProvider(SupervisedProvider(OpenAIProvider(session, cfg), server), policy, stats=stats)
            assert (await provider.complete(ask(0))).text
            # kill -9 while requests are in flight and keep sending: every one of them must come back
            batch = [asyncio.ensure_future(provider.complete(ask(i))) for i in range(1, 30)]
            await kill_child(server)
            batch += [asyncio.ensure_future(provider.complete(ask(i))) for i in range(30, 60)]
            done = await asyncio.gather(*batch)
            await wait_for(lambda: server.restarts == 1 and server.running)
            assert server.base_url == url and server.pid != first  # same port, new process
            assert all(c.text for c in done) and len(done) == 59
            assert (await provider.complete(ask(99))).text
    assert "restart 1 of 3" in (tmp_path / "server.log").read_text()


async def test_a_child_that_keeps_dying_ends_the_block_with_its_log(tmp_path: Path) -> None:
    server = LocalServer(sim_child(tmp_path, max_restarts=1))
    with pytest.raises(LocalServerGone) as info:
        async with server:
            await kill_child(server)
            await asyncio.wait_for(server.wait_running(), 60)
            assert server.restarts == 1
            await kill_child(server)
            await asyncio.sleep(60)  # the supervisor cancels this wait when it gives up
            pytest.fail("the block should have been ended")
    message = str(info.value)
    assert "died (exit code -9) after 1 restart(s)" in message
    assert str(tmp_path / "server.log") in message and "restart 1 of 1" in message  # the log's last lines
    assert "--resume" in message
    assert server.pid is None and not server.running


async def test_stopping_does_not_count_as_dying(tmp_path: Path) -> None:
    async with LocalServer(sim_child(tmp_path)) as server:
        pid = server.pid
    assert pid is not None and await wait_gone(pid)
    assert server.restarts == 0 and "supervisor" not in (tmp_path / "server.log").read_text()


@pytest.mark.llm
@pytest.mark.slow
async def test_the_real_server_is_restarted_after_kill_9(tmp_path: Path) -> None:
    async with LocalServer(small(tmp_path)) as server:
        url = server.base_url
        cfg = ProviderConfig(base_url=url, model=server.model, name="local", timeout_s=120)
        async with make_session(cfg) as session:
            provider = RetryingProvider(
                OpenAIProvider(session, cfg),
                RetryPolicy(max_attempts=10, initial_s=0.2, max_backoff_s=2),
                stats=Stats(),
            )
            assert (await provider.complete(ask(0, 8))).completion_tokens > 0
            await kill_child(server)
            after = await asyncio.gather(*(provider.complete(ask(i, 8)) for i in range(1, 4)))
            assert server.restarts == 1 and server.base_url == url
            assert all(c.completion_tokens > 0 for c in after)
    assert "restart 1 of 3" in (tmp_path / "llama.log").read_text()


class Refused(Provider):
    """A provider whose server answers nothing (``status=None``) or an HTTP error."""

    name = "refused"

    def __init__(self, status: int | None) -> None:
        self.status = status

    async def complete(self, request: Request) -> Completion:
        raise ProviderUnavailable("cannot connect", status=self.status)


class Watch:
    """A supervisor that counts waits, and gives up when told to."""

    def __init__(self, gone: bool = False) -> None:
        self.waits = 0
        self.gone = gone

    async def wait_running(self) -> None:
        self.waits += 1
        if self.gone:
            raise LocalServerGone("the local model server died", provider="local")


async def test_supervised_provider_waits_only_when_nothing_answered() -> None:
    watch = Watch()
    with pytest.raises(ProviderUnavailable):
        await SupervisedProvider(Refused(None), watch).complete(ask(0))
    assert watch.waits == 1  # waited for the restart, then failed as before: the retry layer sends it again
    with pytest.raises(ProviderUnavailable):
        await SupervisedProvider(Refused(500), watch).complete(ask(0))
    assert watch.waits == 1  # the server answered: nothing to wait for
    with pytest.raises(LocalServerGone):
        await SupervisedProvider(Refused(None), Watch(gone=True)).complete(ask(0))
