"""Pareto methods; each module registers itself in bench.registry.METHODS (explicit imports)."""
from methods import ta_grid  # noqa: F401
