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

__all__ = ["LOOPBACK", "connect", "cluster_cpus"]

LOOPBACK = "127.0.0.1"
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


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect this process to Ray (see the module doc for which cluster); returns the ``ray`` module."""
    address = address or os.environ.get("RAY_ADDRESS") or None
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
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address:
            local = address.split(":")[0] in ("127.0.0.1", "localhost")
            if local:
                kwargs["_node_ip_address"] = LOOPBACK
            ray.init(address=address, **kwargs)
        else:
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
