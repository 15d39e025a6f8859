"""phn: a Pareto hypernetwork that maps a preference to layer-wise merging coefficients.

    python -m bench run method=phn tasks=tiny-clip tasks.names=[digits,dots]
    python -m bench run method=phn tasks=toy-quadratic method.scalarizer=epo

After Navon et al., "Learning the Pareto Front with Hypernetworks", ICLR 2021
(https://arxiv.org/abs/2010.04104), applied to merging: instead of generating a network's weights,
the hypernetwork h_φ generates the task-arithmetic coefficients of every merge-able parameter
tensor (AdaMerging's layer-wise granularity, Yang et al., ICLR 2024):

    λ(r) = h_φ(r) ∈ R^{T×L},    θ_l(r) = θ0_l + Σ_i λ_{i,l}(r) τ_{i,l}      (l = 1 … L tensors)

h_φ is an MLP Linear(T, hidden) → ReLU → Linear(hidden, hidden) → ReLU → Linear(hidden, T·L), as
Navon et al.'s ray-conditioned hypernetworks (two hidden layers); the last layer's weights start
at N(0, 0.01²) and its bias at `init_lambda`, so training starts at task arithmetic with λ = 0.3,
like PWE-MoE. One run for the whole front: r ~ Dirichlet per step, any scalarizer, evaluated on the
same ray grid (methods/conditioned.py). It is PWE-MoE's natural control: the same idea with one
coefficient per tensor from one shared network, where PWE-MoE has a router per block. Trainable
parameters: T·h + h + h² + h + (h + 1)·T·L.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.api import BenchError, Params
from bench.methods.conditioned import Conditioned
from bench.methods.pwe_moe.upscale import MergePlan


class HyperMerge(nn.Module):
    """preference → λ [L, T] for every parameter tensor → one merge."""

    def __init__(self, theta0: Params, task_vectors: Params, hidden: int, init_lambda: float,
                 generator: torch.Generator, init_std: float = 0.01):
        super().__init__()
        self.plan = MergePlan(theta0, task_vectors, {n: [n] for n in theta0}, init_lambda)   # one group per tensor
        T, L = next(iter(task_vectors.values())).shape[0], len(theta0)
        self.net = nn.Sequential(nn.Linear(T, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, T * L))
        with torch.no_grad():
            for layer in self.net[:-1]:
                if isinstance(layer, nn.Linear):     # torch's default init, drawn from the run's stream
                    bound = 1.0 / layer.in_features ** 0.5
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)
            self.net[-1].weight.normal_(0.0, init_std, generator=generator)
            self.net[-1].bias.fill_(float(init_lambda))
        self.T, self.L = T, L

    def coefficients(self, ray: torch.Tensor) -> torch.Tensor:
        """λ(r) as [L, T]: one row of task coefficients per parameter tensor."""
        return self.net(ray.to(self.net[0].weight)).view(self.T, self.L).T

    def forward(self, ray: torch.Tensor) -> Params:
        return self.plan.merge(self.coefficients(ray))


@dataclass(frozen=True)
class PHN(Conditioned):
    """Pareto hypernetwork: preference → layer-wise merging coefficients, one run for the whole front."""

    paper = "Navon et al., Learning the Pareto Front with Hypernetworks, ICLR 2021 (applied to merging coefficients)"
    url = "https://arxiv.org/abs/2010.04104"
    budget = "steps"            # one run of `steps` for every preference
    state_file = "hypernet.pt"
    label = "phn"

    hidden: int = 100               # width of the hypernetwork's two hidden layers (Navon et al.'s)

    def __post_init__(self):
        super().__post_init__()
        if self.hidden < 1:
            raise BenchError(f"method.hidden={self.hidden} must be ≥ 1")

    def build(self, suite, generator: torch.Generator) -> HyperMerge:
        return HyperMerge(suite.theta0(), suite.task_vectors(), self.hidden, self.init_lambda, generator)

    def describe(self, net: HyperMerge, ray: torch.Tensor) -> dict:
        """λ averaged over the tensors, per task (the full [L, T] table is in the saved net)."""
        return {"mean_lambda": [round(float(x), 6) for x in net.coefficients(ray).mean(0)]}

    def export_facts(self, net: HyperMerge, ray: torch.Tensor) -> dict:
        """The whole λ table at the preference: with θ0 and the task vectors, the exported weights."""
        lam = net.coefficients(ray).double().cpu()
        return {"mean_lambda": [round(float(x), 6) for x in lam.mean(0)],         # `describe`'s, from the same λ
                "lambda": {n: [float(x) for x in lam[i]] for i, n in enumerate(net.plan.modules)},
                "merged": "theta_l = theta0_l + sum_i lambda[l][i] * tau_{l,i} for every parameter tensor l"}
