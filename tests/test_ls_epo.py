"""ls and epo (methods/ls.py, methods/epo.py, methods/ray_training.py) and the EPO LP
(methods/epo_solver.py).

Checks against independent computations: the EPO paper's two-objective problem (its Pareto front
and the ray intersection in closed form, by brentq), brute-force LPs over the 2-task simplex,
KL from scipy, toy-quadratic's closed-form Pareto set θ(w) and its sampled front.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import torch
from scipy.stats import entropy

from bench.cli import main as cli
from bench.runtime.config import compose
from bench.core.evaluator import Evaluator
from bench.core.merge import task_arithmetic
from bench.core.registry import METHODS, SUITES, BenchError
from bench.runtime.run import run
from bench.methods.scalarize import combine, gram, per_task_grads
from bench.methods.epo_solver import adjustments, epo_weights, non_uniformity
from bench.methods.ray_training import init_trainable, merged_params, resolve_rays
from bench.core.rays import simplex_grid


def run_record(out, *overrides) -> dict:
    path = run(compose([f"out={out}", *overrides]))
    return json.loads(Path(path).read_text())


# ---- the EPO paper's problem (Mahapatra & Rajan 2020, its toy experiment) ------------------------------
N = 20


def paper_problem(x):
    """f1 = 1 − exp(−‖x − 1/√n‖²), f2 = 1 − exp(−‖x + 1/√n‖²): losses [2] and gradients [2, n]."""
    d1, d2 = x - 1 / np.sqrt(N), x + 1 / np.sqrt(N)
    e1, e2 = np.exp(-d1 @ d1), np.exp(-d2 @ d2)
    return np.array([1 - e1, 1 - e2]), np.stack([2 * d1 * e1, 2 * d2 * e2])


def paper_front(t):
    """Its Pareto set is x = t·1/√n, t ∈ [−1, 1]: front (1 − e^{−(1−t)²}, 1 − e^{−(1+t)²})."""
    t = np.asarray(t, dtype=float)
    return np.stack([1 - np.exp(-(1 - t) ** 2), 1 - np.exp(-(1 + t) ** 2)], axis=-1)


def test_epo_hits_the_rays_on_the_paper_problem_and_ls_does_not():
    rays = np.array([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.7, 0.3], [0.9, 0.1]])
    rng = np.random.default_rng(0)
    dense = paper_front(np.linspace(-1, 1, 200001))
    mu_epo, mu_ls = [], []
    for r in rays:
        x0 = 0.2 * rng.normal(size=N)
        x, modes = x0.copy(), set()
        for _ in range(100):                       # the authors' toy loop: x −= max(μ, 0.1)·Σα_j g_j
            l, G = paper_problem(x)
            alpha, info = epo_weights(l, G @ G.T, r)
            assert not info["fallback"]
            modes.add(info["mode"])
            x = x - max(info["mu"], 0.1) * (alpha @ G)
        l, _ = paper_problem(x)
        mu_epo.append(non_uniformity(l, r))
        # on the analytic front …
        assert np.sqrt(((dense - l) ** 2).sum(axis=1)).min() <= 1e-4
        # … at the ray's intersection with it (r1 f1(t) = r2 f2(t), solved by brentq)
        t_star = scipy.optimize.brentq(lambda t: r @ (paper_front(t) * [1, -1]), -1, 1)
        assert np.abs(l - paper_front(t_star)).max() <= 2e-2
        assert modes == {"balance", "descent"}
        y = x0.copy()
        for _ in range(100):                       # LS from the same start: x −= Σ r_j g_j
            l_ls, G = paper_problem(y)
            y = y - r @ G
        mu_ls.append(non_uniformity(paper_problem(y)[0], r))
    print(f"\nEPO paper problem, μ per ray: EPO {np.array2string(np.array(mu_epo), precision=2)}, "
          f"LS {np.array2string(np.array(mu_ls), precision=2)}")
    assert max(mu_epo) <= 1e-3
    assert max(mu_ls) >= 100 * max(mu_epo) and max(mu_ls) > 0.1


# ---- the LP as a pure function -----------------------------------------------------------------
def brute_force_2task(losses, C, ray, eps=1e-4, restricted=False, n=200001):
    """The EPO LP for 2 tasks by enumerating α = (t, 1 − t) on a fine grid: best objective value."""
    a, mu = adjustments(losses, ray)
    C = C / np.max(np.diag(C))
    Ca = C @ a
    t = np.linspace(0, 1, n)
    A = np.stack([t, 1 - t], axis=1)               # [n, 2]
    CA = A @ C                                     # (Cα)_j per candidate
    if mu > eps:
        J = Ca > 0
        rhs = Ca.copy() if J.any() else np.zeros(2)
        rhs[J] = -np.inf
        rl = ray * losses
        rhs[rl == rl.max()] = 0.0
        ok = (CA >= rhs - 1e-12).all(axis=1)
        obj = A @ Ca
    else:
        ok = (CA >= -1e-12).all(axis=1)
        if restricted:
            ok &= A @ Ca >= min(Ca.max(), 0.0) - 1e-12
        obj = CA.sum(axis=1)
    return obj[ok].max(), Ca, C


@pytest.mark.parametrize("restricted", [False, True])
def test_epo_weights_match_a_brute_force_lp(restricted):
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(60):
        G = rng.normal(size=(2, 5)) * 10 ** rng.uniform(-4, 1)   # tiny and large gradients alike
        ray = rng.dirichlet([1, 1])
        losses = rng.uniform(0.1, 2.0, size=2)
        if rng.random() < 0.3:                                 # on the ray: descent mode
            losses = 1.0 / ray * rng.uniform(0.5, 2)
        alpha, info = epo_weights(losses, G @ G.T, ray, restricted=restricted)
        seen.add(info["mode"])
        assert info["mode"] == ("balance" if non_uniformity(losses, ray) > 1e-4 else "descent")
        assert np.all(alpha >= 0) and abs(alpha.sum() - 1) < 1e-9
        best, Ca, C = brute_force_2task(losses, G @ G.T, ray, restricted=restricted)
        if info["fallback"]:
            assert not np.isfinite(best)                       # only when the LP is infeasible
            continue
        value = alpha @ Ca if info["mode"] == "balance" else (C @ alpha).sum()
        # the grid's step is 5e-6 and the objective's slope in t is ≤ 2·max(|Ca|, 2)
        assert value == pytest.approx(best, abs=1e-4 * max(2.0, np.abs(Ca).max()))
    assert seen == {"balance", "descent"}


def test_epo_weights_modes_zero_entries_and_non_uniformity():
    C = np.array([[2.0, 0.3, -0.2], [0.3, 1.0, 0.1], [-0.2, 0.1, 1.5]])
    ray = np.array([0.2, 0.3, 0.5])
    on_ray = 1.0 / ray                                   # r ⊙ l uniform: μ = 0
    assert non_uniformity(on_ray, ray) == pytest.approx(0.0, abs=1e-15)
    assert epo_weights(on_ray, C, ray)[1]["mode"] == "descent"
    assert epo_weights(on_ray * [1.0, 1.0, 1.05], C, ray)[1]["mode"] == "balance"
    # the switch is μ vs eps
    l = on_ray * [1.0, 1.0, 1.02]
    mu = non_uniformity(l, ray)
    assert epo_weights(l, C, ray, eps=mu * 1.01)[1]["mode"] == "descent"
    assert epo_weights(l, C, ray, eps=mu * 0.99)[1]["mode"] == "balance"
    # μ is the KL divergence of l̂ to uniform (scipy)
    l = np.array([0.3, 1.2, 0.7])
    rl = ray * l
    assert non_uniformity(l, ray) == pytest.approx(entropy(rl / rl.sum(), np.full(3, 1 / 3)), rel=1e-12)
    # zero entries of the ray carry no target: α_j = 0 there; a one-hot ray is descent on its task
    alpha, info = epo_weights(l, C, np.array([0.0, 0.4, 0.6]))
    assert alpha[0] == 0 and abs(alpha.sum() - 1) < 1e-12
    assert non_uniformity(l, [0.0, 0.4, 0.6]) == pytest.approx(non_uniformity(l[1:], [0.4, 0.6]))
    alpha, info = epo_weights(l, C, np.array([0.0, 1.0, 0.0]))
    assert alpha.tolist() == [0.0, 1.0, 0.0] and info == {"mu": 0.0, "mode": "descent", "fallback": False}
    with pytest.raises(ValueError):
        epo_weights(np.array([1.0, -0.1, 1.0]), C, ray)


def test_epo_weights_falls_back_to_the_ray_when_the_lp_fails(monkeypatch):
    class Failed:
        status, x, message = 2, None, "infeasible"

    calls = []
    monkeypatch.setattr(scipy.optimize, "linprog", lambda *a, **k: calls.append(1) or Failed())   # epo_weights imports it when called
    ray = np.array([1.0, 3.0])
    alpha, info = epo_weights(np.array([0.5, 0.2]), np.array([[1.0, -0.9], [-0.9, 1.0]]), ray)
    assert calls and info["fallback"] is True and info["mode"] == "balance"
    np.testing.assert_allclose(alpha, ray / ray.sum())


# ---- trainer pieces ------------------------------------------------------------------------------
def test_spaces_merge_like_task_arithmetic_and_epo_gram():
    g = torch.Generator().manual_seed(0)
    theta0 = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)}
    tv = {"a": torch.randn(2, 3, 4, generator=g), "b": torch.randn(2, 5, generator=g)}
    ref = task_arithmetic(theta0, tv, [0.3, 0.3])
    for space, n in (("full", 17), ("layerwise", 4), ("taskwise", 2)):
        leaves = init_trainable(space, theta0, tv, 0.3)
        assert sum(l.numel() for l in leaves) == n
        merged = merged_params(space, theta0, tv, leaves)
        for k in theta0:
            want = theta0[k] if space == "full" else ref[k]
            torch.testing.assert_close(merged[k], want)
    lam = torch.tensor([[0.1, 0.7], [0.5, -0.2]])        # layerwise: λ_{i,p} per task i, tensor p
    merged = merged_params("layerwise", theta0, tv, [lam])
    torch.testing.assert_close(merged["a"], theta0["a"] + 0.1 * tv["a"][0] + 0.5 * tv["a"][1])
    torch.testing.assert_close(merged["b"], theta0["b"] + 0.7 * tv["b"][0] - 0.2 * tv["b"][1])
    # per-task gradients, their Gram matrix and Σ α_j g_j against a flattened computation
    leaves = init_trainable("full", theta0, tv, 0.3)
    losses = [(leaves[0] ** 2).sum() + leaves[1].sum(), (leaves[0] * 3).sum() - (leaves[1] ** 3).sum()]
    grads = per_task_grads(losses, leaves)
    G = torch.stack([torch.cat([x.reshape(-1) for x in gk]) for gk in grads]).double()
    np.testing.assert_allclose(gram(grads), (G @ G.T).numpy(), rtol=1e-6)
    d = combine(grads, np.array([0.25, 0.75]))
    torch.testing.assert_close(torch.cat([x.reshape(-1) for x in d]).double(), 0.25 * G[0] + 0.75 * G[1])


# ---- toy-quadratic, full space, through bench.runtime.run ------------------------------------------------
def kl_to_uniform(rl: np.ndarray) -> np.ndarray:
    """Row-wise KL(rl/Σrl ‖ uniform) (scipy), μ's definition."""
    return entropy(rl.T, np.full_like(rl.T, 1.0 / rl.shape[1]))


