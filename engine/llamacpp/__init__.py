"""The managed local model: llama.cpp's OpenAI-compatible server as a supervised child process.

Not a provider: requests go through :class:`~engine.providers.openai.OpenAIProvider` to
``LocalServer.base_url`` like any endpoint. ``config`` says how to run it, ``server`` runs
and supervises it (restarts on the same port), ``child`` is the process it runs.
"""

from .config import (
    BACKENDS,
    DEFAULT_CTX,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_PARALLEL,
    LocalServerConfig,
    default_model_path,
    default_threads,
)
from .server import LocalServer, LocalServerGone

__all__ = [
    "BACKENDS",
    "DEFAULT_CTX",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_PARALLEL",
    "LocalServer",
    "LocalServerConfig",
    "LocalServerGone",
    "default_model_path",
    "default_threads",
]
