"""Front quality indicators: thin wrappers over pymoo and moocore, all in minimization space, each
registered with what a table needs to know about it.

    >>> import numpy as np
    >>> F = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
    >>> round(hypervolume(F, ref_point=np.array([1.0, 1.0])).value, 6)
    0.37
    >>> ctx = Context(F=F, ref_point=np.ones(2), rays=[[0.8, 0.2], [0.5, 0.5], [0.2, 0.8]])
    >>> {k: round(v, 6) for k, v in compute(ctx, ["hv", "n_nondominated", "alignment_deg"]).items()}
    {'hv': 0.37, 'n_nondominated': 3, 'alignment_deg': 0.0}

An indicator is `f(ctx) -> value`, registered in `INDICATORS` as an `Indicator` (label, LaTeX
label, direction, whether it needs a reference front). `ctx` carries the front F (the included,
finite points), the suite's reference point (never derived from the data), the IGD reference
front `pf` (None where there is none), the reference models' metrics and each point's preference
ray (methods that take one). A record stores every indicator that depends on its own run alone
(`per_record`): IGD-type indicators only where the suite has an analytic front; against a pooled
front (the non-dominated union of many records, `pooled_front`) they exist only where records
are compared: `bench table` (`bench.reports.reference`) and `bench check`. HV (bench/core/hypervolume.py) is exact wherever that
costs ≤ ~2 s, else an estimate whose error bound is stored beside it (`hv_error`).

Preference alignment (`alignment_deg`, `alignment_hit`; Mahapatra & Rajan, ICML 2020): a point
trained for ray r (on the simplex) meets it when r_1 z_1 = … = r_T z_T over the ray's support
{k : r_k > 0}, i.e. when its loss vector lies on the ray of 1/r (EPO's "exact Pareto optimal"
point). z is the point's excess over each task's own fine-tuned model, clipped at 0, in the scale
of the normalised HV: 1 − acc/acc_ft on accuracy suites (None where acc_ft is unknown), loss −
loss_ft on loss suites (the raw loss where loss_ft is unknown). The point's angle is the angle
between r⊙z and the all-ones vector on the support, arctan of the coefficient of variation of the
r_k z_k (0° on target; at most arccos(1/√|support|): 45° for two tasks). Tasks with r_k = 0 are
free; rays with fewer than two positive entries (one-hots) ask for no ratio and are left out; a
point at or past every expert of its support (z = 0 there) meets any ray. The tolerance, 5°, is
half the smallest angle between neighbouring targets of the default 2-task ray grid (11.3°,
e.g. rays (0.5, 0.5) and (0.6, 0.4)): a point within it is nearer its own target than a neighbour's.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np

from bench.core.hypervolume import HV, hypervolume
from bench.core.registry import INDICATORS

ALIGNMENT_TOL_DEG = 5.0     # module docstring: half the closest spacing of the default 2-task ray grid


@dataclass(frozen=True)
class Context:
    F: np.ndarray                         # [n, T] minimization-space objectives of the included points
    ref_point: np.ndarray
    pf: np.ndarray | None = None          # IGD reference front
    objective: str = "loss"
    finetuned: np.ndarray | None = None   # each task's fine-tuned model on its own task (natural direction)
    rays: np.ndarray | None = None        # [n, T] each point's preference ray (NaN row: none); None: no rays

    def __post_init__(self):
        F = np.asarray(self.F, dtype=float).reshape(-1, len(self.ref_point))
        keep = np.isfinite(F).all(axis=1)
        object.__setattr__(self, "F", F[keep])
        if self.rays is not None:
            rays = np.asarray(self.rays, dtype=float)
            if rays.shape != F.shape:
                raise ValueError(f"rays of shape {rays.shape} for {F.shape[0]} points of {F.shape[1]} tasks")
            object.__setattr__(self, "rays", rays[keep])

    # computed once per context: hv, hv_method and hv_error read the same computation
    @cached_property
    def hv(self) -> HV:
        return hypervolume(self.F, self.ref_point)

    @cached_property
    def hv_normalized(self) -> HV | None:
        Z = normalized_error(self)
        return None if Z is None else hypervolume(Z, np.ones(Z.shape[1]))

    @cached_property
    def alignment(self) -> np.ndarray | None:
        """[n] each point's preference-alignment angle in degrees (NaN: no ratio asked); None: no rays."""
        Z = preference_space(self)
        return None if Z is None or self.rays is None else alignment_angles(Z, self.rays)


