"""Pareto methods, one module each. Declared here (nothing is imported until a method is used);
each module registers its class with `@METHODS.register(name)`.

    >>> from bench.registry import METHODS
    >>> METHODS.build("ta_grid", mode="grid").mode
    'grid'
"""
from bench.registry import METHODS

METHODS.declare("ta_grid", "methods.ta_grid", "task arithmetic over a grid of coefficients (shared λ, per-task grid, simplex)")
METHODS.declare("ls", "methods.ray_training", "linear scalarization: one model per preference ray (full / layerwise / taskwise)")
METHODS.declare("epo", "methods.ray_training", "Exact Pareto Optimal search: one model per preference ray (Mahapatra & Rajan 2020)")
METHODS.declare("map", "methods.map", "MAP: quadratic surrogates of task-arithmetic metrics searched with NSGA-II/III")
METHODS.declare("pwe_moe_ls", "methods.pwe_moe",
                "PWE-MoE: preference-routed weight-ensembling MoE, routers trained by LS (Tang et al. 2024)")
METHODS.declare("pwe_moe_epo", "methods.pwe_moe", "PWE-MoE with routers trained along EPO directions (Tang et al. 2024)")
METHODS.declare("phn", "methods.phn",
                "Pareto hypernetwork: preference → layer-wise merging coefficients, one run (after Navon et al. 2021)")
METHODS.declare("pareto_merging", "methods.pareto_merging",
                "Pareto Merging: TA base + preference-conditioned low-rank correction per matrix (Chen & Kwok 2025)")
