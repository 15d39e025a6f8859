"""The Evaluator: the only code that runs a suite's models on evaluation data.

    >>> import tasks
    >>> from bench.registry import SUITES
    >>> suite = SUITES.build("toy-quadratic")
    >>> ev = Evaluator(suite)
    >>> m = ev.evaluate(suite.theta0(), "test", key=("theta0",))
    >>> sorted(m) == suite.tasks and ev.evaluations == 1
    True

Fast path: evaluation tensors are moved once per suite+split to the device and kept there in
their compact stored form (uint8 images), prepared per batch; large
batches; `torch.inference_mode`; bf16 autocast on CUDA; parameters applied with
`torch.func.functional_call` (no model copies). Results are cached by (suite key, split, merge
recipe): a repeated candidate costs nothing. `evaluations` counts full passes of one merged model
over one split (all requested tasks), the unit of cost reported in records.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any, Callable, Hashable, Sequence

import torch

from bench.merge import Params, params_hash
from bench.registry import BenchError


class Evaluator:
    def __init__(self, suite, device: str | torch.device = "cpu", batch_size: int | None = None,
                 amp: bool | None = None):
        self.suite = suite
        self.device = torch.device(device)
        # large batches fill a GPU; on a CPU small ones stay in cache (tiny-clip, 2 cores: 10.1k
        # images/s at 64 against 6.8k at 1024)
        self.batch_size = batch_size or (1024 if self.device.type == "cuda" else 64)
        self.amp = (self.device.type == "cuda") if amp is None else amp
        self.counts: Counter = Counter()
        self._counting = True
        self._results: dict[Hashable, dict] = {}
        self._data: dict[tuple[str, str], list[dict[str, torch.Tensor]]] = {}

    @property
    def evaluations(self) -> int:
        return sum(self.counts.values())

    @contextlib.contextmanager
    def uncounted(self):
        """Evaluations inside (e.g. reference models for the record) do not count as method cost."""
        prev, self._counting = self._counting, False
        try:
            yield self
        finally:
            self._counting = prev

    def evaluate(self, params: Params | Callable[[], Params], split: str = "test", *,
                 key: Hashable | None = None, tasks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Per-task metrics {task: {"loss": float, "accuracy": float | None}} of merged `params`.

        `key` is the merge recipe (e.g. ("ta", λ…)); without one the parameters are hashed.
        `params` may be a callable that builds them, called only on a cache miss.
        """
        tasks = list(self.suite.tasks if tasks is None else tasks)
        unknown = [t for t in tasks if t not in self.suite.tasks]
        if unknown:
            raise BenchError(f"unknown task {unknown[0]!r}; valid choices: {', '.join(self.suite.tasks)}")
        if split not in ("train", "val", "test"):
            raise BenchError(f"unknown split {split!r}; valid choices: train, val, test")
        if key is None:
            params = params() if callable(params) else params
            key = ("hash", params_hash(params))
        ck = (self.suite.key, split, key, tuple(tasks))
        if ck not in self._results:
            params = params() if callable(params) else params
            with torch.inference_mode():
                self._results[ck] = {t: self._score(params, t, split) for t in tasks}
            if self._counting:
                self.counts[split] += 1
        return {t: dict(m) for t, m in self._results[ck].items()}

    def _score(self, params: Params, task: str, split: str) -> dict[str, Any]:
        suite = self.suite
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct, n, has_acc = torch.zeros((), dtype=torch.float64, device=self.device), 0, True
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp
                    else contextlib.nullcontext())
        for raw in self._batches(task, split):
            batch = suite.prepare(raw, self.device)
            with autocast:
                l, c, k = suite.batch_metrics(params, task, batch)
            loss_sum += l.double()                  # summed on the device, read once per task
            if c is None:
                has_acc = False
            else:
                correct += c
            n += k
        if n == 0:
            raise BenchError(f"task {task!r} has no {split} examples")
        return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n if has_acc else None}

    def _batches(self, task: str, split: str) -> list[dict[str, torch.Tensor]]:
        """Stored (compact, e.g. uint8) batches, moved to the device once per task+split;
        `suite.prepare` turns each into model inputs on the fly."""
        if (task, split) not in self._data:
            data = {k: v.to(self.device) for k, v in self.suite.eval_data(task, split).items()}
            n = len(next(iter(data.values())))
            self._data[(task, split)] = [{k: v[i:i + self.batch_size] for k, v in data.items()}
                                         for i in range(0, n, self.batch_size)]
        return self._data[(task, split)]


def references(evaluator: Evaluator, split: str = "test") -> dict[str, dict[str, dict]]:
    """The pre-trained model on every task and each fine-tuned model on its own task (uncounted)."""
    suite = evaluator.suite
    with evaluator.uncounted():
        pre = evaluator.evaluate(suite.theta0, split, key=("theta0",))
        ft = {t: evaluator.evaluate(lambda i=i: suite.finetuned(i), split, key=("finetuned", i), tasks=[t])[t]
              for i, t in enumerate(suite.tasks)}
    return {"pretrained": pre, "finetuned": ft}
