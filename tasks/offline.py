"""`OfflineSuite`: what the offline suites (tiny-clip, tiny-gpt2) share: their common options, the
cache id of a build, the build itself and its process pool, and the learning-rate schedule.

    >>> from bench.tasks.offline import schedule
    >>> [round(schedule(step, 10, warmup_frac=0.2), 3) for step in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.038]
    >>> from bench.tasks.tiny_gpt2 import TinyGPT2
    >>> TinyGPT2.build_id(0, TinyGPT2.default_sizes())
    'v2-seed0'
    >>> TinyGPT2.build_id(1, {**TinyGPT2.default_sizes(), "finetune_steps": 3})
    'v2-seed1-d841d1cc13'

A subclass declares every option in its constructor's signature, the one place defaults live, and
supplies only what differs: `build_theta0` (data, θ0, heads), `finetune_task` (one θ_i), `_load`,
`features`/`prepare`. A build, once per version × seed × build sizes, runs:
  1. `build_theta0`, in this process;
  2. on the build pool: `finetune_task` for every task, then for each pair of tasks, as soon as its
     two θ_i exist, the shared-λ task-arithmetic line of the quality bars (tasks/quality.py);
  3. the quality bars through the Evaluator, printed and stored in the manifest (`build_info`).
The pool is `build_workers` spawned processes, started before θ0 trains so that their imports overlap
it; each runs one torch thread, and a watchdog thread ends it as soon as the building process is gone
(killed or not). Every job's result depends only on its inputs (seed, task, the files under the build
directory), never on the worker that ran it: a build is bit-identical for any `build_workers`.
Scripts that build a suite need the usual `if __name__ == "__main__":` guard (spawned workers import
the caller's main module).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import itertools
import json
import math
import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator

import torch
from tqdm.auto import tqdm

from bench.core.evaluator import Evaluator
from bench.api import BenchError
from bench.tasks.base import ModelSuite, check_eval_size, select_tasks
from bench.tasks.cache import cache_root, cached_build, manifest_info
from bench.tasks.models import quiet_hf
from bench.tasks.quality import format_bars, pair_line, quality_bars

COMMON_OPTIONS = ("names", "seed", "cache_dir", "build_workers", "eval_size", "eval_seed")   # the rest: build sizes


def schedule(step: int, steps: int, warmup_frac: float) -> float:
    """Linear warm-up over `warmup_frac` of the steps, then cosine decay to 0 (a factor on the peak lr)."""
    warm = max(1, int(warmup_frac * steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def fit(params: Iterable[torch.nn.Parameter], loss_at: Callable[[], torch.Tensor], steps: int, *, lr: float,
        weight_decay: float, warmup_frac: float, max_grad_norm: float | None = None, desc: str | None = None) -> None:
    """AdamW on `params` for `steps` steps at lr · `schedule`; `loss_at()` draws a batch and returns its loss."""
    params = list(params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    for step in tqdm(range(steps), desc=desc, leave=False, disable=desc is None):
        for g in opt.param_groups:
            g["lr"] = lr * schedule(step, steps, warmup_frac)
        loss = loss_at()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads (restored after). Builds train on one thread: the
    weights are then bit-identical whatever the core count, and a busy CPU does not stall them (two
    OpenMP threads per process competing with other processes for 2 cores ran ~50× slower)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # not on Linux
        return os.cpu_count() or 1


class OfflineSuite(ModelSuite):
    """A suite built by the harness itself, cached under `<cache_dir>/<name>/<build_id>`."""

    TASK_NAMES: ClassVar[list[str]]
    eval_batch: ClassVar[int]            # Evaluator batch of the build's quality bars

    def __init__(self, names: list[str] | None, seed: int, cache_dir: str | None, build_workers: int | None,
                 eval_size: int | None = None, eval_seed: int = 0, **sizes: int):
        self.tasks = select_tasks(names, self.TASK_NAMES, self.name)
        check_eval_size(eval_size)
        self.eval_size, self.eval_seed = eval_size, eval_seed
        for k, v in {**sizes, "build_workers": 1 if build_workers is None else build_workers}.items():
            if v < 1:
                raise BenchError(f"tasks.{k}={v} must be ≥ 1")
        self.seed, self.sizes = int(seed), sizes
        self.build_workers = build_workers or min(usable_cores(), len(self.TASK_NAMES))
        root = Path(cache_dir).expanduser() if cache_dir else cache_root()
        self.cache_path = cached_build(root / self.name / self.build_id(self.seed, sizes), self._build)
        with quiet_hf():
            self._load(self.cache_path)
        self.subset_eval_data()

    @classmethod
    def default_sizes(cls) -> dict[str, int]:
        """The build sizes with their defaults, read from the constructor's signature."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items() if k not in ("self", *COMMON_OPTIONS)}

    @classmethod
    def build_id(cls, seed: int, sizes: dict[str, int]) -> str:
        """Cache sub-directory of one build: version × seed, plus a hash of the sizes that differ from
        their defaults (each variant is a build of its own)."""
        defaults = cls.default_sizes()
        changed = {k: v for k, v in sizes.items() if v != defaults[k]}
        tag = f"v{cls.version}-seed{seed}"
        if changed:
            tag += "-" + hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:10]
        return tag

    @classmethod
    def from_dir(cls, path: Path, seed: int, sizes: dict[str, int], names: list[str] | None = None) -> "OfflineSuite":
        """The suite in a build directory as it is, without the cache's checks (the build scores itself)."""
        self = cls.__new__(cls)
        self.tasks, self.seed, self.sizes, self.cache_path = list(names or cls.TASK_NAMES), seed, dict(sizes), Path(path)
        with quiet_hf():
            self._load(self.cache_path)
        return self

    def config(self):
        return {"seed": self.seed, **self.sizes, **self.eval_config()}

    @property
    def build_info(self) -> dict:
        """What the build measured (quality bars, timings): the manifest's info."""
        return manifest_info(self.cache_path)

    def describe(self) -> str:
        return f"{self.name} v{self.version} (seed {self.seed}): {', '.join(self.tasks)}{self.subset_note()}"

    # ---- what a subclass supplies -----------------------------------------------------------------
    def _load(self, path: Path) -> None:
        """Fill backbone, heads, θ0, task vectors and data for `self.tasks` from a build directory."""
        raise NotImplementedError

    @classmethod
    def build_theta0(cls, out: Path, seed: int, sizes: dict[str, int], timings: dict[str, float]) -> None:
        """Write the data, θ0 and the heads under `out` (adding `data_s`, `pretrain_s` to `timings`)."""
        raise NotImplementedError

    @classmethod
    def finetune_task(cls, out: Path, seed: int, sizes: dict[str, int], task: str) -> None:
        """Write θ_task under `out`, from the files `build_theta0` wrote; seeded by (seed, task) only."""
        raise NotImplementedError

    # ---- the build ------------------------------------------------------------------------------
    @classmethod
    def trace_line(cls, out: Path, seed: int, sizes: dict[str, int], a: str, b: str) -> list[list[float]]:
        """The shared-λ task-arithmetic line of tasks a and b (test accuracies at λ = 0.1 … 1)."""
        suite = cls.from_dir(out, seed, sizes, [a, b])
        return pair_line(suite, Evaluator(suite, "cpu", batch_size=cls.eval_batch), a, b).tolist()

    def _build(self, out: Path) -> dict:
        """Build into `out` (see the module docstring); returns the manifest's info."""
        cls, seed, sizes = type(self), self.seed, self.sizes
        timings: dict[str, float] = {}
        start = time.perf_counter()
        with quiet_hf(), torch_threads(1), build_pool(self.build_workers, cls.__module__) as pool:
            cls.build_theta0(out, seed, sizes, timings)
            t = time.perf_counter()
            lines = run_jobs(pool, self.build_workers, cls, out, seed, sizes)
            timings["finetune_and_lines_s"] = time.perf_counter() - t
            t = time.perf_counter()
            suite = cls.from_dir(out, seed, sizes)
            bars = quality_bars(suite, Evaluator(suite, "cpu", batch_size=cls.eval_batch), lines=lines)
            timings["bars_s"] = time.perf_counter() - t
        timings = {k: round(v, 2) for k, v in {**timings, "total_s": time.perf_counter() - start}.items()}
        print(format_bars(self.name, bars, timings))
        return {"bars": bars, "timings": timings, "seed": seed, "sizes": sizes, "build_workers": self.build_workers}


