"""The provider simulator: a real HTTP server that answers like the GLM hosts do.

Used by demo mode, the tests and the benchmarks over loopback. See :mod:`.server` for the
routes, :mod:`.faults` for the ``<<sim:...>>`` directive format.
"""

from gateway.simulator.models import SimModel, sim_models_from_targets
from gateway.simulator.server import SimServer, create_sim_app, run_simulator, start_simulator

__all__ = [
    "SimModel",
    "SimServer",
    "create_sim_app",
    "run_simulator",
    "sim_models_from_targets",
    "start_simulator",
]
