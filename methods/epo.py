"""epo: Exact Pareto Optimal search, one model trained per preference ray.

    python -m bench run method=epo tasks=toy-quadratic
    python -m bench run method=epo tasks=tiny-clip method.space=layerwise method.steps=100

D. Mahapatra and V. Rajan, "Multi-Task Learning with User Preferences: Gradient Descent with
Controlled Ascent in Pareto Optimization", ICML 2020 (https://proceedings.mlr.press/v119/mahapatra20a.html).
Same loop and trainable spaces as `ls` (`methods.ray_training`); each step computes the per-task
gradients g_j over the trainable parameters, their Gram matrix C = G Gᵀ, the EPO weights α from
the LP in `methods.epo_solver` (balance mode while μ > eps, descent mode after), and lets Adam
step along Σ_j α_j g_j. The target is r_1 l_1 = … = r_T l_T: the loss vector on the 1/r ray.
LP failures fall back to α = r/Σr and are counted per ray (`fallbacks`) and in total.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.registry import METHODS
from methods.epo_solver import epo_weights
from methods.ray_training import RayTraining


def per_task_grads(losses: list[torch.Tensor], leaves: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """[k][p]: the gradient of losses[k] with respect to leaf p (one backward pass per task)."""
    n = len(losses)
    return [list(torch.autograd.grad(losses[k], leaves, retain_graph=k < n - 1, materialize_grads=True))
            for k in range(n)]


def gram(grads: list[list[torch.Tensor]]) -> np.ndarray:
    """C = G Gᵀ of the flattened per-task gradients, accumulated per tensor in float64."""
    n = len(grads)
    C = torch.zeros(n, n, dtype=torch.float64, device=grads[0][0].device)
    for p in range(len(grads[0])):
        G = torch.stack([g[p].reshape(-1) for g in grads]).double()
        C += G @ G.T
    return C.cpu().numpy()


def combine(grads: list[list[torch.Tensor]], alpha: np.ndarray) -> list[torch.Tensor]:
    """Σ_k α_k g_k per leaf."""
    a = [float(x) for x in alpha]
    return [sum(a[k] * grads[k][p] for k in range(len(grads))) for p in range(len(grads[0]))]


@METHODS.register("epo", "Exact Pareto Optimal search: one model per preference ray (Mahapatra & Rajan 2020)")
@dataclass(frozen=True)
class EPO(RayTraining):
    paper = "Mahapatra & Rajan, Multi-Task Learning with User Preferences (EPO search), ICML 2020"
    url = "https://proceedings.mlr.press/v119/mahapatra20a.html"
    registry_name = "epo"
    direction_name = "EPO LP (scipy HiGHS)"
    host_losses = True

    eps: float = 1e-4           # balance mode while μ > eps (the original's value)
    restricted: bool = False    # descent LP: add αᵀCa ≥ min(max(Ca), 0) (the authors' code default)

    def direction(self, losses, leaves, ray, support):
        grads = per_task_grads(losses, leaves)
        l = torch.stack(losses).detach().double().cpu().numpy()
        alpha, info = epo_weights(np.maximum(l, 0.0), gram(grads), ray[support], eps=self.eps,
                                  restricted=self.restricted)
        return combine(grads, alpha), {**info, "backward_passes": len(support)}

    def ray_extras(self, stats):
        return {"fallbacks": int(sum(s["fallback"] for s in stats)),
                "descent_steps": int(sum(s["mode"] == "descent" for s in stats))}

    def front_meta(self, extras):
        return {"eps": self.eps, "restricted": self.restricted, "lp_solver": "scipy.optimize.linprog(highs)",
                "fallbacks": int(sum(e["fallbacks"] for e in extras))}
