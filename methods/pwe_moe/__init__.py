"""PWE-MoE: Pareto weight-ensembling mixture of experts (`pwe_moe_ls`, `pwe_moe_epo`).

    python -m bench run method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots]
    python -m bench export method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots] \\
        preference=[0.3,0.7] out=exported/digits-dots

Tang et al., "Towards Efficient Pareto Set Approximation via Mixture of Experts Based Model
Fusion", 2024, https://arxiv.org/abs/2406.09770. Modules: `router.py` (the per-module routers),
`upscale.py` (which modules are upscaled; merging and unloading), `trainer.py` (the method, one
class declared twice with its scalarizer as each name's default; the training loop, the
evaluation and the saved state are methods/conditioned.py's).
"""
from bench.methods.pwe_moe.router import Routers, router_param_count  # noqa: F401
from bench.methods.pwe_moe.trainer import PWEMoE, load_state, unload  # noqa: F401
from bench.methods.pwe_moe.upscale import MergePlan, module_groups  # noqa: F401
