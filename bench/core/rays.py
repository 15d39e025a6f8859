"""Points on the simplex Δ^{T−1}: preference-ray grids, front sampling grids, validation of user input.

    >>> ray_grid(2, partitions=10).shape
    (11, 2)
    >>> simplex_grid(3, max_points=20).shape        # the densest das-dennis grid within 20 points
    (15, 3)
    >>> validate_preference([0.3, 0.7], 2)
    array([0.3, 0.7])
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pymoo.util.ref_dirs import get_reference_directions

from bench.core.registry import BenchError


def n_das_dennis(num_tasks: int, partitions: int) -> int:
    """Points of the das-dennis grid: C(p + T − 1, T − 1)."""
    from math import comb

    return comb(partitions + num_tasks - 1, num_tasks - 1)


def simplex_grid(num_tasks: int, max_points: int) -> np.ndarray:
    """The densest das-dennis grid on Δ^{T−1} with at most `max_points` points (pymoo)."""
    if num_tasks == 1:
        return np.ones((1, 1))
    p = 1
    while n_das_dennis(num_tasks, p + 1) <= max_points:
        p += 1
    return get_reference_directions("das-dennis", num_tasks, n_partitions=p)


def ray_grid(num_tasks: int, partitions: int = 10, max_rays: int = 66) -> np.ndarray:
    """Evaluation rays: the das-dennis grid with `partitions` (11 points per axis at 10: 11 rays for
    2 tasks, 66 for 3). Where that exceeds `max_rays` (many tasks), the one-hots, the equal-weight
    ray and the densest das-dennis grid that keeps the total within `max_rays` (pymoo)."""
    full = get_reference_directions("das-dennis", num_tasks, n_partitions=partitions)
    if len(full) <= max_rays:
        return full
    anchors = np.vstack([np.eye(num_tasks), np.full((1, num_tasks), 1.0 / num_tasks)])
    best = anchors
    for p in range(1, partitions + 1):
        grid = np.unique(np.vstack([anchors, get_reference_directions("das-dennis", num_tasks, n_partitions=p)])
                         .round(12), axis=0)
        if len(grid) > max(max_rays, len(anchors)):
            break
        best = grid
    return best


def validate_preference(pref: Sequence[float], num_tasks: int, *, name: str = "preference",
                        normalized: bool = True) -> np.ndarray:
    """A preference vector on the simplex, or a one-line BenchError naming the bad value."""
    try:
        r = np.asarray(pref, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise BenchError(f"{name}={pref!r} must be a list of {num_tasks} numbers") from None
    if len(r) != num_tasks:
        raise BenchError(f"{name}={list(pref)} has {len(r)} entries; the suite has {num_tasks} tasks")
    if not np.isfinite(r).all() or (r < 0).any():
        raise BenchError(f"{name}={list(pref)} has a negative or non-finite entry; entries must be ≥ 0")
    if r.sum() <= 0:
        raise BenchError(f"{name}={list(pref)} is all zero; it must have a positive entry")
    if normalized and abs(r.sum() - 1.0) > 1e-6:
        raise BenchError(f"{name}={list(pref)} sums to {r.sum():.6g}; it must sum to 1 (within 1e-6)")
    return r
