"""The PWE-MoE trainer, registered twice: `pwe_moe_ls` (linear scalarization) and `pwe_moe_epo` (EPO).

    python -m bench run method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots]
    python -m bench run method=pwe_moe_epo tasks=tiny-gpt2 method.upscale=mlp+attn

Tang et al., "Towards Efficient Pareto Set Approximation via Mixture of Experts Based Model
Fusion", 2024 (https://arxiv.org/abs/2406.09770); the authors' code is FusionBench's
`fusion_bench/method/pwe_moe`. One training run gives a whole front:

1. Upscale (`upscale.py`): every selected module m gets a router R_m: Δ^{T−1} → R^T (`router.py`);
   the other merge-able parameters are fixed at θ0 + init_lambda·Σ τ_i. Only routers train.
2. Each step: r ~ Dirichlet(dirichlet_alpha·1) (numpy, seeded); w = R(r) for all modules at once;
   merge once, θ_m = θ0_m + Σ_i w_{m,i} τ_{m,i} (routing depends on r only, never on the input);
   one labelled train batch per task (`suite.train_batch`), losses L_i = `suite.loss(θ, task_i, batch_i)`.
   `ls`: descend Σ_i r_i L_i. `epo`: per-task gradients G over the router parameters (one backward
   per task, each through its own task's graph only), C = G Gᵀ, α from the EPO LP
   (`methods.epo_solver.epo_weights`), descend Σ_i α_i G_i. Adam(lr), cosine decay to 0.1·lr.
3. Evaluate: for each ray of `bench.rays.ray_grid` (11 rays for 2 tasks, 66 for 3), unload to a
   dense parameter dict and score it on test with the Evaluator.

Defaults: `steps=300` (the authors' scripts use 2000–4000 steps on ViT-B/32; 300 suffices for the
routers' few hundred parameters on the tiny suites and keeps a CPU run under a minute; raise it
for published suites), `batch_size=null` → 16 per task for image suites and 8 for text suites
(the authors'). The trained routers are saved with the run as `routers.pt` (see `save_state`),
which `python -m bench export` reads back; it never retrains.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from bench.front import Front
from bench.merge import Params, params_hash
from bench.interrupt import interruptible
from bench.progress import progress as progress_bar
from bench.rundir import Checkpoints
from bench.registry import METHODS, BenchError
from methods.base import CHECK_EVERY, Method
from methods.pwe_moe.router import Routers
from methods.pwe_moe.upscale import MergePlan, check_groups, module_groups
from bench.rays import ray_grid

STATE_FORMAT = "paretobench.pwe_moe/1"
ROUTER_FILE = "routers.pt"
LR_FLOOR = 0.1                 # cosine decay to 0.1 × lr (the authors' eta_min)


def build_plan(suite, upscale: str, init_lambda: float) -> MergePlan:
    theta0 = suite.theta0()
    groups = module_groups(theta0, upscale)
    check_groups(groups, upscale, suite.name, list(theta0))
    return MergePlan(theta0, suite.task_vectors(), groups, init_lambda)


def seeds(seed: int) -> tuple[int, int, int]:
    """Independent streams: router init, preference sampling, batch sampling."""
    return tuple(int(s.generate_state(1, dtype=np.uint64)[0] >> 1) for s in np.random.SeedSequence(int(seed)).spawn(3))


def router_step(suite, plan: MergePlan, routers: Routers, ray: torch.Tensor, batches: list,
                scalarizer: str, eps: float = 1e-4) -> tuple[torch.Tensor, dict]:
    """One step's gradients into `routers` (.grad set, no optimizer step). Returns (losses [T], facts)."""
    from methods.epo_solver import epo_weights

    w = routers(ray)                                              # [M, T]: every router at once
    params = plan.merge(w)                                        # merge once per step
    # a list, not a stacked tensor: a backward from one task's loss must not enter the others' graphs
    task_losses = [suite.loss(params, t, b) for t, b in zip(suite.tasks, batches)]
    losses = torch.stack([l.detach() for l in task_losses])
    if scalarizer == "ls":
        sum(r * l for r, l in zip(ray.to(losses.dtype), task_losses)).backward()
        return losses, {}
    # EPO over router parameters: per-task gradients via ∂L_i/∂w (one backward per task, through its
    # own graph only), then the routers' Jacobian (a few hundred parameters: cheap)
    leaves = list(routers.parameters())
    g_w = [torch.autograd.grad(l, w, retain_graph=True)[0] for l in task_losses]
    G = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(w, leaves, grad_outputs=gw,
                                                                            retain_graph=True)])
                     for gw in g_w]).double()                     # [T, P]
    l = losses.double().cpu().numpy()
    alpha, info = epo_weights(np.maximum(l, 0.0), (G @ G.T).cpu().numpy(), ray.double().cpu().numpy(), eps=eps)
    direction = torch.as_tensor(alpha, dtype=G.dtype, device=G.device) @ G
    offset = 0
    for p in leaves:
        p.grad = direction[offset:offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
    return losses, info


def train_routers(suite, plan: MergePlan, routers: Routers, *, scalarizer: str, steps: int, lr: float,
                  batch_size: int, dirichlet_alpha: float, seed: int, eps: float = 1e-4,
                  progress: bool = True, checkpoints: Checkpoints | None = None) -> dict:
    """Adam on the routers for `steps` steps; returns training facts (final losses, EPO μ, fallbacks).
    The whole training state (routers, Adam, schedule, both random streams, the facts so far) is
    checkpointed every `checkpoints.every` steps and when the run is stopped, and taken up again
    when it resumes: the result is the same as an uninterrupted run's."""
    ck = checkpoints if checkpoints is not None else Checkpoints(None)
    _, ray_seed, data_seed = seeds(seed)
    rng = np.random.default_rng(ray_seed)
    gen = torch.Generator().manual_seed(data_seed)
    opt = torch.optim.Adam(routers.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=LR_FLOOR * lr)
    T = suite.num_tasks
    tail = max(1, steps // 10)
    hist_losses, hist_mu, fallbacks, descent, first = [], [], 0, 0, 0
    saved = ck.load("routers")
    if saved is not None:
        routers.load_state_dict(saved["routers"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        rng.bit_generator.state = saved["rng"]
        gen.set_state(saved["generator"])
        hist_losses, hist_mu, fallbacks, descent, first = (saved[k] for k in ("hist_losses", "hist_mu", "fallbacks",
                                                                                "descent", "step"))

    def state(step: int) -> dict:
        return {"step": step, "routers": {k: v.detach().cpu() for k, v in routers.state_dict().items()},
                "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                "generator": gen.get_state(), "hist_losses": hist_losses, "hist_mu": hist_mu,
                "fallbacks": fallbacks, "descent": descent}

    bar = progress_bar(range(first, steps), f"pwe_moe_{scalarizer} routers", total=steps - first, disable=not progress)
    with suite.frozen(), interruptible() as stop:
        for step in bar:
            ray = torch.as_tensor(rng.dirichlet([dirichlet_alpha] * T), dtype=torch.float32, device=suite.device)
            batches = [suite.train_batch(t, batch_size, gen) for t in suite.tasks]
            opt.zero_grad(set_to_none=True)
            losses, info = router_step(suite, plan, routers, ray, batches, scalarizer, eps)
            opt.step()
            sched.step()
            if (step % CHECK_EVERY == 0 or step == steps - 1) and not torch.isfinite(losses).all():
                raise BenchError(f"pwe_moe: non-finite training loss at step {step} ({losses.tolist()}); "
                                 f"lower method.lr (now {lr})")
            if step >= steps - tail:
                hist_losses.append(losses.double().cpu().tolist())
                if info:
                    hist_mu.append(info["mu"])
            fallbacks += int(info.get("fallback", False))
            descent += int(info.get("mode") == "descent")
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(ray.to(losses) @ losses):.4f}")
            if stop.requested or ck.due(step):
                ck.save("routers", state(step + 1))
            stop.check()
    facts = {"final_train_losses": dict(zip(suite.tasks, np.mean(hist_losses, axis=0).tolist()))}
    if scalarizer == "epo":
        facts.update(mu_final=float(np.mean(hist_mu)), epo_fallbacks=fallbacks, epo_descent_steps=descent)
    return facts


def save_state(plan: MergePlan, routers: Routers, info: dict) -> bytes:
    """routers.pt: the router weights plus everything needed to rebuild the plan and check it."""
    buf = io.BytesIO()
    torch.save({"format": STATE_FORMAT, "routers": {k: v.detach().cpu() for k, v in routers.state_dict().items()},
                "modules": plan.modules, "groups": plan.groups, "init_lambda": plan.init_lambda, **info}, buf)
    return buf.getvalue()


def load_state(data: bytes | str, suite) -> tuple[dict, MergePlan, Routers]:
    """(state, plan, routers) from routers.pt bytes or path, checked against `suite`."""
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    state = torch.load(src, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise BenchError(f"{ROUTER_FILE} has format {state.get('format')!r}; expected {STATE_FORMAT!r}")
    if state["tasks"] != list(suite.tasks):
        raise BenchError(f"the saved routers were trained on tasks {state['tasks']}, the suite has {suite.tasks}")
    plan = build_plan(suite, state["upscale"], state["init_lambda"])
    if plan.groups != state["groups"]:
        raise BenchError(f"the suite's parameters no longer match the saved routers' modules "
                         f"(upscale={state['upscale']!r}); re-run the method")
    routers = Routers(len(plan.modules), suite.num_tasks, init_lambda=plan.init_lambda)
    routers.load_state_dict(state["routers"])
    return state, plan, routers.to(suite.device)


@torch.no_grad()
def unload(plan: MergePlan, routers: Routers, ray) -> Params:
    """The dense parameter dict at preference `ray` (what `bench export` writes)."""
    r = torch.as_tensor(np.asarray(ray, dtype=np.float32), device=routers.b2.device)
    return plan.merge(routers(r))


@METHODS.register("pwe_moe_ls", "PWE-MoE: preference-routed weight-ensembling MoE, routers trained by LS "
                  "(Tang et al. 2024)", scalarizer="ls")
@METHODS.register("pwe_moe_epo", "PWE-MoE with routers trained along EPO directions (Tang et al. 2024)",
                  scalarizer="epo")
@dataclass(frozen=True)
class PWEMoE(Method):
    """Pareto weight-ensembling MoE: one set of routers, a dense model for every preference."""

    paper = ("Tang et al., Towards Efficient Pareto Set Approximation via Mixture of Experts Based "
             "Model Fusion, 2024")
    url = "https://arxiv.org/abs/2406.09770"

    scalarizer: Literal["ls", "epo"] = "ls"         # bound by the registry entry (pwe_moe_ls / pwe_moe_epo)
    upscale: Literal["mlp", "mlp+attn", "all"] = "mlp"
    init_lambda: float = 0.3        # routers' last bias; fixed TA coefficient of non-upscaled weights
    steps: int = 300                # router training steps (paper: 2000–4000 on ViT-B/32)
    lr: float = 1e-2                # Adam; cosine decay to 0.1·lr
    batch_size: int | None = None   # per task per step; null: 16 images / 8 sentences
    dirichlet_alpha: float = 1.0    # r ~ Dirichlet(alpha·1)
    partitions: int = 10            # evaluation rays: das-dennis partitions (11 rays for 2 tasks)
    max_rays: int = 66              # evaluation rays: cap for many tasks
    epo_eps: float = 1e-4           # pwe_moe_epo: balance mode while μ > eps

    def __post_init__(self):
        for name in ("steps", "partitions", "max_rays"):
            if getattr(self, name) < 1:
                raise BenchError(f"method.{name}={getattr(self, name)} must be ≥ 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise BenchError(f"method.batch_size={self.batch_size} must be ≥ 1 (or null for the default)")
        for name in ("lr", "dirichlet_alpha"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise BenchError(f"method.{name}={v} must be a positive number")
        if self.lr > torch.finfo(torch.float32).max:         # the routers are float32
            raise BenchError(f"method.lr={self.lr:g} is beyond float32, the routers' precision; lower method.lr")

    @property
    def name(self) -> str:
        return f"pwe_moe_{self.scalarizer}"

    @staticmethod
    def export_params(suite, run_dir, ray) -> tuple[Params, dict]:
        """(dense parameters at `ray`, facts) from the routers saved in a run directory (no training)."""
        from pathlib import Path

        path = Path(run_dir) / ROUTER_FILE
        if not path.is_file():
            raise BenchError(f"run {str(run_dir)!r} has no {ROUTER_FILE}; re-run the method to save its routers")
        state, plan, routers = load_state(str(path), suite)
        with torch.no_grad():
            w = routers(torch.as_tensor(np.asarray(ray, dtype=np.float32), device=routers.b2.device)).cpu()
        return unload(plan, routers, ray), {
            "upscale": state["upscale"], "init_lambda": plan.init_lambda, "scalarizer": state["scalarizer"],
            "routing": {m: [float(x) for x in w[i]] for i, m in enumerate(plan.modules)}}

    def approximate_front(self, suite, *, evaluator, seed: int, checkpoints=None) -> Front:
        plan = build_plan(suite, self.upscale, self.init_lambda)
        T = suite.num_tasks
        routers = Routers(plan.num_modules, T, init_lambda=self.init_lambda,
                          generator=torch.Generator().manual_seed(seeds(seed)[0])).to(suite.device)
        n_params = routers.num_trainable()
        batch_size = self.batch_size or suite.train_batch_size
        t0 = time.perf_counter()
        facts = train_routers(suite, plan, routers, scalarizer=self.scalarizer, steps=self.steps, lr=self.lr,
                              checkpoints=checkpoints,
                              batch_size=batch_size, dirichlet_alpha=self.dirichlet_alpha, seed=seed,
                              eps=self.epo_eps)
        train_s = time.perf_counter() - t0
        routers.requires_grad_(False)
        tag = params_hash(dict(routers.state_dict()))[:16]
        rays = ray_grid(T, partitions=self.partitions, max_rays=self.max_rays)
        shown = _shown_modules(plan.modules)
        metrics, extras = [], []
        with torch.no_grad():
            for ray in rays:
                key = (self.name, self.upscale, self.init_lambda, tag, tuple(np.round(ray, 12)))
                metrics.append(evaluator.evaluate(lambda r=ray: unload(plan, routers, r), "test", key=key))
                w = routers(torch.as_tensor(ray, dtype=torch.float32, device=suite.device)).cpu()
                extras.append({"ray": [float(x) for x in ray],
                               "routing": {plan.modules[m]: [round(float(x), 6) for x in w[m]] for m in shown}})
        info = {"tasks": list(suite.tasks), "suite_key": suite.key, "upscale": self.upscale,
                "scalarizer": self.scalarizer, "steps": self.steps, "seed": int(seed)}
        meta = {"scalarizer": self.scalarizer, "upscale": self.upscale, "init_lambda": self.init_lambda,
                "upscaled_modules": plan.num_modules, "batch_size": batch_size, "lr": self.lr,
                "lr_schedule": f"cosine to {LR_FLOOR}·lr", "router_file": ROUTER_FILE, "router_hash": tag,
                **facts}
        if self.scalarizer == "epo":
            meta["epo_eps"] = self.epo_eps
        return Front(tasks=suite.tasks, objective=suite.objective, X=rays,
                     x_names=[f"ray[{t}]" for t in suite.tasks], metrics=metrics, split="test",
                     extras=extras, meta=meta,
                     cost={"train_steps": self.steps, "trainable_params": n_params, "train_s": train_s},
                     artifacts={ROUTER_FILE: save_state(plan, routers, info)})


def _shown_modules(modules: list[str], k: int = 3) -> list[int]:
    """Indices of the first, middle and last upscaled modules (the record's per-point routing)."""
    return sorted({0, (len(modules) - 1) // 2, len(modules) - 1})[:k]
