"""The Evaluator: the only code that runs a suite's models on evaluation data.

    >>> from bench.core.registry import SUITES
    >>> suite = SUITES.build("toy-quadratic")
    >>> ev = Evaluator(suite)
    >>> m = ev.evaluate(suite.theta0(), "test", key=("theta0",))
    >>> sorted(m) == suite.tasks and ev.evaluations == 1
    True

Fast path: every split lives once per process on the device in its compact stored form (uint8
images, int token ids), shared by every Evaluator and trainer through `DEVICE_DATA`, which evicts
the least recently used split rather than run out of memory; batches are views of it, prepared
(e.g. uint8 → normalised) directly in the compute dtype; bf16 autocast on CUDA;
`torch.inference_mode`; parameters applied with `torch.func.functional_call` (no model copies);
losses and correct counts are summed on the device and read once per task and split (no host
sync per batch); `compile=True` runs the forward through `torch.compile`. Results are cached by
(suite key, split, merge recipe): a repeated candidate costs nothing. With a `journal`
(bench/runtime/rundir.py's `Journal`) every evaluation is appended as it completes and a resumed run reads them back
instead of recomputing. `evaluations` counts full passes of one merged model over one split (all
requested tasks), the unit of cost in records, across attempts (`reused`: those read back).
Metrics that `bench.runtime.parallel` workers computed enter through `record`: cached, journaled and
counted as if computed here.
"""
from __future__ import annotations

import base64
import contextlib
import time
from collections import Counter, OrderedDict
from typing import Any, Callable, ContextManager, Hashable, Protocol, Sequence

import numpy as np
import torch

from bench.core.merge import Params, params_hash
from bench.core.registry import BenchError

Batch = dict[str, torch.Tensor]


class DeviceData:
    """Splits on their device, shared by the process, bounded by the device's memory.

    `get(suite, task, split, device)` returns the split's tensors on `device`: moved there once, then
    reused by every Evaluator and trainer. On a GPU the store keeps at most `budget` bytes (default:
    the free memory less a reserve for models and activations); the least recently used splits are
    dropped to make room, and a split larger than the budget stays in pinned host memory, copied
    per batch without blocking. On the CPU the stored tensors are used in place.
    """

    RESERVE = 0.25             # share of the GPU's memory kept for weights, activations, workspaces

    def __init__(self, budget_bytes: int | None = None):
        self.budget_bytes = budget_bytes
        self._store: OrderedDict[tuple, Batch] = OrderedDict()

    @staticmethod
    def nbytes(data: Batch) -> int:
        return sum(v.numel() * v.element_size() for v in data.values())

    def budget(self, device: torch.device) -> int:
        if self.budget_bytes is not None:
            return self.budget_bytes
        free, total = torch.cuda.mem_get_info(device)
        return int(free + self.used(device) - self.RESERVE * total)

    def used(self, device: torch.device) -> int:
        return sum(self.nbytes(d) for (_, _, _, dev), d in self._store.items() if dev == str(device))

    def get(self, suite, task: str, split: str, device: torch.device) -> Batch:
        data = suite.eval_data(task, split)
        if device.type != "cuda":
            return data
        key = (suite.key, task, split, str(device))
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        size, budget = self.nbytes(data), self.budget(device)
        if size > budget:                       # never fits: host memory, pinned, copied per batch
            return {k: v.pin_memory() if not v.is_cuda else v for k, v in data.items()}
        while self._store and self.used(device) + size > budget:
            self._store.popitem(last=False)     # least recently used first
            torch.cuda.empty_cache()
        self._store[key] = {k: v.to(device, non_blocking=True) for k, v in data.items()}
        return self._store[key]

    def clear(self) -> None:
        self._store.clear()


DEVICE_DATA = DeviceData()


