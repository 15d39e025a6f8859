"""The stable API: everything a method, suite or indicator written outside this repository may use.

    from dataclasses import dataclass
    from bench.api import Front, Method, task_arithmetic

    @dataclass(frozen=True)
    class MyGrid(Method):
        points: int = 11                       # the typed constructor is the config schema

        def approximate_front(self, suite, *, evaluator, seed, checkpoints=None) -> Front:
            ...                                # every candidate is scored by evaluator.evaluate(params, split, key=...)

Declare it in your package's pyproject (entry-point groups `paretobench.methods`, `paretobench.suites`,
`paretobench.indicators`: `my_grid = "my_pkg.grid:MyGrid"`), or register it in a module you name with
`plugins=[my_pkg.grid]` (`@register_method("my_grid")`). README, "Add your own method / suite / model pool".

What this module exports is a promise kept across versions; every other module of `bench` may change.
Names are imported on first use (importing this module loads neither torch nor transformers):

    >>> import bench.api
    >>> bench.api.ray_grid(2, partitions=2).tolist()
    [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # the things a plugin is made of
    "Method": "bench.methods.base:Method",                   # base class of a method (one verb: approximate_front)
    "Front": "bench.core.front:Front",                            # what approximate_front returns
    "Suite": "bench.tasks.base:Suite",                       # base class of a suite (θ0, task vectors, data)
    "ModelSuite": "bench.tasks.base:ModelSuite",             # a suite of real networks (backbone + per-task heads)
    "select_tasks": "bench.tasks.base:select_tasks",         # the one tasks.names check
    "SPLITS": "bench.tasks.base:SPLITS",
    "EvaluatorProtocol": "bench.core.evaluator:EvaluatorProtocol",   # what `evaluator` offers a method
    "Metrics": "bench.core.evaluator:Metrics",
    "Params": "bench.core.merge:Params",                          # dict[str, Tensor]: merge-able parameters
    "BenchError": "bench.core.registry:BenchError",               # a user's mistake: printed as one line, exit 2
    "unknown_choice": "bench.core.registry:unknown_choice",       # the message of a bad name: a close match, every choice
    "to_minimization": "bench.core.front:to_minimization",        # objective values → minimization form (error = 1 − acc)
    "nondominated_mask": "bench.core.indicators:nondominated_mask",   # which points of a minimization-form F are non-dominated
    # registering outside the entry points (a module named by plugins=[...])
    "register_method": "bench.api:_register_method",
    "register_suite": "bench.api:_register_suite",
    "indicator": "bench.core.indicators:indicator",               # decorator: f(ctx) → value, with its label and direction
    "IndicatorContext": "bench.core.indicators:Context",
    # merging
    "task_arithmetic": "bench.core.merge:task_arithmetic",        # θ0 + Σ λ_i τ_i
    "stack_task_vectors": "bench.core.merge:stack_task_vectors",
    "check_compatible": "bench.core.merge:check_compatible",
    "params_hash": "bench.core.merge:params_hash",
    # preferences
    "ray_grid": "bench.core.rays:ray_grid",
    "simplex_grid": "bench.core.rays:simplex_grid",
    "n_das_dennis": "bench.core.rays:n_das_dennis",
    "validate_preference": "bench.core.rays:validate_preference",
    # scalarizers: a preference and per-task losses → a descent direction
    "SCALARIZERS": "bench.methods.scalarize:SCALARIZERS",
    "scalarized": "bench.methods.scalarize:scalarized",
    "descent": "bench.methods.scalarize:descent",
    # training state, progress, interruption, workers
    "Checkpoints": "bench.runtime.rundir:Checkpoints",               # due(step), save(name, state), load(name)
    "progress": "bench.runtime.progress:progress",
    "interruptible": "bench.runtime.interrupt:interruptible",        # signals held until stop.check() between steps
    "fan_out": "bench.runtime.parallel:fan_out",                     # independent units on workers=N (Ray), in order
    "prefetch": "bench.runtime.parallel:prefetch",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"bench.api has no {name!r}; the stable API is: {', '.join(__all__)}")
    module, _, attr = _EXPORTS[name].partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _register_method(name: str, description: str = "", **defaults: Any):
    """Decorator: a method class registered under `name` (with `defaults` over its constructor's)."""
    from bench.core.registry import METHODS

    return METHODS.register(name, description, **defaults)


def _register_suite(name: str, description: str = "", **defaults: Any):
    """Decorator: a suite class registered under `name` (with `defaults` over its constructor's)."""
    from bench.core.registry import SUITES

    return SUITES.register(name, description, **defaults)
