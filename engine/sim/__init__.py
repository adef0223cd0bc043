"""The OpenAI-compatible simulator (``corpusforge serve-sim``) for tests, benchmarks and dry runs.

In-process: ``async with running_sim(SimConfig(...)) as sim:`` serves on ``sim.url``
(``http://127.0.0.1:PORT/v1``) and counts into ``sim.state``. In a child process,
so the server does not share a core with the client it measures:
``with sim_process(SimConfig(...)) as url:``.
"""

from .config import FAULT_KINDS, SimConfig
from .process import cli_args, serve, sim_process
from .server import SIM_KEY, RunningSim, SimState, Simulator, build_app, running_sim

__all__ = [
    "FAULT_KINDS",
    "SIM_KEY",
    "RunningSim",
    "SimConfig",
    "SimState",
    "Simulator",
    "build_app",
    "cli_args",
    "running_sim",
    "serve",
    "sim_process",
]