class EvaluatorProtocol(Protocol):
    """What a method may ask of the `evaluator` it is given (the stable API; `Evaluator` implements it)."""

    suite: Any
    evaluations: int                     # full passes of one merged model over one split so far (the cost unit)

    def evaluate(self, params: Params | Callable[[], Params], split: str = "test", *,
                 key: Hashable | None = None, tasks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Per-task metrics {task: {"loss", "accuracy"}} of merged `params` (or of a callable building them,
        called only on a cache miss); `key` names the merge recipe (cache, journal, resume)."""

    def known(self, key: Hashable, split: str = "test", tasks: Sequence[str] | None = None) -> bool:
        """Whether `key` is already paid for (cached, or journaled by an earlier attempt)."""

    def uncounted(self) -> ContextManager:
        """Evaluations inside do not count as the method's cost (e.g. reference models)."""


class Evaluator:
    def __init__(self, suite, device: str | torch.device | None = None, batch_size: int | None = None,
                 amp: bool | None = None, compile: bool = False, journal=None):
        self.suite = suite
        self.device = torch.device(device) if device is not None else suite.device
        # large batches fill a GPU; on a CPU small ones stay in cache (tiny-clip, 2 cores: 10.1k
        # images/s at 64 against 6.8k at 1024)
        self.batch_size = batch_size or (1024 if self.device.type == "cuda" else 64)
        self.amp = (self.device.type == "cuda") if amp is None else amp
        self.dtype = torch.bfloat16 if self.amp else None
        self.counts: Counter = Counter()
        self._counting = True
        self._results: dict[Hashable, dict] = {}
        self._metrics = torch.compile(suite.batch_metrics) if compile else suite.batch_metrics
        self.compile_s = 0.0
        self.journal, self.reused = journal, 0
        # a resumed run: evaluations paid for in an earlier attempt, counted again when asked for
        self._journaled = {(suite.key, e["split"], e["key"], tuple(e["tasks"])): e
                           for e in (journal.entries() if journal is not None else ())}
        self._examples: dict[Hashable, dict[str, np.ndarray]] = {}

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
        tasks = self._tasks(split, tasks)
        if key is None:
            params = params() if callable(params) else params
            key = ("hash", params_hash(params))
        ck = (self.suite.key, split, key, tuple(tasks))
        if ck not in self._results and ck in self._journaled:
            e = self._journaled.pop(ck)
            self._results[ck], self._examples[ck] = e["metrics"], unpack(e.get("examples"))
            if self._counting:
                self.counts[split] += 1
                self.reused += 1
        if ck not in self._results:
            params = params() if callable(params) else params
            with torch.inference_mode():
                scored = {t: self._score(params, t, split) for t in tasks}
            metrics = {t: m for t, (m, _) in scored.items()}
            # per-example correctness on test: what a bootstrap over test examples resamples
            examples = {t: c for t, (_, c) in scored.items() if c is not None} if split == "test" else {}
            self.record(Metrics(metrics, examples), split, key=key, tasks=tasks)
        return Metrics({t: dict(m) for t, m in self._results[ck].items()}, self._examples.get(ck) or {})

    def known(self, key: Hashable, split: str = "test", tasks: Sequence[str] | None = None) -> bool:
        """The recipe `key` is cached here or in the journal of an earlier attempt: evaluating it costs nothing new."""
        ck = (self.suite.key, split, key, tuple(self._tasks(split, tasks)))
        return ck in self._results or ck in self._journaled

    def record(self, metrics: "Metrics", split: str = "test", *, key: Hashable,
               tasks: Sequence[str] | None = None) -> None:
        """Metrics of recipe `key` (with their per-example correctness), computed here or elsewhere (a
        `bench.runtime.parallel` worker): cached, journaled and counted exactly alike."""
        tasks = self._tasks(split, tasks)
        examples = getattr(metrics, "examples", {})
        metrics = {t: dict(m) for t, m in metrics.items()}
        if self.journal is not None:            # durable before it is used: a resumed run reads it back
            self.journal.append({"key": key, "split": split, "tasks": tasks, "metrics": metrics,
                                 "counted": self._counting, "examples": pack(examples)})
        ck = (self.suite.key, split, key, tuple(tasks))
        self._results[ck], self._examples[ck] = metrics, examples
        if self._counting:
            self.counts[split] += 1

    def _tasks(self, split: str, tasks: Sequence[str] | None) -> list[str]:
        tasks = list(self.suite.tasks if tasks is None else tasks)
        unknown = [t for t in tasks if t not in self.suite.tasks]
        if unknown:
            raise BenchError(f"unknown task {unknown[0]!r}; valid choices: {', '.join(self.suite.tasks)}")
        if split not in ("train", "val", "test"):
            raise BenchError(f"unknown split {split!r}; valid choices: train, val, test")
        return tasks

    def warm_up(self, split: str = "test") -> float:
        """With `compile=True`: compile the forward for every task's batch shapes of `split` (θ0,
        uncounted, not cached) and return the compile time, measured as the first pass's wall time
        less the second's."""
        theta0 = self.suite.theta0()
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            with torch.inference_mode():
                for t in self.suite.tasks:
                    self._score(theta0, t, split)
            times.append(time.perf_counter() - t0)
        self.compile_s += max(0.0, times[0] - times[1])
        return self.compile_s

    def _score(self, params: Params, task: str, split: str) -> tuple[dict[str, Any], np.ndarray | None]:
        """(metrics, per-example correctness as a bool array, or None where the suite has no labels or
        a prediction was not finite)."""
        suite = self.suite
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct, n = [], 0
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp
                    else contextlib.nullcontext())
        for raw in self._batches(task, split):
            batch = suite.prepare(raw, self.device, **({"dtype": self.dtype} if self.dtype is not None else {}))
            with autocast:
                l, c, k = self._metrics(params, task, batch)
            loss_sum += l.double()                  # summed on the device, read once per task
            if c is not None:
                correct.append(c)
            n += k
        if n == 0:
            raise BenchError(f"task {task!r} has no {split} examples")
        if not correct:
            return {"loss": float(loss_sum) / n, "accuracy": None}, None
        c = torch.cat(correct).double().cpu().numpy()                # one read per task and split
        acc = float(c.sum()) / n
        return {"loss": float(loss_sum) / n, "accuracy": acc}, (c > 0.5) if np.isfinite(acc) else None

    def _batches(self, task: str, split: str):
        """Views of the device-resident split (`DEVICE_DATA`), `batch_size` examples at a time."""
        data = DEVICE_DATA.get(self.suite, task, split, self.device)
        n = len(next(iter(data.values())))
        for i in range(0, n, self.batch_size):
            yield {k: v[i:i + self.batch_size] for k, v in data.items()}


