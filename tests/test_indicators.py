"""Indicators against hand computations and brute-force implementations of our own."""
import itertools

import numpy as np
import pytest

from bench.core import hypervolume, indicators
from bench.core.front import Front, to_minimization
from bench.core.record import RunRecord
from bench.core.registry import BenchError


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


def test_pooled_front_is_the_non_dominated_union():
    A = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.9], [np.nan, 0.0]])
    B = np.array([[0.5, 0.5], [0.8, 0.1], [0.6, 0.6]])
    pf = indicators.pooled_front([A, B])
    np.testing.assert_array_equal(pf, [[0.2, 0.8], [0.5, 0.5], [0.8, 0.1]])    # the repeat kept once, NaN dropped
    assert indicators.pooled_front([np.full((1, 2), np.nan)]) is None and indicators.pooled_front([]) is None


def test_the_core_builds_no_suite():
    """Reference fronts that rebuild a suite (through the config) live in the reports, not here."""
    assert not hasattr(indicators, "analytic_front") and not hasattr(indicators, "RefFront")


def test_indicator_registry_metadata_and_what_a_record_stores():
    """Every indicator declares its direction and whether it needs a reference front; a record
    stores IGD-type indicators only where the suite's front is analytic (not pooled over runs)."""
    from bench.core.registry import INDICATORS

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


# ---- hypervolume at many objectives ----------------------------------------------------------------
def inclusion_exclusion_hv(F, ref):
    """Exact HV as the volume of the union of the points' boxes [f, ref]: Σ over non-empty subsets S
    of (−1)^(|S|+1) · vol(∩_S boxes), the intersection being the box at the subsets' componentwise max."""
    F = np.asarray([f for f in F if (f < ref).all()])
    total = 0.0
    for k in range(1, len(F) + 1):
        for S in itertools.combinations(range(len(F)), k):
            total += (-1) ** (k + 1) * np.prod(ref - F[list(S)].max(axis=0))
    return total


