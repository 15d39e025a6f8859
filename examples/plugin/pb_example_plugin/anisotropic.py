"""toy-anisotropic: axis-aligned quadratic task losses of very different curvature, closed-form Pareto front.

    python -m bench run method=ties_grid tasks=toy-anisotropic 'tasks.names=[task0,task1]'

    >>> suite = ToyAnisotropic(names=["task0", "task2"])
    >>> suite.tasks, suite.key
    (['task0', 'task2'], 'toy-anisotropic@1:032903d306')
    >>> [round(float(x), 12) for x in suite.losses(suite.theta0()["theta"].numpy())[0]]   # L_i(θ0) = 1
    [1.0, 1.0]

L_i(θ) = ½ Σ_p h_ip (θ_p − θ*_ip)², θ*_i = θ0 + τ_i, for `num_tasks` tasks drawn from `seed` (θ0, τ_ip ~ N(0, 1);
curvatures h_ip log-uniform in [1/condition, 1], then scaled so that L_i(θ0) = 1). Unlike toy-quadratic's rotated
curvatures, every task's curvature is diagonal in the parameters' own basis and spans a factor `condition` across
them, so a few coordinates carry most of a task's loss and per-parameter merging (TIES' sign election and
disjoint mean) can beat one coefficient per task. A task vector's magnitudes are drawn independently of its
curvatures, so trimming by magnitude is not favoured: the suite tests that assumption rather than grants it.
`names` picks a subset; a task is the same whichever subset it is in (the draws do not depend on `names`).

Every weighted sum Σ w_i L_i (w on the simplex) is a strictly convex separable quadratic, so the Pareto set is
exactly {θ(w)}, coordinate by coordinate θ(w)_p = Σ_i w_i h_ip θ*_ip / Σ_i w_i h_ip; `true_front` evaluates it on
a das-dennis grid of `front_points` weights.
"""
from __future__ import annotations

import numpy as np
import torch

from bench.api import BenchError, Suite, select_tasks, simplex_grid

MAX_TASKS = 6


class ToyAnisotropic(Suite):
    """analytic axis-aligned quadratics with anisotropic curvature, closed-form Pareto front (T = 2..6)"""

    name = "toy-anisotropic"
    version = "1"
    objective = "loss"
    modality = "analytic"

    def __init__(self, names: list[str] | None = None,   # tasks to use (default all), e.g. [task0,task2]
                 num_tasks: int = 4,                      # tasks drawn from the seed (2..6)
                 dim: int = 12,                           # parameters
                 condition: float = 100.0,                # curvature ratio: h in [1/condition, 1] before scaling
                 seed: int = 0,                           # draws θ0, the task vectors and the curvatures
                 front_points: int = 2000):               # weights of the closed-form front (das-dennis grid)
        if not 2 <= num_tasks <= MAX_TASKS:
            raise BenchError(f"tasks.num_tasks={num_tasks} is out of range; valid: 2..{MAX_TASKS}")
        if dim < 1:
            raise BenchError(f"tasks.dim={dim} must be ≥ 1")
        if not condition >= 1.0:
            raise BenchError(f"tasks.condition={condition} must be ≥ 1")
        if front_points < 2:
            raise BenchError(f"tasks.front_points={front_points} must be ≥ 2")
        every = [f"task{i}" for i in range(num_tasks)]
        self.tasks = select_tasks(names, every, self.name)
        self.num_tasks_, self.dim, self.condition, self.seed = num_tasks, dim, float(condition), seed
        self.front_points = front_points
        rng = np.random.default_rng(seed)
        theta0 = rng.normal(size=dim)
        tau = rng.normal(size=(num_tasks, dim))
        h = np.exp(rng.uniform(-np.log(self.condition), 0.0, size=(num_tasks, dim)))
        h /= 0.5 * (h * tau ** 2).sum(axis=1, keepdims=True)                  # L_i(θ0) = 1
        idx = [every.index(t) for t in self.tasks]
        self.h, self.theta_star = h[idx], theta0 + tau[idx]                   # [T, d] each
        self._theta0 = {"theta": torch.tensor(theta0, dtype=torch.float64)}
        self._task_vectors = {"theta": torch.tensor(tau[idx], dtype=torch.float64)}
        self._h_t, self._star_t = torch.tensor(self.h), torch.tensor(self.theta_star)

    def config(self):
        """Every option, so that the record's suite_config rebuilds this very suite (the front of `bench table`)."""
        return {"names": list(self.tasks), "num_tasks": self.num_tasks_, "dim": self.dim, "condition": self.condition, "seed": self.seed,
                "front_points": self.front_points}

    # ---- losses ------------------------------------------------------------------------------
    def loss(self, params, task, batch=None):
        i = self.tasks.index(task)
        diff = params["theta"] - self._star_t[i].to(params["theta"].device)
        return 0.5 * (self._h_t[i].to(diff.device) * diff * diff).sum()

    def losses(self, thetas: np.ndarray) -> np.ndarray:
        """[n, d] parameter vectors → [n, T] task losses (numpy, float64)."""
        diff = np.atleast_2d(thetas)[:, None, :] - self.theta_star[None]       # [n, T, d]
        return 0.5 * (self.h[None] * diff ** 2).sum(axis=2)

    def ref_point(self) -> np.ndarray:
        anchors = np.vstack([self._theta0["theta"].numpy()[None], self.theta_star])
        return 1.1 * self.losses(anchors).max(axis=0)

    # ---- the closed-form Pareto set ------------------------------------------------------------
    def pareto_set(self, w: np.ndarray) -> np.ndarray:
        """θ(w)_p = Σ_i w_i h_ip θ*_ip / Σ_i w_i h_ip for each row of weights w [n, T]."""
        w = np.atleast_2d(w)
        return (w @ (self.h * self.theta_star)) / (w @ self.h)

    def true_front(self) -> np.ndarray:
        """The Pareto front (task losses) at a das-dennis grid of at most `front_points` weights."""
        return self.losses(self.pareto_set(simplex_grid(self.num_tasks, self.front_points)))
