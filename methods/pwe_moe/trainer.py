"""PWE-MoE, registered twice: `pwe_moe_ls` (linear scalarization) and `pwe_moe_epo` (EPO).

    python -m bench run method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots]
    python -m bench run method=pwe_moe_epo tasks=tiny-gpt2 method.upscale=mlp+attn

Tang et al., "Towards Efficient Pareto Set Approximation via Mixture of Experts Based Model
Fusion", 2024 (https://arxiv.org/abs/2406.09770); the authors' code is FusionBench's
`fusion_bench/method/pwe_moe`. One training run gives a whole front:

1. Upscale (`upscale.py`): every selected module m gets a router R_m: Δ^{T−1} → R^T (`router.py`);
   the other merge-able parameters are fixed at θ0 + init_lambda·Σ τ_i. Only routers train.
2. Train (methods/conditioned.py, shared with `phn` and `pareto_merging`): each step draws
   r ~ Dirichlet, computes w = R(r) for all modules at once and merges once,
   θ_m = θ0_m + Σ_i w_{m,i} τ_{m,i} (routing depends on r only, never on the input), and descends
   the scalarizer's direction (`pwe_moe_ls`: Σ_i r_i L_i; `pwe_moe_epo`: the EPO LP over the routers'
   per-task gradients; any of methods/scalarize.py with `method.scalarizer=`).
3. Evaluate: for each ray of `bench.core.rays.ray_grid` (11 rays for 2 tasks, 66 for 3), unload to a
   dense parameter dict and score it on test with the Evaluator.

Defaults: `steps=300` (the authors' scripts use 2000–4000 steps on ViT-B/32; 300 suffices for the
routers' few hundred parameters on the tiny suites and keeps a CPU run under a minute; raise it
for published suites), `batch_size=null` → 16 per task for image suites and 8 for text suites
(the authors'). The trained routers are saved with the run as `routers.pt` (bench.methods.conditioned.save_net),
which `python -m bench export` reads back; it never retrains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from bench.api import Params

from bench.methods.conditioned import Conditioned, load_net, step, train
from bench.methods.pwe_moe.router import Routers
from bench.methods.pwe_moe.upscale import MergePlan, check_groups, module_groups

ROUTER_FILE = "routers.pt"


def build_plan(suite, upscale: str, init_lambda: float) -> MergePlan:
    theta0 = suite.theta0()
    groups = module_groups(theta0, upscale)
    check_groups(groups, upscale, suite.name, list(theta0))
    return MergePlan(theta0, suite.task_vectors(), groups, init_lambda)


class RoutedMerge(nn.Module):
    """The upscaled model as a net: preference → every router at once → one merge (θ0 and the task
    vectors are the suite's frozen tensors, never copied; only the routers are parameters)."""

    def __init__(self, plan: MergePlan, routers: Routers):
        super().__init__()
        self.plan, self.routers = plan, routers

    def forward(self, ray: torch.Tensor) -> Params:
        return self.plan.merge(self.routers(ray.to(self.routers.b2)))


def router_step(suite, plan: MergePlan, routers: Routers, ray: torch.Tensor, batches: list,
                scalarizer: str, eps: float = 1e-4) -> tuple[torch.Tensor, dict]:
    """One step's gradients into `routers` (.grad set, no optimizer step). Returns (losses [T], facts)."""
    return step(suite, RoutedMerge(plan, routers), ray, batches, scalarizer, eps=eps)


def train_routers(suite, plan: MergePlan, routers: Routers, *, scalarizer: str, steps: int, lr: float,
                  batch_size: int, dirichlet_alpha: float, seed: int, eps: float = 1e-4, checkpoints=None) -> dict:
    """Adam on the routers (bench.methods.conditioned.train); returns the training facts."""
    return train(suite, RoutedMerge(plan, routers), scalarizer=scalarizer, steps=steps, lr=lr, batch_size=batch_size,
                 dirichlet_alpha=dirichlet_alpha, seed=seed, eps=eps, desc=f"pwe_moe_{scalarizer} routers",
                 checkpoints=checkpoints)


def load_state(path, suite) -> tuple[dict, MergePlan, Routers]:
    """(state, plan, routers) from a run's routers.pt, checked against `suite`."""
    state, _, net = load_net(path, PWEMoE, suite)
    return state, net.plan, net.routers


@torch.no_grad()
def unload(plan: MergePlan, routers: Routers, ray) -> Params:
    """The dense parameter dict at preference `ray` (what `bench export` writes)."""
    return RoutedMerge(plan, routers)(torch.as_tensor(np.asarray(ray, dtype=np.float32)))


@dataclass(frozen=True)
class PWEMoE(Conditioned):
    """Pareto weight-ensembling MoE: one set of routers, a dense model for every preference."""

    paper = ("Tang et al., Towards Efficient Pareto Set Approximation via Mixture of Experts Based "
             "Model Fusion, 2024")
    url = "https://arxiv.org/abs/2406.09770"
    budget = "steps"            # one run of `steps` for every preference
    state_file = ROUTER_FILE
    label = "pwe_moe"

    upscale: Literal["mlp", "mlp+attn", "all"] = "mlp"   # which blocks get a router (the rest fixed at TA)

    def build(self, suite, generator: torch.Generator) -> RoutedMerge:
        plan = build_plan(suite, self.upscale, self.init_lambda)
        return RoutedMerge(plan, Routers(plan.num_modules, suite.num_tasks, init_lambda=self.init_lambda,
                                         generator=generator))

    def structure(self, net: RoutedMerge):
        return net.plan.groups

    def describe(self, net: RoutedMerge, ray: torch.Tensor) -> dict:
        """The routing weights of the first, middle and last upscaled modules."""
        w, modules = net.routers(ray).cpu(), net.plan.modules
        shown = sorted({0, (len(modules) - 1) // 2, len(modules) - 1})
        return {"routing": {modules[m]: [round(float(x), 6) for x in w[m]] for m in shown}}

    def export_facts(self, net: RoutedMerge, ray: torch.Tensor) -> dict:
        """Every upscaled module's routing weights (unrounded), its parameters, and the rule for the rest:
        with θ0 and the task vectors these are the exported weights."""
        w, plan = net.routers(ray).double().cpu(), net.plan
        return {"upscale": self.upscale,
                "routing": {m: [float(x) for x in w[i]] for i, m in enumerate(plan.modules)},
                "routed": "theta_p = theta0_p + sum_i routing[m(p)][i] * tau_{p,i} for every parameter p of an "
                          "upscaled module m (routed_parameters); every other parameter theta0 + init_lambda * "
                          "sum_i tau_i",
                "routed_parameters": {m: list(names) for m, names in plan.groups.items()}}
