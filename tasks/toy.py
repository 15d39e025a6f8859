"""toy-quadratic: analytic task losses with a closed-form Pareto front.

    python -m bench run method=ta_grid tasks=toy-quadratic tasks.num_tasks=3

L_i(θ) = ½ (θ − θ_i*)ᵀ H_i (θ − θ_i*) with random SPD H_i (scaled so that L_i(θ0) = 1), θ0 random,
"fine-tuned" θ_i = θ_i* = θ0 + τ_i. Every weighted sum Σ w_i L_i is strictly convex, so its minimiser
θ(w) = (Σ w_i H_i)⁻¹ Σ w_i H_i θ_i* traces the whole Pareto set; restricted to the task-arithmetic
subspace θ0 + Σ λ_i τ_i (λ ≥ 0) the same scalarization is a non-negative least-squares problem.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import nnls

from bench.api import BenchError, simplex_grid
from bench.tasks.base import Suite

MAX_TASKS = 8


class ToyQuadratic(Suite):
    name = "toy-quadratic"
    version = "1"
    objective = "loss"
    modality = "analytic"
    leaderboard_scale = 1.0     # milliseconds a step: a leaderboard runs the published budgets, unscaled

    def __init__(self, num_tasks: int = 2, dim: int = 10, seed: int = 0, condition: float = 10.0,
                 front_points: int = 2000):
        if not 2 <= num_tasks <= MAX_TASKS:
            raise BenchError(f"tasks.num_tasks={num_tasks} is out of range; valid: 2..{MAX_TASKS}")
        if dim < 1:
            raise BenchError(f"tasks.dim={dim} must be ≥ 1")
        self.num_tasks_, self.dim, self.seed, self.condition = num_tasks, dim, seed, condition
        self.front_points = front_points
        self.tasks = [f"task{i}" for i in range(num_tasks)]
        rng = np.random.default_rng(seed)
        theta0 = rng.normal(size=dim)
        tau = rng.normal(size=(num_tasks, dim))
        H = []
        for i in range(num_tasks):
            q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
            eig = np.exp(rng.uniform(-np.log(condition), 0.0, size=dim))
            h = (q * eig) @ q.T
            h = 0.5 * (h + h.T)
            H.append(h / (0.5 * tau[i] @ h @ tau[i]))         # L_i(θ0) = 1
        self.H = np.stack(H)                                   # [T, d, d]
        self.theta_star = theta0 + tau                         # [T, d]
        self._theta0 = {"theta": torch.tensor(theta0, dtype=torch.float64)}
        self._task_vectors = {"theta": torch.tensor(tau, dtype=torch.float64)}
        self._H_t = torch.tensor(self.H)
        self._star_t = torch.tensor(self.theta_star)

    def config(self):
        return {"num_tasks": self.num_tasks_, "dim": self.dim, "seed": self.seed,
                "condition": self.condition, "front_points": self.front_points}

    # ---- losses ----------------------------------------------------------------------------
    def loss(self, params, task, batch=None):
        i = self.tasks.index(task)
        diff = params["theta"] - self._star_t[i].to(params["theta"].device)
        return 0.5 * diff @ (self._H_t[i].to(diff.device) @ diff)

    def losses(self, thetas: np.ndarray) -> np.ndarray:
        """[n, d] parameter vectors → [n, T] task losses (numpy, float64)."""
        thetas = np.atleast_2d(thetas)
        diff = thetas[:, None, :] - self.theta_star[None]                  # [n, T, d]
        return 0.5 * np.einsum("ntd,tde,nte->nt", diff, self.H, diff)

    def ref_point(self):
        anchors = np.vstack([self._theta0["theta"].numpy()[None], self.theta_star])
        return 1.1 * self.losses(anchors).max(axis=0)

    # ---- closed-form Pareto sets ------------------------------------------------------------
    def pareto_set(self, w: np.ndarray) -> np.ndarray:
        """θ(w) = (Σ w_i H_i)⁻¹ Σ w_i H_i θ_i* for each row of weights w [n, T]."""
        Hw = np.einsum("nt,tde->nde", w, self.H)
        b = np.einsum("nt,tde,te->nd", w, self.H, self.theta_star)
        return np.linalg.solve(Hw, b[..., None])[..., 0]

    def ta_pareto_coefficients(self, w: np.ndarray) -> np.ndarray:
        """argmin_{λ ≥ 0} Σ w_i L_i(θ0 + Σ_j λ_j τ_j) for each row of w (scipy NNLS)."""
        tau = self._task_vectors["theta"].numpy()                            # [T, d]
        out = []
        for wi in np.atleast_2d(w):
            Hw = np.einsum("t,tde->de", wi, self.H)
            M = tau @ Hw @ tau.T                                            # ½ λᵀMλ − bᵀλ
            b = tau @ np.einsum("t,tde,te->d", wi, self.H, tau)
            L = np.linalg.cholesky(M + 1e-12 * np.eye(len(M)))
            lam, _ = nnls(L.T, np.linalg.solve(L, b))
            out.append(lam)
        return np.array(out)

    def true_front(self, space: str = "full") -> np.ndarray:
        """Densely sampled Pareto front (task losses), full parameter space or the TA subspace."""
        w = simplex_grid(self.num_tasks, self.front_points)
        if space == "full":
            thetas = self.pareto_set(w)
        elif space == "ta":
            lam = self.ta_pareto_coefficients(w)
            thetas = self._theta0["theta"].numpy() + lam @ self._task_vectors["theta"].numpy()
        else:
            raise BenchError(f"unknown front space {space!r}; valid choices: full, ta")
        return self.losses(thetas)
