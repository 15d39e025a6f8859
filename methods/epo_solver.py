"""The EPO search direction: a small linear program over the simplex (pure functions).

    >>> import numpy as np
    >>> alpha, info = epo_weights(np.array([1.0, 1.0]), np.array([[1.0, 0.2], [0.2, 1.0]]),
    ...                           np.array([0.5, 0.5]))
    >>> info["mode"], round(float(alpha.sum()), 6)
    ('descent', 1.0)

Exact Pareto Optimal search: D. Mahapatra and V. Rajan, "Multi-Task Learning with User
Preferences: Gradient Descent with Controlled Ascent in Pareto Optimization", ICML 2020
(https://proceedings.mlr.press/v119/mahapatra20a.html). This follows the authors' public code,
`dbmptr/EPOSearch`, file `multiMNIST/epo_lp.py` (class `EPO_LP`, functions `mu`, `adjustments`):

- l̂ = r⊙l / Σ(r⊙l); non-uniformity μ = Σ_j l̂_j log(m·l̂_j) (KL of l̂ to uniform);
  adjustments a = r⊙(log(m·l̂) − μ); C = G Gᵀ; Ca = C a.
- Balance mode (μ > eps): maximise αᵀCa over the simplex. With J = {j : (Ca)_j > 0} non-empty:
  (Cα)_j ≥ (Ca)_j for j ∉ J, and (Cα)_{j*} ≥ 0 for every j* in J* = argmax_j r_j l_j (the
  worst-off tasks; this replaces their other constraint, as `rhs[J_star_idx] = 0` does in the
  authors' code). With J empty: Cα ≥ 0 for every task (the authors' code, `rhs = 0`).
- Descent mode (μ ≤ eps): maximise 1ᵀCα s.t. Cα ≥ 0 (the authors' "relaxed" LP); with
  `restricted=True` also αᵀCa ≥ min(max_j (Ca)_j, 0) (their `constraints_res`, written there as
  `−neg(max(Ca))`; it is the default of their `get_alpha(relax=False)`).

Differences from the authors' code, all numerically neutral or for robustness:
- The LP is solved with scipy `linprog(method="highs")` instead of cvxpy + GLPK.
- C is divided by its largest diagonal entry before solving. Both sides of every constraint
  scale with C (a does not depend on C), so the feasible set and the argmax are unchanged; it
  keeps HiGHS' absolute tolerances meaningful when gradients are tiny (networks).
- Tasks with r_j = 0 carry no target (r_j l_j = 0 whatever l_j): they are dropped, and μ, a and
  the LP are computed on the support of r, with m = its size; their α_j is 0. On a one-hot ray
  this is plain descent on that task (μ = 0). The authors' `mu` drops such entries too but keeps
  m = T, which would leave μ = log T on a one-hot ray for ever.
- A failed LP (infeasible, numerical trouble) returns α = r/Σr, as the authors' training script
  does after a solver exception, with `fallback=True` so that callers can count it.
"""
from __future__ import annotations

import numpy as np


