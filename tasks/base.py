"""The Suite interface every task family implements, and `ModelSuite` for real networks.

    >>> from bench.registry import SUITES
    >>> import tasks  # registers every suite
    >>> suite = SUITES.build("toy-quadratic", num_tasks=2)
    >>> suite.tasks, suite.objective
    (['task0', 'task1'], 'loss')

A suite owns θ0 (the pre-trained merge-able parameters, a flat `dict[str, Tensor]`), the task
vectors τ_i = θ_i − θ0 stacked per parameter (`[T, *shape]`), frozen per-task heads, data, the
objective and the HV reference point (in minimization space). Methods read these; only the
Evaluator (bench/evaluator.py) runs a suite on evaluation data.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.merge import Params

SPLITS = ("train", "val", "test")


class Suite:
    name: str = ""            # registry name, e.g. "toy-quadratic"
    version: str = "0"        # bump whenever numbers would change
    objective: str = "loss"   # "loss" (lower is better) or "accuracy"
    analytic: bool = False    # closed-form losses, no data
    random_weights: bool = False  # benchmark-only suites never enter a leaderboard
    tasks: list[str]
    _theta0: Params
    _task_vectors: Params

    # ---- what methods read -------------------------------------------------------------
    def theta0(self) -> Params:
        return self._theta0

    def task_vectors(self) -> Params:
        return self._task_vectors

    def finetuned(self, i: int) -> Params:
        """θ_i = θ0 + τ_i."""
        return {n: t0 + self._task_vectors[n][i] for n, t0 in self._theta0.items()}

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def ref_point(self) -> np.ndarray:
        """HV reference point in minimization space (default error 1.0 = accuracy 0 per task)."""
        return np.ones(self.num_tasks)

    def true_front(self) -> np.ndarray | None:
        """Analytic Pareto front in minimization space, [n, T]; None where unknown."""
        return None

    def loss(self, params: Params, task: str, batch: Any) -> torch.Tensor:
        """Differentiable training loss of task `task` at `params` on `batch`."""
        raise NotImplementedError

    def train_batch(self, task: str, batch_size: int, generator: torch.Generator) -> Any:
        """One labelled training batch of task `task` (None for analytic suites)."""
        return None

    def to(self, device: str | torch.device) -> "Suite":
        self._theta0 = {k: v.to(device) for k, v in self._theta0.items()}
        self._task_vectors = {k: v.to(device) for k, v in self._task_vectors.items()}
        self.device = torch.device(device)
        return self

    device: torch.device = torch.device("cpu")

    # ---- identity -----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The suite's resolved settings (JSON-able); part of its key."""
        return {}

    @property
    def key(self) -> str:
        """Identifies suite + task subset + settings + version: records that share it are comparable."""
        blob = json.dumps({"name": self.name, "tasks": self.tasks, "version": self.version,
                           "config": self.config()}, sort_keys=True, default=str)
        return f"{self.name}@{self.version}:{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def describe(self) -> str:
        return f"{self.name} v{self.version}: {', '.join(self.tasks)}"


class ModelSuite(Suite):
    """A suite of real networks: a shared backbone (whose parameters are merged) and frozen per-task
    heads. Subclasses fill `backbone`, `heads`, `_theta0`, `_task_vectors` and `_data` and implement
    `features`; evaluation data lives in `_data[task][split]` as a dict of CPU tensors with "labels".
    """

    objective = "accuracy"
    backbone: torch.nn.Module
    heads: torch.nn.ModuleDict
    _data: dict[str, dict[str, dict[str, torch.Tensor]]]

    def features(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone features at `params` (via torch.func.functional_call), [B, D]."""
        raise NotImplementedError

    def prepare(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """Stored tensors → model inputs on `device` (e.g. uint8 images → normalised floats)."""
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def logits(self, params: Params, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.heads[task](self.features(params, batch))

    def loss(self, params: Params, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.logits(params, task, batch).float(), batch["labels"])

    def eval_data(self, task: str, split: str) -> dict[str, torch.Tensor]:
        if split not in self._data[task]:          # suites that load splits lazily (published data)
            self._data[task][split] = self._split_data(task, split)
        return self._data[task][split]

    def _split_data(self, task: str, split: str) -> dict[str, torch.Tensor]:
        raise KeyError(f"{self.name} has no {split} data for task {task!r}")

    def train_batch(self, task: str, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        data = self.eval_data(task, "train")
        n = len(data["labels"])
        idx = torch.randint(n, (batch_size,), generator=generator)
        return self.prepare({k: v[idx] for k, v in data.items()}, self.device)

    def to(self, device):
        super().to(device)
        self.backbone.to(device)
        self.heads.to(device)
        return self
