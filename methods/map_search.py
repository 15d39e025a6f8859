"""MAP's front search and nested pairing as pure functions (Li et al., arXiv 2406.07529).

    >>> import numpy as np
    >>> from bench.methods.map_surrogate import QuadraticSurrogate
    >>> a = QuadraticSurrogate(np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]), "identity")   # loss c0²
    >>> b = QuadraticSurrogate(np.array([0.0, 1.0, 0.0, -2.0, -2.0, 2.0]), "identity")  # (c0−1)² + (c1−1)²
    >>> X, F, algo = search_front([a, b], "loss", (0.0, 1.0), pop_size=20, generations=20)
    >>> algo, bool((np.diff(F[:, 0]) >= 0).all() and (np.diff(F[:, 1]) <= 0).all())
    ('nsga2', True)

Nothing here evaluates a model: the surrogates (methods/map_surrogate.py) stand in for the metrics.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.special import expit

from bench.api import BenchError
from bench.methods.map_surrogate import QuadraticSurrogate, quadratic_features


# ---- front search ----------------------------------------------------------------------------
def quadratic_features_jac(c: np.ndarray) -> np.ndarray:
    """[p, T] derivative of quadratic_features at one point c [T]."""
    c = np.asarray(c, float)
    T = len(c)
    eye = np.eye(T)
    rows = [2.0 * c[i] * eye[i] for i in range(T)]
    rows += [c[j] * eye[i] + c[i] * eye[j] for i, j in itertools.combinations(range(T), 2)]
    rows += [eye[i] for i in range(T)] + [np.zeros(T)]
    return np.array(rows)


def minimization_objectives(surrogates: list[QuadraticSurrogate], objective: str):
    """(f, grad): the surrogates' predictions in minimization form ([n, T] → [n, k]; accuracy →
    1 − accuracy) and their Jacobian at one point ([T] → [k, T])."""
    from bench.api import to_minimization
    from bench.core.front import MINIMIZATION

    sign = MINIMIZATION[objective][0]

    def f(X):
        return to_minimization(np.column_stack([s.predict(X) for s in surrogates]), objective)

    def grad(c):
        J = quadratic_features_jac(c)
        phi = quadratic_features(c[None])[0]
        out = []
        for s in surrogates:
            z = phi @ s.coef
            d = 1.0 if s.link == "identity" else (expit(z) * (1 - expit(z)) if s.link == "sigmoid" else expit(z))
            out.append(sign * d * (s.coef @ J))
        return np.array(out)

    return f, grad


def search_front(surrogates: list[QuadraticSurrogate], objective: str, bounds: tuple[float, float], *,
                 pop_size: int = 100, generations: int = 200, algorithm: str = "auto", seed: int = 0,
                 polish: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Pareto front of the surrogates (minimization form) over bounds^T with pymoo NSGA-II (NSGA-III
    with das-dennis reference directions for ≥ 4 objectives, or as `algorithm` says), optionally
    polished (`polish_front`). Returns (X, F, algorithm name): the non-dominated final population
    without duplicates, sorted by the objectives; F in minimization form."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.algorithms.moo.nsga3 import NSGA3
    from pymoo.core.problem import Problem
    from pymoo.optimize import minimize

    from bench.api import nondominated_mask
    from bench.api import simplex_grid

    predict, grad = minimization_objectives(surrogates, objective)
    num_obj, num_vars = len(surrogates), surrogates[0].num_vars

    class Surrogates(Problem):
        def __init__(self):
            super().__init__(n_var=num_vars, n_obj=num_obj, xl=float(bounds[0]), xu=float(bounds[1]))

        def _evaluate(self, X, out, *args, **kwargs):
            out["F"] = predict(X)

    name = algorithm if algorithm != "auto" else ("nsga3" if num_obj >= 4 else "nsga2")
    if name == "nsga3":
        ref_dirs = simplex_grid(num_obj, pop_size)          # densest das-dennis grid ≤ pop_size
        algo = NSGA3(ref_dirs=ref_dirs, pop_size=max(pop_size, len(ref_dirs)))
    elif name == "nsga2":
        algo = NSGA2(pop_size=pop_size)
    else:
        raise BenchError(f"unknown algorithm {algorithm!r}; valid choices: auto, nsga2, nsga3")
    res = minimize(Surrogates(), algo, ("n_gen", generations), seed=seed, verbose=False)
    X = res.pop.get("X")
    if polish:
        X = polish_front(predict, grad, X, bounds)
    F = predict(X)
    nd = nondominated_mask(F)
    X, F = X[nd], F[nd]
    _, first = np.unique(np.round(X, 12), axis=0, return_index=True)
    first = np.sort(first)
    order = np.lexsort(F[first].T[::-1])
    return X[first][order], F[first][order], name


def polish_front(predict, grad, X: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Move each point of an evolutionary front onto the surrogates' Pareto set: minimise Σ_i f_i(x)
    subject to f_i(x) ≤ f_i(x_k) for every objective, within the bounds (scipy SLSQP, analytic
    gradients). The result weakly dominates x_k and is Pareto-optimal for smooth f; a point whose
    solve fails or would leave the dominance cone is kept as it was. NSGA-II's final population
    stalls about 1e-3 (in normalised objectives) short of the front; this removes that residual."""
    from scipy.optimize import minimize

    X = np.atleast_2d(np.asarray(X, float))
    out = X.copy()
    box = [tuple(map(float, bounds))] * X.shape[1]
    for k, x in enumerate(X):
        f0 = predict(x[None])[0]
        res = minimize(lambda z: float(np.sum(predict(z[None])[0])), x, jac=lambda z: grad(z).sum(0),
                       method="SLSQP", bounds=box,
                       constraints=[{"type": "ineq", "fun": lambda z: f0 - predict(z[None])[0],
                                     "jac": lambda z: -grad(z)}],
                       options={"ftol": 1e-12, "maxiter": 200})
        z = np.clip(res.x, *bounds)
        if np.all(np.isfinite(z)) and np.all(predict(z[None])[0] <= f0 + 1e-12):
            out[k] = z
    return out


