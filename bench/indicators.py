"""Front quality indicators: thin wrappers over pymoo, all in minimization space, each registered
with what a table needs to know about it.

    >>> import numpy as np
    >>> F = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
    >>> round(hypervolume(F, ref_point=np.array([1.0, 1.0]))[0], 6)
    0.37
    >>> ctx = Context(F=F, ref_point=np.ones(2))
    >>> {k: round(v, 6) for k, v in compute(ctx, ["hv", "n_nondominated"]).items()}
    {'hv': 0.37, 'n_nondominated': 3}

An indicator is `f(ctx) -> value`, registered in `INDICATORS` as an `Indicator` (label, LaTeX
label, direction, whether it needs a reference front). `ctx` carries the front F (the included,
finite points), the suite's reference point (never derived from the data), the IGD reference
front `pf` (None where there is none) and the reference models' metrics. A record stores every
indicator that depends on its own run alone (`per_record`): IGD-type indicators only where the
suite has an analytic front; against a pooled front (the non-dominated union of many records,
`reference_front`) they exist only where records are compared: `bench table` and `bench check`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from bench.registry import INDICATORS

# Exact HV grows steeply with the number of objectives (8 objectives: 100 points ~1 s, 300 points
# minutes); past these sizes moocore's deterministic approximation is used and the record says so.
EXACT_HV_MAX_POINTS = {4: 2000, 5: 400, 6: 150, 7: 100, 8: 80}


@dataclass(frozen=True)
class Context:
    F: np.ndarray                         # [n, T] minimization-space objectives of the included points
    ref_point: np.ndarray
    pf: np.ndarray | None = None          # IGD reference front
    objective: str = "loss"
    finetuned: np.ndarray | None = None   # each task's fine-tuned model on its own task (natural direction)

    def __post_init__(self):
        F = np.asarray(self.F, dtype=float).reshape(-1, len(self.ref_point))
        object.__setattr__(self, "F", F[np.isfinite(F).all(axis=1)])


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
    """Decorator: register `f(ctx)` as indicator `name`."""
    def deco(fn):
        INDICATORS.register(name, (fn.__doc__ or "").strip().splitlines()[0])(
            Indicator(name, fn, label, latex or label, higher_is_better, needs_pf, kind))
        return fn
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


def hv_algorithm(n: int, num_objectives: int) -> str:
    """Which HV computation a front of n non-dominated points gets."""
    exact = n <= EXACT_HV_MAX_POINTS.get(num_objectives, 10**9)
    return "exact" if exact else "moocore.hv_approx(Rphi-FWE+)"


def _hv_front(F: np.ndarray, ref_point: np.ndarray) -> np.ndarray:
    F = np.asarray(F, dtype=float)
    F = F[nondominated_mask(F)]
    return F[(F < ref_point).all(axis=1)]


def hypervolume(F: np.ndarray, ref_point: np.ndarray) -> tuple[float, str]:
    """(HV, how it was computed). Only non-dominated points inside the reference box count."""
    ref_point = np.asarray(ref_point, dtype=float)
    F = _hv_front(F, ref_point)
    if len(F) == 0:
        return 0.0, "exact"
    how = hv_algorithm(len(F), F.shape[1])
    if how == "exact":
        from pymoo.indicators.hv import HV

        return float(HV(ref_point=ref_point)(F)), how
    import moocore

    return float(moocore.hv_approx(F, ref=ref_point, method="Rphi-FWE+")), how


def front_hash(pf: np.ndarray | None) -> str | None:
    if pf is None:
        return None
    return hashlib.sha1(np.ascontiguousarray(np.round(pf, 12)).tobytes()).hexdigest()[:12]


def normalized_error(ctx: Context) -> np.ndarray | None:
    """1 − accuracy/accuracy_ft per task (each task's own fine-tuned model = 0); None where undefined."""
    if ctx.objective != "accuracy" or ctx.finetuned is None or not (np.asarray(ctx.finetuned) > 0).all():
        return None                       # e.g. random-weight benchmark models
    return 1.0 - (1.0 - ctx.F) / np.asarray(ctx.finetuned, dtype=float)


# ---- the indicators --------------------------------------------------------------------------------
@indicator("hv", "HV", higher_is_better=True)
def _hv(ctx):
    """hypervolume w.r.t. the suite's reference point (pymoo HV; moocore's approximation past EXACT_HV_MAX_POINTS)"""
    return hypervolume(ctx.F, ctx.ref_point)[0]


@indicator("hv_method", "HV method", higher_is_better=None, kind="str")
def _hv_method(ctx):
    """how `hv` was computed: exact, or the approximation's name"""
    F = _hv_front(ctx.F, np.asarray(ctx.ref_point, dtype=float))
    return hv_algorithm(len(F), ctx.F.shape[1]) if len(F) else "exact"


@indicator("hv_normalized", "HV norm.", "HV\\textsubscript{norm}", higher_is_better=True)
def _hv_normalized(ctx):
    """HV of normalised error 1 − acc/acc_ft (each task's own fine-tuned accuracy), reference 1 (accuracy suites)"""
    Z = normalized_error(ctx)
    return None if Z is None else hypervolume(Z, np.ones(Z.shape[1]))[0]


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


# ---- reference fronts for IGD-type indicators -----------------------------------------------------
@dataclass(frozen=True)
class RefFront:
    kind: str                       # analytic | pooled
    pf: np.ndarray | None
    hash: str | None
    n_points: int
    how: str                        # one sentence for the note under a table
    extra: dict = field(default_factory=dict)


def analytic_front(suite_name: str, suite_config: dict) -> np.ndarray | None:
    """The closed-form front of a suite rebuilt from the registry (None where it has none)."""
    from bench.config import build_from_config
    from bench.registry import SUITES

    suite = build_from_config(SUITES, {"name": suite_name, **suite_config}, "tasks")
    pf = suite.true_front()
    return None if pf is None else np.asarray(pf, dtype=float)


def reference_front(records: list) -> RefFront:
    """The IGD reference front of records of one suite key: the analytic front where the suite has
    one, else the non-dominated union of the records' included points (duplicates kept once)."""
    first = records[0]
    if first.analytic:
        pf = analytic_front(first.suite, first.suite_config)
        return RefFront("analytic", pf, front_hash(pf), len(pf),
                        f"analytic Pareto front of {first.suite} (closed form, rebuilt from the suite registry)")
    P = np.vstack([r.F_included for r in records]) if records else np.zeros((0, 0))
    P = np.unique(P[np.isfinite(P).all(axis=1)], axis=0)   # a repeated run adds no weight to its points
    pf = P[nondominated_mask(P)] if len(P) else None
    return RefFront("pooled", pf, front_hash(pf), 0 if pf is None else len(pf),
                    f"non-dominated union of the {len(records)} records of this suite key")
