"""PWE-MoE router-training step against a plain training step, on the real ViT-B/32 and GPT-2 shapes.

    python benchmarks/pwe_moe_step.py                           # CPU: batch 2 per task, 3 timed steps
    python benchmarks/pwe_moe_step.py --device cuda             # GPU: batch 16 (ViT) / 8 (GPT-2) per task

Models: the published suites with `weights=random` (tasks/clip.py, tasks/gpt2_glue.py):
clip-vit-b32 (CLIPVisionModel ViT-B/32, 88M) and gpt2-glue (GPT2Model, 124M) with random weights,
random task vectors for the first T tasks (2 by default), random heads, and synthetic batches of
the real input shapes (224² images; token sequences). Same model, same batches (one per task) for
every variant:

    plain        forward + backward with every weight trainable (a fine-tuning step, no optimizer)
    pwe_moe_ls   routers (upscale=mlp) → merge once → forward + backward → Adam on the routers
    pwe_moe_epo  the same with per-task router gradients and the EPO LP
    ls_full      the `ls space=full` baseline: forward + backward + Adam on every weight

Time: the median over the timed steps after warm-up, the variants interleaved step by step in one
process (a busy machine slows them alike). Peak memory, each variant in its own process: CUDA
max_memory_allocated on GPU; on CPU the peak resident set size (VmHWM, reset through
/proc/self/clear_refs; glibc's mmap threshold fixed so that freed blocks leave the RSS). Both are
reported above "base", the memory every variant holds before its own set-up (model, θ0, task
vectors, batches), so the peak counts what each variant adds: the trainable copy, gradients and
Adam state of ls_full; the merged weights, the fixed TA copy of the other weights and the routers of
PWE-MoE; activations for both.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


VARIANTS = ("plain", "pwe_moe_ls", "pwe_moe_epo", "ls_full")
MODELS = ("vit-b32", "gpt2")


SUITE_OF = {"vit-b32": "clip-vit-b32", "gpt2": "gpt2-glue"}


def random_suite(model: str, num_tasks: int):
    """The published suite with `weights=random`: real architecture, random weights and task
    vectors, synthetic data of the real shapes (tasks/clip.py, tasks/gpt2_glue.py)."""
    from bench.cli import compose
    from bench.config import build_from_config
    from bench.registry import SUITES

    cfg = compose([f"tasks={SUITE_OF[model]}", "tasks.weights=random", "tasks.synthetic_size=16"])
    cfg.tasks.names = list(cfg.tasks.names)[:num_tasks]
    return build_from_config(SUITES, cfg.tasks, "tasks")


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/clear_refs", "w") as f:      # resets VmHWM to the current RSS
        f.write("5")
    return _status_mb("VmRSS")


def peak_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _status_mb("VmHWM")


def _status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def make_step(variant: str, suite, batches, ray):
    """(step function, trainable parameter count) of one variant on fixed batches."""
    from methods.pwe_moe.router import Routers
    from methods.pwe_moe.trainer import build_plan, router_step

    if variant in ("pwe_moe_ls", "pwe_moe_epo"):
        plan = build_plan(suite, "mlp", 0.3)
        routers = Routers(plan.num_modules, suite.num_tasks, generator=torch.Generator().manual_seed(0))
        routers.to(suite.device)
        opt = torch.optim.Adam(routers.parameters(), lr=1e-2)
        scalarizer = variant.rsplit("_", 1)[1]

        def step():
            opt.zero_grad(set_to_none=True)
            router_step(suite, plan, routers, ray, batches, scalarizer)
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


def setup(model: str, device: str, num_tasks: int, batch: int):
    torch.set_grad_enabled(True)
    suite = random_suite(model, num_tasks).to(torch.device(device))
    gen = torch.Generator().manual_seed(0)
    batches = [suite.train_batch(t, batch, gen) for t in suite.tasks]
    ray = torch.full((num_tasks,), 1.0 / num_tasks, device=suite.device)
    return suite, batches, ray


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_time(model, variants, device, num_tasks, batch, steps, warmup) -> dict:
    """Median step time of each variant, the variants interleaved step by step in one process (so a
    shared, noisy machine slows them alike)."""
    suite, batches, ray = setup(model, device, num_tasks, batch)
    fns = {v: make_step(v, suite, batches, ray) for v in variants}
    times = {v: [] for v in variants}
    for i in range(warmup + steps):
        for v, (fn, _) in fns.items():
            _sync(suite.device)
            t0 = time.perf_counter()
            fn()
            _sync(suite.device)
            if i >= warmup:
                times[v].append(time.perf_counter() - t0)
    return {v: {"step_s": statistics.median(ts), "trainable": fns[v][1]} for v, ts in times.items()} | {
        "_": {"device": str(suite.device), "threads": torch.get_num_threads(), "batch_per_task": batch,
              "tasks": num_tasks, "batch_shapes": {k: list(v.shape) for k, v in batches[0].items()}}}


def measure_memory(model, variant, device, num_tasks, batch, steps) -> dict:
    """Peak memory of one variant (its own process) above the common base."""
    suite, batches, ray = setup(model, device, num_tasks, batch)
    base = reset_peak(suite.device)          # model, θ0, task vectors, batches: common to every variant
    fn, _ = make_step(variant, suite, batches, ray)
    for _ in range(steps):                   # first-step allocations (Adam state) count
        fn()
    _sync(suite.device)
    return {"base_mb": base, "peak_mb": peak_mb(suite.device)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="per task; default 2 on CPU, else 16 (ViT) / 8 (GPT-2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 20 on GPU)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "MODEL", "VARIANTS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    steps = args.steps or (3 if cpu else 20)
    if args.child:
        kind, model, variants = args.child
        batch = args.batch or (2 if cpu else (16 if model == "vit-b32" else 8))
        if kind == "time":
            out = measure_time(model, variants.split(","), args.device, args.tasks, batch, steps, args.warmup)
        else:
            out = measure_memory(model, variants, args.device, args.tasks, batch, 2)
        print(json.dumps(out))
        return 0

    def child(kind, model, variants):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, model, variants, "--device", args.device,
               "--tasks", str(args.tasks), "--steps", str(steps), "--warmup", str(args.warmup)]
        if args.batch:
            cmd += ["--batch", str(args.batch)]
        # glibc: a fixed mmap threshold returns freed large blocks to the OS, so RSS tracks live memory
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-3000:])
        return json.loads(res.stdout.strip().splitlines()[-1])

    variants = args.variants.split(",")
    table = []
    for model in args.models.split(","):
        t = child("time", model, ",".join(variants))
        info = t.pop("_")
        print(f"{model}: {info['device']}, {info['threads']} threads, T = {info['tasks']}, batch per task "
              f"{info['batch_per_task']} {info['batch_shapes']}", flush=True)
        mem = {}
        for v in variants:
            mem[v] = m = child("memory", model, v)
            print(f"  {v:12s} step {t[v]['step_s'] * 1e3:9.1f} ms   peak +{m['peak_mb'] - m['base_mb']:7.0f} MiB "
                  f"(base {m['base_mb']:.0f} MiB)   trainable {t[v]['trainable']:,}", flush=True)
        table.append((model, t, mem))
    print("\n" + ("CPU figures (a shared 2-core machine here); the targets (≤ 1.3× step, memory below "
                  "ls full) are for a GPU: run with --device cuda" if cpu else "GPU figures"))
    print("| model | PWE-MoE LS step / plain step | EPO step / plain | peak above base: pwe_moe_ls | ls full |")
    print("|---|---|---|---|---|")
    for model, t, mem in table:
        def ratio(v):
            return t[v]["step_s"] / t["plain"]["step_s"] if v in t and "plain" in t else float("nan")

        def extra(v):
            return mem[v]["peak_mb"] - mem[v]["base_mb"] if v in mem else float("nan")

        print(f"| {model} | {ratio('pwe_moe_ls'):.2f}× | {ratio('pwe_moe_epo'):.2f}× | {extra('pwe_moe_ls'):.0f} MiB "
              f"| {extra('ls_full'):.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
