"""Glue shared by commands that generate: pick the provider (remote or the managed local
server), show the live view, print the final summary."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ..config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from ..errors import ConfigError
from ..generate import GenerateOptions, generate
from ..providers.base import Provider

__all__ = ["api_key_from_env", "print_final", "provider_context", "provider_factory", "run_with_provider"]

ProviderFactory = Callable[[str, str, str], ProviderConfig]


def api_key_from_env(var: str) -> str | None:
    """The API key, from the environment only (never a flag, never a file)."""
    value = os.environ.get(var)
    return value.strip() if value and value.strip() else None


def provider_factory(args: argparse.Namespace) -> ProviderFactory:
    """``(base_url, model, name) -> ProviderConfig`` from the provider flags every generating command shares."""

    def make(base_url: str, model: str, name: str) -> ProviderConfig:
        return ProviderConfig(
            base_url=base_url,
            model=model,
            api_key=api_key_from_env(args.api_key_env) if name != "local" else None,
            name=name,
            timeout_s=args.timeout,
            max_connections=args.concurrency,
        )

    return make


@contextlib.asynccontextmanager
async def provider_context(args: argparse.Namespace, factory: ProviderFactory, log_dir: Any) -> Any:
    """Yield ``(ProviderConfig, wrap)``: the remote endpoint given by flags, or a freshly started local server.

    ``wrap`` is None for a remote endpoint; for the managed local server it wraps the vendor provider so that a
    request that cannot connect waits for the server's restart (``SupervisedProvider``).
    """
    provider = args.provider or ("openai" if args.base_url else "local")
    if provider == "openai":
        if not args.base_url:
            raise ConfigError("--provider openai needs --base-url", hint="e.g. --base-url https://api.openai.com/v1")
        if not args.model:
            raise ConfigError("no model given", hint="pass --model NAME (see GET /v1/models)")
        yield factory(args.base_url, args.model, "openai"), None
        return
    from ..llamacpp import LocalServer, LocalServerConfig

    log_dir.mkdir(parents=True, exist_ok=True)
    cfg = LocalServerConfig(log_path=log_dir / "llama-server.log")
    print("starting the local model (llama.cpp, SmolLM2-135M-Instruct)...", file=sys.stderr, flush=True)
    from ..providers.supervised import SupervisedProvider

    async with LocalServer(cfg) as server:

        def supervised(base: Provider) -> Provider:
            return SupervisedProvider(base, server)

        yield factory(server.base_url, args.model or server.model, "local"), supervised


def _view_factory(enabled: bool) -> Callable[[Callable[[], dict[str, Any]]], contextlib.AbstractContextManager[Any]]:
    def make(snapshot: Callable[[], dict[str, Any]]) -> contextlib.AbstractContextManager[Any]:
        from ..ui import LiveView

        return LiveView(snapshot, live=None if enabled else False)

    return make


async def run_with_provider(
    args: argparse.Namespace,
    run: RunConfig,
    limit: RateLimit,
    retry: RetryPolicy,
    options: GenerateOptions,
) -> dict[str, Any]:
    async with provider_context(args, provider_factory(args), options.out_dir) as (provider_cfg, wrap):
        if provider_cfg.name == "local" and limit.max_in_flight > 8:
            # llama.cpp serves a few slots; more in flight only queues inside the server
            limit = RateLimit(rpm=limit.rpm, tpm=limit.tpm, max_in_flight=8)
        return await generate(
            run,
            provider_cfg,
            limit,
            retry,
            options,
            view_factory=_view_factory(options.progress),
            wrap_base=wrap,
        )


def print_final(final: dict[str, Any], out: TextIO) -> None:
    from rich.console import Console

    from ..ui import print_summary

    print_summary(final, Console(file=out))
