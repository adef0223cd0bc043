"""The OpenAI-compatible simulator (``corpusforge serve-sim``) for tests, benchmarks and dry runs."""

from .config import FAULT_KINDS, SimConfig
from .server import SIM_KEY, RunningSim, SimState, Simulator, build_app, running_sim

__all__ = ["FAULT_KINDS", "SIM_KEY", "RunningSim", "SimConfig", "SimState", "Simulator", "build_app", "running_sim"]
