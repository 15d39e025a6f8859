"""Bayesian adaptive sampling for MAP as pure functions (Li et al., arXiv 2406.07529): where the
surrogates err most, in bins over hyperspherical angles, sample new coefficient vectors.

    >>> import numpy as np
    >>> phi, r = to_hyperspherical(np.array([[1.0, 0.0], [0.0, 2.0]]))
    >>> np.round(phi[:, 0], 6).tolist(), r.tolist()
    ([0.0, 1.570796], [1.0, 2.0])
"""
from __future__ import annotations

import numpy as np


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
