"""The Suite interface every task family implements, and `ModelSuite` for real networks.

    >>> from bench.core.registry import SUITES
    >>> suite = SUITES.build("toy-quadratic", num_tasks=2)
    >>> suite.tasks, suite.objective, suite.modality
    (['task0', 'task1'], 'loss', 'analytic')

A suite owns θ0 (the pre-trained merge-able parameters, a flat `dict[str, Tensor]`), the task
vectors τ_i = θ_i − θ0 stacked per parameter (`[T, *shape]`), frozen per-task heads, data, the
objective and the HV reference point (in minimization space). This class declares everything the
Evaluator, the trainers and `bench export` may ask of a suite; nothing else is read from outside.
Only the Evaluator (bench/core/evaluator.py) runs a suite on evaluation data.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.api import BenchError, Params, unknown_choice

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")
MODALITIES = ("analytic", "image", "text")
Batch = dict[str, torch.Tensor]


class Suite:
    name: str = ""                      # registry name, e.g. "toy-quadratic"
    version: ClassVar[str] = "0"        # bump whenever numbers would change
    objective: ClassVar[str] = "loss"   # "loss" (lower is better) or "accuracy"
    modality: ClassVar[str] = "analytic"   # what a batch holds: analytic (no data), image, text
    train_batch_size: ClassVar[int] = 1    # examples per task per training step, the papers' default
    leaderboard_scale: ClassVar[float | None] = None   # × training steps on a leaderboard (None: the spec's scale)
    random_weights: bool = False        # benchmark-only suites never enter a leaderboard
    eval_size: int | None = None        # val/test examples per task: a stratified, seeded subset (None: all)
    eval_seed: int = 0                  # seeds that subset
    tasks: list[str]
    _theta0: Params
    _task_vectors: Params
    device: torch.device = torch.device("cpu")

    @property
    def analytic(self) -> bool:
        return self.modality == "analytic"

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

    def loss(self, params: Params, task: str, batch: Batch) -> torch.Tensor:
        """Differentiable mean training loss of task `task` at `params` on a prepared `batch`."""
        raise NotImplementedError

    def train_batch(self, task: str, batch_size: int, generator: torch.Generator) -> Batch:
        """One labelled training batch of `task`, prepared on `self.device` (analytic suites: empty)."""
        return {}

    def frozen_modules(self) -> list[torch.nn.Module]:
        """The modules a trainer must not update (backbone, heads); none for analytic suites."""
        return []

    def autocast(self):
        """Where a trainer's forward runs: bf16 autocast on CUDA (as the Evaluator's), fp32 elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """No suite module requires grad inside the block (flags restored after)."""
        saved = [(p, p.requires_grad) for m in self.frozen_modules() for p in m.parameters()]
        for p, _ in saved:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)

    # ---- what the Evaluator reads --------------------------------------------------------
    def eval_data(self, task: str, split: str) -> Batch:
        """The whole split in its stored, compact form (e.g. uint8 images), every tensor with the
        examples along dim 0, already in evaluation order (text: by length). Analytic suites have
        one pseudo-example: their losses are closed forms."""
        return {"example": torch.zeros(1)}

    def prepare(self, batch: Batch, device: torch.device, dtype: torch.dtype | None = None) -> Batch:
        """Stored tensors → model inputs on `device` (e.g. uint8 images → normalised floats, made
        directly in `dtype` when the forward runs in it, e.g. bf16 under autocast)."""
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def batch_metrics(self, params: Params, task: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(summed loss, per-example correctness [B] (bool, or NaN-poisoned float) or None, examples)
        of one prepared batch, as device tensors (the Evaluator adds them up on the device and reads
        them once per task and split)."""
        return self.loss(params, task, batch).detach().reshape(()), None, 1

    # ---- export ---------------------------------------------------------------------------
    def save_model(self, params: Params, directory: Path) -> dict[str, Any]:
        """Write the merged model at `params` into `directory`; returns facts for export.json."""
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in params.items()}, str(Path(directory) / "params.safetensors"))
        return {"backbone_class": None}

    # ---- placement and identity -------------------------------------------------------------
    def to(self, device: str | torch.device) -> "Suite":
        self._theta0 = {k: v.to(device) for k, v in self._theta0.items()}
        self._task_vectors = {k: v.to(device) for k, v in self._task_vectors.items()}
        self.device = torch.device(device)
        return self

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
        return f"{self.name} v{self.version}: {', '.join(self.tasks)}{self.subset_note()}"

    def subset_note(self) -> str:
        """What `describe` adds where val/test are cut to an evaluation subset."""
        return "" if self.eval_size is None else f" [eval subset ≤ {self.eval_size}/task]"


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on `device` seeded by one draw from the host `generator`: sampling on the device
    that still follows the run's seed (on the CPU, `generator` itself)."""
    device = torch.device(device)
    if device.type == "cpu":
        return generator
    return torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of `n` of the examples with `labels`, each class in proportion to its share of the
    split: ⌊n·share⌋ per class, the remaining examples to the largest remainders (equal remainders in a
    seeded order), the examples within a class drawn without replacement (numpy PCG64 from `seed`: the
    same on every machine). `n` ≥ the split's size: every index.

        >>> stratified_subset(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 5, seed=0).size
        5
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(np.int64)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))     # largest remainder first
    take[order[:n - int(take.sum())]] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(picked))