@dataclass(frozen=True)
class Indicator:
    name: str
    fn: Callable[[Context], Any]
    label: str                 # table header (markdown, csv)
    latex: str
    higher_is_better: bool | None   # None: not a quality (a count or a name)
    needs_pf: bool = False     # needs the IGD reference front
    kind: str = "float"        # float | int | str

    def __call__(self, ctx: Context) -> Any:
        if self.needs_pf and (ctx.pf is None or len(ctx.F) == 0):
            return None
        return self.fn(ctx)


def indicator(name: str, label: str, latex: str | None = None, *, higher_is_better: bool | None,
              needs_pf: bool = False, kind: str = "float"):
    """Decorator: `f(ctx)` registered as indicator `name`; returns the `Indicator` (callable on a Context), so an
    entry point (group `paretobench.indicators`) may name the decorated function."""
    def deco(fn):
        ind = Indicator(name, fn, label, latex or label, higher_is_better, needs_pf, kind)
        INDICATORS.add(name, ind, (fn.__doc__ or "").strip().splitlines()[0], module=fn.__module__,
                       qualname=fn.__qualname__)
        return ind
    return deco


def compute(ctx: Context, names: Sequence[str] | None = None) -> dict[str, Any]:
    """{name: value} of the named indicators (default: all that `ctx` supports)."""
    entries = [INDICATORS.get(n) for n in (names if names is not None else INDICATORS.names())]
    return {e.name: e(ctx) for e in entries}


def per_record(analytic: bool) -> list[str]:
    """The indicators a record stores: all, minus those needing a front unless the suite's is analytic."""
    return [n for n in INDICATORS.names() if analytic or not INDICATORS.get(n).needs_pf]


# ---- building blocks -----------------------------------------------------------------------------
def nondominated_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of F (minimization), pymoo's sorting; duplicates kept."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.asarray(F, dtype=float)
    mask = np.zeros(len(F), dtype=bool)
    ok = np.isfinite(F).all(axis=1)
    if ok.any():
        idx = np.flatnonzero(ok)
        mask[idx[NonDominatedSorting().do(F[ok], only_non_dominated_front=True)]] = True
    return mask


def front_hash(pf: np.ndarray | None) -> str | None:
    if pf is None:
        return None
    return hashlib.sha1(np.ascontiguousarray(np.round(pf, 12)).tobytes()).hexdigest()[:12]


def normalized_error(ctx: Context) -> np.ndarray | None:
    """1 − accuracy/accuracy_ft per task (each task's own fine-tuned model = 0); None where undefined."""
    if ctx.objective != "accuracy" or ctx.finetuned is None or not (np.asarray(ctx.finetuned) > 0).all():
        return None                       # e.g. random-weight benchmark models
    return 1.0 - (1.0 - ctx.F) / np.asarray(ctx.finetuned, dtype=float)


def preference_space(ctx: Context) -> np.ndarray | None:
    """[n, T] each point's excess over each task's fine-tuned model, ≥ 0, the scale a preference is
    read in: normalised error on accuracy suites, loss − loss_ft on loss suites (module docstring)."""
    if ctx.objective == "accuracy":
        Z = normalized_error(ctx)
    else:
        ft = np.zeros(ctx.F.shape[1]) if ctx.finetuned is None else np.asarray(ctx.finetuned, dtype=float)
        Z = ctx.F - np.where(np.isfinite(ft), ft, 0.0)
    return None if Z is None else np.maximum(Z, 0.0)