def spread_subset(F: np.ndarray, k: int) -> np.ndarray:
    """Indices of ≤ k rows of F spread over the front: each objective's best point first, then
    greedy farthest-point sampling in objectives normalised to [0, 1] (deterministic)."""
    F = np.asarray(F, float)
    n = len(F)
    if k >= n:
        return np.arange(n)
    span = F.max(0) - F.min(0)
    Z = (F - F.min(0)) / np.where(span > 0, span, 1.0)
    chosen: list[int] = []
    for j in range(F.shape[1]):
        i = int(np.argmin(Z[:, j]))
        if i not in chosen and len(chosen) < k:
            chosen.append(i)
    d = np.min(np.linalg.norm(Z[:, None] - Z[chosen][None], axis=-1), axis=1)
    while len(chosen) < k:
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, np.linalg.norm(Z - Z[i], axis=1))
    return np.array(sorted(chosen))


# ---- nested merging --------------------------------------------------------------------------
def closest_pair(values: list[float]) -> tuple[int, int]:
    """The pair (i < j) whose values differ least (first such pair on ties), as the authors'
    find_closest_datasets pairs the models with the closest fine-tuned accuracy."""
    best, pair = np.inf, (0, 1)
    for i, j in itertools.combinations(range(len(values)), 2):
        d = abs(values[i] - values[j])
        if d < best:
            best, pair = d, (i, j)
    return pair


def group_weights(preference: np.ndarray, members: list[int]) -> np.ndarray:
    """Normalised preference weights of a group's tasks (uniform where they are all zero)."""
    w = np.asarray(preference, float)[members]
    return w / w.sum() if w.sum() > 0 else np.full(len(members), 1.0 / len(members))


def pick_by_preference(F: np.ndarray, weights: np.ndarray) -> int:
    """Row of the (minimization-form) front F minimising the preference-weighted sum (the authors'
    get_scaling_from_pf, with the weights L2-normalised; equal weights where all are zero)."""
    w = np.asarray(weights, float)
    w = w / np.linalg.norm(w) if w.sum() > 0 else np.full(len(w), 1.0 / np.sqrt(len(w)))
    return int(np.argmin(np.asarray(F, float) @ w))
