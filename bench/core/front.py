"""The front a method returns: a typed object with pymoo's names.

    >>> import numpy as np
    >>> f = Front(tasks=["a", "b"], objective="accuracy", X=np.array([[0.3, 0.7]]),
    ...           x_names=["lambda_a", "lambda_b"],
    ...           metrics=[{"a": {"loss": 0.2, "accuracy": 0.9}, "b": {"loss": 0.5, "accuracy": 0.8}}])
    >>> f.to_minimization()
    array([[0.1, 0.2]])

`to_minimization` is the one place where signs flip: loss stays loss, accuracy becomes error = 1 − accuracy.
Files a method leaves for its record (PWE-MoE's trained routers) travel in `artifacts`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# objective → (sign, offset): minimization form = offset + sign · value
MINIMIZATION = {"loss": (1.0, 0.0), "accuracy": (-1.0, 1.0)}
OBJECTIVES = tuple(MINIMIZATION)


def to_minimization(values: np.ndarray, objective: str) -> np.ndarray:
    """Per-task objective values → minimization form (loss as is, accuracy → 1 − accuracy)."""
    if objective not in MINIMIZATION:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    sign, offset = MINIMIZATION[objective]
    return offset + sign * np.asarray(values, dtype=float)


@dataclass
class Front:
    tasks: list[str]
    objective: str                       # "loss" (lower is better) or "accuracy" (higher is better)
    X: np.ndarray                        # [n, k]: what identifies each candidate (coefficients, ray)
    x_names: list[str]
    metrics: list[dict[str, dict[str, float | None]]]   # per point: {task: {"loss", "accuracy"}}
    split: list[str] | str = "test"      # per point, or one split for all
    extras: list[dict[str, Any]] | None = None          # per point: mu, train losses, routing, kind …
    include: np.ndarray | None = None    # bool mask: points that count for indicators (default all)
    meta: dict[str, Any] = field(default_factory=dict)  # method metadata (fallback counts, fit quality …)
    cost: dict[str, Any] = field(default_factory=dict)  # train_steps, trainable_params (the run adds the rest)
    artifacts: dict[str, bytes] = field(default_factory=dict)  # files written beside record.json

    def __post_init__(self):
        self.X = np.asarray(self.X, dtype=float).reshape(len(self.metrics), -1)
        if self.X.shape[1] != len(self.x_names):
            raise ValueError(f"X has {self.X.shape[1]} columns but {len(self.x_names)} x_names")
        if self.extras is None:
            self.extras = [{} for _ in self.metrics]
        if self.include is None:
            self.include = np.ones(len(self.metrics), dtype=bool)
        self.include = np.asarray(self.include, dtype=bool)
        if isinstance(self.split, str):
            self.split = [self.split] * len(self.metrics)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; valid: {', '.join(OBJECTIVES)}")

    def __len__(self) -> int:
        return len(self.metrics)

    @property
    def F(self) -> np.ndarray:
        """[n, T] per-task objective values in their natural direction (NaN where missing)."""
        return natural_values(self.metrics, self.tasks, self.objective)

    def to_minimization(self) -> np.ndarray:
        return to_minimization(self.F, self.objective)


def natural_values(metrics, tasks, objective: str) -> np.ndarray:
    """[n, T] per-point values of `objective` (from per-point {task: {metric: value}}), NaN where missing."""
    return np.array([[np.nan if m[t].get(objective) is None else float(m[t][objective]) for t in tasks]
                     for m in metrics], dtype=float).reshape(len(metrics), len(tasks))
