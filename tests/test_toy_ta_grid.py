"""toy-quadratic's closed forms and ta_grid on it."""
import itertools

import numpy as np
import pytest
import torch

from bench.core import indicators
from bench.core.evaluator import Evaluator
from bench.core.merge import task_arithmetic
from bench.core.registry import SUITES, BenchError
from bench.methods.ta_grid import TAGrid, grid_coefficients


@pytest.mark.parametrize("T", [2, 3, 5])
def test_full_space_front_is_stationary_for_the_weighted_sum(T):
    suite = SUITES.build("toy-quadratic", num_tasks=T, dim=6, seed=3)
    w = np.random.default_rng(0).dirichlet(np.ones(T), size=7)
    thetas = suite.pareto_set(w)
    for wi, th in zip(w, thetas):   # Σ w_i H_i (θ − θ_i*) = 0, computed with autograd
        p = {"theta": torch.tensor(th, requires_grad=True)}
        sum(float(wj) * suite.loss(p, t, None) for wj, t in zip(wi, suite.tasks)).backward()
        assert p["theta"].grad.abs().max() < 1e-10


def test_losses_match_torch_loss_and_anchor_normalisation():
    suite = SUITES.build("toy-quadratic", num_tasks=3)
    th = np.random.default_rng(1).normal(size=(4, suite.dim))
    np_l = suite.losses(th)
    for n in range(4):
        for i, t in enumerate(suite.tasks):
            assert float(suite.loss({"theta": torch.tensor(th[n])}, t, None)) == pytest.approx(np_l[n, i], rel=1e-12)
    np.testing.assert_allclose(suite.losses(suite.theta0()["theta"].numpy()), 1.0, rtol=1e-12)  # L_i(θ0) = 1
    np.testing.assert_allclose(np.diag(suite.losses(suite.theta_star)), 0.0, atol=1e-12)      # θ_i* optimal


def test_full_front_is_mutually_nondominated_and_dominates_the_ta_front():
    suite = SUITES.build("toy-quadratic", num_tasks=2, front_points=300)
    pf, ta = suite.true_front(), suite.true_front(space="ta")
    assert indicators.nondominated_mask(pf).all()
    # no task-arithmetic point can beat the full-space front
    for f in ta:
        assert not ((f <= pf - 1e-9).all(axis=1)).any()


def test_ta_coefficients_match_brute_force_grid_search():
    suite = SUITES.build("toy-quadratic", num_tasks=2, seed=5)
    tau, th0 = suite.task_vectors()["theta"].numpy(), suite.theta0()["theta"].numpy()
    grid = np.array(list(itertools.product(np.linspace(0, 2, 401), repeat=2)))
    L = suite.losses(th0 + grid @ tau)
    for w in ([0.5, 0.5], [0.2, 0.8], [0.9, 0.1]):
        lam = suite.ta_pareto_coefficients(np.array([w]))[0]
        best = (L @ np.array(w)).min()
        got = suite.losses(th0 + lam @ tau)[0] @ np.array(w)
        assert got <= best + 1e-12 and got == pytest.approx(best, abs=1e-4)


def test_bad_num_tasks_is_rejected():
    with pytest.raises(BenchError, match="num_tasks=9"):
        SUITES.build("toy-quadratic", num_tasks=9)
    with pytest.raises(BenchError, match="num_tasks=1"):
        SUITES.build("toy-quadratic", num_tasks=1)


def test_grid_coefficients_shapes():
    assert grid_coefficients("shared", 3, 11, 0, 1, 2000, 10, [1.0]).shape == (11, 3)
    assert grid_coefficients("grid", 2, 11, 0, 1, 2000, 10, [1.0]).shape == (121, 2)
    g8 = grid_coefficients("grid", 8, 11, 0, 1, 2000, 10, [1.0])
    assert g8.shape == (2 ** 8, 8) and len(g8) <= 2000        # k shrinks with T
    s = grid_coefficients("simplex", 3, 11, 0, 1, 2000, 4, [0.5, 1.0])
    assert s.shape == (30, 3) and np.allclose(np.sort(np.unique(s.sum(1).round(9))), [0.5, 1.0])


@pytest.mark.parametrize("T", [2, 3])
def test_ta_grid_igd_falls_as_grid_gets_denser_and_never_beats_the_true_front(T):
    suite = SUITES.build("toy-quadratic", num_tasks=T, front_points=400)
    ta_front = suite.true_front(space="ta")
    pf = suite.true_front()
    igds = []
    for k in (3, 6, 11):
        ev = Evaluator(suite)
        front = TAGrid(mode="grid", points=k, lo=0.0, hi=1.5).approximate_front(suite, evaluator=ev, seed=0)
        assert ev.evaluations == k ** T                      # one evaluation per candidate, none twice
        F = front.to_minimization()
        igds.append(indicators.compute(indicators.Context(F, np.full(T, 10.0), pf=ta_front), ["igd"])["igd"])
        for f in F:                                          # on or behind the true front
            assert not ((f <= pf - 1e-9).all(axis=1) & (f < pf - 1e-9).any(axis=1)).any()
        # the Evaluator's numbers are the closed-form losses of θ0 + Σ λ τ
        th = suite.theta0()["theta"].numpy() + front.X @ suite.task_vectors()["theta"].numpy()
        np.testing.assert_allclose(F, suite.losses(th), rtol=1e-12)
    assert igds[0] > igds[1] > igds[2]


def test_evaluator_caches_repeated_candidates():
    suite = SUITES.build("toy-quadratic")
    ev = Evaluator(suite)
    params = task_arithmetic(suite.theta0(), suite.task_vectors(), [0.3, 0.3])
    a = ev.evaluate(params, "test")
    b = ev.evaluate(params, "test")                           # same content → hash hit
    c = ev.evaluate(lambda: params, "test", key=("ta", 0.3))
    d = ev.evaluate(lambda: 1 / 0, "test", key=("ta", 0.3))   # cached: the builder is never called
    assert a == b == c == d and ev.evaluations == 2
    with ev.uncounted():
        ev.evaluate(suite.theta0(), "test")
    assert ev.evaluations == 2


@pytest.mark.parametrize("mode,extra,count", [
    ("simplex", {}, "77,792 points at T = 8 (19448 directions × 4 scales"),
    ("shared", {"points": 3001}, "3,001 points at T = 8"),
    ("grid", {"max_points": 100}, "256 points at T = 8 (2 points per axis"),
])
def test_every_mode_is_bounded_by_max_points_before_allocating(mode, extra, count):
    """T = 8 once grew to 22 GB before the kernel killed it: now refused with the count and the knob."""
    kw = {"points": 11, "lo": 0.0, "hi": 1.0, "max_points": 2000, "partitions": 10, "scales": [0.5, 1, 1.5, 2], **extra}
    with pytest.raises(BenchError, match="method.max_points") as e:
        grid_coefficients(mode, 8, **kw)
    assert count in str(e.value)
    assert len(grid_coefficients("grid", 8, **{**kw, "max_points": 2000})) == 256    # 2000^(1/8) → 2 per axis


def test_per_ray_trainers_cap_their_rays_by_default_at_many_tasks():
    from bench.core.registry import METHODS

    suite = SUITES.build("toy-quadratic", num_tasks=5)
    front = METHODS.build("ls", steps=2).approximate_front(suite, evaluator=Evaluator(suite), seed=0)
    assert len(front) == 6 and front.meta["max_rays"] == 6                  # T one-hots + the equal ray
    assert np.isclose(front.X, 0.2).all(axis=1).sum() == 1 and (front.X == 1.0).sum() == 5
