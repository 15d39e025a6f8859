"""Memory at real size (issue 24): peak memory of building a published suite and of one training step of
every method, on CLIP ViT-B/32 and L/14 at T = 2 and 8 tasks, from one command.

    python benchmarks/memory.py                                          # the full matrix on the CPU (~75 min)
    python benchmarks/memory.py --device cuda --json mem-cuda.json       # the same on a GPU (CUDA peaks too)
    python benchmarks/memory.py --archs b32 --tasks 2 --methods pwe_moe_ls --batch 1 --probes 1   # seconds

What is measured. Every measurement is a fresh subprocess (`nice -n 10`, torch threads = --threads, 2 by
default), so no peak leaks from one configuration into another. It builds the suite (`clip-vit-b32` /
`clip-vit-l14` with `tasks.weights=random`: the real architecture, random weights, random task vectors,
synthetic data, no download), reads the resident high-water mark (VmHWM of /proc/self/status; on CUDA
also `torch.cuda.max_memory_allocated`) = **build**, resets it (as `bench run` does before a method:
bench.runtime.hardware.reset_peak_memory), runs one unit of the method through the method's own code and
reads it again = **step** (the whole process's peak during the step, the suite it holds included):

- ls, epo (methods/ray_training.py): one ray (the equal ray), `method.steps=1`: `RayTraining.train_ray`,
  i.e. the merge, one forward per task, the scalarizer's gradients, one Adam step (then its one no-grad
  forward of a fresh batch per task, which peaks lower);
- pwe_moe_ls, pwe_moe_epo, phn, pareto_merging (methods/conditioned.py): the method's net built
  (`method.build`) and one step of `conditioned.train` (steps=1): merge, forward, backward, Adam;
- ta_grid, map (no training): the equivalent unit, one merged candidate (θ0 + 0.3 Σ τ_i, ta_grid's and
  map's own merge) scored by the Evaluator on every task's test split.

Batch. Published defaults: 16 images per task and step (the suite's `train_batch_size`; the trainers sum
all T task losses before the backward, so T·16 images are in flight), and one Evaluator batch (64 images
on the CPU, 1024 on CUDA) for the evaluation unit. Where that is not affordable here (L/14 activations of
T·16 images exceed the RAM, and its forward + backward takes seconds per image on 2 cores), the step is
measured at small batches (--probes 1,2 per task; --eval-probes 1,4 images for the evaluation) and
extrapolated linearly from the smallest: peak(b) = peak(b₁) + (images(b) − images(b₁))·slope, images =
T·b for a training step, b for an evaluation batch. The slope of a training step is the architecture's
activations per image: the median RSS slope between the two probes of the methods that hold no
parameter-sized optimizer state (pwe_moe_ls, pwe_moe_epo, phn, pareto_merging: their peak is the
forward/backward's from one image on) at the first T, used for every method and T (the forward is the same
functional call for all of them, and activations per image do not depend on T). ls and epo (space=full)
peak at small batches in their Adam step (a gradient and two moments the size of the model), which the
activations of a large batch need not add to: for them the figure is an upper bound (cell "note"). An
evaluation's slope is its own two probes' (a no-grad batch's transient per image). At a later T only the
smallest probe is measured ("extrapolated (slope from T=2)"). Checked on ViT-B/32, where the real batch is
measured too (JSON "validation", with the configuration's own slope beside): the extrapolation lies above
the measurement by 1-11 %, ls up to 25 %. (`live_peak_gib`, the peak of the tensor bytes the unit allocates,
counted by a TorchDispatchMode, is recorded too; its slope misses the allocator's overhead and kernels' own
buffers and fell short by up to 3.7 GiB of 9.4.)

Predictions and safety. Before every measurement its peak is predicted (a model of the resident bytes:
θ0 + T task vectors + the model, the method's extra copies of the parameters, activations per image; once
probes exist, the extrapolation, or the same method's smallest probe at the first T plus the build's
growth, EPO's per-task gradients and the activations) and a configuration predicted above the available
memory (MemAvailable less --margin-gib; on CUDA the device's memory) is skipped with a printed reason; a cell
with nothing measured is reported as "predicted". A watchdog stops a running measurement whose RSS passes
MemAvailable less half the margin (its error row keeps the RSS reached). Where the full batch fits and its
predicted time is under --max-step-s it is measured directly.

Output: a table (method × arch × T: build and step peak in GiB, each labelled measured / extrapolated /
predicted; with --device cuda the table is CUDA's max allocated and the RSS stays in the JSON) on stdout, a markdown version (--markdown), and JSON (--json; schema paretobench.memory/1):
env, settings, measurements (every subprocess: batch, peaks, times, parameter counts), cells (the table),
validation, skipped, elapsed_s. The JSON is rewritten after every measurement (--resume reuses the
measurements already in it). Real-size evaluation data is not part of the figures (the suites here hold
`tasks.synthetic_size` examples per split): the JSON gives the bytes of the uint8 test splits the
Evaluator would hold resident at the published sizes (`data_gib`), computed, not measured.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import cpu_name, json_default  # noqa: E402  (beside this file; no torch in this process)
SCHEMA = "paretobench.memory/1"
GIB = 2 ** 30
ARCHS = {"b32": "clip-vit-b32", "b16": "clip-vit-b16", "l14": "clip-vit-l14"}
LABEL = {"b32": "ViT-B/32", "b16": "ViT-B/16", "l14": "ViT-L/14"}
CLIP_TASKS = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
TEST_SIZES = {"sun397": 19850, "stanford-cars": 8041, "resisc45": 6300, "eurosat": 2700, "svhn": 26032,
              "gtsrb": 12630, "mnist": 10000, "dtd": 1880}          # tasks/clip.py SPLIT_SIZES (test)
IMAGE_BYTES = 3 * 224 * 224                                          # one uint8 image at 224 px (all three archs)
METHOD_ORDER = ["ta_grid", "map", "pwe_moe_ls", "pwe_moe_epo", "phn", "pareto_merging", "ls", "epo"]

# ---- the predictor (GiB; fp32 on the CPU; calibrated on this project's 2-core AMD EPYC, 2026-12) ------------
PARAMS = {"b32": 87.85e6, "b16": 86.19e6, "l14": 303.18e6}            # merged vision-tower parameters
BASE_GIB = 0.6                                                      # python + torch + transformers, imported
# resident activations per image in flight: a training step (autograd keeps every layer's) and a no-grad
# evaluation batch (one layer's at a time); measured: L/14 0.46 GiB per image training (T=2, b=1 → 2)
ACT_TRAIN_GIB = {"b32": 0.06, "b16": 0.25, "l14": 0.50}
ACT_EVAL_GIB = {"b32": 0.01, "b16": 0.03, "l14": 0.04}
# extra copies of the parameters (P·4 bytes each) a unit holds beside the suite, + per task for EPO's
# per-task gradients of the full parameters (ls/epo space=full: the trained copy, its gradient, Adam's two
# moments, a temporary; PWE-MoE: the merged dict, the fixed part, the gradient of the merged weights)
EXTRA_COPIES = {"ls": (5.0, 0.0), "epo": (5.0, 1.0), "pwe_moe_ls": (2.5, 0.0), "pwe_moe_epo": (2.5, 0.0),
                "phn": (2.5, 0.0), "pareto_merging": (3.5, 0.0), "ta_grid": (1.2, 0.0), "map": (1.2, 0.0)}
SEC_PER_IMAGE = {"b32": 0.3, "b16": 1.5, "l14": 6.5}                 # forward + backward, 2 threads (fwd: /3)
SPEEDUP = [1.0]                                                     # a GPU: main sets 100 (seconds, not minutes)
SAFETY = 1.1                                                        # a prediction must fit with 10 % to spare


def kind_of(method: str) -> str:
    """'ray' (ls, epo: one model per ray), 'conditioned' (one net for every preference), 'eval' (no training)."""
    if method in ("ls", "epo"):
        return "ray"
    if method in ("pwe_moe_ls", "pwe_moe_epo", "phn", "pareto_merging"):
        return "conditioned"
    if method in ("ta_grid", "map"):
        return "eval"
    from bench.core.registry import METHODS        # a method declared later: by its class
    from bench.methods.conditioned import Conditioned
    from bench.methods.ray_training import RayTraining

    cls = METHODS.entry(method).obj
    return "ray" if issubclass(cls, RayTraining) else "conditioned" if issubclass(cls, Conditioned) else "eval"


def images(kind: str, T: int, batch: int) -> int:
    """Images in flight at the peak: every task's batch for a training step (all T graphs live until the
    backward), one batch for an evaluation (tasks scored one after the other)."""
    return batch if kind == "eval" else T * batch


def predict_build(arch: str, T: int) -> float:
    return BASE_GIB + (2 + T) * PARAMS[arch] * 4 / GIB                # the tower, θ0 (a copy), T task vectors


def predict_step(arch: str, T: int, method: str, batch: int) -> float:
    kind = kind_of(method)
    fixed, per_task = EXTRA_COPIES.get(method, (5.0, 1.0))
    act = (ACT_EVAL_GIB if kind == "eval" else ACT_TRAIN_GIB)[arch]
    return predict_build(arch, T) + (fixed + per_task * T) * PARAMS[arch] * 4 / GIB + images(kind, T, batch) * act


def predict_seconds(arch: str, T: int, method: str, batch: int) -> float:
    kind = kind_of(method)
    n = images(kind, T, batch) * (T if kind == "eval" else 1)      # an evaluation scores every task's batch
    return 20.0 + n * SEC_PER_IMAGE[arch] / (3.0 if kind == "eval" else 1.0) / SPEEDUP[0]


# ---- the child: one measurement in a fresh process -----------------------------------------------------------
def live_bytes_mode():
    """A TorchDispatchMode counting the bytes of the tensor storages that ops create and that are still alive
    (a weakref on each storage), with their peak: the unit's own allocations, exact and free of the allocator's
    caching, used for the slope per image of an extrapolation (RSS grows with it only where the peak is the
    forward's: activations, not a fixed transient such as the merge)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.sizes: dict[int, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    st = t.untyped_storage()
                    ptr = st.data_ptr()
                    if ptr and ptr not in self.sizes:
                        self.sizes[ptr] = st.nbytes()
                        self.live += self.sizes[ptr]
                        self.peak = max(self.peak, self.live)
                        weakref.finalize(st, self._free, ptr)
            return out

        def _free(self, ptr: int) -> None:
            self.live -= self.sizes.pop(ptr, 0)

    return LiveBytes()


def _status_kib(key: str) -> int | None:
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(key + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1])


