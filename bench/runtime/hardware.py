"""The machine a run uses: device, threads, seeds, peak memory and the environment a record describes.

    >>> resolve_device("cpu").type, choose_threads(3, None, resolve_device("cpu"))
    ('cpu', 3)

Peak memory is the run's own: CUDA's peak allocated (reset per run), and on Linux the process's resident
high-water mark reset at the run's start (`reset_peak_memory`), so a worker running job after job (the
leaderboard's, a Hydra launcher's) reports each run's peak, not the largest so far.
"""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import random
import resource
import subprocess
from pathlib import Path

import numpy as np
import torch

from bench.core.registry import BenchError
from bench.runtime.interrupt import interruptible

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SMALL_MODEL = 20_000_000     # merge-able parameters below which one intra-op thread is fastest
CLEAR_REFS, STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


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
    load_torch_compiler()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def load_torch_compiler() -> None:
    """Import torch._dynamo (with inductor and triton) now, holding SIGINT and SIGTERM until it is loaded, then
    raising them. torch loads it lazily (here, at the first optimizer's `add_param_group`, at `torch.compile`),
    ~1 s on this machine's CPU, and a Ctrl-C landing in the init of one of its pybind11 extensions (triton's)
    was lost: pybind11 turns the KeyboardInterrupt into an ImportError, which torch reads as "no triton", and
    the run went on as if nothing had been pressed."""
    with interruptible():
        import torch._dynamo  # noqa: F401


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device={device!r} but no CUDA device is available; valid choices: auto, cpu")
    return torch.device(device)


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
