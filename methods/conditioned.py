"""Preference-conditioned merging: one training run, a merged model for every preference.

    python -m bench run method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots]
    python -m bench run method=phn tasks=tiny-clip tasks.names=[digits,dots] method.scalarizer=stch

The shared part of `pwe_moe_ls`/`pwe_moe_epo` (methods/pwe_moe), `phn` (methods/phn.py) and
`pareto_merging` (methods/pareto_merging.py). Each builds a small trainable module, a *net*, that
maps a preference r ∈ Δ^{T−1} to the full merged parameter dict θ(r) (routers, a hypernetwork, a
low-rank correction: everything else is the suite's frozen θ0 and task vectors). This module does
the rest, the same way for all of them:

1. Train: each step draws r ~ Dirichlet(dirichlet_alpha·1) (numpy, seeded), merges once, θ(r) =
   net(r) (it depends on r only, never on the input), draws one labelled train batch per task and
   descends the scalarizer's direction over the net's parameters (methods/scalarize.py: ls,
   tchebycheff, stch, epo, mgda). Adam(lr), cosine decay to `LR_FLOOR`·lr (the PWE-MoE authors').
   The whole state is checkpointed (bench.runtime.rundir) and a non-finite loss stops the run with one line.
2. Evaluate: for each ray of `bench.core.rays.ray_grid` (11 rays for 2 tasks, 66 for 3, capped by
   `max_rays` for many tasks), θ(r) is a plain dense parameter dict, scored on test by the Evaluator.
3. Keep: the net's state is saved with the run (`state_file`), which `bench export` reads back
   (`export_params`) to write the merged model at any preference; it never retrains
   (`bench.runtime.export.rebuild(state_file, preference)` gives those parameters in one call).
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from bench.api import BenchError, Checkpoints, Front, Params, interruptible, params_hash, progress, ray_grid
from bench.methods.base import CHECK_EVERY, Method
from bench.methods.scalarize import descent

LR_FLOOR = 0.1                 # cosine decay to 0.1 × lr (the PWE-MoE authors' eta_min)


def seeds(seed: int) -> tuple[int, int, int]:
    """Independent streams: net initialisation, preference sampling, batch sampling."""
    return tuple(int(s.generate_state(1, dtype=np.uint64)[0] >> 1) for s in np.random.SeedSequence(int(seed)).spawn(3))


def pref_dtype(suite) -> torch.dtype:
    """A preference's dtype: the suite's own where its parameters are float64 (the analytic toy), else float32.
    A net casts it to its own weights' dtype where it multiplies it (PWE-MoE's routers, PHN's hypernetwork);
    Pareto Merging's cores take the suite's dtype, so on float64 suites the preference is never rounded."""
    return torch.float64 if next(iter(suite.theta0().values())).dtype == torch.float64 else torch.float32


def step(suite, net: nn.Module, ray: torch.Tensor, batches: list, scalarizer: str, *, mu: float = 0.1,
         eps: float = 1e-4, restricted: bool = False) -> tuple[torch.Tensor, dict]:
    """One step's gradients into the net's parameters (.grad set, no optimizer step): merge once at
    `ray`, one loss per task (each a graph of its own: a task's backward never enters another's), the
    scalarizer's direction. Returns (losses [T], facts)."""
    with suite.autocast():
        params = net(ray)
        task_losses = [suite.loss(params, t, b) for t, b in zip(suite.tasks, batches)]
    leaves = [p for p in net.parameters() if p.requires_grad]
    grads, info = descent(scalarizer, task_losses, leaves, ray, mu=mu, eps=eps, restricted=restricted)
    for p, g in zip(leaves, grads):
        p.grad = g.detach().to(p.dtype)
    return torch.stack([l.detach() for l in task_losses]), info