def _support_hat(losses: np.ndarray, ray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(support mask of r, l̂ on the support)."""
    losses = np.asarray(losses, dtype=float).reshape(-1)
    ray = np.asarray(ray, dtype=float).reshape(-1)
    if losses.shape != ray.shape:
        raise ValueError(f"losses have {losses.size} entries but the ray has {ray.size}")
    if not (np.isfinite(losses).all() and np.isfinite(ray).all()):
        raise ValueError(f"non-finite losses {losses} or ray {ray}")
    if (losses < 0).any() or (ray < 0).any() or ray.sum() <= 0:
        raise ValueError(f"EPO needs losses ≥ 0 and a non-negative, non-zero ray; got l={losses}, r={ray}")
    s = ray > 0
    rl = ray[s] * losses[s]
    total = rl.sum()
    if total <= 0:                      # every weighted loss is 0: already on the ray
        return s, np.full(len(rl), 1.0 / len(rl))
    return s, np.maximum(rl / total, np.finfo(float).tiny)   # a zero loss: log stays finite


def non_uniformity(losses, ray) -> float:
    """μ = KL(l̂ ‖ uniform) = Σ_j l̂_j log(m·l̂_j), l̂ = r⊙l / Σ(r⊙l), over the tasks with r_j > 0
    (m of them). 0 exactly when r_1 l_1 = … = r_m l_m, i.e. the loss vector lies on the 1/r ray."""
    _, l_hat = _support_hat(losses, ray)
    return float(np.sum(l_hat * np.log(len(l_hat) * l_hat)))


def adjustments(losses, ray) -> tuple[np.ndarray, float]:
    """(a, μ): a = r⊙(log(m·l̂) − μ) on the support of r, 0 elsewhere (authors' `adjustments`)."""
    ray = np.asarray(ray, dtype=float).reshape(-1)
    s, l_hat = _support_hat(losses, ray)
    mu = float(np.sum(l_hat * np.log(len(l_hat) * l_hat)))
    a = np.zeros_like(ray)
    a[s] = ray[s] * (np.log(len(l_hat) * l_hat) - mu)
    return a, mu


def epo_weights(losses: np.ndarray, gram: np.ndarray, ray: np.ndarray, *, eps: float = 1e-4,
                restricted: bool = False) -> tuple[np.ndarray, dict]:
    """EPO search direction weights α on the simplex (Mahapatra & Rajan, ICML 2020).

    losses [T] (> 0), gram = G Gᵀ [T,T] of per-task gradients, ray [T].
    Returns (alpha [T], info) with info = {"mu": float, "mode": "balance"|"descent", "fallback": bool}.
    On LP failure α = r/Σr and fallback=True. The step is along Σ_j α_j g_j (descend on it).
    """
    ray = np.asarray(ray, dtype=float).reshape(-1)
    gram = np.asarray(gram, dtype=float)
    T = ray.size
    if gram.shape != (T, T):
        raise ValueError(f"gram has shape {gram.shape}; expected ({T}, {T})")
    a_full, mu = adjustments(losses, ray)
    s = ray > 0
    idx = np.flatnonzero(s)
    C = 0.5 * (gram[np.ix_(s, s)] + gram[np.ix_(s, s)].T)
    a = a_full[s]
    m = len(idx)
    mode = "balance" if mu > eps else "descent"
    fallback_alpha = ray / ray.sum()

    if m == 1:                                 # one task in the support: plain descent on it
        alpha = np.zeros(T)
        alpha[idx] = 1.0
        return alpha, {"mu": mu, "mode": mode, "fallback": False}
    scale = float(np.max(np.diag(C)))
    if not np.isfinite(C).all() or scale <= 0:
        # every gradient on the support is zero (or broken): no direction to choose
        return fallback_alpha, {"mu": mu, "mode": mode, "fallback": True}
    C = C / scale
    Ca = C @ a

    if mode == "balance":
        rl = ray[s] * np.asarray(losses, dtype=float).reshape(-1)[s]
        J = Ca > 0
        rhs = Ca.copy() if J.any() else np.zeros(m)
        rhs[J] = -np.inf                       # no constraint for tasks the balancing move already helps
        rhs[rl == rl.max()] = 0.0              # J*: never increase the worst-off task
        rows = np.isfinite(rhs)
        c = -Ca                                # maximise αᵀCa
        A_ub, b_ub = -C[rows], -rhs[rows]      # (Cα)_j ≥ rhs_j
    else:
        c = -C.sum(axis=0)                     # maximise 1ᵀCα
        A_ub, b_ub = -C, np.zeros(m)           # Cα ≥ 0
        if restricted:
            A_ub = np.vstack([A_ub, -Ca[None]])
            b_ub = np.append(b_ub, -min(float(Ca.max()), 0.0))
    from scipy.optimize import linprog      # here: scipy.optimize costs ~0.5 s to import, and only EPO needs it

    res = linprog(c, A_ub=A_ub if len(A_ub) else None, b_ub=b_ub if len(A_ub) else None,
                  A_eq=np.ones((1, m)), b_eq=[1.0], bounds=[(0.0, None)] * m, method="highs")
    if res.status != 0 or res.x is None or not np.isfinite(res.x).all():
        return fallback_alpha, {"mu": mu, "mode": mode, "fallback": True}
    x = np.clip(res.x, 0.0, None)
    alpha = np.zeros(T)
    alpha[idx] = x / x.sum()
    return alpha, {"mu": mu, "mode": mode, "fallback": False}