def exact_front_distance(suite, F: np.ndarray) -> np.ndarray:
    """Distance of each loss vector to toy-quadratic's exact front {L(θ(w)) : w ∈ simplex}: SLSQP over
    w from the nearest point of a sampled front (an independent check of pymoo GD on samples)."""
    W = simplex_grid(suite.num_tasks, 2000)
    PF = suite.losses(suite.pareto_set(W))
    out = []
    for f in np.atleast_2d(F):
        w0 = W[np.argmin(((PF - f) ** 2).sum(axis=1))]
        res = scipy.optimize.minimize(lambda w: ((suite.losses(suite.pareto_set(w[None]))[0] - f) ** 2).sum(), w0,
                                      method="SLSQP", bounds=[(0, 1)] * len(w0), options={"ftol": 1e-16},
                                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        out.append(np.sqrt(min(res.fun, ((PF - f) ** 2).sum(axis=1).min())))
    return np.array(out)


# On this toy (seed 0) the 1/r rays of the first four meet the front; that of [0.1, 0.1, 0.8] misses it
# (min over the front of μ is 5.1e-3): EPO can then only reach the front point of least μ.
T3_RAYS = [[0.3, 0.4, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6], [0.0, 0.5, 0.5], [0.1, 0.1, 0.8]]


@pytest.mark.parametrize("T,ray_args", [
    (2, ["method.partitions=4"]),                               # the grid: 5 rays, one-hots included
    (3, [f"method.rays={T3_RAYS}".replace(" ", "")]),           # explicit rays, one with a zero entry
])
def test_toy_quadratic_ls_on_the_front_and_epo_on_the_rays(out, T, ray_args):
    args = ["tasks=toy-quadratic", f"tasks.num_tasks={T}", *ray_args, "method.steps=300"]
    ls = run_record(out, "method=ls", *args)
    epo = run_record(out, "method=epo", *args)
    suite = SUITES.build("toy-quadratic", num_tasks=T)
    rays = np.array([[p["x"][f"ray[{t}]"] for t in suite.tasks] for p in ls["points"]])
    np.testing.assert_allclose(rays, resolve_rays(None, 2, 4, 66) if T == 2 else T3_RAYS)
    # LS with ray r minimises Σ r_i L_i: exactly the closed-form θ(r) (full space, convex)
    exact = suite.losses(suite.pareto_set(rays))
    got = np.array([[p["metrics"][t]["loss"] for t in suite.tasks] for p in ls["points"]])
    assert np.abs(got - exact).max() <= 1e-4
    epo_L = np.array([[p["metrics"][t]["loss"] for t in suite.tasks] for p in epo["points"]])
    mu_epo = [p["mu"] for p in epo["points"]]
    mu_ls = [p["mu"] for p in ls["points"]]
    gd_ls, gd_epo = exact_front_distance(suite, got).mean(), exact_front_distance(suite, epo_L).mean()
    print(f"\ntoy-quadratic T={T}: GD to the exact front ls={gd_ls:.1e} epo={gd_epo:.1e} (pymoo GD to the "
          f"sampled front in the records: ls={ls['indicators']['gd']:.1e} epo={epo['indicators']['gd']:.1e}); "
          f"max μ ls={max(mu_ls):.2e} epo={max(mu_epo):.2e}; EPO LP fallbacks={epo['meta']['fallbacks']}")
    assert gd_ls <= 1e-3 and gd_epo <= 1e-3                 # both on the front (EPO's points are Pareto optimal)
    if T == 2:                                              # 2000 samples are dense enough on a curve
        assert ls["indicators"]["gd"] <= 1e-3 and epo["indicators"]["gd"] <= 1e-3
    # only EPO lands on the 1/r rays where they meet the front, else on the front point closest to them
    PF = suite.losses(suite.pareto_set(simplex_grid(T, 20000)))
    best_mu = np.array([kl_to_uniform(r[r > 0] * PF[:, r > 0]).min() for r in rays])
    print(f"least μ on the (sampled) front per ray: {np.array2string(best_mu, precision=1)}; "
          f"EPO {np.array2string(np.array(mu_epo), precision=1)}")
    meets = best_mu <= 1e-4
    assert meets.sum() >= 4
    assert np.max(np.array(mu_epo)[meets]) <= 1e-3 and max(mu_ls) > 1e-2
    assert np.all(np.array(mu_epo)[~meets] <= 1.05 * best_mu[~meets])
    for rec in (ls, epo):
        assert rec["cost"]["train_steps"] == 300 * len(rays)
        assert rec["cost"]["trainable_params"] == suite.dim
        for p in rec["points"]:
            # the record's test losses are the analytic losses; train losses agree (no data)
            assert [p["train_losses"][t] for t in suite.tasks] == pytest.approx(
                [p["metrics"][t]["loss"] for t in suite.tasks], rel=1e-12)
    assert all(p["fallbacks"] == 0 for p in epo["points"])


def test_same_seed_same_front_and_bad_rays(out, capsys):
    suite = SUITES.build("toy-quadratic")
    m = METHODS.build("epo", steps=20, rays=[[0.3, 0.7], [0.6, 0.4]])
    fronts = [m.approximate_front(suite, evaluator=Evaluator(suite), seed=0) for _ in range(2)]
    np.testing.assert_array_equal(fronts[0].F, fronts[1].F)
    for bad, says in (([[0.5, 0.3, 0.2]], "has 3 entries"), ([[1.2, -0.2]], "negative"),
                      ([[0.0, 0.0]], "all zero"), ([], "empty")):
        with pytest.raises(BenchError, match=says) as e:
            METHODS.build("ls", rays=bad).approximate_front(suite, evaluator=Evaluator(suite), seed=0)
        assert "\n" not in str(e.value)
    # through the CLI: exit 2 and one line on stderr
    capsys.readouterr()
    code = cli(["run", "method=ls", "tasks=toy-quadratic", "method.rays=[[0.5,0.5,0.0]]", f"out={out}"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: method.rays[0]=[0.5, 0.5, 0.0] has 3 entries; the suite has 2 tasks"]


# ---- tiny-clip, layerwise --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ls", "epo"])
def test_tiny_clip_layerwise_one_hots_favour_their_task(out, method):
    rec = run_record(out, f"method={method}", "tasks=tiny-clip", "tasks.names=[digits,shapes]",
                     "method.space=layerwise", "method.steps=25", "method.lr=0.02",
                     "method.rays=[[1.0,0.0],[0.5,0.5],[0.0,1.0]]")
    assert rec["indicators"]["hv"] > 0 and rec["indicators"]["n_points"] == 3
    acc = {tuple(p["ray"]): p["metrics"] for p in rec["points"]}
    assert acc[(1.0, 0.0)]["digits"]["accuracy"] > acc[(0.0, 1.0)]["digits"]["accuracy"]
    assert acc[(0.0, 1.0)]["shapes"]["accuracy"] > acc[(1.0, 0.0)]["shapes"]["accuracy"]
    suite = SUITES.build("tiny-clip", names=["digits", "shapes"])
    assert rec["cost"]["trainable_params"] == 2 * len(suite.theta0())     # one λ per task per tensor
    assert rec["cost"]["train_steps"] == 75
    if method == "epo":
        assert all("fallbacks" in p for p in rec["points"])
