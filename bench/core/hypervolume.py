"""Hypervolume: exact wherever that costs ≤ ~2 s on a 2-core machine, else an estimate with its error.

    >>> import numpy as np
    >>> hypervolume(np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]]), np.ones(2))
    HV(value=0.37, method='exact: moocore', error=0.0)
    >>> F = np.random.default_rng(0).dirichlet(np.ones(6), size=40)
    >>> exact, approx = hypervolume(F, np.ones(6)), hypervolume(F, np.ones(6), method="approx")
    >>> approx.method.split(",")[0], abs(approx.value - exact.value) <= approx.error < 2e-3
    ('approx: moocore DZ2019-MC', True)

Only the non-dominated points strictly inside the reference box count; n is their number. Which
computation a front gets (`hv_algorithm`) comes from `python benchmarks/hv.py` (below):
- T ≤ 4: moocore (what pymoo's HV calls; HV3D+/HV4D+): any size, milliseconds at 2000 points.
- T ≥ 5 up to EXACT_MAX_POINTS[T][algorithm]: the exact algorithm with the larger limit there:
  moocore at T = 5, WFG (While, Bradstreet & Barone 2012; pygmo's `hvwfg`) from T = 6 on. pygmo
  has Linux wheels only; without it moocore's (smaller) limits apply.
- past that: the polar-coordinate Monte-Carlo estimate of Deng & Zhang 2019 (moocore's
  `hv_approx(method="DZ2019-MC")`) in BATCHES batches with fixed seeds (deterministic), with the
  exact HV of the front's largest boxes as a control variate (`hv_estimate`). `error` is an absolute
  bound at 99.9 % confidence: the half-width of the Student-t interval over the batches (3.6
  standard errors). Measured at T = 5–10: bounds 0.9–6e-3 of HV, covering the true error on all
  145 fronts where it was known; 0.8–1.8 CPU-s for 1000–8000 points.
"""
from __future__ import annotations

import functools
import importlib.util
from typing import NamedTuple

import numpy as np

from bench.core.registry import BenchError

MOOCORE, WFG = "exact: moocore", "exact: WFG (pygmo)"
# Largest front (non-dominated points inside the box) each exact algorithm gets, per number of
# objectives T: where it takes ≤ ~2 CPU-seconds (all single-threaded) on merge-like fronts, the
# slowest of three curvatures (python benchmarks/hv.py on the 2-core machine; CPU s at nd points):
#   T = 5   moocore 0.15 s at 3818, 0.78 s at 7552     WFG 0.57 s at 3818, 2.35 s at 7552
#   T = 6   moocore 0.88 s at 820, 4.9 s at 1605       WFG 0.71 s at 2378, 1.76 s at 3916
#   T = 7   moocore 0.34 s at 184, 9.2 s at 451        WFG 1.78 s at 1663, 3.58 s at 2474
#   T = 8   moocore 0.50 s at 97, 11.4 s at 191        WFG 0.66 s at 471, 2.61 s at 917
#   T = 9   moocore 4.7 s at 97                        WFG 0.27 s at 191, 3.14 s at 481
#   T = 10  moocore 0.83 s at 50                       WFG 0.68 s at 196
# Past T = 8 each further objective halves the limits (T = 9: 400, T = 10: 200, as measured).
# Random non-dominated sets of the same size cost WFG 4–10× more at T = 6–8 (T = 8: 0.89 s at 200).
EXACT_MAX_POINTS = {5: {MOOCORE: 10000, WFG: 7000}, 6: {MOOCORE: 1100, WFG: 4000},
                    7: {MOOCORE: 250, WFG: 1800}, 8: {MOOCORE: 100, WFG: 800}}
BATCHES = 32                   # independent batches: their spread is the error estimate
SAMPLES = 2**13                # directions per batch: 262144 in all (moocore's default) ...
FULL_SAMPLES_POINTS = 1500     # ... up to this many points (front + control), fewer past it: ~2 CPU-s
CONFIDENCE = 0.999
METHODS = ("auto", "exact", "approx")


class HV(NamedTuple):
    value: float
    method: str                # "exact: <algorithm>" or "approx: <estimator>"
    error: float               # absolute; 0.0 where exact


@functools.cache
def wfg_available() -> bool:
    """pygmo has wheels for Linux only; elsewhere moocore is the exact algorithm at every T."""
    return importlib.util.find_spec("pygmo") is not None


