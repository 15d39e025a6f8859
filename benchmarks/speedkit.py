"""What benchmarks/speed.py measures with: timing around device syncs, peak memory per variant, and
the training-step variants of its section 3 (PWE-MoE router step against a plain step).

    python benchmarks/speed.py --size small --device cpu --threads 1     # runs every function here

Step variants, on the same suite, model and batches (one per task), at the equal ray:

    plain        forward + backward with every weight trainable (a fine-tuning step, no optimizer)
    pwe_moe_ls   routers (upscale=mlp) → merge once → forward + backward → Adam on the routers
    pwe_moe_epo  the same with per-task router gradients and the EPO LP
    ls_full      the `ls space=full` baseline: forward + backward + Adam on every weight

Peak memory is measured above "base", what the process holds before a variant's own set-up
(model, θ0, task vectors, batches), so it counts what each variant adds: the trainable copy,
gradients and Adam state of ls_full; the merged weights, the fixed TA copy of the other weights
and the routers of PWE-MoE; activations for all. CUDA: max_memory_allocated. CPU: the peak
resident set (VmHWM, reset through /proc/self/clear_refs after glibc's free pages are handed back
with malloc_trim, so that a variant reusing them counts them).
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import time

import torch

from bench.runtime.hardware import peak_memory_mb, reset_peak_memory

VARIANTS = ("plain", "pwe_moe_ls", "pwe_moe_epo", "ls_full")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int):
    """(median seconds over `repeats` calls after `warmup` untimed ones, the last call's result)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# ---- peak memory ----------------------------------------------------------------------------------
def reset_peak(device: torch.device) -> float:
    """The memory held now (MiB), from which the next peak is measured."""
    gc.collect()
    if device.type == "cuda":
        reset_peak_memory(device)
        return torch.cuda.memory_allocated(device) / 2**20
    # glibc keeps freed blocks resident in its heap: a variant reusing them would not raise the RSS
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:      # resets VmHWM to the current RSS
        f.write("5")
    return _status_mb("VmRSS")


def peak_mb(device: torch.device) -> float:
    return peak_memory_mb(device) if device.type == "cuda" else _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024.0 for line in f if line.startswith(field + ":"))


# ---- training steps -------------------------------------------------------------------------------
def make_step(variant: str, suite, batches, ray):
    """(step function, trainable parameter count) of one variant on fixed batches."""
    from bench.methods.pwe_moe.router import Routers
    from bench.methods.pwe_moe.trainer import build_plan, router_step

    if variant in ("pwe_moe_ls", "pwe_moe_epo"):
        plan = build_plan(suite, "mlp", 0.3)
        routers = Routers(plan.num_modules, suite.num_tasks, generator=torch.Generator().manual_seed(0))
        routers.to(suite.device)
        opt = torch.optim.Adam(routers.parameters(), lr=1e-2)

        def step():
            opt.zero_grad(set_to_none=True)
            router_step(suite, plan, routers, ray, batches, variant.rsplit("_", 1)[1])
            opt.step()
        return step, routers.num_trainable()

    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in suite.theta0().items()}
    opt = torch.optim.Adam(leaves.values(), lr=1e-5) if variant == "ls_full" else None

    def step():
        for t in leaves.values():
            t.grad = None
        losses = torch.stack([suite.loss(leaves, t, b) for t, b in zip(suite.tasks, batches)])
        (ray @ losses).backward()
        if opt is not None:
            opt.step()
    return step, sum(t.numel() for t in leaves.values())


def step_section(suite, batch: int, repeats: int, warmup: int) -> dict:
    """Median step time and peak memory above base of every variant, one after the other; ratios to `plain`."""
    device = suite.device
    gen = torch.Generator().manual_seed(0)
    batches = [suite.train_batch(t, batch, gen) for t in suite.tasks]
    ray = torch.full((suite.num_tasks,), 1.0 / suite.num_tasks, device=device)
    out = {}
    with suite.frozen():
        for v in VARIANTS:
            base = reset_peak(device)
            fn, trainable = make_step(v, suite, batches, ray)
            sec, _ = timed(fn, device, repeats, warmup)        # the first step's allocations (Adam state) count
            out[v] = {"step_s": sec, "peak_mb_above_base": peak_mb(device) - base, "base_mb": base,
                      "trainable": trainable}
            del fn
    for v in VARIANTS:
        out[v]["vs_plain"] = out[v]["step_s"] / out["plain"]["step_s"]
    return {"tasks": suite.num_tasks, "batch_per_task": batch,
            "batch_shapes": {k: list(t.shape) for k, t in batches[0].items()}, "variants": out}
