"""The orchestrator: suite → method → front → indicators → record.

    python -m bench run method=ta_grid tasks=toy-quadratic seed=0 out=results/runs

`run(cfg)` is the whole pipeline; everything it calls lives in its own module. `cfg` is a composed,
validated config (bench.config.compose).
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import gc
import os
import platform
import random
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from bench import indicators, parallel
from bench.config import build_from_config, settings
from bench.evaluator import Evaluator, references
from bench.record import EXAMPLES, RunRecord, check_writable, examples_file, write_run
from bench.rundir import JOURNAL, Checkpoints, Journal, claim, find_resumable, run_directory
from bench.registry import INDICATORS, METHODS, SUITES, BenchError, load_plugins, plugins_used

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMALL_MODEL = 20_000_000     # merge-able parameters below which one intra-op thread is fastest


def run(cfg) -> Path:
    """Run one method on one suite and write its record; returns the path of record.json."""
    from omegaconf import OmegaConf

    s = settings(cfg)
    load_plugins(s.plugins)                      # a launcher job in another process: before any name is resolved
    check_writable(s.out)
    config = OmegaConf.to_container(cfg, resolve=True)
    directory = (find_resumable(s.out, cfg.tasks.name, cfg.method.name, config, s.resume) if s.resume else
                 run_directory(s.out, cfg.tasks.name, cfg.method.name, s.run_id or new_run_id(s.seed)))
    with claim(directory, config, resume=s.resume is not None):
        device = resolve_device(s.device)
        deterministic = device.type == "cpu" if s.deterministic is None else s.deterministic
        seed_everything(s.seed, deterministic)
        suite = build_from_config(SUITES, cfg.tasks, "tasks").to(device)
        method = build_from_config(METHODS, cfg.method, "method")
        evaluator = Evaluator(suite, device, batch_size=s.eval_batch_size, compile=s.compile,
                              journal=Journal(directory / JOURNAL))
        checkpoints = Checkpoints(directory, s.checkpoint_every)
        torch.set_num_threads(choose_threads(s.threads, suite, device))
        compile_s = evaluator.warm_up() if s.compile else None

        setup = parallel.Setup.of(config["tasks"], device, threads=torch.get_num_threads(), deterministic=deterministic,
                                  seed=s.seed, eval_batch_size=s.eval_batch_size, compile=s.compile,
                                  plugins=tuple(s.plugins))

        reset_peak_memory(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with threadpool_limits(limits=1, user_api="blas"), parallel.workers(s.workers, setup):
            # numpy's BLAS in methods: small matrices, reproducible sums; independent units on `workers`
            front = method.approximate_front(suite, evaluator=evaluator, seed=s.seed, checkpoints=checkpoints)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = peak_memory_mb(device)

        pf = suite.true_front()
        record = RunRecord.from_front(
            front, suite=suite.name, method=cfg.method.name, ref_point=suite.ref_point(), suite_key=suite.key,
            suite_version=suite.version, suite_config=suite.config(), analytic=pf is not None,
            weights="random" if suite.random_weights else "real", method_paper=getattr(method, "paper", ""),
            method_url=getattr(method, "url", ""),
            seed=s.seed, run_id=directory.name,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            config=config, references=references(evaluator), meta=front.meta,
            cost={"wall_s": wall, "cpu_s": cpu, **({"compile_s": compile_s} if s.compile else {}),
                  "evaluations": evaluator.evaluations, "evaluations_by_split": dict(evaluator.counts),
                  "train_steps": 0, "trainable_params": 0, **front.cost, "peak_mem_mb": peak,
                  "peak_mem_kind": peak_memory_kind(device),
                  **({"resumed_from": directory.name, "evaluations_reused": evaluator.reused} if s.resume else {})},
            env={**environment(device), "deterministic": deterministic},
            plugins=tuple(plugins_used([METHODS.entry(cfg.method.name), SUITES.entry(cfg.tasks.name), *INDICATORS])))
        ctx = indicators.Context(record.F_included, record.ref_point, pf=pf, objective=record.objective,
                                 finetuned=record.reference_values("finetuned"), rays=indicators.record_rays(record))
        excluded = record.excluded()
        if not record.include.any():
            raise BenchError(f"{record.method}: no point has finite metrics ({excluded['n_diverged']} diverged in "
                             f"training, {excluded['n_nonfinite']} non-finite); nothing to score or record")
        record = record.replace(indicators={**indicators.compute(ctx, indicators.per_record(record.analytic)), **excluded},
                                igd_ref={"kind": "analytic", "hash": indicators.front_hash(pf), "n_points": len(pf)}
                                if pf is not None else {})
        warn_excluded(excluded, len(record.F))
        examples = examples_file(front.metrics)
        if examples is not None:
            record = record.replace(artifacts=tuple(sorted({*record.artifacts, EXAMPLES})))
        path = write_run(directory, record, OmegaConf.to_yaml(cfg),
                         {**front.artifacts, **({EXAMPLES: examples} if examples is not None else {})})
    ind = record.indicators
    print(f"{record.method} on {suite.describe()}: hv={ind['hv']:.6g} igd+={_fmt(ind.get('igd_plus'))} "
          f"points={ind['n_points']} nondominated={ind['n_nondominated']} evaluations={evaluator.evaluations} "
          f"wall={wall:.2f}s")
    print(path)
    return path


def warn_excluded(excluded: dict[str, int], n: int) -> None:
    if any(excluded.values()):
        print(f"warning: {excluded['n_diverged']} of {n} points diverged in training and {excluded['n_nonfinite']} "
              f"have non-finite metrics; they are flagged in the record and left out of the indicators",
              file=sys.stderr)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # not on Linux
        return os.cpu_count() or 1


def choose_threads(requested: int | None, suite, device: torch.device) -> int:
    """torch's intra-op threads: as requested, else one for small models on the CPU (tiny-clip on
    2 shared cores ran 11× faster on one thread than on torch's default two: thread
    synchronisation dominates, and spinning OpenMP threads collapse when cores are shared), else
    the cores this process may use."""
    if requested is not None:
        return int(requested)
    n_params = sum(t.numel() for t in suite.theta0().values())
    return 1 if device.type == "cpu" and n_params < SMALL_MODEL else available_cores()


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device={device!r} but no CUDA device is available; valid choices: auto, cpu")
    return torch.device(device)


CLEAR_REFS, STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> None:
    """The run's own peak from here: CUDA's peak allocated, and on Linux the process's resident high-water mark
    (VmHWM, reset to the current RSS by writing 5 to /proc/self/clear_refs), so that a worker process running job
    after job (the leaderboard's, a Hydra launcher's) reports each run's peak, not the largest so far."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gc.collect()                               # an earlier run's garbage in this process: freed, and
    _malloc_trim()                             # its heap pages handed back, so they are not counted here
    try:
        CLEAR_REFS.write_text("5")
    except OSError:                            # not Linux, or /proc read-only: peak_memory_kind says so
        pass


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _vm_hwm_kib()
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0   # KiB → MiB


def peak_memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda_max_allocated"
    return "run_max_rss" if _vm_hwm_kib() is not None and os.access(CLEAR_REFS, os.W_OK) else "process_max_rss"


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):           # not glibc
        pass


def _vm_hwm_kib() -> int | None:
    try:
        line = next(ln for ln in STATUS.read_text().splitlines() if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1])


def new_run_id(seed: int) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-s{seed}-{uuid.uuid4().hex[:6]}"


def environment(device: torch.device) -> dict[str, str]:
    import pymoo
    import transformers

    native = os.environ.get("PARETOBENCH_CPU_ISA", "avx2").lower() == "native"   # (bench/__init__.py; not read from
                                                          # there: a worker may see bench/ as a user's namespace folder)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        git = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"git": git, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "pymoo": pymoo.__version__,
            "device": f"{device} ({name})", "threads": str(torch.get_num_threads()), "host_os": os.uname().sysname,
            "cpu_isa": torch.backends.cpu.get_cpu_capability() if not native else "native", "cpu": cpu_model()}


def cpu_model() -> str:
    """The processor's model name (Linux), recorded because CPU runs differ across vendors at the last digits."""
    try:
        return next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
