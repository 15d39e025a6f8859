"""spacing: Schott's spacing of the non-dominated points, an indicator declared by entry point.

    >>> import numpy as np
    >>> from bench.api import IndicatorContext
    >>> F = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])                  # evenly spread: 0
    >>> spacing(IndicatorContext(F=F, ref_point=np.ones(2) * 2))
    0.0
    >>> F = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0]])
    >>> round(spacing(IndicatorContext(F=F, ref_point=np.ones(2) * 2)), 6)
    0.92376

Schott, "Fault Tolerant Design Using Single and Multicriteria Genetic Algorithm Optimization", MIT 1995: with d_i
the L1 distance from non-dominated point i to its nearest other non-dominated point (minimization space) and d̄
their mean, S = sqrt(Σ_i (d_i − d̄)² / (n − 1)). 0 is a perfectly even front; lower is better. None with fewer
than two distinct non-dominated points. It needs no reference front, so every record stores it.
"""
from __future__ import annotations

import numpy as np

from bench.api import indicator


@indicator("spacing", "spacing", higher_is_better=False)
def spacing(ctx):
    """Schott's spacing of the non-dominated points (std of nearest-neighbour L1 distances; 0: evenly spread)"""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    if len(ctx.F) == 0:
        return None
    P = np.unique(ctx.F[NonDominatedSorting().do(ctx.F, only_non_dominated_front=True)], axis=0)
    if len(P) < 2:
        return None
    D = np.abs(P[:, None, :] - P[None, :, :]).sum(axis=2)
    np.fill_diagonal(D, np.inf)
    return float(np.std(D.min(axis=1), ddof=1))
