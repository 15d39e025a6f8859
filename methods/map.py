"""map: Model merging with Amortized Pareto fronts via quadratic surrogates.

    python -m bench run method=map tasks=tiny-clip
    python -m bench run method=map tasks=toy-quadratic tasks.num_tasks=4 method.adaptive=true method.link=identity
    python -m bench run method=map tasks=toy-quadratic tasks.num_tasks=4 method.nested=true

Li et al., "MAP: Low-compute Model Merging with Amortized Pareto Fronts via Quadratic
Approximation", arXiv 2406.07529 (code: github.com/luli-git/MAP).

1. Sample task-arithmetic coefficient vectors c ∈ [0,1]^T: the T one-hots plus a space-filling
   design (scrambled Sobol or a Latin hypercube, seeded), (T+1)(T+2) points by default, twice the
   surrogate's (T+1)(T+2)/2 parameters. Each θ0 + Σ c_i τ_i is scored on the **validation** split.
2. Per task fit a full quadratic in c through a link (sigmoid for accuracy, softplus or identity for
   loss) by least squares (methods/map_surrogate.py); k-fold held-out R² and RMSE go in meta["fit"].
   By default (`ridge=null`, an addition) a ridge penalty on the coefficients is chosen per task by
   that CV from {0, 1e-6, …, 1e-2}: on tiny-clip with 4–7 tasks and saturating accuracies the
   unpenalised fit (`ridge=0`, the authors') extrapolates wildly between design points (held-out R²
   down to −60 for a task near 100 %); over 13 task fits the CV RMSE fell from 0.10 to 0.05, and
   on 4 tasks the RMSE of the surrogate against the re-evaluated test points from 0.19 to 0.06.
   The reported r2/rmse are then those of the selected ridge on the same folds (slightly optimistic).
3. Search the T surrogates with pymoo NSGA-II (NSGA-III for T ≥ 4) in `bounds`^T ([0,1] by default;
   bounds=[-3,3] is the authors' code). NSGA-II's final population stalls about 1e-3 (normalised
   objectives) short of the surrogates' front, so by default (`polish=true`, an addition to the
   paper) each point is then moved onto it by SLSQP (minimise Σ f_i s.t. f_i ≤ its own f_i);
   `polish=false` keeps the NSGA population as the authors do. The result is the predicted front
   (points with kind "predicted", their metrics the surrogate's predictions of validation
   metrics, excluded from indicators).
4. Re-evaluate at most `reevaluate` of those points, spread over the predicted front, on the
   **test** split ("MAP real", kind "real"): the record's indicators come from these.

`adaptive=true` (the paper's Bayesian MAP) starts from `initial` points and adds `batch` points in
each of `iterations` rounds where the surrogate errs most: the sampled c are binned by their
hyperspherical angles, each bin scored by the mean + 0.5·std of the leave-one-out squared error of
its points (std over 30 random 80 % subsets, the authors' mean_plus_half_std), a bin is drawn from
the softmax of the scores (divided by their maximum) at temperature 0.07, then angles uniform in
that bin and a radius ~ U(0.2, 0.8). Differences from the authors' code, for stated reasons: errors
are leave-one-out rather than in-sample (with about as many points as parameters the in-sample
residuals are all ≈ 0); empty bins score as the worst non-empty bin rather than −inf (else a
direction the first design missed is never sampled); scores are divided by their maximum before the
softmax (so the temperature means the same for accuracy and for loss).

`nested=true` merges two models at a time (T − 1 stages), for many tasks. Every model in play is a
task-arithmetic model of the *original* task vectors: a group G of tasks is represented by its
coefficient vector w_G ∈ R^T (zero outside G), i.e. θ_G = θ0 + Σ_i w_G[i] τ_i; a task alone has
w = e_i (its fine-tuned model). Merging groups A and B with pairwise coefficients (a, b) gives
θ0 + a(θ_A − θ0) + b(θ_B − θ0) = θ0 + Σ_i (a·w_A[i] + b·w_B[i]) τ_i, so w_{A∪B} = a·w_A + b·w_B, and
the final model of the last stage is the coefficient vector X of its point. Per preference r (the
one-hots, the equal ray and a das-dennis grid, at most `reevaluate` rays): the two groups whose
validation metrics are closest are paired (tasks alone: their fine-tuned model on its own task;
merged groups: the r-weighted mean over their tasks at the chosen coefficients), `pair_points`
(a, b) ∈ [0,1]² are scored on validation (the two one-hots included), each group's r-weighted mean
metric is fitted by a 2-D quadratic, the pairwise front is searched with NSGA-II and the point with
the best r-weighted sum of the two groups' objectives is kept. Every final model is scored on test.
Each candidate is scored on all tasks (one evaluation in the harness's unit, and reused by the
cache when a recipe repeats, e.g. a pair's one-hots are the two groups' own models); the authors
scored only the pair's tasks. Nested mode has no predicted T-task front (its surrogates are per
group), so its record holds the real points only.

Cost: `evaluations_fit` (validation evaluations: design, adaptive rounds, nested stages) and
`evaluations_real` (test evaluations of the re-evaluated points) go in Front.cost; the run adds the
Evaluator's per-split counts, which they equal.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bench.api import BenchError, Front, prefetch, progress, ray_grid, task_arithmetic
from bench.methods import map_adaptive as ma
from bench.methods import map_search as mq
from bench.methods import map_surrogate as ms
from bench.methods.base import Method


@dataclass(frozen=True)
class MAP(Method):
    paper = ("Li et al., MAP: Low-compute Model Merging with Amortized Pareto Fronts via Quadratic "
             "Approximation, 2024")
    url = "https://arxiv.org/abs/2406.07529"
    budget = "evaluations"      # its default design, (T+1)(T+2) + reevaluate, is a leaderboard's matched budget

    points: int | None = None       # design size (adaptive: total budget); default (T+1)(T+2)
    design: Literal["sobol", "lhs"] = "sobol"
    link: Literal["auto", "sigmoid", "softplus", "identity"] = "auto"   # auto: sigmoid (accuracy), softplus (loss)
    folds: int = 5                  # held-out fit quality: k-fold CV (leave-one-out when too few points)
    ridge: float | None = None      # null: per task, chosen by CV from {0, 1e-6, …, 1e-2}; 0: the authors' plain fit
    bounds: list[float] = field(default_factory=lambda: [0.0, 1.0])    # search box; [-3, 3] is the authors' code
    algorithm: Literal["auto", "nsga2", "nsga3"] = "auto"              # auto: NSGA-III for T ≥ 4
    pop_size: int = 100
    generations: int = 100
    polish: bool = True             # move the NSGA front onto the surrogates' Pareto set (SLSQP); false: NSGA only
    reevaluate: int = 10            # points of the predicted front scored on test (nested: preference rays)
    adaptive: bool = False          # Bayesian adaptive sampling
    initial: int | None = None      # adaptive: first design size; default (T+1)(T+2)/2 + T + 1
    iterations: int = 3             # adaptive: rounds
    batch: int | None = None        # adaptive: points per round; default spreads the rest of `points`
    bins: int | None = None         # adaptive: bins per hyperspherical angle; default 4 (T < 4) or 2
    temperature: float = 0.07       # adaptive: softmax temperature
    radius: list[float] = field(default_factory=lambda: [0.2, 0.8])    # adaptive: radius ~ U(lo, hi)
    nested: bool = False            # pairwise nested merging
    pair_points: int = 20           # nested: evaluations per pair (incl. the two one-hots)

    def __post_init__(self):
        if len(self.bounds) != 2 or not self.bounds[0] < self.bounds[1]:
            raise BenchError(f"method.bounds={list(self.bounds)} must be [lo, hi] with lo < hi, e.g. [0,1] or [-3,3]")
        if len(self.radius) != 2 or not 0 <= self.radius[0] < self.radius[1]:
            raise BenchError(f"method.radius={list(self.radius)} must be [lo, hi] with 0 ≤ lo < hi")
        for name, lo in (("reevaluate", 1), ("folds", 2), ("pop_size", 4), ("generations", 1), ("iterations", 0)):
            if getattr(self, name) < lo:
                raise BenchError(f"method.{name}={getattr(self, name)} must be ≥ {lo}")
        if self.batch is not None and self.batch < 1:
            raise BenchError(f"method.batch={self.batch} must be ≥ 1")
        if self.bins is not None and self.bins < 1:
            raise BenchError(f"method.bins={self.bins} must be ≥ 1")
        if self.ridge is not None and self.ridge < 0:
            raise BenchError(f"method.ridge={self.ridge} must be ≥ 0 (or null: chosen by cross-validation)")
        if self.temperature <= 0:
            raise BenchError(f"method.temperature={self.temperature} must be > 0")
        if self.adaptive and self.nested:
            raise BenchError("method.adaptive=true and method.nested=true cannot be combined; choose one")
        if self.nested:
            ms.check_points(self.pair_points, 2, "method.pair_points")

    # ---------------------------------------------------------------------------------------
    def approximate_front(self, suite, *, evaluator, seed: int, checkpoints=None) -> Front:
        link = self._link(suite.objective)
        before = {s: evaluator.counts[s] for s in ("val", "test")}
        front = (self._nested if self.nested else self._map)(suite, evaluator, seed, link)
        front.cost.update(evaluations_fit=evaluator.counts["val"] - before["val"],
                          evaluations_real=evaluator.counts["test"] - before["test"])
        return front

    def _link(self, objective: str) -> str:
        if self.link == "auto":
            return "sigmoid" if objective == "accuracy" else "softplus"
        if self.link == "sigmoid" and objective != "accuracy":
            raise BenchError(f"method.link=sigmoid needs an accuracy objective; this suite's objective is "
                             f"{objective}; valid choices: auto, identity, softplus")
        return self.link

    def _quality(self, C, y, link, seed) -> dict:
        """Held-out r2/rmse (k-fold CV) at the configured ridge, or at the CV-selected one."""
        if self.ridge is None:
            return ms.select_ridge(C, y, link, self.folds, seed)
        return ms.cross_validate(C, y, link, self.folds, seed, self.ridge)

    def _map(self, suite, evaluator, seed, link) -> Front:
        T, obj = suite.num_tasks, suite.objective
        p = ms.n_params(T)
        total = self.points if self.points is not None else 2 * p
        rng = np.random.default_rng(seed)
        lo, hi = 0.0, 1.0                                 # the design lives in [0,1]^T, as the authors'
        if self.adaptive:
            n0 = self.initial if self.initial is not None else p + T + 1
            if n0 < p + 1:
                raise BenchError(f"method.initial={n0} is fewer than the {p + 1} points adaptive sampling needs "
                                 f"(the {p} parameters of a full quadratic in {T} coefficients, plus one for "
                                 f"leave-one-out errors); use method.initial ≥ {p + 1}")
            batch = self.batch if self.batch is not None else max(1, -(-(total - n0) // max(self.iterations, 1)))
            C = ms.design(T, n0, seed, self.design, lo, hi, name="method.initial")
        else:
            C = ms.design(T, total, seed, self.design, lo, hi)
        Y = _scores(evaluator, suite, C, "val")
        rounds = []
        if self.adaptive:
            bins = self.bins or ma.default_bins(T)
            for it in range(self.iterations):
                ridges = [self._quality(C, Y[:, t], link, seed)["ridge"] for t in range(T)]
                err = ms.loo_squared_errors(C, Y, link, ridges)
                new, probs = ma.adaptive_points(C, err, batch, rng, bins=bins, temperature=self.temperature,
                                                radius=tuple(self.radius), bounds=(lo, hi))
                rounds.append({"round": it + 1, "points": int(len(new)), "mean_loo_sq_error": float(err.mean()),
                               "max_bin_probability": float(probs.max())})
                C = np.vstack([C, new])
                Y = np.vstack([Y, _scores(evaluator, suite, new, "val")])

        fit, surrogates = {}, []
        for t, task in enumerate(suite.tasks):
            q = self._quality(C, Y[:, t], link, seed)
            surrogates.append(ms.fit_quadratic(C, Y[:, t], link, q["ridge"]))
            fit[task] = {**q, "coef": surrogates[t].coef.tolist()}

        Xp, Fp, algo = mq.search_front(surrogates, obj, tuple(self.bounds), pop_size=self.pop_size,
                                       generations=self.generations, algorithm=self.algorithm, seed=seed,
                                       polish=self.polish)
        pred = np.column_stack([s.predict(Xp) for s in surrogates])     # the metric's own direction
        chosen = mq.spread_subset(Fp, self.reevaluate)
        real = [_evaluate(evaluator, suite, lam, "test") for lam in progress(Xp[chosen], "map: test")]

        other = "loss" if obj == "accuracy" else "accuracy"
        metrics = [{t: {obj: float(v), other: None} for t, v in zip(suite.tasks, row)} for row in pred] + real
        extras = [{"kind": "predicted"} for _ in pred] + [
            {"kind": "real", "predicted": dict(zip(suite.tasks, map(float, pred[i])))} for i in chosen]
        real_vals = np.array([[m[t][obj] for t in suite.tasks] for m in real])
        meta = {"link": link, "fit_method": _FIT_METHOD[link], "fit": fit, "n_params": p,
                "design": {"kind": self.design, "n": int(len(C)), "rank": ms.design_rank(C),
                           "X": C.tolist(), "values": Y.tolist(), "objective": obj, "split": "val"},
                "search": {"algorithm": algo, "bounds": list(self.bounds), "pop_size": self.pop_size,
                           "generations": self.generations, "polish": self.polish},
                "n_predicted": int(len(Xp)), "n_real": int(len(chosen)),
                "test_vs_predicted_rmse": float(np.sqrt(np.mean((real_vals - pred[chosen]) ** 2)))}
        if self.adaptive:
            meta["adaptive"] = {"initial": int(n0), "batch": int(batch), "iterations": self.iterations,
                                "bins": bins, "temperature": self.temperature, "radius": list(self.radius),
                                "rounds": rounds}
        return Front(tasks=suite.tasks, objective=obj, X=np.vstack([Xp, Xp[chosen]]),
                     x_names=[f"lambda[{t}]" for t in suite.tasks], metrics=metrics,
                     split=["val"] * len(Xp) + ["test"] * len(chosen), extras=extras,
                     include=np.r_[np.zeros(len(Xp), bool), np.ones(len(chosen), bool)], meta=meta)

    def _nested(self, suite, evaluator, seed, link) -> Front:
        T, obj = suite.num_tasks, suite.objective
        names = suite.tasks
        eye = np.eye(T)
        # fine-tuned model i on its own task (validation): the stage-1 pairing key
        ft = [_scores(evaluator, suite, eye[i:i + 1], "val")[0, i] for i in range(T)]
        D = ms.design(2, self.pair_points, seed, self.design, name="method.pair_points")   # shared by all pairs
        rays = ray_grid(T, partitions=10, max_rays=self.reevaluate)[:self.reevaluate]
        finals, runs, searched = [], [], {}
        for r in progress(rays, "map nested: preferences", every_item=True):
            groups = [([i], eye[i].copy()) for i in range(T)]
            values = list(ft)
            stages = []
            for stage in range(T - 1):
                i, j = mq.closest_pair(values)
                (A, wA), (B, wB) = groups[i], groups[j]
                lams = D[:, :1] * wA + D[:, 1:] * wB                  # [n, T] on the original task vectors
                Y = _scores(evaluator, suite, lams, "val")
                gA, gB = mq.group_weights(r, A), mq.group_weights(r, B)
                G = np.column_stack([Y[:, A] @ gA, Y[:, B] @ gB])     # each group's r-weighted metric
                key = (tuple(np.round(lams, 12).ravel()), tuple(np.round(G, 15).ravel()))
                if key not in searched:                                # same pair and targets: same front
                    cv = [self._quality(D, G[:, k], link, seed) for k in range(2)]
                    sur = [ms.fit_quadratic(D, G[:, k], link, cv[k]["ridge"]) for k in range(2)]
                    searched[key] = cv, mq.search_front(sur, obj, tuple(self.bounds), pop_size=self.pop_size,
                                                        generations=self.generations, algorithm="nsga2",
                                                        seed=seed, polish=self.polish)[:2]
                cv, (Xp, Fp) = searched[key]
                k = mq.pick_by_preference(Fp, [np.sum(r[A]), np.sum(r[B])])
                a, b = Xp[k]
                w = a * wA + b * wB
                members = sorted(A + B)
                groups = [g for m, g in enumerate(groups) if m not in (i, j)] + [(members, w)]
                values = [v for m, v in enumerate(values) if m not in (i, j)]
                if stage < T - 2:      # the merged group's metric pairs the next stage; the last one goes to test
                    values.append(float(_scores(evaluator, suite, w[None], "val")[0, members]
                                        @ mq.group_weights(r, members)))
                stages.append({"pair": ["+".join(names[m] for m in A), "+".join(names[m] for m in B)],
                               "c": [float(a), float(b)], "r2": [c["r2"] for c in cv],
                               "rmse": [c["rmse"] for c in cv]})
            lam = groups[0][1]
            finals.append(lam)
            runs.append({"preference": r.tolist(), "lambda": lam.tolist(), "stages": stages})
        real = [_evaluate(evaluator, suite, lam, "test") for lam in finals]
        return Front(tasks=names, objective=obj, X=np.array(finals), x_names=[f"lambda[{t}]" for t in names],
                     metrics=real, split="test",
                     extras=[{"kind": "real", "preference": r.tolist()} for r in rays],
                     meta={"link": link, "fit_method": _FIT_METHOD[link], "mode": "nested",
                           "pair_points": self.pair_points, "n_real": len(finals), "nested": runs,
                           "search": {"algorithm": "nsga2", "bounds": list(self.bounds), "pop_size": self.pop_size,
                                      "generations": self.generations, "polish": self.polish}})


_FIT_METHOD = {
    "identity": "linear least squares (numpy lstsq)",
    "sigmoid": "nonlinear least squares through the sigmoid (scipy least_squares), started from the "
               "linear fit of logit(accuracy clipped to [1e-4, 1-1e-4])",
    "softplus": "nonlinear least squares through the softplus (scipy least_squares), started from the "
                "linear fit of log(exp(loss) - 1)",
}


def _key(lam: np.ndarray) -> tuple:
    return ("ta", tuple(np.round(np.asarray(lam, dtype=float), 12)))


def _merge(suite, lam: np.ndarray):
    return task_arithmetic(suite.theta0(), suite.task_vectors(), np.asarray(lam, dtype=float))


def _evaluate(evaluator, suite, lam: np.ndarray, split: str) -> dict:
    return evaluator.evaluate(lambda: _merge(suite, lam), split, key=_key(lam))


def _scores(evaluator, suite, C: np.ndarray, split: str) -> np.ndarray:
    """[n, T] objective values (natural direction) of the task-arithmetic models at the rows of C."""
    # with `workers`: scored there and recorded in the run's evaluator, which then finds them cached
    prefetch(evaluator, split, [(_key(lam), functools.partial(_merge, lam=lam)) for lam in C])
    out = []
    for lam in progress(C, f"map: {split}"):
        m = _evaluate(evaluator, suite, lam, split)
        out.append([m[t][suite.objective] for t in suite.tasks])
    return np.array(out, dtype=float).reshape(len(C), suite.num_tasks)
