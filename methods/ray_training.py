"""One model trained per preference ray, registered as `ls` and `epo` (any scalarizer).

    python -m bench run method=ls tasks=toy-quadratic
    python -m bench run method=epo tasks=tiny-clip method.space=layerwise method.steps=100
    python -m bench run method=ls tasks=toy-quadratic method.scalarizer=stch method.stch_mu=0.05

`ls` is linear scalarization per ray (the classic baseline of Pareto multi-task learning, as run
in the PWE-MoE paper: Tang et al. 2024, https://arxiv.org/abs/2406.09770): it can only reach the
convex part of a front and does not control where on it a ray lands (`mu` in each point measures
how far r⊙l is from the ray). `epo` is Exact Pareto Optimal search (Mahapatra & Rajan, ICML 2020,
https://proceedings.mlr.press/v119/mahapatra20a.html): per-task gradients, their Gram matrix and
an LP (methods/epo_solver.py) pick a direction that brings the loss vector onto the 1/r ray where that
ray meets the front (elsewhere the search ends at the Tchebycheff optimum beside it). Both
are this one class with `scalarizer` set by the registry entry (methods/scalarize.py: also
tchebycheff, stch, mgda).

For each ray r of the evaluation grid (`bench.core.rays.ray_grid`, or `rays=[[…],…]`) a fresh model
starts from the configured start and takes `steps` Adam steps; each step draws one labelled train
batch per task (`suite.train_batch`), computes the task losses (`suite.loss`, under bf16 autocast
on CUDA) and the scalarizer's descent direction over the trainable parameters. The trained model
is then scored by the Evaluator on the test split.

Trainable spaces (`space=`):
- `full`: every merge-able weight, starting from θ0 (the PWE-MoE paper's LS/EPO baselines).
- `layerwise`: one coefficient per task per parameter tensor, θ_p = θ0_p + Σ_i λ_{i,p} τ_{i,p},
  λ initialised to `init_lambda` (AdaMerging-style: Yang et al., ICLR 2024).
- `taskwise`: one coefficient per task, θ = θ0 + Σ_i λ_i τ_i (task arithmetic with learnt λ).

Default learning rates (`lr=null`): `full` 1e-5 (the paper's baseline, for pre-trained networks),
`layerwise`/`taskwise` 1e-3 (AdaMerging's Adam lr); on analytic suites (toy), whose losses are
O(1) quadratics in a handful of float64 parameters, 0.1. The learning rate follows a cosine decay
to 0 over the run (`schedule=constant` keeps it fixed).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence

import numpy as np
import torch

from bench.api import (BenchError, Checkpoints, Front, Params, fan_out, interruptible, progress, ray_grid,
                            task_arithmetic, validate_preference)
from bench.methods.base import CHECK_EVERY, EXPLODED, Method
from bench.methods.epo_solver import non_uniformity
from bench.methods.scalarize import GRADIENT_BASED, descent

SPACES = ("full", "layerwise", "taskwise")
DEFAULT_LR = {"full": 1e-5, "layerwise": 1e-3, "taskwise": 1e-3}
ANALYTIC_LR = 1e-1


def resolve_lr(lr: float | None, space: str, analytic: bool) -> float:
    """The configured lr, else the default of the space (analytic suites: ANALYTIC_LR)."""
    if lr is not None:
        return float(lr)
    return ANALYTIC_LR if analytic else DEFAULT_LR[space]


def resolve_rays(rays: Sequence[Sequence[float]] | None, num_tasks: int, partitions: int,
                 max_rays: int) -> np.ndarray:
    """[n, T] rays on the simplex: the explicit list (validated, normalised) or the evaluation grid."""
    if rays is None:
        return ray_grid(num_tasks, partitions=partitions, max_rays=max_rays)
    if len(rays) == 0:
        raise BenchError("method.rays=[] is empty; give at least one ray, e.g. method.rays=[[0.5,0.5]]")
    out = [validate_preference(r, num_tasks, name=f"method.rays[{i}]", normalized=False)
           for i, r in enumerate(rays)]
    return np.stack([r / r.sum() for r in out])


# ---- trainable spaces (pure functions) --------------------------------------------------------
def init_trainable(space: str, theta0: Params, task_vectors: Params, init_lambda: float) -> list[torch.Tensor]:
    """Fresh leaf tensors of the trainable space (requires_grad)."""
    names = list(theta0)
    T = next(iter(task_vectors.values())).shape[0]
    ref = theta0[names[0]]
    if space == "full":
        return [theta0[n].detach().clone().requires_grad_(True) for n in names]
    if space == "layerwise":
        return [torch.full((T, len(names)), float(init_lambda), dtype=ref.dtype, device=ref.device,
                           requires_grad=True)]
    if space == "taskwise":
        return [torch.full((T,), float(init_lambda), dtype=ref.dtype, device=ref.device, requires_grad=True)]
    raise BenchError(f"unknown space {space!r}; valid choices: {', '.join(SPACES)}")


def merged_params(space: str, theta0: Params, task_vectors: Params, leaves: Sequence[torch.Tensor]) -> Params:
    """The model's parameters from the trainable leaves, with differentiable ops."""
    if space == "full":
        return dict(zip(theta0, leaves))
    if space == "taskwise":
        return task_arithmetic(theta0, task_vectors, leaves[0])
    lam = leaves[0]                                    # layerwise: [T, P], one column per tensor
    return {n: task_arithmetic({n: t0}, {n: task_vectors[n]}, lam[:, p])[n]
            for p, (n, t0) in enumerate(theta0.items())}


