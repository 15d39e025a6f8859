"""ta_grid: task arithmetic θ0 + Σ λ_i τ_i evaluated over a grid of coefficients.

    python -m bench run method=ta_grid tasks=toy-quadratic method.mode=grid method.points=21

Task arithmetic: Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023. `mode=shared` is
the PWE-MoE paper's baseline (one λ for all tasks); `mode=grid` a per-task grid in [lo, hi]^T whose
axis shrinks with T so at most `max_points` points are evaluated; `mode=simplex` λ = s·d for
das-dennis directions d and scales s. Every point is evaluated on the test split.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pymoo.util.ref_dirs import get_reference_directions

from bench.api import BenchError, Front, n_das_dennis, task_arithmetic
from bench.methods.base import Method


def grid_coefficients(mode: str, num_tasks: int, points: int, lo: float, hi: float,
                      max_points: int, partitions: int, scales: list[float]) -> np.ndarray:
    """[n, T] coefficient vectors of the chosen grid (pure function, unit-tested). Every mode is
    bounded by `max_points`: the per-task grid's axis shrinks with T to stay within it (never
    below 2 points); a shared line or a simplex grid that would exceed it is refused, before
    anything is allocated, with one line naming the count and the knobs."""
    T = num_tasks
    if mode == "grid":
        k = max(2, min(points, int(np.floor(max_points ** (1.0 / T) + 1e-9))))
        n, knobs = k ** T, f"{k} points per axis, the fewest a grid can have, at T = {T}; use mode=simplex or shared"
    elif mode == "shared":
        n, knobs = points, "lower method.points"
    elif mode == "simplex":
        n = n_das_dennis(T, partitions) * len(scales)
        knobs = f"{n_das_dennis(T, partitions)} directions × {len(scales)} scales; lower method.partitions"
    else:
        raise BenchError(f"unknown ta_grid mode {mode!r}; valid choices: grid, shared, simplex")
    if n > max_points:
        raise BenchError(f"ta_grid mode={mode} would evaluate {n:,} points at T = {T} ({knobs}), more than "
                         f"method.max_points={max_points}; or raise method.max_points")
    if mode == "grid":
        return np.array(list(itertools.product(np.linspace(lo, hi, k), repeat=T)))
    if mode == "shared":
        return np.repeat(np.linspace(lo, hi, points)[:, None], T, axis=1)
    d = get_reference_directions("das-dennis", T, n_partitions=partitions)
    return np.vstack([s * d for s in scales])


@dataclass(frozen=True)
class TAGrid(Method):
    paper = "Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023"
    url = "https://arxiv.org/abs/2212.04089"
    budget = "evaluations"

    mode: Literal["shared", "grid", "simplex"] = "shared"   # one λ for all tasks | per-task grid | λ = s·d on the simplex
    points: int = 11            # per axis (shared, grid)
    lo: float = 0.0             # grid bounds (shared, grid)
    hi: float = 1.0
    max_points: int = 2000      # every mode: at most this many points (grid: the axis shrinks with T to fit)
    partitions: int = 10        # simplex: das-dennis partitions
    scales: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])  # simplex: Σλ values
    split: Literal["val", "test"] = "test"     # the split every point is scored on

    def __post_init__(self):
        for name, least in (("points", 2), ("partitions", 1), ("max_points", 1)):
            if getattr(self, name) < least:
                raise BenchError(f"method.{name}={getattr(self, name)} must be ≥ {least}")
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise BenchError(f"method.lo={self.lo} must be below method.hi={self.hi}, both finite")
        if not self.scales or not all(np.isfinite(v) and v > 0 for v in self.scales):
            raise BenchError(f"method.scales={list(self.scales)} must be positive numbers, e.g. [0.5,1.0]")

    @classmethod
    def matched(cls, options: dict, T: int, evaluations: int) -> dict:
        """Within `evaluations`: a per-task grid where its fewest points (2 per axis) fit, else
        λ = s·d on the simplex with the most das-dennis partitions whose points × scales fit."""
        if 2 ** T <= evaluations:
            return {**options, "mode": "grid", "max_points": evaluations}
        scales = len(options["scales"] if "scales" in options else cls().scales)
        p = 1
        while n_das_dennis(T, p + 1) * scales <= evaluations:
            p += 1
        return {**options, "mode": "simplex", "partitions": p, "max_points": evaluations}

    def approximate_front(self, suite, *, evaluator, seed: int, checkpoints=None) -> Front:
        lams = grid_coefficients(self.mode, suite.num_tasks, self.points, self.lo, self.hi,
                                 self.max_points, self.partitions, list(self.scales))
        theta0, tv = suite.theta0(), suite.task_vectors()
        metrics = [evaluator.evaluate(lambda lam=lam: task_arithmetic(theta0, tv, lam), self.split,
                                      key=("ta", tuple(np.round(lam, 12))))
                   for lam in lams]
        return Front(tasks=suite.tasks, objective=suite.objective, X=lams,
                     x_names=[f"lambda[{t}]" for t in suite.tasks], metrics=metrics, split=self.split,
                     meta={"mode": self.mode, "n_points": len(lams),
                           **({"points_per_axis": int(round(len(lams) ** (1 / suite.num_tasks)))}
                              if self.mode == "grid" else {})})