def exact_choice(num_objectives: int) -> tuple[str, int | None]:
    """(the exact algorithm for T objectives, the largest front it gets; None: any size)."""
    if num_objectives <= 4:
        return MOOCORE, None
    top = max(EXACT_MAX_POINTS)
    limits = EXACT_MAX_POINTS.get(num_objectives) or \
        {k: v >> (num_objectives - top) for k, v in EXACT_MAX_POINTS[top].items()}
    usable = {k: v for k, v in limits.items() if k != WFG or wfg_available()}
    best = max(usable, key=lambda k: (usable[k], k == MOOCORE))    # a tie goes to moocore (pymoo's)
    return best, usable[best]


def estimate_plan(n: int, num_objectives: int) -> tuple[int, int]:
    """(points in the control variate, directions per batch) of the estimate for n points. The
    estimate costs ~5 ns per direction and point (T = 8), so past FULL_SAMPLES_POINTS points the
    directions shrink (to at least 256 per batch) and the stated error grows instead of the time."""
    m = min(n // 2, (exact_choice(num_objectives)[1] or n) // 4)   # at a quarter of the limit S costs ≲ 0.3 s
    return m, int(np.clip(SAMPLES * FULL_SAMPLES_POINTS // (n + m), 256, SAMPLES))


def hv_algorithm(n: int, num_objectives: int, *, approx: bool | None = None) -> str:
    """Which computation a front of n points (non-dominated, inside the box) gets (`approx`: force
    the estimate, or an exact algorithm, whatever the size)."""
    algorithm, limit = exact_choice(num_objectives)
    if approx is False or (approx is None and (limit is None or n <= limit)):
        return algorithm
    m, directions = estimate_plan(n, num_objectives)
    return f"approx: moocore DZ2019-MC, {BATCHES}x{directions} directions, control variate: exact HV of {m} points"


def hv_front(F: np.ndarray, ref_point: np.ndarray) -> np.ndarray:
    """The points that count: non-dominated, strictly inside the reference box."""
    import moocore

    F = np.asarray(F, dtype=float)
    F = F[np.isfinite(F).all(axis=1) & (F < ref_point).all(axis=1)]
    return moocore.filter_dominated(F) if len(F) else F


def hypervolume(F: np.ndarray, ref_point: np.ndarray, *, method: str = "auto") -> HV:
    """HV of F (minimization) at `ref_point`. `method`: "auto" (`hv_algorithm`), "exact" (whatever
    the size) or "approx" (the estimate, e.g. to test it where the exact value is known)."""
    if method not in METHODS:
        raise BenchError(f"hypervolume method={method!r}; valid choices: {', '.join(METHODS)}")
    ref_point = np.asarray(ref_point, dtype=float)
    F = hv_front(F, ref_point)
    if len(F) == 0:
        return HV(0.0, "exact: empty front", 0.0)
    how = hv_algorithm(len(F), F.shape[1], approx={"auto": None, "exact": False, "approx": True}[method])
    if how.startswith("approx"):
        value, error = hv_estimate(F, ref_point)
        return HV(value, how, error)
    return HV(exact_hv(F, ref_point, how), how, 0.0)


def exact_hv(F: np.ndarray, ref_point: np.ndarray, how: str) -> float:
    if how == MOOCORE:
        import moocore

        return float(moocore.hypervolume(F, ref=ref_point))
    import pygmo

    return float(pygmo.hypervolume(F).compute(ref_point, hv_algo=pygmo.hvwfg()))


def hv_estimate(F: np.ndarray, ref_point: np.ndarray) -> tuple[float, float]:
    """(estimate, error bound at CONFIDENCE) of the HV of a non-dominated front inside the box.

    Control variate: S, the points with the largest boxes (`estimate_plan`: a quarter of the exact
    limit, at most half the front), has an exact HV; each batch estimates HV(F) − HV(S) with the
    same directions for both (one seed), which varies far less than HV(F) itself (T = 8, 1000–1600
    points, S of 200: standard errors 2–10× smaller than without S)."""
    import moocore
    from scipy import stats

    T = F.shape[1]
    m, directions = estimate_plan(len(F), T)
    S = F[np.argsort(-np.prod(ref_point - F, axis=1), kind="stable")[:m]]
    base = exact_hv(S, ref_point, hv_algorithm(m, T, approx=False)) if m else 0.0

    def mc(P, seed):
        return moocore.hv_approx(P, ref=ref_point, method="DZ2019-MC", nsamples=directions, seed=seed) if len(P) else 0.0

    d = np.array([mc(F, s) - mc(S, s) for s in range(BATCHES)])
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, BATCHES - 1) * d.std(ddof=1) / np.sqrt(BATCHES)
    return float(base + d.mean()), float(half)
