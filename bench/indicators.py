"""Front quality indicators: thin wrappers over pymoo, all in minimization space.

    >>> import numpy as np
    >>> F = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
    >>> round(hypervolume(F, ref_point=np.array([1.0, 1.0]))[0], 6)
    0.37

Each indicator is a registry entry `f(F, ctx) -> float | None`; `ctx` carries the suite's reference
point (never derived from the data) and the IGD reference front `pf` (None where there is none).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from pymoo.indicators.gd import GD
from pymoo.indicators.hv import HV
from pymoo.indicators.igd import IGD
from pymoo.indicators.igd_plus import IGDPlus
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from bench.registry import INDICATORS

# Exact HV grows steeply with the number of objectives (8 objectives: 100 points ~1 s, 300 points
# minutes); past these sizes moocore's deterministic approximation is used and the record says so.
EXACT_HV_MAX_POINTS = {4: 2000, 5: 400, 6: 150, 7: 100, 8: 80}


@dataclass
class Context:
    ref_point: np.ndarray
    pf: np.ndarray | None = None


def nondominated_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of F (minimization), pymoo's sorting; duplicates kept."""
    F = np.asarray(F, dtype=float)
    mask = np.zeros(len(F), dtype=bool)
    ok = np.isfinite(F).all(axis=1)
    if ok.any():
        idx = np.flatnonzero(ok)
        mask[idx[NonDominatedSorting().do(F[ok], only_non_dominated_front=True)]] = True
    return mask


def hypervolume(F: np.ndarray, ref_point: np.ndarray) -> tuple[float, str]:
    """(HV, how it was computed). Only non-dominated points inside the reference box count."""
    F = np.asarray(F, dtype=float)
    ref_point = np.asarray(ref_point, dtype=float)
    F = F[nondominated_mask(F)]
    F = F[(F < ref_point).all(axis=1)]
    if len(F) == 0:
        return 0.0, "exact"
    T = F.shape[1]
    if len(F) <= EXACT_HV_MAX_POINTS.get(T, 10**9):
        return float(HV(ref_point=ref_point)(F)), "exact"
    import moocore

    return float(moocore.hv_approx(F, ref=ref_point, method="Rphi-FWE+")), "moocore.hv_approx(Rphi-FWE+)"


def front_hash(pf: np.ndarray | None) -> str | None:
    if pf is None:
        return None
    return hashlib.sha1(np.ascontiguousarray(np.round(pf, 12)).tobytes()).hexdigest()[:12]


@INDICATORS.register("hv", "hypervolume w.r.t. the suite's reference point (pymoo HV)")
def _hv(F, ctx):
    return hypervolume(F, ctx.ref_point)[0]


@INDICATORS.register("gd", "generational distance to the reference front (pymoo GD)")
def _gd(F, ctx):
    return None if ctx.pf is None or len(F) == 0 else float(GD(ctx.pf)(F))


@INDICATORS.register("igd", "inverted generational distance to the reference front (pymoo IGD)")
def _igd(F, ctx):
    return None if ctx.pf is None or len(F) == 0 else float(IGD(ctx.pf)(F))


@INDICATORS.register("igd_plus", "IGD+ (Pareto-compliant IGD) to the reference front (pymoo IGDPlus)")
def _igd_plus(F, ctx):
    return None if ctx.pf is None or len(F) == 0 else float(IGDPlus(ctx.pf)(F))


@INDICATORS.register("n_points", "number of candidate points")
def _n_points(F, ctx):
    return int(len(F))


@INDICATORS.register("n_nondominated", "number of non-dominated points")
def _n_nd(F, ctx):
    return int(nondominated_mask(F).sum())


def compute_all(F: np.ndarray, ctx: Context) -> dict[str, float | int | None]:
    F = np.asarray(F, dtype=float).reshape(-1, len(ctx.ref_point))
    F = F[np.isfinite(F).all(axis=1)]
    hv, method = hypervolume(F, ctx.ref_point)
    out = {e.name: (hv if e.name == "hv" else e.obj(F, ctx)) for e in INDICATORS}
    out["hv_method"] = method
    return out