class Metrics(dict):
    """{task: {"loss", "accuracy"}} as the Evaluator returns it, carrying `examples`: per task the
    test examples' correctness (bool array) that stands behind the accuracy, for records to keep
    beside record.json (not in it)."""

    def __init__(self, metrics: dict, examples: dict[str, np.ndarray]):
        super().__init__(metrics)
        self.examples = examples


def pack(examples: dict[str, np.ndarray]) -> dict[str, list]:
    """Per-example bools as [n, base64 of packed bits] per task (a journal line stays small)."""
    return {t: [int(len(c)), base64.b64encode(np.packbits(c)).decode()] for t, c in examples.items()}


def unpack(packed: dict | None) -> dict[str, np.ndarray]:
    return {t: np.unpackbits(np.frombuffer(base64.b64decode(b), dtype=np.uint8))[:n].astype(bool)
            for t, (n, b) in (packed or {}).items()}


def references(evaluator: Evaluator, split: str = "test") -> dict[str, dict[str, dict]]:
    """The pre-trained model on every task and each fine-tuned model on its own task (uncounted)."""
    suite = evaluator.suite
    with evaluator.uncounted():
        pre = evaluator.evaluate(suite.theta0, split, key=("theta0",))
        ft = {t: evaluator.evaluate(lambda i=i: suite.finetuned(i), split, key=("finetuned", i), tasks=[t])[t]
              for i, t in enumerate(suite.tasks)}
    return {"pretrained": pre, "finetuned": ft}
