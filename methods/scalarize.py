"""Scalarizers: a preference and per-task losses (and their gradients, where a method needs them)
→ a descent direction. The one module every preference-conditioned trainer uses (`method.scalarizer=`).

    >>> import torch
    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> losses = [x[0] ** 2, (x[1] - 1) ** 2]
    >>> grads, info = descent("ls", losses, [x], torch.tensor([0.5, 0.5]))
    >>> grads[0].tolist(), info["backward_passes"]
    ([1.0, 1.0], 1)

For losses l ∈ R^T (all ≥ 0 here: cross-entropies, quadratics), a preference r on the simplex and
the ideal point z = 0:
- `ls`: Σ r_i l_i (linear scalarization).
- `tchebycheff`: max_i r_i (l_i − z_i); its minimiser is the Tchebycheff optimum, which lies on the
  1/r ray (r_i l_i all equal) only where that ray meets the Pareto front; elsewhere (the ray passes
  beside the front) it is the front point that minimises the largest r_i l_i. The subgradient is
  r_k ∇l_k for the worst weighted task k.
- `stch` (smooth Tchebycheff, Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective
  Optimization", ICML 2024): μ log Σ_i exp(r_i (l_i − z_i) / μ), → Tchebycheff as μ → 0; its gradient
  weights are softmax(r⊙(l − z)/μ) ⊙ r.
- `epo` (Mahapatra & Rajan, ICML 2020): per-task gradients G, C = G Gᵀ, the LP of
  methods/epo_solver.py, step along Σ_j α_j g_j.
- `mgda` (MGDA-UB, Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the
  per-task gradients (closed form for two tasks, exact by support otherwise), where the ray is ignored:
  not preference-conditioned, a control.
The scalar ones take one backward pass; `epo` and `mgda` one per task. Tasks whose preference is 0
are left to the caller (the per-ray trainer drops them; Dirichlet preferences are never 0).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from bench.methods.epo_solver import epo_weights

SCALARIZERS = ("ls", "tchebycheff", "stch", "epo", "mgda")
GRADIENT_BASED = ("epo", "mgda")


# ---- scalar forms (pure functions) ------------------------------------------------------------
def scalarized(name: str, losses: torch.Tensor, ray: torch.Tensor, *, mu: float = 0.1) -> torch.Tensor:
    """The scalar a scalar scalarizer descends, for losses [T] and preference [T] (ideal point 0)."""
    r = ray.to(losses)
    if name == "ls":
        return (r * losses).sum()
    if name == "tchebycheff":
        return (r * losses).max()
    if name == "stch":
        return mu * torch.logsumexp(r * losses / mu, dim=0)
    raise ValueError(f"{name!r} is not a scalar scalarizer; valid: ls, tchebycheff, stch")


# ---- gradient-based weights (pure functions) ---------------------------------------------------
def per_task_grads(losses: list[torch.Tensor], leaves: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """[k][p]: the gradient of losses[k] with respect to leaf p (one backward pass per task, each
    through its own task's graph)."""
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


def min_norm_weights(C: np.ndarray) -> np.ndarray:
    """α on the simplex minimising ‖Σ α_k g_k‖² = αᵀCα (MGDA-UB's min-norm point), from the Gram
    matrix C. Two tasks: the closed form. More: the exact optimum by its support — for each subset
    S of tasks the stationary point of αᵀCα on {Σ_S α = 1} solves [C_SS 1; 1ᵀ 0][α; ν] = [0; 1];
    the best one with α ≥ 0 is the optimum (2^T − 1 small solves: T ≤ 12 here; Sener & Koltun use
    Frank–Wolfe, which reaches it only slowly)."""
    C = np.asarray(C, dtype=float)
    T = len(C)
    if T == 1:
        return np.ones(1)
    if T == 2:
        denom = C[0, 0] + C[1, 1] - 2 * C[0, 1]
        a = 0.5 if denom <= 0 else float(np.clip((C[1, 1] - C[0, 1]) / denom, 0.0, 1.0))
        return np.array([a, 1.0 - a])
    if T > 12:
        raise ValueError(f"min_norm_weights enumerates supports: {T} tasks is too many (≤ 12)")
    best, best_value = np.full(T, 1.0 / T), np.inf
    for size in range(1, T + 1):
        for S in itertools.combinations(range(T), size):
            idx = list(S)
            K = np.block([[C[np.ix_(idx, idx)], np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            sol = np.linalg.lstsq(K, np.r_[np.zeros(size), 1.0], rcond=None)[0][:size]
            if (sol < -1e-12).any() or not np.isclose(sol.sum(), 1.0):
                continue
            alpha = np.zeros(T)
            alpha[idx] = np.clip(sol, 0.0, None)
            value = alpha @ C @ alpha
            if value < best_value - 1e-15:
                best, best_value = alpha, value
    return best / best.sum()


# ---- the direction every trainer asks for --------------------------------------------------------
def descent(name: str, losses: list[torch.Tensor], leaves: list[torch.Tensor], ray, *, mu: float = 0.1,
            eps: float = 1e-4, restricted: bool = False) -> tuple[list[torch.Tensor], dict]:
    """Gradient-like direction over `leaves` (the optimiser descends it) and step facts, for the
    per-task `losses` (scalar tensors) under preference `ray` ([T], the losses' tasks)."""
    ray_t = torch.as_tensor(np.asarray(ray, dtype=np.float64) if not torch.is_tensor(ray) else ray)
    if name not in GRADIENT_BASED:
        s = scalarized(name, torch.stack(losses), ray_t.to(losses[0].device), mu=mu)
        return list(torch.autograd.grad(s, leaves, materialize_grads=True)), {"backward_passes": 1}
    grads = per_task_grads(losses, leaves)
    C = gram(grads)
    if name == "mgda":
        alpha = min_norm_weights(C)
        return combine(grads, alpha), {"backward_passes": len(losses)}
    l = torch.stack([x.detach() for x in losses]).double().cpu().numpy()
    alpha, info = epo_weights(np.maximum(l, 0.0), C, ray_t.double().cpu().numpy(), eps=eps, restricted=restricted)
    return combine(grads, alpha), {**info, "backward_passes": len(losses)}