# ---- the build pool -------------------------------------------------------------------------------
def run_jobs(pool: Executor, workers: int, cls: type[OfflineSuite], out: Path, seed: int, sizes: dict) -> dict:
    """Fine-tune every task on `pool`, then trace each pair's line as soon as its two θ_i exist, keeping
    `workers` jobs in flight (fine-tuning first: it unlocks pairs). Returns {"a+b": line}."""
    todo: list[tuple[str, ...]] = [("finetune_task", t) for t in cls.TASK_NAMES]
    running: dict[Future, tuple[str, ...]] = {}
    finished: set[str] = set()
    lines = {}
    n_jobs = len(cls.TASK_NAMES) * (len(cls.TASK_NAMES) + 1) // 2
    with tqdm(total=n_jobs, desc=f"{cls.name} fine-tuning θ_i, merging lines", leave=False) as bar:
        while todo or running:
            while todo and len(running) < workers:
                job = todo.pop(0)
                running[pool.submit(_run_job, cls, out, seed, sizes, *job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                hook, *tasks = running.pop(future)
                result = future.result()          # a worker's exception, re-raised here
                bar.update()
                if hook == "trace_line":
                    lines["+".join(tasks)] = result
                    continue
                finished.add(tasks[0])
                todo += [("trace_line", a, b) for a, b in itertools.combinations(cls.TASK_NAMES, 2)
                         if tasks[0] in (a, b) and {a, b} <= finished]
    return lines


def _run_job(cls: type[OfflineSuite], out: Path, seed: int, sizes: dict, hook: str, *args: str):
    with quiet_hf():
        return getattr(cls, hook)(out, seed, sizes, *args)


class InProcess(Executor):
    """The Executor of a one-worker build: each job runs when submitted, in this process."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:      # raised by `result()`, as a pool's worker errors are
            future.set_exception(e)
        return future


@contextlib.contextmanager
def build_pool(workers: int, module: str) -> Iterator[Executor]:
    """`workers` spawned processes (fork would copy torch's thread pools) with one thread each, already
    importing `module` when the block starts; `workers` = 1: this process, no pool. On leaving, jobs
    not yet started are cancelled and running ones are waited for."""
    if workers <= 1:
        yield InProcess()
        return
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(dict.fromkeys(saved, "1"))          # read by the workers' OpenMP and MKL at start
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    try:
        for _ in range(workers):            # each submission while no worker is idle starts one
            pool.submit(_import, module)
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def _import(module: str) -> None:
    importlib.import_module(module)


def _worker_init(parent: int) -> None:
    """A pool worker: one torch thread, and a watchdog that ends the process once `parent` is gone.
    SIGKILL or SIGTERM to the building process leaves it no chance to shut the pool down, and an
    orphaned worker (~1 GB) would otherwise wait for its next job forever."""
    torch.set_num_threads(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
