"""ties_grid: TIES-merging of preference-weighted task vectors over a grid of rays and scales.

    python -m bench run method=ties_grid tasks=toy-anisotropic method.partitions=4 method.scales=[1.0,2.0]

    >>> import torch
    >>> tv = {"w": torch.tensor([[3.0, -1.0, 0.5, 2.0, -4.0],
    ...                          [-2.0, 5.0, 1.0, -1.0, 1.0],
    ...                          [4.0, 2.0, -3.0, 0.5, 2.5]])}      # [T, *shape]: 3 tasks, 5 entries
    >>> ties_merge(tv, [0.5, 0.25, 0.25], density=0.4)["w"].tolist()
    [1.25, 1.25, -0.75, 0.0, -2.0]

Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023,
https://arxiv.org/abs/2306.01708. For a preference ray r on the simplex and a scale λ, the candidate is

    θ(r, λ) = θ0 + λ · TIES(r_1 τ_1, …, r_T τ_T)

where TIES of the vectors v_i = r_i τ_i (each task's merge-able parameters flattened into one vector of D
entries: the paper trims over the whole model, not per layer) is, entry by entry p:

1. trim: v̂_i keeps the entries of v_i whose magnitude is at least the m-th largest magnitude of v_i,
   m = ⌈density · D⌉ (entries tied with that threshold are all kept); the others become 0. A factor r_i > 0
   does not change which entries are kept; r_i = 0 gives v̂_i = 0 (the task takes no part).
2. elect: γ_p = sign(Σ_i v̂_i,p), 0 where that sum is exactly 0.
3. disjoint mean: A_p = {i : sign(v̂_i,p) = γ_p ≠ 0}, TIES_p = (1/|A_p|) Σ_{i ∈ A_p} v̂_i,p; 0 where A_p is empty.

Invariants (tested): λ = 0 is θ0; a one-hot ray e_j gives θ0 + λ·v̂_j (with density = 1, task j's fine-tuned
model at λ = 1); the equal ray gives the paper's TIES vector divided by T (λ = T there is the paper's λ = 1).
Rays come from `bench.api.ray_grid` (das-dennis; at most `max_rays`), λ from `scales`; every candidate is scored
by the harness's Evaluator on `split` (the method never touches data). With `workers=N` the candidates are
scored on N Ray workers first (`bench.api.prefetch`), with the same numbers.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from bench.api import BenchError, Front, Method, Params, prefetch, ray_grid


def ties_merge(task_vectors: Params, weights: Sequence[float], density: float) -> Params:
    """TIES(w_1 τ_1, …, w_T τ_T) of stacked task vectors {name: [T, *shape]} (module docstring, steps 1–3):
    the merged task vector {name: [*shape]}. Pure: no state, no data."""
    if not 0.0 < density <= 1.0:
        raise BenchError(f"density={density} must be in (0, 1]")
    names = list(task_vectors)
    T = task_vectors[names[0]].shape[0]
    if len(weights) != T:
        raise BenchError(f"{len(weights)} weights for {T} task vectors")
    flat = torch.cat([task_vectors[n].reshape(T, -1) for n in names], dim=1)            # [T, D]
    v = flat * torch.as_tensor(np.asarray(weights, dtype=np.float64)).to(flat)[:, None]
    m = max(1, math.ceil(density * v.shape[1] - 1e-9))     # - 1e-9: 0.7 · 10 is 7.000000000000001 in floats
    mag = v.abs()
    threshold = mag.topk(m, dim=1).values[:, -1:]                                       # m-th largest, per task
    trimmed = torch.where(mag >= threshold, v, torch.zeros_like(v))
    gamma = torch.sign(trimmed.sum(dim=0))                                              # elected sign per entry
    agree = (torch.sign(trimmed) == gamma) & (gamma != 0)
    merged = (trimmed * agree).sum(dim=0) / agree.sum(dim=0).clamp(min=1)
    out, start = {}, 0
    for n in names:
        shape = task_vectors[n].shape[1:]
        size = math.prod(shape)
        out[n] = merged[start:start + size].reshape(shape)
        start += size
    return out


def apply(theta0: Params, merged: Params, lam: float) -> Params:
    """θ0 + λ · merged (one function for here and the workers, so both compute the same floats)."""
    return {n: t0 + lam * merged[n] for n, t0 in theta0.items()}


def candidate(suite, *, ray: tuple[float, ...], lam: float, density: float) -> Params:
    """The parameters of one candidate of `suite` (what a `workers=N` worker builds and scores)."""
    return apply(suite.theta0(), ties_merge(suite.task_vectors(), ray, density), lam)


@dataclass(frozen=True)
class TiesGrid(Method):
    """TIES-merging (trim, elect sign, disjoint mean) of preference-weighted task vectors over rays × scales"""

    paper = "Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023"
    url = "https://arxiv.org/abs/2306.01708"

    density: float = 0.2        # trim: share of each task vector's entries kept (the paper's k = 20 %)
    partitions: int = 10        # preference rays: das-dennis partitions (11 rays at T = 2, 66 at T = 3)
    max_rays: int = 66          # at most this many rays (more tasks: the one-hots, the equal ray, a coarser grid)
    scales: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])   # λ values tried on every ray
    split: Literal["val", "test"] = "test"     # the split every candidate is scored on

    def __post_init__(self):
        if not 0.0 < self.density <= 1.0:
            raise BenchError(f"method.density={self.density} must be in (0, 1], e.g. 0.2 (keep 20 %)")
        for name in ("partitions", "max_rays"):
            if getattr(self, name) < 1:
                raise BenchError(f"method.{name}={getattr(self, name)} must be ≥ 1")
        if not self.scales or not all(np.isfinite(s) and s > 0 for s in self.scales):
            raise BenchError(f"method.scales={list(self.scales)} must be positive numbers, e.g. [1.0,2.0]")

    def approximate_front(self, suite, *, evaluator, seed: int, checkpoints=None) -> Front:
        rays = ray_grid(suite.num_tasks, self.partitions, self.max_rays)
        grid = [(tuple(float(x) for x in np.round(r, 12)), float(lam)) for r in rays for lam in self.scales]
        keys = [("ties", float(self.density), ray, lam) for ray, lam in grid]
        # workers=N: every candidate scored on the workers first; without workers this does nothing
        prefetch(evaluator, self.split, [(key, functools.partial(candidate, ray=ray, lam=lam, density=self.density))
                                         for key, (ray, lam) in zip(keys, grid)])
        theta0, task_vectors, merged = suite.theta0(), suite.task_vectors(), {}

        def params(ray: tuple[float, ...], lam: float) -> Params:       # called on a cache miss only
            if ray not in merged:                                       # one TIES merge per ray, all its scales
                merged[ray] = ties_merge(task_vectors, ray, self.density)
            return apply(theta0, merged[ray], lam)

        metrics = [evaluator.evaluate(functools.partial(params, ray, lam), self.split, key=key)
                   for key, (ray, lam) in zip(keys, grid)]
        return Front(tasks=suite.tasks, objective=suite.objective,
                     X=np.array([[*ray, lam] for ray, lam in grid]),
                     x_names=[*(f"ray[{t}]" for t in suite.tasks), "lambda"], metrics=metrics, split=self.split,
                     meta={"n_rays": len(rays), "n_points": len(grid), "density": self.density})