def merge_like(n, T, seed):
    """Errors near a simplex-shaped front with noise, a third of them pushed back (dominated)."""
    rng = np.random.default_rng(seed)
    F = 0.05 + 0.5 * (1 - rng.dirichlet(np.ones(T), size=n)) + rng.normal(0, 0.01, size=(n, T))
    F[: n // 3] += np.abs(rng.normal(0, 0.05, size=(n // 3, T)))
    return F


@pytest.mark.parametrize("T", [5, 6, 7, 8])
@pytest.mark.parametrize("algorithm", [hypervolume.MOOCORE, hypervolume.WFG])
def test_exact_hv_at_many_objectives_matches_inclusion_exclusion(T, algorithm):
    ref = np.ones(T)
    for seed, F in enumerate([merge_like(12, T, T), np.random.default_rng(T).dirichlet(np.ones(T), size=11)]):
        expected = inclusion_exclusion_hv(F, ref)
        assert hypervolume.exact_hv(hypervolume.hv_front(F, ref), ref, algorithm) == pytest.approx(expected, rel=1e-9)
        got = indicators.hypervolume(F, ref)
        assert got.method.startswith("exact") and got.error == 0.0
        assert got.value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("T,n", [(6, 120), (8, 60)])
def test_the_two_exact_algorithms_agree_on_larger_fronts(T, n):
    ref = np.ones(T)
    F = hypervolume.hv_front(merge_like(n, T, 1), ref)
    assert hypervolume.exact_hv(F, ref, hypervolume.WFG) == pytest.approx(
        hypervolume.exact_hv(F, ref, hypervolume.MOOCORE), rel=1e-9)


def test_hv_algorithm_rule(monkeypatch):
    assert hypervolume.hv_algorithm(10**6, 4) == hypervolume.MOOCORE
    for T, limits in hypervolume.EXACT_MAX_POINTS.items():
        algorithm, limit = hypervolume.exact_choice(T)
        assert limit == max(limits.values()) and limits[algorithm] == limit
        assert hypervolume.hv_algorithm(limit, T) == algorithm
        assert hypervolume.hv_algorithm(limit + 1, T).startswith("approx")
    top = max(hypervolume.EXACT_MAX_POINTS)
    assert hypervolume.exact_choice(top + 2)[1] == max(hypervolume.EXACT_MAX_POINTS[top].values()) // 4
    # the estimate's cost stays flat past FULL_SAMPLES_POINTS: fewer directions, a larger stated error
    assert hypervolume.estimate_plan(1000, 8) == (200, 8192)
    m, directions = hypervolume.estimate_plan(20000, 8)
    assert m == 200 and directions == 8192 * hypervolume.FULL_SAMPLES_POINTS // 20200
    assert hypervolume.estimate_plan(10**7, 8)[1] == 256
    monkeypatch.setattr(hypervolume, "wfg_available", lambda: False)      # no pygmo (no wheel): moocore
    assert hypervolume.exact_choice(8) == (hypervolume.MOOCORE, hypervolume.EXACT_MAX_POINTS[8][hypervolume.MOOCORE])
    with pytest.raises(BenchError, match="method='fast'; valid choices: auto, exact, approx"):
        indicators.hypervolume(np.zeros((1, 2)), np.ones(2), method="fast")


@pytest.mark.parametrize("T,n,seed", [(5, 40, 0), (6, 30, 1), (6, 40, 2), (7, 30, 3), (8, 25, 4), (8, 40, 5)])
def test_the_estimates_stated_error_covers_its_true_error(T, n, seed):
    """Forced onto fronts small enough for an exact reference: |estimate − HV| ≤ the stated bound,
    and the bound is a useful one (a few 1e-3 of HV)."""
    ref = np.ones(T)
    F = merge_like(n, T, seed) if seed % 2 else np.random.default_rng(seed).dirichlet(np.ones(T), size=n)
    exact = indicators.hypervolume(F, ref, method="exact").value
    est = indicators.hypervolume(F, ref, method="approx")
    nd = len(hypervolume.hv_front(F, ref))
    assert est.method == f"approx: moocore DZ2019-MC, 32x8192 directions, control variate: exact HV of {nd // 2} points"
    assert abs(est.value - exact) <= est.error < 3e-3 * exact


def test_past_the_exact_limit_hv_is_estimated_deterministically_and_says_so(monkeypatch):
    monkeypatch.setitem(hypervolume.EXACT_MAX_POINTS, 6, {hypervolume.MOOCORE: 20, hypervolume.WFG: 20})
    F = np.random.default_rng(0).dirichlet(np.ones(6), size=40)          # all mutually non-dominated
    ctx = indicators.Context(F, ref_point=np.ones(6))
    out = indicators.compute(ctx, ["hv", "hv_method", "hv_error"])
    assert out["hv_method"].startswith("approx") and out["hv_error"] > 0
    again = indicators.compute(indicators.Context(F, ref_point=np.ones(6)), ["hv", "hv_error"])
    assert again == {"hv": out["hv"], "hv_error": out["hv_error"]}                 # fixed seeds
    exact = indicators.hypervolume(F, np.ones(6), method="exact").value
    assert abs(out["hv"] - exact) <= out["hv_error"]
    small = indicators.compute(indicators.Context(F[:20], ref_point=np.ones(6)), ["hv_method", "hv_error"])
    assert small == {"hv_method": hypervolume.MOOCORE, "hv_error": 0.0}          # a tie goes to moocore


def test_hv_is_computed_once_per_context(monkeypatch):
    calls = []
    real = indicators.hypervolume
    monkeypatch.setattr(indicators, "hypervolume", lambda *a, **k: calls.append(1) or real(*a, **k))
    ctx = indicators.Context(np.array([[0.2, 0.4]]), ref_point=np.ones(2), objective="accuracy",
                             finetuned=np.array([0.8, 0.75]))
    indicators.compute(ctx, ["hv", "hv_method", "hv_error", "hv_normalized", "hv_normalized_error"])
    assert len(calls) == 2                                                       # HV and normalised HV


# ---- preference alignment --------------------------------------------------------------------------
def on_target(rays, scale, finetuned):
    """Accuracy-suite errors whose normalised error z = 1 − acc/acc_ft lies on each ray's EPO
    target: r_k z_k equal (= scale) on the support; tasks off the support at a fixed z of 0.3."""
    with np.errstate(divide="ignore"):
        z = np.where(rays > 0, scale[:, None] / rays, 0.3)
    return 1.0 - finetuned * (1.0 - z)


def test_points_on_their_rays_are_aligned_at_zero_degrees():
    from bench.core.rays import ray_grid

    rays = ray_grid(3, partitions=4)                      # one-hots, zero entries, interior rays
    ft = np.array([0.9, 0.8, 0.95])
    F = on_target(rays, np.linspace(0.05, 0.1, len(rays)), ft)
    ctx = indicators.Context(F, np.ones(3), objective="accuracy", finetuned=ft, rays=rays)
    angles = ctx.alignment
    assert np.isnan(angles[(rays > 0).sum(axis=1) < 2]).all()          # one-hots ask for no ratio
    np.testing.assert_allclose(angles[(rays > 0).sum(axis=1) >= 2], 0.0, atol=1e-9)
    out = indicators.compute(ctx, ["alignment_deg", "alignment_hit"])
    assert out["alignment_deg"] == pytest.approx(0.0, abs=1e-9) and out["alignment_hit"] == 1.0


def test_a_known_rotation_gives_that_angle():
    """Two tasks: r⊙z at angle 45° + φ from the first axis is φ off the all-ones direction."""
    rays = np.array([[0.5, 0.5], [0.25, 0.75], [0.6, 0.4]])
    phis = np.array([3.0, -10.0, 20.0])
    t = np.radians(45.0 + phis)
    F = np.stack([np.cos(t), np.sin(t)], axis=1) / rays * 0.1           # loss suite, experts at loss 0
    out = indicators.compute(indicators.Context(F, np.full(2, 10.0), rays=rays), ["alignment_deg", "alignment_hit"])
    assert out["alignment_deg"] == pytest.approx(np.abs(phis).mean(), abs=1e-9)
    assert out["alignment_hit"] == pytest.approx(1 / 3)                # only the 3° point is within 5°
    # loss suites read the excess over each expert's own loss
    ft = np.array([0.2, 0.7])
    ctx = indicators.Context(F + ft, np.full(2, 10.0), finetuned=ft, rays=rays)
    np.testing.assert_allclose(ctx.alignment, np.abs(phis), atol=1e-9)


def test_a_front_that_ignores_its_rays_is_visible():
    """The same points (same HV), each handed to another ray: alignment shows what HV cannot."""
    from bench.core.rays import ray_grid

    rays = ray_grid(2, partitions=10)
    ft = np.array([0.9, 0.85])
    F = on_target(rays, np.full(len(rays), 0.05), ft)
    kw = dict(ref_point=np.ones(2), objective="accuracy", finetuned=ft)
    good = indicators.compute(indicators.Context(F, rays=rays, **kw))
    bad = indicators.compute(indicators.Context(F, rays=rays[::-1], **kw))
    assert good["hv"] == bad["hv"] and good["alignment_hit"] == 1.0
    assert bad["alignment_hit"] <= 0.2 and bad["alignment_deg"] > 20


def test_alignment_is_none_without_rays_and_skips_points_without_one():
    F = np.array([[0.2, 0.8], [0.5, 0.5], [np.inf, 0.1]])
    assert indicators.compute(indicators.Context(F, np.ones(2)), ["alignment_deg", "alignment_hit"]) == {
        "alignment_deg": None, "alignment_hit": None}
    one_hots = indicators.Context(F, np.ones(2), rays=[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert indicators.compute(one_hots, ["alignment_deg"]) == {"alignment_deg": None}
    partial = indicators.Context(F, np.ones(2), rays=[[np.nan, np.nan], [0.5, 0.5], [0.5, 0.5]])
    assert len(partial.rays) == 2                                           # the non-finite point is dropped
    assert indicators.compute(partial, ["alignment_deg", "alignment_hit"]) == {
        "alignment_deg": 0.0, "alignment_hit": 1.0}
    with pytest.raises(ValueError, match="rays of shape"):
        indicators.Context(F, np.ones(2), rays=[[0.5, 0.5]])


def test_record_rays_reads_the_included_points_rays():
    f = Front(tasks=["a", "b"], objective="loss", X=[[0.0], [1.0], [2.0]], x_names=["k"],
              metrics=[{t: {"loss": 0.5, "accuracy": None} for t in "ab"}] * 3,
              extras=[{"ray": [0.2, 0.8]}, {}, {"ray": [0.7, 0.3]}], include=[True, True, False])
    rec = RunRecord.from_front(f, suite="s", method="m", ref_point=[1.0, 1.0])
    np.testing.assert_array_equal(indicators.record_rays(rec), [[0.2, 0.8], [np.nan, np.nan]])
    assert indicators.record_rays(rec.replace(extras=({}, {}, {}))) is None
