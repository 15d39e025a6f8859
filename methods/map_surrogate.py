"""MAP's maths as pure functions: design, quadratic feature map, fit, prediction, front search,
adaptive-sampling scores and nested pairing (Li et al., arXiv 2406.07529).

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

from bench.registry import BenchError

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
    sign = -1.0 if objective == "accuracy" else 1.0
    offset = 1.0 if objective == "accuracy" else 0.0

    def f(X):
        return offset + sign * np.column_stack([s.predict(X) for s in surrogates])

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

    from bench.indicators import nondominated_mask
    from bench.rays import simplex_grid

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


# ---- Bayesian adaptive sampling ----------------------------------------------------------------
def default_bins(num_tasks: int) -> int:
    """Bins per hyperspherical angle, the authors' rule: 4 below 4 tasks, else 2."""
    return 4 if num_tasks < 4 else 2


def to_hyperspherical(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, T] → (angles [n, T−1] in [0, π/2] for c ≥ 0, radius [n])."""
    C = np.atleast_2d(np.asarray(C, float))
    r = np.linalg.norm(C, axis=1)
    tail = np.sqrt(np.cumsum((C ** 2)[:, ::-1], axis=1)[:, ::-1])      # ‖c_k..c_{T−1}‖
    return np.arctan2(tail[:, 1:], C[:, :-1]), r


def from_hyperspherical(phi: np.ndarray, r: np.ndarray) -> np.ndarray:
    phi, r = np.atleast_2d(np.asarray(phi, float)), np.asarray(r, float)
    n, d = phi.shape
    sin_prod = np.cumprod(np.sin(phi), axis=1)
    C = np.empty((n, d + 1))
    C[:, 0] = np.cos(phi[:, 0])
    C[:, 1:-1] = sin_prod[:, :-1] * np.cos(phi[:, 1:])
    C[:, -1] = sin_prod[:, -1]
    return C * r[:, None]


def bin_index(phi: np.ndarray, bins: int) -> np.ndarray:
    """Flat index of each point's joint angular bin (bins per angle over [0, π/2], last bin closed)."""
    phi = np.atleast_2d(phi)
    idx = np.clip(np.floor(phi / (np.pi / 2) * bins).astype(int), 0, bins - 1)
    return np.ravel_multi_index(tuple(idx.T), (bins,) * phi.shape[1]) if phi.shape[1] else np.zeros(len(phi), int)


def bin_scores(phi: np.ndarray, errors: np.ndarray, bins: int, rng: np.random.Generator, *, lam: float = 0.5,
               drop: float = 0.2, n_boot: int = 30) -> np.ndarray:
    """Acquisition score per joint angular bin: mean + lam·std of the squared surrogate error of the
    bin's points, the std over `n_boot` random subsets that drop `drop` of them (the authors'
    mean_plus_half_std). Empty bins get the largest score of the non-empty ones (the authors give
    them −inf, so a direction the initial design missed would never be sampled)."""
    errors = np.asarray(errors, float)
    which = bin_index(phi, bins)
    n_bins = bins ** np.atleast_2d(phi).shape[1]
    scores = np.full(n_bins, np.nan)
    for b in range(n_bins):
        e = errors[which == b]
        if len(e) == 0:
            continue
        keep = len(e) - int(drop * len(e))
        means = [rng.choice(e, size=keep, replace=False).mean() for _ in range(n_boot)]
        scores[b] = e.mean() + lam * float(np.std(means))
    if np.isnan(scores).all():
        return np.zeros(n_bins)
    return np.where(np.isnan(scores), np.nanmax(scores), scores)


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = (np.asarray(x, float) - np.max(x)) / temperature
    e = np.exp(z)
    return e / e.sum()


def adaptive_points(C: np.ndarray, errors: np.ndarray, n_new: int, rng: np.random.Generator, *, bins: int,
                    temperature: float = 0.07, radius: tuple[float, float] = (0.2, 0.8), lam: float = 0.5,
                    bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """n_new new coefficient vectors where the surrogate errs most: bins over hyperspherical
    angles scored by `bin_scores`, scores divided by their maximum (so that the temperature acts on
    a [0, 1] scale whatever the metric's units), softmax at `temperature`, bins drawn from it, then
    angles uniform inside each drawn bin and radius ~ U(radius). Returns (points, bin probabilities)."""
    phi, _ = to_hyperspherical(C)
    scores = bin_scores(phi, errors, bins, rng, lam=lam)
    top = np.max(np.abs(scores))
    probs = softmax(scores / top if top > 0 else scores, temperature)
    counts = rng.multinomial(n_new, probs)
    width = np.pi / 2 / bins
    out = []
    for b in np.flatnonzero(counts):
        cell = np.array(np.unravel_index(b, (bins,) * phi.shape[1]))
        ang = (cell + rng.uniform(size=(counts[b], len(cell)))) * width
        r = rng.uniform(radius[0], radius[1], size=counts[b])
        out.append(from_hyperspherical(ang, r))
    pts = np.clip(np.vstack(out), bounds[0], bounds[1]) if out else np.zeros((0, C.shape[1]))
    return pts, probs


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
