"""A managed, supervised local LLM: llama.cpp's OpenAI-compatible server (from ``xllamacpp``) as a child process.

::

    async with LocalServer(LocalServerConfig(log_path=run_dir / "llama-server.log")) as server:
        cfg = ProviderConfig(base_url=server.base_url, model=server.model, name="local")
        async with make_session(cfg) as session:
            provider = OpenAIProvider(session, cfg)

The server runs in its own process (``python -m engine.llamacpp.child``) and its
own process group, so a crash in llama.cpp cannot take us down and Ctrl-C in
the terminal reaches only us; we then stop it. It is stopped when the ``async
with`` block exits (normally, by an exception, by cancellation), at interpreter
exit if someone forgot, and by the kernel if our process dies
(``PR_SET_PDEATHSIG``, set by the child itself). Requests go through the same
``OpenAIProvider`` as any remote endpoint.

**Supervision.** While the block runs, a watchdog checks the child. If it dies
(a crash, the OOM killer, a ``kill -9``) it is started again on the *same
port*, so ``base_url`` stays valid and the requests that failed meanwhile
succeed when the retry policy sends them again. After ``max_restarts``
restarts it gives up: the task that entered the block is cancelled and the
block raises :class:`LocalServerGone`, with the log's last lines, instead of
letting the run spend its retries on a dead port.
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
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import FatalError, ProviderUnavailable
from .config import LocalServerConfig

__all__ = ["LocalServer", "LocalServerGone"]

_POLL_S = 0.05
#: How often the watchdog looks at the child.
_WATCH_S = 0.2
_LOG_TAIL_LINES = 15
#: llama.cpp's log lines look like ``0.00.003.590 E gguf_init_from_reader: ...``; ``E`` marks an error.
_LLAMA_ERROR = re.compile(r"^[\d.]+ E ")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class LocalServerGone(FatalError):
    """The managed server died more often than it may be restarted: the run cannot go on."""


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
    """llama.cpp's OpenAI-compatible server as a supervised child process; an async context manager.

    After ``__aenter__``: ``base_url`` (``http://127.0.0.1:PORT/v1``), ``model``
    (the id the server reports in ``/v1/models``), ``pid`` and ``log_path``;
    ``restarts`` counts the times the child was started again.
    """

    def __init__(self, config: LocalServerConfig | None = None) -> None:
        self.config = config or LocalServerConfig()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._own_log = False
        self._argv: list[str] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._host: asyncio.Task[Any] | None = None
        self._gone: LocalServerGone | None = None
        self._up: asyncio.Event | None = None  # set while a started child answers
        self.log_path: Path | None = None
        self.root_url = ""
        self.base_url = ""
        self.model = ""
        self.port = 0
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> LocalServer:
        await self.start()
        self._host = asyncio.current_task()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        gone, host = self._gone, self._host
        self._host = None
        await self.stop(keep_log=exc_type is not None)
        if gone is not None and isinstance(exc, asyncio.CancelledError) and host is not None:
            host.uncancel()  # the cancellation was ours: say why instead
            raise gone from None

    async def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("LocalServer already started")
        model = self.config.resolved_model()
        alias = self.config.alias or model.name.removesuffix(".gguf")
        self._open_log()
        try:
            await self._launch(model, alias, self.config.port)
            self.base_url = self.root_url + "/v1"
            self.model = await self._served_model(alias)
        except BaseException:
            await self.stop(keep_log=True)
            raise
        self._up = asyncio.Event()
        self._up.set()
        self._watchdog = asyncio.create_task(self._supervise(model, alias), name="llama.cpp watchdog")

    async def wait_running(self) -> None:
        """Return once the server answers again (at once if it is up); raise :class:`LocalServerGone` if it never will.

        A request that failed to connect calls this before it is retried, so a restart costs
        it one attempt, not all of them (see :class:`~engine.providers.supervised.SupervisedProvider`).
        """
        up = self._up
        if self._gone is not None:
            raise self._gone
        if up is None:
            return  # not started, or stopped: nothing to wait for
        proc = self._proc
        if proc is None or proc.poll() is not None:
            up.clear()  # dead, and the watchdog has not looked yet
        await up.wait()
        if self._gone is not None:
            raise self._gone

    async def stop(self, *, keep_log: bool = False) -> None:
        """Stop watching, SIGTERM the child's group, wait up to ``shutdown_timeout_s``, then SIGKILL. Idempotent."""
        watchdog, self._watchdog = self._watchdog, None
        up, self._up = self._up, None
        if up is not None:
            up.set()  # a request waiting for a restart fails now, as it would without supervision
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        try:
            await self._end_child()
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self._own_log and not keep_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)

    async def _end_child(self) -> None:
        proc, self._proc = self._proc, None
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

    # -- supervision --------------------------------------------------------------------------

    async def _supervise(self, model: Path, alias: str) -> None:
        """Start the child again (same port) each time it dies; give up after ``max_restarts``."""
        while True:
            await asyncio.sleep(_WATCH_S)
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            if self._up is not None:
                self._up.clear()
            await self._end_child()
            if self.restarts >= self.config.max_restarts:
                self._give_up(f"the local model server died (exit code {code}) after {self.restarts} restart(s)")
                return
            self.restarts += 1
            self._note(f"exited with code {code}; restart {self.restarts} of {self.config.max_restarts}")
            try:
                await self._launch(model, alias, self.port)
            except ProviderUnavailable as exc:
                await self._end_child()
                self._give_up(f"the local model server died (exit code {code}) and did not start again: {exc.message}")
                return
            if self._up is not None:
                self._up.set()

    def _give_up(self, message: str) -> None:
        self._gone = LocalServerGone(
            self._with_log(message), provider="local", hint="see the log; free memory or CPU, then run with --resume"
        )
        if self._up is not None:
            self._up.set()  # wake the waiters: they raise the error
        if self._host is not None and not self._host.done():
            self._host.cancel()

    def _note(self, message: str) -> None:
        """A line in the server's log (ours, between llama.cpp's)."""
        if self._log_file is not None:
            self._log_file.write(f"local_server: supervisor: {message}\n".encode())
            self._log_file.flush()

    # -- starting one child -------------------------------------------------------------------

    def _open_log(self) -> None:
        cfg = self.config
        if cfg.log_path is None:
            fd, name = tempfile.mkstemp(prefix="corpusforge-llama-", suffix=".log")
            os.close(fd)
            self.log_path, self._own_log = Path(name), True
        else:
            cfg.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path = cfg.log_path
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()

    async def _launch(self, model: Path, alias: str, port: int) -> None:
        """Start a child listening on ``port`` (0: any) and wait until it answers; sets ``root_url`` and ``port``."""
        self._proc = self._spawn(model, alias, port)
        self.root_url = await self._wait_ready(time.monotonic() + self.config.startup_timeout_s)
        self.port = int(self.root_url.rsplit(":", 1)[1])

    def _spawn(self, model: Path, alias: str, port: int) -> subprocess.Popen[bytes]:
        """Start the child (fork + exec: quick, so done synchronously)."""
        cfg = self.config
        argv = [
            sys.executable,
            "-m",
            "engine.llamacpp.child",
            f"--model={model}",
            f"--alias={alias}",
            f"--host={cfg.host}",
            f"--port={port}",
            f"--ctx={cfg.ctx}",
            f"--parallel={cfg.parallel}",
            f"--threads={cfg.threads}",
            f"--batch={cfg.batch}",
            f"--parent-pid={os.getpid()}",
            f"--backend={cfg.backend}",
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=env,
            start_new_session=True,  # own process group: the terminal's Ctrl-C reaches us, and we stop it
        )
        _LIVE.add(proc)
        return proc

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

    # -- errors -------------------------------------------------------------------------------

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def _with_log(self, message: str) -> str:
        """The message, llama.cpp's first error line, where the log is, and its last lines."""
        tail = self.log_tail()
        errors = [line for line in tail.splitlines() if _LLAMA_ERROR.search(line)]
        if errors:
            message += ": " + _LLAMA_ERROR.split(errors[0], 1)[-1].strip()
        return f"{message}; log {self.log_path}" + (f", last lines:\n{tail}" if tail else "")

    def _startup_error(self, message: str) -> ProviderUnavailable:
        return ProviderUnavailable(self._with_log(message), provider="local")
