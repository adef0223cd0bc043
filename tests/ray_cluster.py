"""One real multi-node Ray cluster per test session, shared by every Ray test (a pytest plugin).

Two nodes of one CPU each on this machine (``ray.cluster_utils.Cluster``),
bound to 127.0.0.1 with the dashboard off; the test process joins it with
``ray.init(address=...)``, so code under test that calls
:func:`engine.ray_cluster.connect` reuses the connection. Ray is imported only
when a test asks for the fixture: tests that do not use Ray never load it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

NODES = 2
CPUS_PER_NODE = 1

# ray reads this when it is imported and then resolves "127.0.0.1" in an address to the machine's outward IP unless
# it is "0"; set when this plugin loads, before any test module (some import ray at module level) is collected
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """The shared cluster (``ray.cluster_utils.Cluster``), connected; shut down at the end of the session."""
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": CPUS_PER_NODE, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args=dict(node))
    try:
        for _ in range(NODES - 1):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address, _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False
        )
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