def train(suite, net: nn.Module, *, scalarizer: str, steps: int, lr: float, batch_size: int,
          dirichlet_alpha: float, seed: int, mu: float = 0.1, eps: float = 1e-4, restricted: bool = False,
          desc: str = "preference-conditioned", checkpoints: Checkpoints | None = None) -> dict:
    """Adam on the net for `steps` steps; returns training facts (final losses, EPO μ, fallbacks).
    The whole state (net, Adam, schedule, both random streams, the facts so far) is checkpointed
    every `checkpoints.every` steps and when the run is stopped, and taken up again when the run
    resumes: the result is the same as an uninterrupted run's."""
    ck = checkpoints if checkpoints is not None else Checkpoints(None)
    _, ray_seed, data_seed = seeds(seed)
    rng = np.random.default_rng(ray_seed)
    gen = torch.Generator().manual_seed(data_seed)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=LR_FLOOR * lr)
    T = suite.num_tasks
    tail = max(1, steps // 10)
    hist_losses, hist_mu, fallbacks, descent_steps, first = [], [], 0, 0, 0
    saved = ck.load("net")
    if saved is not None:
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        rng.bit_generator.state = saved["rng"]
        gen.set_state(saved["generator"])
        hist_losses, hist_mu, fallbacks, descent_steps, first = (
            saved[k] for k in ("hist_losses", "hist_mu", "fallbacks", "descent", "step"))

    def state(at: int) -> dict:
        return {"step": at, "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                "generator": gen.get_state(), "hist_losses": hist_losses, "hist_mu": hist_mu,
                "fallbacks": fallbacks, "descent": descent_steps}

    bar = progress(range(first, steps), desc, total=steps - first)
    with suite.frozen(), interruptible() as stop:
        for k in bar:
            ray = torch.as_tensor(rng.dirichlet([dirichlet_alpha] * T), dtype=pref_dtype(suite), device=suite.device)
            batches = [suite.train_batch(t, batch_size, gen) for t in suite.tasks]
            opt.zero_grad(set_to_none=True)
            losses, info = step(suite, net, ray, batches, scalarizer, mu=mu, eps=eps, restricted=restricted)
            opt.step()
            sched.step()
            if (k % CHECK_EVERY == 0 or k == steps - 1) and not torch.isfinite(losses).all():
                raise BenchError(f"{desc}: non-finite training loss at step {k} ({losses.tolist()}); "
                                 f"lower method.lr (now {lr})")
            if k >= steps - tail:
                hist_losses.append(losses.double().cpu().tolist())
                if "mu" in info:
                    hist_mu.append(info["mu"])
            fallbacks += int(info.get("fallback", False))
            descent_steps += int(info.get("mode") == "descent")
            if k % 20 == 0:
                bar.set_postfix(loss=f"{float(ray.to(losses) @ losses):.4f}")
            if stop.requested or ck.due(k):
                ck.save("net", state(k + 1))
            stop.check()
    facts = {"final_train_losses": dict(zip(suite.tasks, np.mean(hist_losses, axis=0).tolist()))}
    if scalarizer == "epo":
        facts.update(mu_final=float(np.mean(hist_mu)), epo_fallbacks=fallbacks, epo_descent_steps=descent_steps)
    return facts


@dataclass(frozen=True)
class Conditioned(Method):
    """Base of the preference-conditioned methods: its fields are their shared config."""

    state_file: ClassVar[str] = "net.pt"      # the trained net, saved with the run (bench export reads it)
    label: ClassVar[str] = "conditioned"      # progress lines and messages

    scalarizer: Literal["ls", "tchebycheff", "stch", "epo", "mgda"] = "ls"   # methods/scalarize.py
    init_lambda: float = 0.3        # the task-arithmetic coefficient the net starts at
    steps: int = 300                # training steps (one preference, one batch per task each)
    lr: float = 1e-2                # Adam; cosine decay to 0.1·lr
    batch_size: int | None = None   # per task per step; null: the suite's (16 images / 8 sentences)
    dirichlet_alpha: float = 1.0    # training preferences r ~ Dirichlet(alpha·1)
    partitions: int = 10            # evaluation rays: das-dennis partitions (11 rays for 2 tasks, 66 for 3)
    max_rays: int = 66              # evaluation rays: cap for many tasks (one-hots + equal ray + coarser grid)
    stch_mu: float = 0.1            # stch: smoothing μ
    epo_eps: float = 1e-4           # epo: balance mode while μ > eps
    epo_restricted: bool = False    # epo: the restricted descent LP (αᵀCa ≥ min(max(Ca), 0)), the PHN/EPO authors' code default; false: the relaxed LP

    def __post_init__(self):
        for name in ("steps", "partitions", "max_rays"):
            if getattr(self, name) < 1:
                raise BenchError(f"method.{name}={getattr(self, name)} must be ≥ 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise BenchError(f"method.batch_size={self.batch_size} must be ≥ 1 (or null for the default)")
        for name in ("lr", "dirichlet_alpha", "stch_mu"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise BenchError(f"method.{name}={v} must be a positive number")
        if self.lr > torch.finfo(torch.float32).max:         # the nets are float32
            raise BenchError(f"method.lr={self.lr:g} is beyond float32, the net's precision; lower method.lr")

    # ---- what each method defines -------------------------------------------------------------
    def build(self, suite, generator: torch.Generator) -> nn.Module:
        """The trainable net: `net(ray) -> Params`, starting at task arithmetic with `init_lambda`."""
        raise NotImplementedError

    def describe(self, net: nn.Module, ray: torch.Tensor) -> dict[str, Any]:
        """Facts of one evaluated preference for the record (e.g. routing weights): kept small, one per ray."""
        return {}

    def export_facts(self, net: nn.Module, ray: torch.Tensor) -> dict[str, Any]:
        """Facts of the exported preference for export.json: `describe`'s and what determines the exported
        weights given θ0 and the task vectors (e.g. every routed block's weights), where that fits in JSON."""
        return self.describe(net, ray)

    def structure(self, net: nn.Module) -> Any:
        """What must match for a saved net to fit a suite again (e.g. the upscaled modules)."""
        return sorted(net.state_dict())

    # ---- the shared loop -----------------------------------------------------------------------
    def approximate_front(self, suite, *, evaluator, seed: int, checkpoints=None) -> Front:
        T = suite.num_tasks
        net = self.build(suite, torch.Generator().manual_seed(seeds(seed)[0])).to(suite.device)
        n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        batch_size = self.batch_size or suite.train_batch_size
        t0 = time.perf_counter()
        facts = train(suite, net, scalarizer=self.scalarizer, steps=self.steps, lr=self.lr, batch_size=batch_size,
                      dirichlet_alpha=self.dirichlet_alpha, seed=seed, mu=self.stch_mu, eps=self.epo_eps,
                      restricted=self.epo_restricted,
                      desc=f"{self.label} {self.scalarizer}", checkpoints=checkpoints)
        train_s = time.perf_counter() - t0
        net.requires_grad_(False)
        tag = params_hash(dict(net.state_dict()))[:16]
        rays = ray_grid(T, partitions=self.partitions, max_rays=self.max_rays)
        metrics, extras = [], []
        with torch.no_grad():
            for ray in rays:
                r = torch.as_tensor(ray, dtype=pref_dtype(suite), device=suite.device)
                key = (type(self).__name__, tag, tuple(np.round(ray, 12)))
                metrics.append(evaluator.evaluate(lambda r=r: net(r), "test", key=key))
                extras.append({"ray": [float(x) for x in ray], **self.describe(net, r)})
        meta = {"scalarizer": self.scalarizer, "init_lambda": self.init_lambda, "batch_size": batch_size,
                "lr": self.lr, "lr_schedule": f"cosine to {LR_FLOOR}·lr", "state_file": self.state_file,
                "state_hash": tag, **facts}
        info = {"method": asdict(self), "tasks": list(suite.tasks), "suite_key": suite.key,
                "structure": self.structure(net), "seed": int(seed)}
        return Front(tasks=suite.tasks, objective=suite.objective, X=rays,
                     x_names=[f"ray[{t}]" for t in suite.tasks], metrics=metrics, split="test",
                     extras=extras, meta=meta,
                     cost={"train_steps": self.steps, "trainable_params": n_params, "train_s": train_s},
                     artifacts={self.state_file: save_net(net, type(self).__name__, info)})

    # ---- bench export ----------------------------------------------------------------------------
    @classmethod
    def export_params(cls, suite, run_dir, ray) -> tuple[Params, dict]:
        """(dense parameters at `ray`, facts) from the net saved in a run directory (no training)."""
        path = Path(run_dir) / cls.state_file
        if not path.is_file():
            raise BenchError(f"run {str(run_dir)!r} has no {cls.state_file}; re-run the method to save its state")
        state, method, net = load_net(path, cls, suite)
        r = torch.as_tensor(np.asarray(ray, dtype=np.float64), dtype=pref_dtype(suite), device=suite.device)
        with torch.no_grad():                  # the description too: no autograd graph, no warning
            params = net(r)
            facts = {"scalarizer": method.scalarizer, "init_lambda": method.init_lambda,
                     **method.export_facts(net, r)}
        return params, facts


def save_net(net: nn.Module, kind: str, info: dict) -> bytes:
    """The net's weights plus what rebuilds it (the method's config) and checks it fits a suite."""
    buf = io.BytesIO()
    torch.save({"format": f"paretobench.{kind}/1", "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                **info}, buf)
    return buf.getvalue()


def load_net(path, cls, suite) -> tuple[dict, Conditioned, nn.Module]:
    """(state, method, net) from a saved net, checked against `suite`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != f"paretobench.{cls.__name__}/1":
        raise BenchError(f"{path} has format {state.get('format')!r}; expected paretobench.{cls.__name__}/1")
    if state["tasks"] != list(suite.tasks):
        raise BenchError(f"the saved net was trained on tasks {state['tasks']}, the suite has {suite.tasks}")
    method = cls(**state["method"])
    net = method.build(suite, torch.Generator().manual_seed(0))
    if method.structure(net) != state["structure"]:
        raise BenchError("the suite's parameters no longer match the saved net's structure; re-run the method")
    net.load_state_dict(state["net"])
    return state, method, net.to(suite.device)
