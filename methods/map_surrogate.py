"""MAP's surrogate as pure functions: design, quadratic feature map, fit, cross-validation, prediction
(Li et al., arXiv 2406.07529). The front search and nested pairing are in methods/map_search.py,
Bayesian adaptive sampling in methods/map_adaptive.py.

    >>> import numpy as np
    >>> C = design(2, 12, seed=0)                      # 2 one-hots + 10 scrambled-Sobol points
    >>> y = 1.0 + C[:, 0] - 2.0 * C[:, 0] * C[:, 1]     # an exact quadratic in c
    >>> s = fit_quadratic(C, y, "identity")
    >>> np.round(s.coef, 6) + 0.0                      # [c0², c1², c0·c1, c0, c1, 1]
    array([ 0.,  0., -2.,  1.,  0.,  1.])
    >>> round(float(s.predict(np.array([[0.5, 0.5]]))[0]), 6)
    1.0

Feature order follows the authors' `quadratic_model`: T squares, the T(T−1)/2 cross terms c_i·c_j
(i < j), T linear terms, 1 constant: (T+1)(T+2)/2 coefficients. Nothing here evaluates a model.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit, logit
from scipy.stats import qmc

from bench.api import BenchError

LINKS = ("identity", "sigmoid", "softplus")
EPS = 1e-4          # clipping of targets before the inverse link (accuracy 0/1, loss 0)


# ---- design and features -------------------------------------------------------------------
def n_params(num_tasks: int) -> int:
    """Coefficients of a full quadratic in T variables: (T+1)(T+2)/2."""
    return (num_tasks + 1) * (num_tasks + 2) // 2


def quadratic_features(C: np.ndarray) -> np.ndarray:
    """[n, T] coefficient vectors → [n, (T+1)(T+2)/2] features (squares, cross terms, linear, 1)."""
    C = np.atleast_2d(np.asarray(C, dtype=float))
    n, T = C.shape
    cross = [C[:, i] * C[:, j] for i, j in itertools.combinations(range(T), 2)]
    return np.column_stack([C ** 2, *cross, C, np.ones(n)]) if cross else np.column_stack([C ** 2, C, np.ones(n)])


def check_points(n: int, num_tasks: int, name: str = "method.points") -> None:
    p = n_params(num_tasks)
    if n < p:
        raise BenchError(f"{name}={n} is fewer than the {p} parameters of a full quadratic in {num_tasks} "
                         f"coefficients ((T+1)(T+2)/2); use {name} ≥ {p}")


def design(num_tasks: int, n: int, seed: int, kind: str = "sobol", lo: float = 0.0, hi: float = 1.0,
           name: str = "method.points") -> np.ndarray:
    """[n, T] sampled coefficient vectors: the T one-hots, then n − T space-filling points in [lo, hi]^T
    (scrambled Sobol, a prefix of a 2^m sequence; or an optimised Latin hypercube), seeded.

    The authors' grid keeps only the values {0, 1} per axis at T = 8, where c_i² = c_i makes the
    squared terms unidentifiable; continuous space-filling points keep the design matrix full rank."""
    check_points(n, num_tasks, name)
    m = n - num_tasks
    if kind == "sobol":
        sampler = qmc.Sobol(d=num_tasks, scramble=True, rng=np.random.default_rng(seed))
        pts = sampler.random_base2(int(np.ceil(np.log2(max(m, 1)))))[:m]
    elif kind == "lhs":
        pts = qmc.LatinHypercube(d=num_tasks, optimization="random-cd", rng=np.random.default_rng(seed)).random(m)
    else:
        raise BenchError(f"unknown design {kind!r}; valid choices: lhs, sobol")
    return np.vstack([np.eye(num_tasks), lo + (hi - lo) * pts])


def design_rank(C: np.ndarray) -> int:
    """Rank of the quadratic design matrix (identifiable iff it equals n_params(T))."""
    return int(np.linalg.matrix_rank(quadratic_features(C)))


# ---- links and the fit -----------------------------------------------------------------------
def link_fn(link: str):
    if link == "identity":
        return lambda z: z
    if link == "sigmoid":
        return expit
    if link == "softplus":
        return lambda z: np.logaddexp(0.0, z)
    raise BenchError(f"unknown link {link!r}; valid choices: {', '.join(LINKS)}")


def inverse_link(link: str, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if link == "identity":
        return y
    if link == "sigmoid":
        return logit(np.clip(y, EPS, 1.0 - EPS))
    if link == "softplus":
        y = np.maximum(y, EPS)
        return y + np.log(-np.expm1(-y))          # log(e^y − 1), stable
    raise BenchError(f"unknown link {link!r}; valid choices: {', '.join(LINKS)}")


@dataclass(frozen=True)
class QuadraticSurrogate:
    coef: np.ndarray          # [(T+1)(T+2)/2] in quadratic_features' order
    link: str

    @property
    def num_vars(self) -> int:
        """T, from (T+1)(T+2)/2 = len(coef)."""
        return int(round((np.sqrt(8 * len(self.coef) + 1) - 3) / 2))

    def predict(self, C: np.ndarray) -> np.ndarray:
        return link_fn(self.link)(quadratic_features(C) @ self.coef)


RIDGE_GRID = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def fit_quadratic(C: np.ndarray, y: np.ndarray, link: str = "identity", ridge: float = 0.0) -> QuadraticSurrogate:
    """Least-squares fit of y ≈ link(quadratic(c)): minimise (1/n)·Σ (link(φ(c)·β) − y)² +
    ridge·‖β‖² (the constant term is not penalised; ridge = 0 is the authors' plain fit).

    identity: linear least squares (numpy lstsq, or the ridge normal equations). sigmoid /
    softplus: nonlinear least squares *through the link*, in the metric's own units (scipy
    least_squares, analytic Jacobian, as the authors' curve_fit), started from the linear fit of
    the inverse-link targets (logits of accuracy clipped to [1e-4, 1 − 1e-4]; log(e^y − 1) of loss)."""
    Phi = quadratic_features(C)
    y = np.asarray(y, dtype=float)
    n, p = Phi.shape
    if n < p:
        check_points(n, np.asarray(C).shape[1], "points")
    pen = np.ones(p)
    pen[-1] = 0.0                                           # the constant is free

    def linear(target):
        if ridge == 0:
            return np.linalg.lstsq(Phi, target, rcond=None)[0]
        return np.linalg.solve(Phi.T @ Phi / n + ridge * np.diag(pen), Phi.T @ target / n)

    beta0 = linear(inverse_link(link, y))
    if link == "identity":
        return QuadraticSurrogate(beta0, link)
    f = link_fn(link)
    w = np.sqrt(ridge) * pen

    def resid(b):
        return np.r_[(f(Phi @ b) - y) / np.sqrt(n), w * b]

    def jac(b):
        z = Phi @ b
        d = expit(z) * (1.0 - expit(z)) if link == "sigmoid" else expit(z)   # σ' and softplus' = σ
        return np.vstack([Phi * (d / np.sqrt(n))[:, None], np.diag(w)])

    sol = least_squares(resid, beta0, jac=jac, method="trf", x_scale="jac", max_nfev=2000)
    beta = sol.x if np.sum(resid(sol.x) ** 2) <= np.sum(resid(beta0) ** 2) else beta0
    return QuadraticSurrogate(beta, link)


def r2_score(y: np.ndarray, pred: np.ndarray) -> float | None:
    """1 − SSE/SST; None where the targets are constant (R² undefined)."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst <= 1e-300:
        return None
    return 1.0 - float(np.sum((y - pred) ** 2)) / sst


def cross_validate(C: np.ndarray, y: np.ndarray, link: str, folds: int = 5, seed: int = 0,
                   ridge: float = 0.0) -> dict:
    """Held-out fit quality: `folds`-fold CV predictions pooled over all points (shuffled, seeded);
    leave-one-out where a k-fold training set would have fewer points than parameters; none at
    all when there are exactly as many points as parameters (the fit interpolates)."""
    C, y = np.asarray(C, float), np.asarray(y, float)
    n, p = len(y), n_params(C.shape[1])
    k = min(folds, n)
    if n - int(np.ceil(n / k)) < p:
        k = n                                       # leave-one-out
    if n - 1 < p:
        return {"r2": None, "rmse": None, "scheme": "none (points = parameters)", "ridge": ridge}
    order = np.random.default_rng(seed).permutation(n)
    pred = np.empty(n)
    for f in range(k):
        test = order[f::k]
        train = np.setdiff1d(order, test)
        pred[test] = fit_quadratic(C[train], y[train], link, ridge).predict(C[test])
    return {"r2": r2_score(y, pred), "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
            "scheme": "leave-one-out" if k == n else f"{k}-fold", "ridge": ridge}


def select_ridge(C: np.ndarray, y: np.ndarray, link: str, folds: int = 5, seed: int = 0,
                 grid: tuple[float, ...] = RIDGE_GRID) -> dict:
    """The ridge of `grid` with the smallest cross-validated RMSE (ties: the smallest ridge) and
    its CV result. The reported r2/rmse are those of the selected ridge on the same folds, so they
    are slightly optimistic (a minimum over len(grid) candidates), which the record says."""
    results = [cross_validate(C, y, link, folds, seed, a) for a in grid]
    if results[0]["rmse"] is None:
        return results[0]
    best = min(range(len(grid)), key=lambda i: (results[i]["rmse"], grid[i]))
    return {**results[best], "selected_from": list(grid)}


def loo_squared_errors(C: np.ndarray, Y: np.ndarray, link: str, ridge: list[float] | None = None) -> np.ndarray:
    """[n] leave-one-out squared error of each point, averaged over the T surrogates (columns of Y,
    each fitted with its own ridge, default 0)."""
    C, Y = np.asarray(C, float), np.atleast_2d(np.asarray(Y, float))
    n = len(C)
    err = np.zeros(n)
    for i in range(n):
        keep = np.arange(n) != i
        for t in range(Y.shape[1]):
            a = 0.0 if ridge is None else ridge[t]
            pred = fit_quadratic(C[keep], Y[keep, t], link, a).predict(C[i:i + 1])[0]
            err[i] += (pred - Y[i, t]) ** 2 / Y.shape[1]
    return err
