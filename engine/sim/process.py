"""Running the simulator as a server: in the foreground (the CLI) or in a child process (benchmarks).

A benchmark should not share a core or an event loop with the server it
measures, so ``sim_process`` starts ``python -m engine.sim`` and reads the URL
the child prints as its first line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from ..errors import ConfigError, ProviderUnavailable
from .config import SimConfig
from .server import running_sim

__all__ = ["cli_args", "serve", "serve_forever", "sim_process"]


async def serve(cfg: SimConfig, host: str, port: int, *, out: TextIO | None = None) -> None:
    """Serve until SIGINT/SIGTERM, printing the base URL as the first line of ``out`` (stdout)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_sim(cfg, host=host, port=port) as sim:
            print(sim.url, file=out or sys.stdout, flush=True)
            await stop.wait()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="pick another --port, or 0 for any free port"
        ) from exc
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve_forever(cfg: SimConfig, host: str, port: int) -> None:
    """``serve`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the lock file
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(cfg, host, port))


def cli_args(cfg: SimConfig) -> list[str]:
    """The ``serve-sim`` flags that reproduce ``cfg``."""
    args = ["--model", cfg.model, "--seed", str(cfg.seed), "--latency-ms", str(cfg.latency_ms)]
    args += ["--token-delay-ms", str(cfg.token_delay_ms), "--error-rate", str(cfg.error_rate)]
    args += ["--dup-rate", str(cfg.dup_rate), "--dup-ring", str(cfg.dup_ring), "--hang-s", str(cfg.hang_s)]
    if cfg.rpm_limit is not None:
        args += ["--rpm-limit", str(cfg.rpm_limit)]
    if cfg.tpm_limit is not None:
        args += ["--tpm-limit", str(cfg.tpm_limit)]
    for kind, rate in cfg.faults.items():
        args += ["--fault", f"{kind}={rate}"]
    if cfg.require_key is not None:
        args += ["--require-key", cfg.require_key]
    if cfg.strict_model:
        args.append("--strict-model")
    if not cfg.batch_api:
        args.append("--no-batch-api")
    args += ["--batch-rps", str(cfg.batch_rps), "--batch-phase-s", str(cfg.batch_phase_s)]
    args += ["--batch-fail-every", str(cfg.batch_fail_every), "--batch-expire-every", str(cfg.batch_expire_every)]
    args += ["--batch-error-rate", str(cfg.batch_error_rate)]
    if cfg.batch_token_limit is not None:
        args += ["--batch-token-limit", str(cfg.batch_token_limit)]
    if cfg.batch_token_limit_on_create:
        args.append("--batch-token-limit-on-create")
    return args


@contextmanager
def sim_process(cfg: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the simulator in a child process for the block; yields its base URL (``http://host:port/v1``)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "engine.sim", "--host", host, "--port", str(port), *cli_args(cfg or SimConfig())]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise ProviderUnavailable(f"the simulator did not start: {err.strip() or url or 'no output'}")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with suppress(OSError):
                    stream.close()
