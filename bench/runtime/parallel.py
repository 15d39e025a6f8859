"""Within-run fan-out: a run's independent units on `workers=N` Ray workers, results as in one process.

    python -m bench run method=ls tasks=toy-quadratic workers=2          # 2 local worker processes
    python -m bench run method=map tasks=clip-vit-b32 device=cuda workers=8   # one GPU per worker

    >>> list(fan_out(lambda worker, x: x * x, [1, 2, 3], suite=None))   # no `workers` block: here, in order
    [1, 4, 9]

`bench.runtime.run` opens `workers(n, setup)` around the method. Inside, with n > 1, `fan_out(fn, items, suite)`
runs `fn(worker, item)` as Ray tasks, at most n at a time (one CPU each; one GPU each on CUDA), and yields the
results on the CPU in the order of `items`. A worker rebuilds the run's suite once from its config (an offline
suite loads from the disk cache in about a second) with the run's device, threads and determinism, so a unit
computes the same numbers there as here. With n = 1, or outside a `workers` block, `fn` runs here, lazily, one
item at a time. Ray starts on first use: the cluster RAY_ADDRESS names, the one a job of Hydra's Ray launcher
runs in, or else a local instance with n CPUs, stopped when the block ends.

Evaluations stay the run's own: ls/epo workers return trained parameters that the run's Evaluator scores;
`prefetch` scores evaluation recipes (MAP's design points) on the workers and records each in the run's
Evaluator (`Evaluator.record`: cached, journaled and counted as if scored here).
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, NamedTuple, Sequence

import torch

from bench.core.registry import BenchError


@dataclass(frozen=True)
class Setup:
    """What a worker needs to rebuild the run's suite and score as the run does."""

    tasks: str                      # the run's tasks config, as JSON
    device: str                     # "cpu" or "cuda" (Ray gives each task its own GPU)
    threads: int
    deterministic: bool
    seed: int
    eval_batch_size: int | None = None
    compile: bool = False
    plugins: tuple[str, ...] = ()   # plugins= modules, imported on the worker before the suite is resolved

    @classmethod
    def of(cls, tasks_config: dict, device: torch.device, **kwargs) -> "Setup":
        return cls(tasks=json.dumps(tasks_config, sort_keys=True), device=device.type, **kwargs)


class Worker(NamedTuple):
    suite: Any
    evaluator: Any                  # a scratch Evaluator on a worker (its results go to the run's); None here


_POOL: "_Pool | None" = None


class _Pool:
    def __init__(self, n: int, setup: Setup):
        self.n, self.setup, self.remote, self.started = n, setup, None, False

    def task(self):
        if self.remote is None:
            import logging

            import ray

            if not ray.is_initialized():
                gpus = torch.cuda.device_count() if self.setup.device == "cuda" else 0
                local = {} if os.environ.get("RAY_ADDRESS") else {"num_cpus": self.n, "num_gpus": gpus}
                ray.init(include_dashboard=False, logging_level=logging.WARNING, **local)
                self.started = True
            self.remote = ray.remote(_call).options(num_cpus=1, num_gpus=int(self.setup.device == "cuda"))
        return self.remote


@contextlib.contextmanager
def workers(n: int, setup: Setup) -> Iterator[None]:
    """`fan_out` inside runs on `n` Ray workers (n > 1) built from `setup`."""
    global _POOL
    previous, _POOL = _POOL, _Pool(n, setup) if n > 1 else None
    try:
        yield
    finally:
        pool, _POOL = _POOL, previous
        if pool is not None and pool.started:
            import ray

            ray.shutdown()


def fan_out(fn: Callable[[Worker, Any], Any], items: Iterable, suite) -> Iterator:
    """fn(worker, item) for each item, in order: on the workers of the enclosing `workers` block, else here
    (with this process's `suite`). `fn` must pickle (a module-level function or a partial of one)."""
    items = list(items)
    if _POOL is None:
        for item in items:
            yield fn(Worker(suite, None), item)
        return
    import ray

    task, setup_ref, fn_ref = _POOL.task(), ray.put(_POOL.setup), ray.put(fn)
    pending: dict = {}                  # in flight: object ref → index
    finished: dict = {}                 # index → object ref, until its turn comes
    submitted = 0
    try:
        for i in range(len(items)):
            while i not in finished:
                while submitted < len(items) and len(pending) < _POOL.n:
                    pending[task.remote(setup_ref, fn_ref, items[submitted])] = submitted
                    submitted += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                finished[pending.pop(ready[0])] = ready[0]
            yield _get(finished.pop(i))
    finally:                            # stopped early (an error, a signal): drop the work not yet done
        for ref in pending:
            ray.cancel(ref)


def prefetch(evaluator, split: str, recipes: Sequence[tuple[Hashable, Callable]],
             tasks: Sequence[str] | None = None) -> None:
    """With workers: score on them every recipe (key, build(suite) → params) that `evaluator` has not paid for,
    and record the metrics in `evaluator`; the caller's own `evaluator.evaluate` then finds them cached. Without
    workers, nothing (the caller evaluates as usual)."""
    if _POOL is None:
        return
    todo: dict = {}
    for key, build in recipes:
        if key not in todo and not evaluator.known(key, split, tasks):
            todo[key] = build
    items = [(key, build, split, tasks) for key, build in todo.items()]
    for (key, *_), metrics in zip(items, fan_out(_score, items, evaluator.suite)):
        evaluator.record(metrics, split, key=key, tasks=tasks)


# ---- on a worker ----------------------------------------------------------------------------------
_WORKERS: dict[Setup, Worker] = {}


def _worker(setup: Setup) -> Worker:
    """This process's suite and scratch Evaluator for `setup`, built once."""
    if setup not in _WORKERS:
        from bench.runtime.config import build_from_config
        from bench.core.evaluator import Evaluator
        from bench.core.registry import SUITES, load_plugins
        from bench.runtime.hardware import seed_everything

        load_plugins(setup.plugins)
        seed_everything(setup.seed, setup.deterministic)
        torch.set_num_threads(setup.threads)
        device = torch.device(setup.device)
        suite = build_from_config(SUITES, json.loads(setup.tasks), "tasks").to(device)
        _WORKERS[setup] = Worker(suite, Evaluator(suite, device, batch_size=setup.eval_batch_size,
                                                  compile=setup.compile))
    return _WORKERS[setup]


def _call(setup: Setup, fn: Callable, item):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):    # as the run's own process
        return _to_cpu(fn(_worker(setup), item))


def _score(worker: Worker, item) -> dict:
    key, build, split, tasks = item
    return worker.evaluator.evaluate(lambda: build(worker.suite), split, key=key, tasks=tasks)


def _to_cpu(obj):
    """Tensors of a result moved to the CPU (the driver may have no GPU, or another one)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def _get(ref):
    """A task's result; a BenchError raised on a worker is raised here as itself (one line)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, BenchError):
            raise e.cause from None
        raise
