"""Indicators against hand computations and brute-force implementations of our own."""
import itertools

import numpy as np
import pytest

from bench import indicators
from bench.front import Front, to_minimization


def brute_hv(F, ref):
    """Exact HV by coordinate compression: sum the volume of every grid cell that some point dominates."""
    F = np.asarray([f for f in F if (f < ref).all()])
    if len(F) == 0:
        return 0.0
    axes = [np.unique(np.append(F[:, k], ref[k])) for k in range(F.shape[1])]
    total = 0.0
    for idx in itertools.product(*[range(len(a) - 1) for a in axes]):
        lo = np.array([axes[k][i] for k, i in enumerate(idx)])
        hi = np.array([axes[k][i + 1] for k, i in enumerate(idx)])
        if (F <= lo).all(axis=1).any():
            total += np.prod(hi - lo)
    return total


def brute_nd(F):
    n = len(F)
    return np.array([not any((F[j] <= F[i]).all() and (F[j] < F[i]).any() for j in range(n)) for i in range(n)])


def test_hv_hand_2d():
    F = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
    # staircase: 0.8*0.2 + 0.5*0.3 + 0.2*0.3 = 0.16 + 0.15 + 0.06
    assert indicators.hypervolume(F, np.array([1.0, 1.0]))[0] == pytest.approx(0.37, abs=1e-12)


def test_hv_hand_3d():
    F = np.array([[0.0, 0.0, 0.5], [0.5, 0.5, 0.0]])
    # box A: 1*1*0.5 = 0.5; box B: 0.5*0.5*1 = 0.25; overlap 0.5*0.5*0.5 = 0.125
    assert indicators.hypervolume(F, np.ones(3))[0] == pytest.approx(0.625, abs=1e-12)


def test_hv_ignores_points_outside_reference_box_and_dominated_points():
    F = np.array([[0.5, 0.5], [0.6, 0.6], [1.5, 0.1]])
    assert indicators.hypervolume(F, np.ones(2))[0] == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize("T,n", [(2, 30), (3, 25), (4, 12)])
def test_hv_matches_brute_force(T, n):
    rng = np.random.default_rng(T)
    F = rng.uniform(0, 1, size=(n, T))
    ref = np.full(T, 1.1)
    assert indicators.hypervolume(F, ref)[0] == pytest.approx(brute_hv(F, ref), rel=1e-10)


def test_nondominated_mask_matches_brute_force():
    rng = np.random.default_rng(0)
    F = rng.integers(0, 6, size=(60, 3)).astype(float)   # many ties and duplicates
    F = np.unique(F, axis=0)
    assert (indicators.nondominated_mask(F) == brute_nd(F)).all()


def test_gd_igd_igdplus_against_brute_force():
    rng = np.random.default_rng(1)
    A = rng.uniform(0, 1, size=(15, 2))
    Z = rng.uniform(0, 1, size=(40, 2))
    d = np.linalg.norm(A[:, None] - Z[None], axis=-1)
    out = indicators.compute(indicators.Context(A, ref_point=np.ones(2), pf=Z))
    assert out["gd"] == pytest.approx(d.min(axis=1).mean(), rel=1e-12)
    assert out["igd"] == pytest.approx(d.min(axis=0).mean(), rel=1e-12)
    plus = np.linalg.norm(np.maximum(A[:, None] - Z[None], 0), axis=-1)    # d+(z, a) = ‖max(a − z, 0)‖
    assert out["igd_plus"] == pytest.approx(plus.min(axis=0).mean(), rel=1e-12)
    assert out["n_points"] == 15 and out["n_nondominated"] == int(brute_nd(A).sum())


def test_igd_is_zero_on_the_reference_front_and_none_without_one():
    Z = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    out = indicators.compute(indicators.Context(Z, ref_point=np.full(2, 2.0), pf=Z))
    assert out["igd"] == 0 and out["igd_plus"] == 0 and out["gd"] == 0
    out = indicators.compute(indicators.Context(Z, ref_point=np.full(2, 2.0)))
    assert out["igd"] is None and out["gd"] is None


def test_indicator_registry_metadata_and_what_a_record_stores():
    """Every indicator declares its direction and whether it needs a reference front; a record
    stores IGD-type indicators only where the suite's front is analytic (not pooled over runs)."""
    from bench.registry import INDICATORS

    needs_pf = {n for n in INDICATORS.names() if INDICATORS.get(n).needs_pf}
    assert needs_pf == {"gd", "igd", "igd_plus"}
    assert INDICATORS.get("hv").higher_is_better and not INDICATORS.get("igd_plus").higher_is_better
    assert set(indicators.per_record(analytic=True)) == set(INDICATORS.names())
    assert set(indicators.per_record(analytic=False)) == set(INDICATORS.names()) - needs_pf


def test_normalized_hv_by_hand():
    """HV of 1 − acc/acc_ft: a point at each task's fine-tuned accuracy has normalised error 0."""
    F = np.array([[0.2, 0.4]])                         # errors → accuracies 0.8, 0.6
    ctx = indicators.Context(F, ref_point=np.ones(2), objective="accuracy", finetuned=np.array([0.8, 0.75]))
    out = indicators.compute(ctx, ["hv", "hv_normalized"])
    assert out["hv"] == pytest.approx(0.8 * 0.6) and out["hv_normalized"] == pytest.approx(1.0 * 0.8)
    assert indicators.compute(indicators.Context(F, np.ones(2), objective="loss"), ["hv_normalized"]) == {
        "hv_normalized": None}


def test_minimization_sign_flip_happens_once_in_front():
    f = Front(tasks=["a", "b"], objective="accuracy", X=[[0.0], [1.0]], x_names=["lam"],
              metrics=[{"a": {"accuracy": 0.9, "loss": 0.1}, "b": {"accuracy": 0.6, "loss": 0.9}},
                       {"a": {"accuracy": 0.7, "loss": 0.5}, "b": {"accuracy": 0.8, "loss": 0.4}}])
    np.testing.assert_allclose(f.to_minimization(), [[0.1, 0.4], [0.3, 0.2]])
    g = Front(tasks=["a", "b"], objective="loss", X=[[0.0]], x_names=["lam"],
              metrics=[{"a": {"accuracy": None, "loss": 0.1}, "b": {"accuracy": None, "loss": 0.9}}])
    np.testing.assert_allclose(g.to_minimization(), [[0.1, 0.9]])
    # accuracy HV in error space equals HV of the "maximise accuracy" problem with reference accuracy 0
    acc = f.F
    hv_err = indicators.hypervolume(to_minimization(acc, "accuracy"), np.ones(2))[0]
    assert hv_err == pytest.approx(brute_hv(1 - acc, np.ones(2)))


def test_many_objectives_use_the_approximation_and_say_so():
    rng = np.random.default_rng(0)
    F = rng.dirichlet(np.ones(6), size=400)          # all mutually non-dominated
    hv, how = indicators.hypervolume(F, np.ones(6))
    assert how.startswith("moocore")
    exact = indicators.hypervolume(F[:60], np.ones(6))
    assert exact[1] == "exact"
    assert 0 < exact[0] <= hv <= 1.0