def check_eval_size(eval_size: int | None, random_weights: bool = False) -> None:
    """The one check of `tasks.eval_size` (every suite with real data takes it)."""
    if eval_size is None:
        return
    if random_weights:
        raise BenchError(f"tasks.eval_size={eval_size} applies to real data; with tasks.weights=random "
                         f"use tasks.synthetic_size")
    if eval_size < 1:
        raise BenchError(f"tasks.eval_size={eval_size} must be ≥ 1 (or null for the whole val and test splits)")


def select_tasks(names: Sequence[str] | None, available: Sequence[str], suite: str) -> list[str]:
    """The one task-name check of every suite: `names` (None = all) against `available`, in the
    given order; an empty list, an unknown name or a repeat is a one-line BenchError."""
    available = list(available)
    if names is None:
        return available
    names = [str(n) for n in names]
    if not names:
        raise BenchError(f"tasks.names is empty; valid choices: {', '.join(available)}")
    for n in names:
        if n not in available:
            raise BenchError(unknown_choice(f"{suite} task", n, available))
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise BenchError(f"tasks.names lists {dup!r} twice; valid choices: {', '.join(available)}")
    return names


class ModelSuite(Suite):
    """A suite of real networks: a shared backbone (whose parameters are merged) and frozen per-task
    heads. Subclasses fill `backbone`, `heads`, `_theta0`, `_task_vectors` and `_data`, set
    `modality`, and implement `features`; evaluation data lives in `_data[task][split]` as a dict
    of CPU tensors with "labels" (or is loaded on first use by `_split_data`).
    """

    objective = "accuracy"
    backbone: torch.nn.Module
    heads: torch.nn.ModuleDict
    tokenizer: Any = None               # text suites: saved beside an exported model
    streams_train: ClassVar[bool] = False   # train examples prepared as they are drawn (`_train_examples`)
    _data: dict[str, dict[str, Batch]]

    def features(self, params: Params, batch: Batch) -> torch.Tensor:
        """Backbone features at `params` (via torch.func.functional_call), [B, D]."""
        raise NotImplementedError

    def logits(self, params: Params, task: str, batch: Batch) -> torch.Tensor:
        return self.heads[task](self.features(params, batch))

    def loss(self, params: Params, task: str, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(params, task, batch).float(), batch["labels"])

    def batch_metrics(self, params, task, batch):
        logits = self.logits(params, task, batch).float()
        labels = batch["labels"]
        loss = F.cross_entropy(logits, labels, reduction="sum")
        # an argmax of NaN logits is no prediction: such an example's correctness is NaN, not 0 or 1
        correct = (logits.argmax(-1) == labels).float()
        correct = torch.where(torch.isfinite(logits).all(-1), correct, torch.full_like(correct, float("nan")))
        return loss, correct, len(labels)

    def eval_data(self, task: str, split: str) -> Batch:
        if split not in self._data[task]:          # suites that load splits lazily (published data)
            self._data[task][split] = self._split_data(task, split)
        return self._data[task][split]

    def _split_data(self, task: str, split: str) -> Batch:
        raise KeyError(f"{self.name} has no {split} data for task {task!r}")

    # ---- evaluation subsets (tasks.eval_size) ------------------------------------------------------
    def eval_rows(self, task: str, split: str, labels: np.ndarray) -> np.ndarray | None:
        """Positions (into a split whose labels are `labels`) of the stratified evaluation subset of
        `split`, or None for the whole split (train, no eval_size, or a split no larger than it)."""
        if self.eval_size is None or split not in EVAL_SPLITS or self.eval_size >= len(labels):
            return None
        from bench.tasks.hub import digest

        seed = int(digest([self.eval_seed, task, split])[:15], 16)
        return stratified_subset(labels, self.eval_size, seed)

    def subset_eval_data(self) -> None:
        """In-memory suites: cut every val/test split to its evaluation subset (kept in stored order)."""
        check_eval_size(self.eval_size, self.random_weights)
        for task, splits in self._data.items():
            for split in EVAL_SPLITS:
                rows = self.eval_rows(task, split, splits[split]["labels"].numpy())
                if rows is not None:
                    idx = torch.from_numpy(rows)
                    splits[split] = {k: v[idx] for k, v in splits[split].items()}

    def eval_config(self) -> dict[str, Any]:
        """What a suite's config adds for an evaluation subset (nothing without one: keys stay as they were)."""
        if self.eval_size is None:
            return {}
        return {"eval_size": self.eval_size, "eval_seed": self.eval_seed,
                "eval_subset": f"stratified by label, ≤ {self.eval_size} examples per task of val and of test"}

    # ---- published data: rows of a dataset (`_sources[task]`: "dd" a DatasetDict, "splits" {split: (name, rows)})
    def _read_labels(self, task: str, split: str) -> np.ndarray:
        """Labels of `split`'s rows in order, from the label column alone (nothing else decoded), checked."""
        raise NotImplementedError

    def split_labels(self, task: str, split: str) -> np.ndarray:
        """`_read_labels`, read once per task and split."""
        cache = self.__dict__.setdefault("_split_labels", {})
        if (task, split) not in cache:
            cache[task, split] = self._read_labels(task, split)
        return cache[task, split]

    def split_rows(self, task: str, split: str) -> tuple[str, np.ndarray | None]:
        """(dataset split, its rows, None for all) of the suite's `split`, cut to the eval_size subset."""
        name, idx = self._sources[task]["splits"][split]
        sub = None if self.eval_size is None else self.eval_rows(task, split, self.split_labels(task, split))
        if sub is None:
            return name, idx
        return name, (np.arange(len(self._sources[task]["dd"][name])) if idx is None else idx)[sub]

    # ---- training batches ---------------------------------------------------------------------
    def train_size(self, task: str) -> int:
        """Examples in the train split of `task` (streamed suites: from its labels, preparing nothing)."""
        if self.streams_train:
            return len(self.split_labels(task, "train"))
        return len(self.eval_data(task, "train")["labels"])

    def _train_examples(self, task: str, positions: np.ndarray) -> Batch:
        """Streamed suites: the stored form (as `eval_data` would hold it) of train examples `positions`."""
        raise NotImplementedError

    def train_batch(self, task: str, batch_size: int, generator: torch.Generator) -> Batch:
        """Indices drawn on the host (the same stream on every device). Streamed suites (published data)
        prepare just those examples (`_train_examples`): no train split is ever preprocessed whole. The
        others gather from the split where it lives: on the GPU when it fits there
        (bench.core.evaluator.DEVICE_DATA), so no batch is copied."""
        from bench.core.evaluator import DEVICE_DATA

        if self.streams_train:
            idx = torch.randint(self.train_size(task), (batch_size,), generator=generator)
            return self.prepare(self._train_examples(task, idx.numpy()), self.device)
        data = DEVICE_DATA.get(self, task, "train", self.device)
        n = len(data["labels"])
        idx = torch.randint(n, (batch_size,), generator=generator)
        idx = idx.to(next(iter(data.values())).device, non_blocking=True)
        return self.prepare({k: v[idx] for k, v in data.items()}, self.device)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.backbone, self.heads]

    def save_model(self, params: Params, directory: Path) -> dict[str, Any]:
        """The backbone with `save_pretrained` (reload: `type(backbone).from_pretrained(directory)`),
        the heads as heads.safetensors (`<task>.<weight|bias>`), the tokenizer where there is one."""
        import copy

        from bench.tasks.exporting import load_merged, transformers4_compatible, write_heads
        from bench.tasks.models import quiet_hf

        model = load_merged(copy.deepcopy(self.backbone).to("cpu"), params)
        with quiet_hf():
            model.save_pretrained(directory)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(directory)
        write_heads(self.heads, directory)
        transformers4_compatible(type(model).__name__, directory)     # files transformers 4 reads too
        return {"backbone_class": type(model).__name__}

    def to(self, device):
        super().to(device)
        for m in self.frozen_modules():
            m.to(device)
        return self
