"""Pareto methods, one module each, declared here once as lazy `module:object` references (nothing is
imported until a method is used; a variant is an entry with its own defaults).

    >>> from bench.core.registry import METHODS
    >>> METHODS.build("ta_grid", mode="grid").mode
    'grid'
"""
from bench.core.registry import METHODS

M = "bench.methods"
METHODS.declare("ta_grid", f"{M}.ta_grid:TAGrid",
                "task arithmetic over a grid of coefficients (shared λ, per-task grid, simplex)")
METHODS.declare("ls", f"{M}.ray_training:RayTraining",
                "linear scalarization: one model per preference ray (full / layerwise / taskwise)", scalarizer="ls")
METHODS.declare("epo", f"{M}.ray_training:RayTraining",
                "Exact Pareto Optimal search: one model per preference ray (Mahapatra & Rajan 2020)", scalarizer="epo")
METHODS.declare("map", f"{M}.map:MAP", "MAP: quadratic surrogates of task-arithmetic metrics searched with NSGA-II/III")
METHODS.declare("pwe_moe_ls", f"{M}.pwe_moe.trainer:PWEMoE",
                "PWE-MoE: preference-routed weight-ensembling MoE, routers trained by LS (Tang et al. 2024)",
                scalarizer="ls")
METHODS.declare("pwe_moe_epo", f"{M}.pwe_moe.trainer:PWEMoE",
                "PWE-MoE with routers trained along EPO directions (Tang et al. 2024)", scalarizer="epo")
METHODS.declare("phn", f"{M}.phn:PHN",
                "Pareto hypernetwork: preference → layer-wise merging coefficients, one run (after Navon et al. 2021)")
METHODS.declare("pareto_merging", f"{M}.pareto_merging:ParetoMerging",
                "Pareto Merging: TA base + preference-conditioned low-rank correction per matrix (Chen & Kwok 2025)")
