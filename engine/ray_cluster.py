"""Joining a Ray cluster, or starting a private local one; imported only by commands run with ``--ray``.

Ray's cluster ports and its jobs API have no authentication worth the name,
so a local instance binds to the loopback interface with the dashboard off;
a real cluster's ports must stay on a private network (see the README).

The address is, in order: the ``--ray ADDRESS`` flag, ``$RAY_ADDRESS``, else a
new local instance with ``num_cpus`` CPUs. A process already connected (a test
session's shared cluster, a driver that called ``ray.init`` itself) is reused.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from .errors import ConfigError

__all__ = ["LOOPBACK", "cluster_cpus", "connect", "reachable"]

LOOPBACK = "127.0.0.1"
#: Seconds to wait for a cluster's port before saying nothing listens there (ray.init itself retries for minutes).
REACH_TIMEOUT_S = 5.0
#: Read by ray at import: "0" makes its node-IP detection return the loopback address.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _quiet_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    ctx.print_on_execution_start = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # its only message is "progress bars disabled", said once per process when stderr is not a terminal
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # a failing task is logged there with its traceback, then raised to the command, which prints one line
    for name in ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def reachable(address: str) -> None:
    """Fail in seconds, with one line, when nothing listens at a cluster's ``host:port``."""
    import socket

    if "://" in address or address == "auto":
        return  # ray://client or auto-detection: Ray says what is wrong
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or address, int(port or 6379)), timeout=REACH_TIMEOUT_S):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"no Ray cluster at {address} ({getattr(exc, 'strerror', None) or exc})",
            hint="start one with `ray start --head --node-ip-address=IP` (or drop the address for a local instance)",
        ) from exc


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect this process to Ray (see the module doc for which cluster); returns the ``ray`` module."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    # no usage reports (the machine may have no network; nothing leaves it unasked) and no metrics queries
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
    if address is None or address.split(":")[0] in ("127.0.0.1", "localhost"):
        # keep ray's own address detection on loopback (it otherwise swaps 127.0.0.1 for the outward IP)
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a pinned dependency
        raise ConfigError("Ray is not installed", hint="reinstall corpusforge (make install)") from exc
    if ray.is_initialized():
        _quiet_data()
        return ray
    if address:
        reachable(address)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address:
            local = address.split(":")[0] in ("127.0.0.1", "localhost")
            if local:
                kwargs["_node_ip_address"] = LOOPBACK
            ray.init(address=address, **kwargs)
        else:
            # Ray turns token authentication on for a new local instance (good) and warns about it on every start
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(
                address="local",  # a new private instance, never a cluster some other process left running
                num_cpus=num_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                **kwargs,
            )
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot connect to {where}: {first}",
            hint="start it with `ray start --head` or check --ray/RAY_ADDRESS",
        ) from exc
    _quiet_data()
    return ray


def cluster_cpus() -> int:
    """CPUs the connected cluster offers (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]
