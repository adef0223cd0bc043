"""``corpusforge generate --ray``: connect to Ray, check the endpoint, run the cluster driver."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from typing import Any

from ..config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from ..errors import ConfigError
from ..run import GenerateOptions

__all__ = ["run_generate_ray"]

#: In-flight requests one node's llama.cpp server is worth (it serves a few slots; more only queue inside it).
LOCAL_IN_FLIGHT_PER_NODE = 8


def _view(enabled: bool) -> Callable[[Callable[[], dict[str, Any]]], contextlib.AbstractContextManager[Any]]:
    def make(snapshot: Callable[[], dict[str, Any]]) -> contextlib.AbstractContextManager[Any]:
        from ..ui import LiveView

        return LiveView(snapshot, live=None if enabled else False)

    return make


async def _preflight(provider: ProviderConfig) -> None:
    """A wrong URL or key fails here, on the driver, before any shard starts or --out is touched."""
    from ..providers.openai import OpenAIProvider, make_session
    from ..sources.online import preflight

    async with make_session(provider) as session:
        await preflight(OpenAIProvider(session, provider), provider)


async def run_generate_ray(
    args: argparse.Namespace, run: RunConfig, limit: RateLimit, retry: RetryPolicy, options: GenerateOptions
) -> dict[str, Any]:
    if args.shards is not None and args.shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {args.shards}", hint="pass --shards 4, or omit it")
    kind = args.provider or ("openai" if args.base_url else "local")
    local: dict[str, Any] | None = None
    if kind == "openai":
        if not args.base_url:
            raise ConfigError("--provider openai needs --base-url", hint="e.g. --base-url https://api.openai.com/v1")
        if not args.model:
            raise ConfigError("no model given", hint="pass --model NAME (see GET /v1/models)")
        key = os.environ.get(args.api_key_env, "").strip() or None
        checked = ProviderConfig(
            base_url=args.base_url,
            model=args.model,
            api_key=key,
            timeout_s=args.timeout,
            max_connections=args.concurrency,
        )
        await _preflight(checked)
        provider = ProviderConfig(
            base_url=args.base_url, model=args.model, timeout_s=args.timeout, max_connections=args.concurrency
        )
        api_key_env: str | None = args.api_key_env
    else:
        from .driver import LOCAL_MODEL, LOCAL_URL

        provider = ProviderConfig(
            base_url=LOCAL_URL,
            model=args.model or LOCAL_MODEL,
            name="local",
            timeout_s=args.timeout,
            max_connections=LOCAL_IN_FLIGHT_PER_NODE,
        )
        local = {"log_path": str(options.out_dir.resolve() / "nodes"), "host": "127.0.0.1"}
        api_key_env = None

    from ..ray_cluster import connect

    connect(args.ray or None, num_cpus=os.cpu_count() or 1)  # an address nothing listens at fails here in seconds
    from .driver import ClusterRun, run_cluster

    if kind == "local":
        import ray

        nodes = len([n for n in ray.nodes() if n.get("Alive")])  # type: ignore[no-untyped-call]
        limit = RateLimit(
            rpm=limit.rpm, tpm=limit.tpm, max_in_flight=min(limit.max_in_flight, LOCAL_IN_FLIGHT_PER_NODE * nodes)
        )
    job = ClusterRun(
        run=run,
        provider=provider,
        api_key_env=api_key_env,
        limit=limit,
        retry=retry,
        out_dir=options.out_dir,
        resume=options.resume,
        dedup=options.dedup,
        reference_real=options.reference_real,
        data_file=options.data_file,
        shards=args.shards,
        local=local,
    )
    return await run_cluster(job, view_factory=_view(options.progress))
