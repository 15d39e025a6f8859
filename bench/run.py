"""The orchestrator: suite → method → front → indicators → record.

    python -m bench run method=ta_grid tasks=toy-quadratic seed=0 out=results/runs

`run(cfg)` is the whole pipeline; everything it calls lives in its own module.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import random
import resource
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from bench import indicators
from bench.config import build_from_config
from bench.evaluator import Evaluator, references
from bench.record import SCHEMA, ensure_writable, load_records, record_F, write_run
from bench.registry import METHODS, SUITES, BenchError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run(cfg) -> Path:
    """Run one method on one suite and write its record; returns the path of record.json."""
    from omegaconf import OmegaConf

    import methods  # noqa: F401  (registration)
    import tasks  # noqa: F401

    out = ensure_writable(cfg.out)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    suite = build_from_config(SUITES, cfg.tasks, "tasks").to(device)
    method = build_from_config(METHODS, cfg.method, "method")
    evaluator = Evaluator(suite, device, batch_size=cfg.eval_batch_size)
    torch.set_num_threads(choose_threads(cfg.get("threads"), suite, device))

    reset_peak_memory(device)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):   # numpy's BLAS in methods: small matrices, reproducible sums
        front = method.approximate_front(suite, evaluator=evaluator, seed=cfg.seed)
    wall = time.perf_counter() - t0
    peak = peak_memory_mb(device)

    refs = references(evaluator)
    record = {
        "schema": SCHEMA, "suite": suite.name, "suite_key": suite.key, "suite_version": suite.version,
        "suite_config": suite.config(), "tasks": list(suite.tasks), "weights": "random" if suite.random_weights else "real",
        "method": cfg.method.name, "method_paper": getattr(method, "paper", ""),
        "seed": int(cfg.seed), "run_id": cfg.run_id or new_run_id(cfg.seed),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "objective": suite.objective, "ref_point": suite.ref_point().tolist(),
        "references": refs, "points": points_of(front), "meta": front.meta,
        "cost": {"wall_s": wall, "evaluations": evaluator.evaluations,
                 "evaluations_by_split": dict(evaluator.counts),
                 "train_steps": int(front.cost.get("train_steps", 0)),
                 "trainable_params": int(front.cost.get("trainable_params", 0)),
                 "peak_mem_mb": peak, "peak_mem_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
                 **{k: v for k, v in front.cost.items() if k not in ("train_steps", "trainable_params")}},
        "env": environment(device),
    }
    record["indicators"], record["igd_ref"] = score(record, suite, out)
    path = write_run(out, record, OmegaConf.to_yaml(cfg), files=front.meta.pop("_files", None))
    ind = record["indicators"]
    print(f"{record['method']} on {suite.describe()}: hv={ind['hv']:.6g} igd+={_fmt(ind['igd_plus'])} "
          f"points={ind['n_points']} nondominated={ind['n_nondominated']} evaluations={evaluator.evaluations} "
          f"wall={wall:.2f}s")
    print(path)
    return path


def points_of(front) -> list[dict[str, Any]]:
    F = front.to_minimization()
    nd = np.zeros(len(front), dtype=bool)
    for group in (front.include, ~front.include):   # predicted points are ranked among themselves
        idx = np.flatnonzero(group)
        nd[idx] = indicators.nondominated_mask(F[idx])
    return [{"x": dict(zip(front.x_names, map(float, front.X[i]))), "metrics": front.metrics[i],
             "split": front.split[i], "nondominated": bool(nd[i]), "include": bool(front.include[i]),
             **front.extras[i]} for i in range(len(front))]


def score(record: dict, suite, out: Path) -> tuple[dict, dict]:
    """Indicators of the record's included points: HV at the suite's reference point, HV on
    accuracy normalised by each fine-tuned model, and GD/IGD/IGD+ to the analytic front where
    there is one, else to the pooled non-dominated union of every record on this suite key."""
    F = record_F(record)
    pf = suite.true_front()
    if pf is not None:
        igd_ref = {"kind": "analytic"}
    else:
        pool = [record_F(r) for r in load_records(out, suite.name) if r.get("suite_key") == suite.key]
        pooled = np.vstack([F, *pool]) if pool else F
        pooled = pooled[np.isfinite(pooled).all(axis=1)]
        pf = pooled[indicators.nondominated_mask(pooled)] if len(pooled) else None
        igd_ref = {"kind": "pooled", "n_records": len(pool) + 1}
    if pf is not None:
        igd_ref.update(hash=indicators.front_hash(pf), n_points=int(len(pf)))
    ind = indicators.compute_all(F, indicators.Context(ref_point=np.asarray(record["ref_point"]), pf=pf))
    ind["hv_normalized"] = hv_normalized(record)
    return ind, igd_ref


def hv_normalized(record: dict) -> float | None:
    """HV of normalised error 1 − acc/acc_ft (each task's own fine-tuned accuracy), reference 1."""
    if record["objective"] != "accuracy":
        return None
    ft = np.array([record["references"]["finetuned"][t]["accuracy"] for t in record["tasks"]])
    if not (ft > 0).all():      # e.g. random-weight benchmark models: undefined
        return None
    F = 1.0 - (1.0 - record_F(record)) / ft
    return indicators.hypervolume(F[np.isfinite(F).all(axis=1)], np.ones(len(ft)))[0]


SMALL_MODEL = 20_000_000     # merge-able parameters below which one intra-op thread is fastest


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device={device!r} but no CUDA device is available; valid choices: auto, cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise BenchError(f"unknown device {device!r}; valid choices: auto, cpu, cuda, cuda:N")
    return torch.device(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def new_run_id(seed: int) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-s{seed}-{uuid.uuid4().hex[:6]}"


def environment(device: torch.device) -> dict[str, str]:
    import pymoo
    import transformers

    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        git = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"git": git, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "pymoo": pymoo.__version__,
            "device": f"{device} ({name})", "threads": str(torch.get_num_threads()), "host_os": os.uname().sysname}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