def ray_seed(seed: int, index: int) -> int:
    """Independent, order-free seed of ray `index`'s batch stream."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _hashable(v):
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    return v


PAPERS = {"ls": ("Linear scalarization per preference ray (baseline in Tang et al., PWE-MoE, 2024)",
                 "https://arxiv.org/abs/2406.09770"),
          "epo": ("Mahapatra & Rajan, Multi-Task Learning with User Preferences (EPO search), ICML 2020",
                  "https://proceedings.mlr.press/v119/mahapatra20a.html")}


@dataclass(frozen=True)
class RayTraining(Method):
    """One model per preference ray, trained along the scalarizer's direction."""

    paper: ClassVar[str] = PAPERS["ls"][0]
    url: ClassVar[str] = PAPERS["ls"][1]
    budget: ClassVar[str] = "steps_per_ray"   # every ray is a training run of `steps`

    scalarizer: Literal["ls", "tchebycheff", "stch", "epo", "mgda"] = "ls"   # methods/scalarize.py (the entry's default)
    space: Literal["full", "layerwise", "taskwise"] = "full"
    steps: int = 300                  # Adam steps per ray
    lr: float | None = None           # None: per-space default (module docstring)
    schedule: Literal["cosine", "constant"] = "cosine"
    batch_size: int = 16              # per task per step
    init_lambda: float = 0.3          # layerwise / taskwise start
    partitions: int = 10              # ray grid: das-dennis partitions (11 rays for 2 tasks)
    max_rays: int | None = None       # ray grid cap; null: the full grid up to 3 tasks (11, 66 rays), else the T one-hots + the equal ray (each ray is a training run)
    rays: list[list[float]] | None = None   # explicit rays instead of the grid
    stch_mu: float = 0.1              # stch: smoothing μ (→ Tchebycheff as μ → 0)
    epo_eps: float = 1e-4             # epo: balance mode while μ > eps (the original's value)
    epo_restricted: bool = False      # epo: descent LP adds αᵀCa ≥ min(max(Ca), 0) (the authors' code default)

    def __post_init__(self):
        for name, lo in (("steps", 1), ("batch_size", 1), ("partitions", 1), ("max_rays", 1)):
            if getattr(self, name) is not None and getattr(self, name) < lo:
                raise BenchError(f"method.{name}={getattr(self, name)} must be ≥ {lo}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise BenchError(f"method.lr={self.lr} must be a positive number (or null for the default)")
        if not self.stch_mu > 0:
            raise BenchError(f"method.stch_mu={self.stch_mu} must be > 0")
        if self.scalarizer in PAPERS:                 # the leaderboard's footnote follows the scalarizer
            object.__setattr__(self, "paper", PAPERS[self.scalarizer][0])
            object.__setattr__(self, "url", PAPERS[self.scalarizer][1])

    @staticmethod
    def default_max_rays(T: int) -> int:
        """The ray cap when max_rays is null: the full grid up to 3 tasks (11, 66 rays), else the T one-hots + the equal ray."""
        return 66 if T <= 3 else T + 1

    @classmethod
    def n_rays(cls, T: int, options: dict) -> int:
        return len(resolve_rays(options.get("rays"), T, options["partitions"],
                                options.get("max_rays") or cls.default_max_rays(T)))

    @property
    def host_losses(self) -> bool:
        """The direction reads the losses on the host every step anyway (EPO's LP, MGDA)."""
        return self.scalarizer in GRADIENT_BASED

    # ---- the per-step direction ------------------------------------------------------------------
    def direction(self, losses: list[torch.Tensor], leaves: list[torch.Tensor], ray: np.ndarray,
                  support: list[int]) -> tuple[list[torch.Tensor], dict]:
        """The scalarizer's direction for the leaves (Adam descends on it) and step facts.
        `losses[k]` is the loss of task `support[k]` (the tasks with r_j > 0)."""
        return descent(self.scalarizer, losses, leaves, ray[support], mu=self.stch_mu, eps=self.epo_eps,
                       restricted=self.epo_restricted)

    def ray_extras(self, stats: list[dict]) -> dict:
        """Per-ray facts from the per-step facts (EPO's fallback and descent-step counts)."""
        if self.scalarizer != "epo":
            return {}
        return {"fallbacks": int(sum(s["fallback"] for s in stats)),
                "descent_steps": int(sum(s["mode"] == "descent" for s in stats))}

    def front_meta(self, extras: list[dict]) -> dict:
        if self.scalarizer == "epo":
            return {"eps": self.epo_eps, "restricted": self.epo_restricted, "lp_solver": "scipy.optimize.linprog(highs)",
                    "fallbacks": int(sum(e["fallbacks"] for e in extras))}
        return {"stch_mu": self.stch_mu} if self.scalarizer == "stch" else {}

    # ---- the loop ------------------------------------------------------------------------------
    def approximate_front(self, suite, *, evaluator, seed: int, checkpoints=None) -> Front:
        T = suite.num_tasks
        max_rays = self.max_rays if self.max_rays is not None else self.default_max_rays(T)
        rays = resolve_rays(self.rays, T, self.partitions, max_rays)
        lr = resolve_lr(self.lr, self.space, suite.analytic)
        theta0, tv = suite.theta0(), suite.task_vectors()
        name = self.scalarizer
        config = tuple((f.name, _hashable(getattr(self, f.name))) for f in dataclasses.fields(self))
        ck = checkpoints if checkpoints is not None else Checkpoints(None)
        done = (ck.load("rays") or {"rays": []})["rays"]     # rays finished in an earlier attempt
        metrics, extras, trainable, backward = [], [], 0, 0
        # rays not finished in an earlier attempt, trained here one at a time or on `workers` (bench.runtime.parallel)
        trained = fan_out(functools.partial(_train, self, lr=lr, seed=seed, checkpoints=ck),
                                   list(enumerate(rays))[len(done):], suite)
        for k, ray in enumerate(progress(rays, f"{name} rays", every_item=True)):
            recipe = (name, config, tuple(np.round(ray, 12)), int(seed))
            if k < len(done):                                 # its evaluation is in the journal
                metrics.append(evaluator.evaluate(_journaled, "test", key=recipe))
                extras.append(done[k]["extras"])
                trainable, backward = done[k]["trainable"], backward + done[k]["backward"]
                continue
            leaves, stats, final, diverged = next(trained)
            leaves = [l.to(next(iter(theta0.values())).device) for l in leaves]    # a worker's come on the CPU
            trainable = sum(l.numel() for l in leaves)
            backward += sum(s["backward_passes"] for s in stats)
            params = {n: p.detach() for n, p in merged_params(self.space, theta0, tv, leaves).items()}
            metrics.append(evaluator.evaluate(params, "test", key=recipe))
            ok = np.isfinite(final).all()
            extras.append({"ray": [float(v) for v in ray], "train_losses": dict(zip(suite.tasks, final)),
                           "mu": non_uniformity(np.array(final), ray) if ok else None,
                           **self.ray_extras(stats), **({"diverged": diverged} if diverged else {})})
            done.append({"extras": extras[-1], "trainable": trainable,
                         "backward": sum(s["backward_passes"] for s in stats)})
            ck.save("rays", {"rays": done})
        failed = [e for e in extras if "diverged" in e]
        if len(failed) == len(extras):
            raise BenchError(f"{name}: training diverged on every ray ({failed[0]['diverged']} on the first); "
                             f"lower method.lr (now {lr:g})")
        mus = [e["mu"] for e in extras if e["mu"] is not None]
        return Front(tasks=suite.tasks, objective=suite.objective, X=rays,
                     x_names=[f"ray[{t}]" for t in suite.tasks], metrics=metrics, split="test", extras=extras,
                     meta={"scalarizer": self.scalarizer, "space": self.space, "lr": lr, "steps": self.steps,
                           "schedule": self.schedule, "batch_size": self.batch_size, "n_rays": len(rays),
                           "max_rays": max_rays,
                           "mu_max": float(max(mus)), **self.front_meta(extras)},
                     cost={"train_steps": self.steps * len(rays), "trainable_params": trainable,
                           "backward_passes": int(backward)})

    def train_ray(self, suite, ray: np.ndarray, *, lr: float, generator: torch.Generator,
                  checkpoints: Checkpoints | None = None, name: str = "ray"):
        """Train one model for `ray`: (trainable leaves, per-step facts, final train losses [T], why it
        diverged or ""). Training stops at a non-finite loss; a run whose r-weighted loss ends
        `EXPLODED` times above where it started diverged too. The loss is looked at every step where
        the direction reads it on the host anyway (EPO), else every `CHECK_EVERY` steps. The state
        (leaves, Adam, schedule, batch stream) is checkpointed as `name` every `checkpoints.every`
        steps and when the run is stopped, and taken up again when the run resumes."""
        ck = checkpoints if checkpoints is not None else Checkpoints(None)
        theta0, tv = suite.theta0(), suite.task_vectors()
        leaves = init_trainable(self.space, theta0, tv, self.init_lambda)
        opt = torch.optim.Adam(leaves, lr=lr)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.steps, eta_min=0.0)
                 if self.schedule == "cosine" else None)
        support = [j for j in range(suite.num_tasks) if ray[j] > 0]
        weights = torch.as_tensor(ray[support], dtype=torch.float64)
        stats, start, diverged, first = [], None, "", 0
        saved = ck.load(name)
        if saved is not None:
            with torch.no_grad():
                for leaf, value in zip(leaves, saved["leaves"]):
                    leaf.copy_(value)
            opt.load_state_dict(saved["opt"])
            if sched is not None:
                sched.load_state_dict(saved["sched"])
            generator.set_state(saved["generator"])
            stats, start, first = saved["stats"], saved["start"], saved["step"]

        def state(step: int) -> dict:
            return {"step": step, "leaves": [l.detach().cpu() for l in leaves], "opt": opt.state_dict(),
                    "sched": None if sched is None else sched.state_dict(), "generator": generator.get_state(),
                    "stats": stats, "start": start}

        with interruptible() as stop:
            for step in range(first, self.steps):
                params = merged_params(self.space, theta0, tv, leaves)
                # a list, not a stack: each task's backward then walks only its own graph
                with suite.autocast():
                    losses = [suite.loss(params, suite.tasks[j], suite.train_batch(suite.tasks[j], self.batch_size,
                                                                                   generator)) for j in support]
                if self.host_losses or step % CHECK_EVERY == 0:
                    weighted = float(weights @ torch.stack([l.detach() for l in losses]).double().cpu())
                    start = weighted if start is None else start
                    if not np.isfinite(weighted):
                        diverged = f"non-finite training loss at step {step}"
                        break
                grads, info = self.direction(losses, leaves, ray, support)
                for leaf, g in zip(leaves, grads):
                    leaf.grad = g.detach()
                opt.step()
                if sched is not None:
                    sched.step()
                stats.append(info)
                if stop.requested or ck.due(step):
                    ck.save(name, state(step + 1))
                stop.check()
        with torch.no_grad():
            params = merged_params(self.space, theta0, tv, leaves)
            final = [float(suite.loss(params, t, suite.train_batch(t, self.batch_size, generator)))
                     for t in suite.tasks]            # one fresh batch per task (exact on analytic suites)
        end = float(weights @ torch.as_tensor(final, dtype=torch.float64)[support])
        if not diverged and not np.isfinite(end):
            diverged = "non-finite training loss at the end"
        elif not diverged and end > EXPLODED * max(start, 1e-12):
            diverged = f"training loss grew from {start:.3g} to {end:.3g}"
        return leaves, stats, final, diverged


def _train(method: RayTraining, worker, item: tuple[int, np.ndarray], *, lr: float, seed: int, checkpoints):
    """Train ray `item` = (k, r) from its own seed `ray_seed(seed, k)`: here or on a `bench.runtime.parallel` worker."""
    k, ray = item
    generator = torch.Generator().manual_seed(ray_seed(seed, k))
    return method.train_ray(worker.suite, ray, lr=lr, generator=generator, checkpoints=checkpoints, name=f"ray-{k}")


def _journaled():
    raise RuntimeError("the evaluation of a ray finished in an earlier attempt is missing from the run's journal")