def child(job: dict) -> dict:
    """Build the suite, then one unit of the method; peaks in GiB. Runs in its own process."""
    t_start = time.perf_counter()
    try:                                                # the OOM killer takes this process first, never another's
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from bench.runtime.config import compose
    from bench.runtime.hardware import (peak_memory_kind, reset_peak_memory, resolve_device, seed_everything)

    torch.set_num_threads(job["threads"])
    device = resolve_device(job["device"])
    cuda = device.type == "cuda"
    method, T, b, kind = job["method"], job["T"], job["batch"], job["kind"]
    names = CLIP_TASKS[:T]
    opts = []
    if kind == "ray":
        opts = ["method.steps=1", f"method.batch_size={b}", "method.rays=[[" + ",".join([repr(1 / T)] * T) + "]]"]
    elif kind == "conditioned":
        opts = ["method.steps=1", f"method.batch_size={b}"]
    overrides = [f"method={method}", f"tasks={job['suite']}", f"tasks.names=[{','.join(names)}]",
                 "tasks.weights=random", f"tasks.synthetic_size={b if kind == 'eval' else 1}",
                 f"device={job['device']}", f"threads={job['threads']}", *opts]
    spec = compose(overrides)
    seed_everything(0, device.type == "cpu")
    out = {"overrides": overrides, "rss_imported_gib": _status_kib("VmRSS") / 2 ** 20}

    # ---- build -------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    suite = spec.build_suite().to(device)
    if cuda:
        torch.cuda.synchronize(device)
    out["build_s"] = time.perf_counter() - t0
    out["build_peak_gib"] = _status_kib("VmHWM") / 2 ** 20
    out["build_rss_gib"] = _status_kib("VmRSS") / 2 ** 20
    if cuda:
        out["build_cuda_peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        out["build_cuda_allocated_gib"] = torch.cuda.memory_allocated(device) / GIB
    theta0, tv = suite.theta0(), suite.task_vectors()
    out["params"] = int(sum(p.numel() for p in theta0.values()))
    out["theta_tv_gib"] = (sum(p.numel() * p.element_size() for p in theta0.values())
                           + sum(p.numel() * p.element_size() for p in tv.values())) / GIB
    out["train_batch_size"] = int(suite.train_batch_size)

    # ---- one unit of the method, through its own code -----------------------------------------------------
    reset_peak_memory(device)                          # as bench run does before a method: gc, trim, VmHWM := RSS
    out["rss_reset_gib"] = _status_kib("VmRSS") / 2 ** 20
    out["peak_kind"] = peak_memory_kind(device)
    m = spec.method
    t0 = time.perf_counter()
    live = live_bytes_mode()
    with threadpool_limits(limits=1, user_api="blas"), live:
        if kind == "ray":
            from bench.methods.ray_training import _train, resolve_lr
            from bench.runtime.parallel import Worker

            lr = resolve_lr(m.lr, m.space, suite.analytic)
            ray = np.full(T, 1.0 / T)
            _, stats, final, diverged = _train(m, Worker(suite, None), (0, ray), lr=lr, seed=0, checkpoints=None)
            out["unit"] = f"one Adam step of ls/epo space={m.space} at the equal ray (train_ray, steps=1)"
            out["backward_passes"] = int(sum(s["backward_passes"] for s in stats))
        elif kind == "conditioned":
            from bench.methods.conditioned import seeds, train

            net = m.build(suite, torch.Generator().manual_seed(seeds(0)[0])).to(suite.device)
            out["setup_rss_gib"] = _status_kib("VmRSS") / 2 ** 20
            out["trainable_params"] = int(sum(p.numel() for p in net.parameters() if p.requires_grad))
            facts = train(suite, net, scalarizer=m.scalarizer, steps=1, lr=m.lr, batch_size=b,
                          dirichlet_alpha=m.dirichlet_alpha, seed=0, mu=m.stch_mu, eps=m.epo_eps,
                          restricted=m.epo_restricted, desc=f"{method} (memory)")
            out["unit"] = "method.build + one step of conditioned.train (steps=1)"
            out["final_train_losses"] = facts["final_train_losses"]
        else:
            from bench.core.evaluator import Evaluator

            evaluator = Evaluator(suite, device, batch_size=job.get("eval_batch_size"))
            lam = np.full(T, 0.3)
            if method == "map":
                from bench.methods.map import _evaluate
                metrics = _evaluate(evaluator, suite, lam, "test")
            else:
                from bench.api import task_arithmetic
                metrics = evaluator.evaluate(lambda: task_arithmetic(theta0, tv, lam), "test",
                                             key=("ta", tuple(np.round(lam, 12))))
            out["unit"] = (f"one merged candidate (θ0 + 0.3 Σ τ) scored on {T} test splits of {b} images, "
                           f"Evaluator batch {evaluator.batch_size}")
            out["evaluator_batch_size"] = evaluator.batch_size
            out["accuracy"] = {t: metrics[t]["accuracy"] for t in metrics}
    if cuda:
        torch.cuda.synchronize(device)
    out["step_s"] = time.perf_counter() - t0
    out["step_peak_gib"] = _status_kib("VmHWM") / 2 ** 20
    out["step_above_build_gib"] = out["step_peak_gib"] - out["rss_reset_gib"]
    out["live_peak_gib"] = live.peak / GIB        # tensor bytes the unit allocated, at their peak (allocator-free)
    if cuda:
        out["step_cuda_peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    out["child_s"] = time.perf_counter() - t_start
    return out


# ---- the parent: plan, predict, run, extrapolate ----------------------------------------------------------
def mem_available_gib() -> float:
    try:
        line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemAvailable:"))
        return int(line.split()[1]) / 2 ** 20
    except (OSError, StopIteration):
        return float("inf")


def ram_gib() -> float | None:
    try:
        line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal:"))
        return round(int(line.split()[1]) / 2 ** 20, 1)
    except (OSError, StopIteration):
        return None


def environment(device: str, threads: int) -> dict:
    env = {"cpu": cpu_name(), "cpu_cores": len(os.sched_getaffinity(0)), "ram_gib": ram_gib(),
           "python": platform.python_version(), "device": device, "threads": threads, "nice": 10}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    env["git"] = git.stdout.strip() or None
    if device.startswith("cuda"):          # the GPU's name and memory (torch imported in a subprocess)
        probe = subprocess.run([sys.executable, "-c", "import torch, sys; print(torch.__version__); "
                                "c = torch.cuda.is_available(); print(torch.cuda.get_device_name(0) if c else ''); "
                                "print(torch.cuda.get_device_properties(0).total_memory if c else 0)"],
                               capture_output=True, text=True)
        lines = probe.stdout.splitlines() + ["", "", "0"]
    else:                                  # no torch import here: the version from the installed metadata
        from importlib.metadata import PackageNotFoundError, version
        try:
            lines = [version("torch"), "", "0"]
        except PackageNotFoundError:
            lines = ["", "", "0"]
    env["torch"] = lines[0] or None
    env["gpu"] = lines[1] or None
    env["gpu_memory_gib"] = round(int(lines[2] or 0) / GIB, 1) if lines[1] else None
    return env


class Runner:
    """Runs the measurements one at a time in fresh subprocesses and keeps the JSON up to date."""

    def __init__(self, args, env: dict, result: dict, out: Path | None, log=print):
        self.args, self.env, self.result, self.out, self.log = args, env, result, out, log
        self.done = {self.key(m): m for m in result["measurements"] if "error" not in m}

    @staticmethod
    def key(m: dict) -> tuple:
        return (m["arch"], m["T"], m["method"], m["batch"])

    def limit_gib(self) -> float:
        host = mem_available_gib() - self.args.margin_gib
        if self.args.device.startswith("cuda") and self.env.get("gpu_memory_gib"):
            return min(host, self.env["gpu_memory_gib"] - self.args.margin_gib) if self.args.cuda_host_check \
                else self.env["gpu_memory_gib"] - self.args.margin_gib
        return host

    def watchdog_gib(self) -> float:
        """The RSS at which a running measurement is stopped: what is available now (this process's
        children hold none between measurements) less half the margin."""
        return mem_available_gib() - self.args.margin_gib / 2

    def measure(self, arch: str, T: int, method: str, batch: int, predicted: float, why: str) -> dict | None:
        """One measurement (or its skip); the measurement's row, or None when skipped."""
        k = (arch, T, method, batch)
        if k in self.done:
            self.log(f"  {method:14s} {LABEL[arch]} T={T} batch {batch:>4}: reused from {self.out}")
            return self.done[k]
        if self.args.reuse_only:
            self.log(f"  {method:14s} {LABEL[arch]} T={T} batch {batch:>4}: not in {self.out} (--reuse-only)")
            return None
        limit = self.limit_gib()
        if predicted * self.args.safety > limit:
            what = "device memory" if self.args.device.startswith("cuda") else "MemAvailable"
            reason = (f"predicted peak {predicted:.1f} GiB (×{self.args.safety} = {predicted * self.args.safety:.1f})"
                      f" > {limit:.1f} GiB available ({what} less {self.args.margin_gib} GiB)")
            self.log(f"  {method:14s} {LABEL[arch]} T={T} batch {batch:>4}: SKIPPED, {reason}")
            self.result["skipped"].append({"arch": arch, "T": T, "method": method, "batch": batch,
                                           "predicted_gib": predicted, "reason": reason})
            self.save()
            return None
        job = {"suite": ARCHS[arch], "arch": arch, "T": T, "method": method, "batch": batch, "kind": kind_of(method),
               "device": self.args.device, "threads": self.args.threads,
               "eval_batch_size": self.args.eval_batch if kind_of(method) == "eval" else None}
        row = {"arch": arch, "suite": ARCHS[arch], "T": T, "method": method, "kind": job["kind"], "batch": batch,
               "images_in_flight": images(job["kind"], T, batch), "predicted_gib": predicted, "why": why}
        for attempt in (1, 2):
            t0 = time.perf_counter()
            res = run_child(job, self.args.child_timeout_s, self.watchdog_gib())
            row["wall_s"] = time.perf_counter() - t0
            if "error" not in res or res.get("killed") or attempt == 2:
                break
            # the code may be mid-edit (other writers): one retry a minute later
            self.log(f"  {method:14s} {LABEL[arch]} T={T} batch {batch:>4}: failed ({res['error'][-300:]}); "
                     f"retrying in 60 s")
            time.sleep(60)
        row.update(res)
        self.result["measurements"].append(row)
        self.save()
        if "error" in row:
            self.log(f"  {method:14s} {LABEL[arch]} T={T} batch {batch:>4}: FAILED ({row['error'][-500:]})")
            return None
        self.done[k] = row
        self.log(f"  {method:14s} {LABEL[arch]} T={T} batch {batch:>4}: build {row['build_peak_gib']:.2f} GiB, "
                 f"step {row['step_peak_gib']:.2f} GiB (predicted {predicted:.2f}), "
                 f"{row['step_s']:.0f} s step, {row['wall_s']:.0f} s wall ({why})")
        return row

    def save(self) -> None:
        if self.out is None:
            return
        from bench.core.record import atomic_write_text     # torch-free, like the rest of this process

        self.result["elapsed_s"] = time.time() - self.result["_t0"]
        atomic_write_text(self.out, json.dumps({k: v for k, v in self.result.items() if not k.startswith("_")},
                                               indent=1, default=json_default) + "\n")


def run_child(job: dict, timeout_s: float, rss_limit_gib: float = float("inf")) -> dict:
    """benchmarks/memory.py --child in a fresh process under `nice -n 10`; its JSON, or an error. A watchdog
    reads the child's RSS every 0.5 s and kills it past `rss_limit_gib` (the memory other work on the machine
    needs), reporting the RSS it had reached (a lower bound of its peak)."""
    with tempfile.TemporaryDirectory() as tmp:
        res_path = Path(tmp) / "child.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job), "--child-out", str(res_path)]
        if shutil.which("nice"):
            cmd = ["nice", "-n", "10", *cmd]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
               "OMP_NUM_THREADS": str(job["threads"]), "MKL_NUM_THREADS": str(job["threads"])}
        with open(Path(tmp) / "log", "w+") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
            t0, seen, why = time.monotonic(), 0.0, None
            while proc.poll() is None:
                try:
                    kib = next(int(ln.split()[1]) for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                               if ln.startswith("VmRSS:"))
                    seen = max(seen, kib / 2 ** 20)
                except (OSError, StopIteration, ValueError):
                    pass
                if seen > rss_limit_gib:
                    why = f"stopped by the watchdog at {seen:.1f} GiB RSS (limit {rss_limit_gib:.1f} GiB)"
                elif time.monotonic() - t0 > timeout_s:
                    why = f"timed out after {timeout_s:.0f} s"
                if why:
                    proc.kill()
                    proc.wait()
                    return {"error": why, "killed": True, "rss_reached_gib": seen}
                time.sleep(0.5)
            log.seek(0)
            tail = log.read().strip()[-1500:]
        if proc.returncode != 0 or not res_path.is_file():
            killed = proc.returncode in (-9, 137)
            return {"error": f"exit {proc.returncode}" + (" (killed: out of memory?)" if killed else "") + f": {tail}",
                    "killed": killed, "rss_reached_gib": seen}
        return json.loads(res_path.read_text())


# the peak that is tabled and extrapolated: the RSS on the CPU, CUDA's max allocated on a GPU (main sets it)
PEAK = {"step": "step_peak_gib", "build": "build_peak_gib"}
CUDA_PEAK = {"step": "step_cuda_peak_gib", "build": "build_cuda_peak_gib"}


def slope_of(lo: dict, hi: dict, key: str = "live_peak_gib") -> float:
    """GiB per image in flight between two measurements of the same configuration: of the tensor bytes the
    unit allocated at their peak (default: exact, what activations add per image), or of the RSS peak."""
    return (hi[key] - lo[key]) / (hi["images_in_flight"] - lo["images_in_flight"])


def extrapolate(lo: dict, slope: float, kind: str, T: int, batch: int) -> float:
    """peak(batch) = peak(lo) + (images(batch) − images(lo)) · slope."""
    return lo[PEAK["step"]] + (images(kind, T, batch) - lo["images_in_flight"]) * slope


# methods whose step holds no parameter-sized optimizer state: from the smallest batch on, their peak is the
# forward/backward's, so their RSS slope per image is the architecture's activations per image
ACTIVATION_METHODS = ("pwe_moe_ls", "pwe_moe_epo", "phn", "pareto_merging")


def affordable(runner: Runner, arch: str, T: int, method: str, batch: int, predicted: float) -> str | None:
    """None when a measurement at `batch` is predicted to fit in memory and in --max-step-s; else why not."""
    secs = predict_seconds(arch, T, method, batch)
    if secs > runner.args.max_step_s:
        return f"predicted time {secs:.0f} s > --max-step-s {runner.args.max_step_s:.0f}"
    if predicted * runner.args.safety > runner.limit_gib():
        return f"predicted peak {predicted:.1f} GiB (×{runner.args.safety}) > {runner.limit_gib():.1f} GiB available"
    return None


def validation_row(arch, T, method, target, how, slope_from, from_batches, direct, est, est_own=None) -> dict:
    err = est - direct[PEAK["step"]]
    above = direct[PEAK["step"]] - (direct["rss_reset_gib"] if PEAK["step"] == "step_peak_gib"
                                    else direct.get("build_cuda_allocated_gib", 0.0))
    row = {"arch": arch, "T": T, "method": method, "batch": target, "how": how, "slope_from": slope_from,
           "from_batches": from_batches, "measured_gib": direct[PEAK["step"]], "extrapolated_gib": est,
           "error_gib": err, "error_pct_of_step": 100 * err / direct[PEAK["step"]],
           "error_pct_of_step_above_build": 100 * err / above if above > 0 else None}
    if est_own is not None:          # with the configuration's own RSS slope instead (its two probes, or T=2's)
        row.update(extrapolated_own_slope_gib=est_own, error_own_slope_gib=est_own - direct[PEAK["step"]])
    return row


class Slopes:
    """What one T of an architecture leaves for the next: the activation slope per image (median RSS slope of
    ACTIVATION_METHODS' probes at the first T), each method's own slope and smallest probe (the anchor of a
    prediction where a later T cannot measure it)."""

    def __init__(self):
        self.act: dict[str, float] = {}
        self.act_src: dict[str, str] = {}
        self.own: dict[tuple, float] = {}
        self.own_src: dict[tuple, str] = {}
        self.anchor: dict[tuple, dict] = {}


def slope_for(sl: Slopes, arch: str, method: str, kind: str, own: float | None, own_src: str | None):
    """(slope per image, where from, whether the RSS of the small batches peaked elsewhere) used to extrapolate:
    a training step: the architecture's activation slope where known, else the method's own; an evaluation:
    its own (a no-grad batch's transient per image)."""
    if kind != "eval" and arch in sl.act:
        return sl.act[arch], sl.act_src[arch]
    if own is not None:
        return own, own_src
    if (arch, method) in sl.own:
        return sl.own[(arch, method)], sl.own_src[(arch, method)] + " (same method and arch)"
    return None, None


def anchored(sl: Slopes, runner: Runner, arch: str, T: int, method: str, batch: int) -> float | None:
    """A prediction anchored on this method's smallest probe at an earlier T: + the build's growth (measured
    at this T where another method measured it), + EPO's per-task gradient copies of the parameters, + the
    activations of the extra images."""
    lo = sl.anchor.get((arch, method))
    if lo is None:
        return None
    kind = kind_of(method)
    slope, _ = slope_for(sl, arch, method, kind, None, None)
    builds = [m[PEAK["build"]] for m in runner.result["measurements"]
              if m["arch"] == arch and m["T"] == T and PEAK["build"] in m]
    build = median(builds) if builds else predict_build(arch, T)
    p4 = lo["theta_tv_gib"] / (1 + lo["T"])
    per_task = EXTRA_COPIES.get(method, (5.0, 1.0))[1]
    return (lo[PEAK["step"]] + (build - lo[PEAK["build"]]) + per_task * (T - lo["T"]) * p4
            + (slope or 0.0) * (images(kind, T, batch) - lo["images_in_flight"]))


def probe_plan(runner: Runner, arch: str, T: int, method: str, sl: Slopes, *, first_T: bool,
               validate_eval: bool) -> list[int]:
    """The small batches to measure for (arch, T, method): at the first T both (the slopes; with the real
    batch, the check of the extrapolation), at a later T the smallest only (the slope is the first T's:
    activations per image do not depend on T). An evaluation measured directly gets probes only when
    `validate_eval` (the first evaluation method at the first T)."""
    args, kind = runner.args, kind_of(method)
    target = args.eval_batch if kind == "eval" else args.batch
    probes = sorted(set(args.eval_probes if kind == "eval" else args.probes) - {target})
    pred = anchored(sl, runner, arch, T, method, target) or predict_step(arch, T, method, target)
    direct_ok = affordable(runner, arch, T, method, target, pred) is None
    if direct_ok and kind == "eval" and not validate_eval:
        return []
    if not first_T:
        return probes[:1]
    return probes


def measure_probes(runner: Runner, arch: str, T: int, method: str, probes: list[int], sl: Slopes) -> dict:
    kind, rows = kind_of(method), {}
    for b in probes:
        pred = anchored(sl, runner, arch, T, method, b) or predict_step(arch, T, method, b)
        if rows:
            lo = rows[min(rows)]
            s, _ = slope_for(sl, arch, method, kind, None, None)
            if s is not None:
                pred = extrapolate(lo, s, kind, T, b)
        r = runner.measure(arch, T, method, b, pred, "probe")
        if r is not None:
            rows[b] = r
    return rows


def finish_cell(runner: Runner, arch: str, T: int, method: str, rows: dict, sl: Slopes) -> dict:
    """The real batch (measured where affordable, else extrapolated from the probes, else predicted) and the
    table's cell; where both exist, the check of the extrapolation against the measurement."""
    args, kind = runner.args, kind_of(method)
    target = args.eval_batch if kind == "eval" else args.batch
    cell = {"arch": arch, "suite": ARCHS[arch], "T": T, "method": method, "kind": kind, "batch": target,
            "unit": "eval batch (images)" if kind == "eval" else "train batch per task (images)"}
    measured = sorted(rows)
    own = own_src = None
    if len(measured) >= 2:
        lo, hi = rows[measured[0]], rows[measured[-1]]
        own, own_src = slope_of(lo, hi, PEAK["step"]), f"T={T} batches {measured[0]},{measured[-1]}"
        cell["slope_own_gib_per_image"] = own
        cell["slope_live_gib_per_image"] = slope_of(lo, hi, "live_peak_gib")
    elif (arch, method) in sl.own:
        own, own_src = sl.own[(arch, method)], sl.own_src[(arch, method)] + " (same method and arch)"
    slope, slope_src = slope_for(sl, arch, method, kind, own if len(measured) >= 2 else None,
                                 own_src if len(measured) >= 2 else None)
    if measured and slope is not None:
        est = extrapolate(rows[measured[0]], slope, kind, T, target)
        how = "extrapolated" if len(measured) >= 2 else "extrapolated (slope from T=2)"
    else:
        est = anchored(sl, runner, arch, T, method, target) or predict_step(arch, T, method, target)
        how = "predicted"
    if target in rows:
        direct = rows[target]
    else:
        direct = None
        why_not = affordable(runner, arch, T, method, target, est)
        if why_not is None:
            direct = runner.measure(arch, T, method, target, est, "real batch")
            if direct is None:
                cell["direct_skipped"] = "failed or skipped (see measurements / skipped)"
        else:
            runner.log(f"  {method:14s} {LABEL[arch]} T={T} batch {target:>4}: not measured directly: {why_not}")
            cell["direct_skipped"] = why_not
    builds = [r[PEAK["build"]] for r in ([direct] if direct else []) + list(rows.values())]
    cell["build_gib"] = builds[0] if builds else predict_build(arch, T)
    cell["build_kind"] = "measured" if builds else "predicted"
    if direct is not None:
        cell.update(step_gib=direct[PEAK["step"]], step_kind="measured",
                    measured_batches=sorted({*measured, target}))
        if args.device.startswith("cuda"):     # the host's side of a CUDA measurement
            cell.update(build_rss_gib=direct.get("build_peak_gib"), step_rss_gib=direct.get("step_peak_gib"))
        if measured and slope is not None and target not in rows:
            lo = rows[measured[0]]
            est_own = extrapolate(lo, own, kind, T, target) if own is not None else None
            v = validation_row(arch, T, method, target, how, slope_src, measured, direct, est, est_own)
            runner.result["validation"].append(v)
            runner.log(f"  {method:14s} {LABEL[arch]} T={T}: extrapolated {est:.2f} GiB ({how}, slope {slope_src}) "
                       f"vs measured {direct['step_peak_gib']:.2f}: {v['error_gib']:+.2f} GiB"
                       + (f" (with its own slope: {v['error_own_slope_gib']:+.2f})" if est_own is not None else ""))
    else:
        cell.update(step_gib=est, step_kind=how, measured_batches=measured)
        if kind == "ray" and how != "predicted":
            cell["note"] = ("upper bound: at the small batches this step peaks in its Adam step (parameter-sized "
                            "gradient and moments), so peak(small) + activations over-counts that part")
    if slope is not None:
        cell.update(slope_gib_per_image=slope, slope_from=slope_src)
    cell["probes"] = {str(b): {"build_gib": r[PEAK["build"]], "step_gib": r[PEAK["step"]],
                               "live_peak_gib": r["live_peak_gib"],
                               **({"step_cuda_gib": r.get("step_cuda_peak_gib")} if "step_cuda_peak_gib" in r else {})}
                      for b, r in rows.items()}
    cell["data_gib"] = sum(TEST_SIZES[t] for t in CLIP_TASKS[:T]) * IMAGE_BYTES / GIB
    return cell


def run_T(runner: Runner, arch: str, T: int, methods: list[str], sl: Slopes, *, first_T: bool,
          first_eval: str | None) -> list[dict]:
    """Every method at (arch, T): all probes first (at the first T they give the activation slope), then the
    real batches and the cells."""
    rows = {}
    for m in methods:
        plan = probe_plan(runner, arch, T, m, sl, first_T=first_T, validate_eval=first_T and m == first_eval)
        rows[m] = measure_probes(runner, arch, T, m, plan, sl)
    if first_T:
        acts = [slope_of(r[min(r)], r[max(r)], PEAK["step"]) for m, r in rows.items()
                if m in ACTIVATION_METHODS and len(r) >= 2]
        if acts:
            sl.act[arch] = median(acts)
            sl.act_src[arch] = (f"T={T}: median RSS slope of {len(acts)} methods without parameter-sized optimizer "
                                f"state ({', '.join(f'{a:.3f}' for a in acts)} GiB per image)")
            runner.result.setdefault("activation_slopes", {})[arch] = {
                "gib_per_image": sl.act[arch], "from": sl.act_src[arch],
                "per_method": {m: slope_of(r[min(r)], r[max(r)], PEAK["step"]) for m, r in rows.items()
                               if len(r) >= 2}}
            runner.log(f"  activation slope {LABEL[arch]}: {sl.act[arch]:.3f} GiB per image ({sl.act_src[arch]})")
    cells = []
    for m in methods:
        cells.append(finish_cell(runner, arch, T, m, rows[m], sl))
        r = rows[m]
        if first_T and len(r) >= 2:
            sl.own[(arch, m)] = slope_of(r[min(r)], r[max(r)], PEAK["step"])
            sl.own_src[(arch, m)] = f"T={T}"
        if r and (arch, m) not in sl.anchor:
            sl.anchor[(arch, m)] = r[min(r)]
        runner.save()
    return cells


SHORT = {"measured": "", "extrapolated": " e", "extrapolated (slope from T=2)": " e²", "predicted": " p"}


def table(cells: list[dict], archs: list[str], tasks: list[int], methods: list[str], *, cuda: bool = False) -> str:
    """Markdown: rows = methods (+ the build), columns = arch × T; GiB (peak RSS, or CUDA's max allocated on a
    GPU), each marked as the legend says."""
    cols = [(a, T) for a in archs for T in tasks]
    by = {(c["arch"], c["T"], c["method"]): c for c in cells}
    what = "GiB, CUDA max allocated" if cuda else "GiB, peak RSS"
    lines = [f"| {what} | " + " | ".join(f"{LABEL[a]} T={T}" for a, T in cols) + " |", "|---|" + "---:|" * len(cols)]

    def builds(a, T):
        v = [c["build_gib"] for c in cells if c["arch"] == a and c["T"] == T and c["build_kind"] == "measured"]
        return f"{sorted(v)[len(v) // 2]:.1f}" if v else "–"

    lines.append("| build (suite: model, θ0, T task vectors) | " + " | ".join(builds(a, T) for a, T in cols) + " |")
    for m in methods:
        row = []
        for a, T in cols:
            c = by.get((a, T, m))
            row.append("–" if c is None else f"{c['step_gib']:.1f}{SHORT.get(c['step_kind'], ' ?')}")
        unit = "1 eval batch" if kind_of(m) == "eval" else "1 step"
        lines.append(f"| {m} ({unit}) | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n" + "\n".join(__doc__.splitlines()[2:5]) + "\n")
    ap.add_argument("--archs", default="b32,l14", help="comma-separated: b32, b16, l14 (default b32,l14)")
    ap.add_argument("--tasks", default="2,8", help="task counts T, comma-separated (default 2,8; at most 8)")
    ap.add_argument("--methods", default="all", help="comma-separated method names, or all (every built-in method)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every measurement (default 2)")
    ap.add_argument("--batch", type=int, default=16, help="images per task of a training step (default 16, the "
                    "suites' train_batch_size)")
    ap.add_argument("--eval-batch", type=int, help="Evaluator batch of the evaluation unit (default: bench run's, "
                    "64 on the CPU, 1024 on CUDA)")
    ap.add_argument("--probes", default="1,2", help="small training batches measured for the extrapolation")
    ap.add_argument("--eval-probes", default="1,4", help="small evaluation batches measured for the extrapolation")
    ap.add_argument("--max-step-s", type=float, default=240.0, help="measure the real batch directly only when its "
                    "measurement is predicted to take at most this long (default 240)")
    ap.add_argument("--margin-gib", type=float, default=2.0, help="memory left free: skip a measurement predicted "
                    "above MemAvailable (or the device's memory) less this (default 2)")
    ap.add_argument("--safety", type=float, default=SAFETY, help=f"a prediction times this must fit (default {SAFETY})")
    ap.add_argument("--cuda-host-check", action="store_true", help="on CUDA, also require the host RAM to fit")
    ap.add_argument("--child-timeout-s", type=float, default=1800.0)
    ap.add_argument("--json", help="write the JSON here (rewritten after every measurement)")
    ap.add_argument("--markdown", help="write the markdown table here")
    ap.add_argument("--resume", action="store_true", help="reuse the measurements already in --json")
    ap.add_argument("--reuse-only", action="store_true", help="with --resume: measure nothing new, only rebuild "
                    "the table and the checks from the measurements in --json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        sys.path.insert(0, str(ROOT))
        res = child(json.loads(args.child))
        Path(args.child_out).write_text(json.dumps(res, default=json_default))
        return 0

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        print(f"error: --archs {bad[0]!r}; valid choices: {', '.join(ARCHS)}", file=sys.stderr)
        return 2
    tasks = sorted(_ints(args.tasks))
    if not tasks or min(tasks) < 1 or max(tasks) > len(CLIP_TASKS):
        print(f"error: --tasks {args.tasks!r}: task counts between 1 and {len(CLIP_TASKS)}", file=sys.stderr)
        return 2
    from bench.core.registry import METHODS

    known = [m for m in METHODS.names() if not METHODS.entry(m).plugin]
    methods = ([m for m in METHOD_ORDER if m in known] + [m for m in known if m not in METHOD_ORDER]
               if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()])
    bad = [m for m in methods if m not in known]
    if bad:
        print(f"error: --methods {bad[0]!r}; valid choices: {', '.join(known)}, all", file=sys.stderr)
        return 2
    if args.eval_batch is None:
        args.eval_batch = 1024 if args.device.startswith("cuda") else 64
    if args.device.startswith("cuda"):
        PEAK.update(CUDA_PEAK)
        SPEEDUP[0] = 100.0
    args.probes, args.eval_probes = _ints(args.probes), _ints(args.eval_probes)

    env = environment(args.device, args.threads)
    if args.device.startswith("cuda") and not env["gpu"]:
        print(f"error: --device {args.device}: no CUDA device here (torch {env['torch']}); --device cpu measures "
              f"the host", file=sys.stderr)
        return 2
    out = Path(args.json) if args.json else None
    now = dt.datetime.now(dt.timezone.utc)
    result = {"schema": SCHEMA, "created": now.isoformat(timespec="seconds"), "date": now.date().isoformat(),
              "command": "python benchmarks/memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "env": env,
              "settings": {"archs": archs, "tasks": tasks, "methods": methods, "device": args.device,
                           "threads": args.threads, "batch": args.batch, "eval_batch": args.eval_batch,
                           "probes": args.probes, "eval_probes": args.eval_probes, "max_step_s": args.max_step_s,
                           "margin_gib": args.margin_gib, "safety": args.safety, "units": "GiB (2^30 bytes)",
                           "peak": "VmHWM (resident high-water mark) of a fresh process; CUDA: max_memory_allocated",
                           "suite_overrides": ["tasks.weights=random", "tasks.synthetic_size=1 (training) or the "
                                               "evaluation batch (evaluation)"]},
              "measurements": [], "cells": [], "validation": [], "skipped": [], "earlier_failures": [],
              "_t0": time.time()}
    if args.resume and out is not None and out.is_file():
        old = json.loads(out.read_text())
        result["measurements"] = [m for m in old.get("measurements", []) if "error" not in m]
        result["earlier_failures"] = old.get("earlier_failures", []) + [m for m in old.get("measurements", [])
                                                                        if "error" in m]
        result["_t0"] -= old.get("elapsed_s", 0.0)
    runner = Runner(args, env, result, out)
    print(f"memory: {', '.join(LABEL[a] for a in archs)} × T = {', '.join(map(str, tasks))} × {len(methods)} methods "
          f"on {args.device} ({env['gpu'] or env['cpu']}, {env['cpu_cores']} cores, {env['ram_gib']} GiB RAM), "
          f"{args.threads} torch threads, nice 10; {mem_available_gib():.1f} GiB available now")
    sl = Slopes()
    first_eval = next((m for m in methods if kind_of(m) == "eval"), None)
    for a in archs:
        for T in tasks:
            print(f"{LABEL[a]} T={T}:")
            result["cells"] += run_T(runner, a, T, methods, sl, first_T=T == tasks[0], first_eval=first_eval)
    result["elapsed_s"] = time.time() - result["_t0"]
    md = table(result["cells"], archs, tasks, methods, cuda=args.device.startswith("cuda"))
    result["table_markdown"] = md
    runner.save()
    print()
    print(md)
    print("\nmarks: none = measured at the real batch; e = extrapolated linearly from two smaller batches of the same "
          "configuration; e² = one smaller batch here, the slope per image from T=2; p = predicted (not measured)")
    if result["validation"]:
        print("\nextrapolation check (extrapolated − measured at the real batch):")
        for v in result["validation"]:
            print(f"  {v['method']:14s} {LABEL[v['arch']]} T={v['T']}: {v['extrapolated_gib']:.2f} vs "
                  f"{v['measured_gib']:.2f} GiB, {v['error_gib']:+.2f} GiB ({v['error_pct_of_step']:+.1f} %), "
                  f"{v['how']}, slope {v['slope_from']}")
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    failed = [m for m in result["measurements"] if "error" in m]
    print(f"\nmemory: {len(result['measurements']) - len(failed)} measurements, {len(failed)} failed, "
          f"{len(result['skipped'])} skipped by prediction, {result['elapsed_s'] / 60:.1f} min"
          + (f"; {out}" if out else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