def alignment_angles(Z: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """[n] degrees between r⊙z and the all-ones vector on each ray's support {k : r_k > 0}, i.e.
    arctan(std/mean) of the r_k z_k there; NaN where the ray is missing or has fewer than two
    positive entries."""
    R = np.where(np.isfinite(rays), np.maximum(rays, 0.0), 0.0)
    S = R > 0
    k = np.maximum(S.sum(axis=1), 1)
    A = R * Z
    mean = A.sum(axis=1) / k
    std = np.sqrt((((A - mean[:, None]) * S) ** 2).sum(axis=1) / k)
    angle = np.degrees(np.arctan2(std, mean))              # z = 0 on the whole support: 0°, met
    return np.where((S.sum(axis=1) >= 2) & np.isfinite(rays).all(axis=1), angle, np.nan)


def record_rays(record) -> np.ndarray | None:
    """[m, T] the preference ray of each included point of a RunRecord (`extras["ray"]`; NaN rows
    where a point has none), or None where no point has one."""
    if not any("ray" in e for e in record.extras):
        return None
    nan = [np.nan] * len(record.tasks)
    return np.array([e.get("ray") or nan for e in record.extras], dtype=float)[record.include]


# ---- the indicators --------------------------------------------------------------------------------
@indicator("hv", "HV", higher_is_better=True)
def _hv(ctx):
    """hypervolume w.r.t. the suite's reference point (exact where ≤ ~2 s, else an estimate: bench/core/hypervolume.py)"""
    return ctx.hv.value


@indicator("hv_method", "HV method", higher_is_better=None, kind="str")
def _hv_method(ctx):
    """how `hv` was computed: exact (and by which algorithm) or the estimator's name"""
    return ctx.hv.method


@indicator("hv_error", "HV error", "HV\\textsubscript{err}", higher_is_better=None)
def _hv_error(ctx):
    """absolute error bound of `hv` at 99.9 % confidence (0 where exact)"""
    return ctx.hv.error


@indicator("hv_normalized", "HV norm.", "HV\\textsubscript{norm}", higher_is_better=True)
def _hv_normalized(ctx):
    """HV of normalised error 1 − acc/acc_ft (each task's own fine-tuned accuracy), reference 1 (accuracy suites)"""
    return None if ctx.hv_normalized is None else ctx.hv_normalized.value


@indicator("hv_normalized_error", "HV norm. error", "HV\\textsubscript{norm,err}", higher_is_better=None)
def _hv_normalized_error(ctx):
    """absolute error bound of `hv_normalized` at 99.9 % confidence (0 where exact)"""
    return None if ctx.hv_normalized is None else ctx.hv_normalized.error


@indicator("gd", "GD", higher_is_better=False, needs_pf=True)
def _gd(ctx):
    """generational distance to the reference front (pymoo GD)"""
    from pymoo.indicators.gd import GD

    return float(GD(ctx.pf)(ctx.F))


@indicator("igd", "IGD", higher_is_better=False, needs_pf=True)
def _igd(ctx):
    """inverted generational distance to the reference front (pymoo IGD)"""
    from pymoo.indicators.igd import IGD

    return float(IGD(ctx.pf)(ctx.F))


@indicator("igd_plus", "IGD+", "IGD\\textsuperscript{+}", higher_is_better=False, needs_pf=True)
def _igd_plus(ctx):
    """IGD+ (Pareto-compliant IGD) to the reference front (pymoo IGDPlus)"""
    from pymoo.indicators.igd_plus import IGDPlus

    return float(IGDPlus(ctx.pf)(ctx.F))


@indicator("n_points", "points", higher_is_better=None, kind="int")
def _n_points(ctx):
    """number of candidate points (included, finite)"""
    return int(len(ctx.F))


@indicator("n_nondominated", "front pts", "front", higher_is_better=True, kind="int")
def _n_nd(ctx):
    """number of non-dominated points"""
    return int(nondominated_mask(ctx.F).sum())


@indicator("alignment_deg", "align. °", "align.\\,°", higher_is_better=False)
def _alignment_deg(ctx):
    """mean angle between each point's preference ray and its loss vector (r⊙z vs 1; module docstring)"""
    a = ctx.alignment
    return None if a is None or np.isnan(a).all() else float(np.nanmean(a))


@indicator("alignment_hit", "rays met", "rays met", higher_is_better=True)
def _alignment_hit(ctx):
    """share of the preference rays met within ALIGNMENT_TOL_DEG (5°)"""
    a = ctx.alignment
    return None if a is None or np.isnan(a).all() else float(np.mean(a[~np.isnan(a)] <= ALIGNMENT_TOL_DEG))


# ---- the pooled reference front ---------------------------------------------------------------------
def pooled_front(fronts: Sequence[np.ndarray]) -> np.ndarray | None:
    """The non-dominated union of several fronts' finite points (minimization; a point repeated
    across fronts, e.g. by a repeated run, kept once), or None where there is none: the IGD
    reference front of records compared without an analytic one (`bench.reports.reference`)."""
    P = np.vstack([np.asarray(F, dtype=float) for F in fronts]) if len(fronts) else np.zeros((0, 0))
    P = np.unique(P[np.isfinite(P).all(axis=1)], axis=0)
    return P[nondominated_mask(P)] if len(P) else None
