"""Pareto methods; each module registers itself in bench.registry.METHODS (explicit imports)."""
from methods import ta_grid  # noqa: F401
from methods import ls  # noqa: F401
from methods import epo  # noqa: F401
from methods import map  # noqa: F401
from methods import pwe_moe  # noqa: F401
