"""Child-process entry point for the managed llama.cpp server (``python -m engine.llamacpp.child``).

``LocalServer`` (in ``server.py``) runs this module as a child, so a crash in
llama.cpp cannot take the caller down. The protocol is one line: once the
server listens, the child writes ``{"url": ..., "pid": ...}`` as JSON to its
original stdout and closes it. Everything else (llama.cpp's own log included,
which goes to file descriptors 1 and 2) ends up on stderr, which the parent
points at a log file.

The child stops on SIGTERM or SIGINT, and also when its parent goes away:
``PR_SET_PDEATHSIG`` on Linux, and a ``getppid()`` check as a portable fallback.

``--backend sim`` serves the project's simulator (plus ``/health``) instead of
the model, under the same protocol, so the supervision around it can be tested
in a second, without a model.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
_PARENT_CHECK_S = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to send SIGTERM when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:
        sys.exit(0)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.llamacpp.child")
    p.add_argument("--model", required=True)
    p.add_argument("--alias", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ctx", type=int, default=8192)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=0, help="logical batch size; 0 = llama.cpp's default")
    p.add_argument("--parent-pid", type=int, default=0)
    p.add_argument("--backend", choices=("llama", "sim"), default="llama")
    return p.parse_args(argv)


def _params(args: argparse.Namespace) -> Any:
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    if args.alias:
        params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    if args.batch:
        params.n_batch = args.batch
    params.endpoint_metrics = True
    return params


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    _die_with_parent(args.parent_pid)

    # Keep the original stdout for the ready line; send every later write to fd 1 (llama.cpp's too) to stderr.
    ready = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.backend == "sim":
        return _serve_sim(args, ready, lambda: stop)

    import xllamacpp as xlc

    params = _params(args)
    print(f"local_server: loading {args.model}", file=sys.stderr, flush=True)
    try:
        server = xlc.Server(params)  # returns once the model is loaded and the HTTP server listens
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"local_server: error: {exc}", file=sys.stderr, flush=True)
        return 1
    url = str(server.listening_address)
    ready.write(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    ready.close()
    print(f"local_server: listening on {url}", file=sys.stderr, flush=True)

    while not stop:
        time.sleep(_PARENT_CHECK_S)
        if args.parent_pid and os.getppid() != args.parent_pid:
            print("local_server: parent went away; stopping", file=sys.stderr, flush=True)
            break
    print("local_server: shutting down", file=sys.stderr, flush=True)
    del server
    print("local_server: stopped", file=sys.stderr, flush=True)
    return 0


def _serve_sim(args: argparse.Namespace, ready: Any, stopped: Callable[[], bool]) -> int:
    """The simulator under the same protocol: the ready line, ``/health``, the same ways to stop."""
    import asyncio

    from aiohttp import web

    from ..sim.config import SimConfig
    from ..sim.server import build_app

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def serve() -> None:
        app = build_app(SimConfig(model=args.alias or "sim"))
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}"
            ready.write(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
            ready.close()
            print(f"local_server: listening on {url} (simulator)", file=sys.stderr, flush=True)
            while not stopped():
                await asyncio.sleep(_PARENT_CHECK_S / 5)
                if args.parent_pid and os.getppid() != args.parent_pid:
                    print("local_server: parent went away; stopping", file=sys.stderr, flush=True)
                    break
        finally:
            await runner.cleanup()

    asyncio.run(serve())
    print("local_server: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
