"""tiny-gpt2: a tiny `GPT2ForSequenceClassification` pre-trained and fine-tuned offline on templated text tasks.

    python -m bench run method=ta_grid tasks=tiny-gpt2 tasks.names=[sentiment,negation]

    >>> from bench.registry import SUITES
    >>> import tasks
    >>> suite = SUITES.build("tiny-gpt2", names=["topic", "agreement"])   # doctest: +SKIP
    >>> suite.tasks, suite.task_vectors()["h.0.mlp.c_fc.weight"].shape  # doctest: +SKIP
    (['topic', 'agreement'], torch.Size([2, 64, 256]))

The model is the real transformers `GPT2ForSequenceClassification` (module names as in `gpt2`:
`h.N.attn.c_attn`, `h.N.mlp.c_fc`, `ln_f`, …) at width 64, 2 layers, 4 heads, 32 positions
(110k body parameters) over a 133-token word-level vocabulary. The merged backbone is its
`transformer`, a `GPT2Model`, every parameter of which is merged; features are the hidden state of
the last non-pad token (right padding), as the model pools. Each task keeps its own score head
(Linear, no bias, as in the published GPT-2 GLUE checkpoints), frozen.

The build (the five tasks of tasks/text.py, once per version × seed × build sizes) runs:
  1. data: 4000 train / 200 val / 500 test sentences per task from the seed, disjoint splits; a
     `tokenizers` WordLevel tokenizer trained on them, saved as a `PreTrainedTokenizerFast`; text,
     labels and token ids saved with `datasets`;
  2. θ0: causal-LM pre-training of a `GPT2LMHeadModel` (tied embeddings) on the mixed corpus of all
     tasks' training sentences (no label is ever seen); its `transformer` is θ0;
  3. heads: class k of every task is read from θ0's output embedding of the k-th answer word
     (`tasks.text.ANSWER_WORDS`: near, behind, with, beside, above), the way a prompted LM answers
     with fixed answer words, or CLIP's zero-shot heads come from the pre-trained model; each head
     is a per-task Linear copy of those rows, frozen from the start;
  4. θ_i: the whole body fine-tuned on task i from θ0 under its frozen head (AdamW, lr 3e-3, 300
     steps of 128); τ_i = θ_i − θ0 over every `GPT2Model` parameter;
  5. quality bars through the Evaluator and `task_arithmetic` (printed, stored in the manifest).
Why frozen shared answer words: with heads trained per task (the GLUE recipe) each task learns its
own readout direction, and merges came out lopsided: in trial builds (2 seeds, lr 2e-3 to 4e-3)
one task of a pair often kept ≥ 0.95 at the best λ while the other collapsed, failing the merging
bar on up to 9 of 15 pairs. Reading every task from the same answer words makes the task vectors
compete on the same logits, which costs both tasks of a pair. θ0 never saw a label and nothing ties
the answer words to any class, so θ0 sits near chance under every head: the θ0 bar holds by construction, not by tuning.
Fine-tuning and the merging bars fan out over worker processes (one thread each, so a build is
bit-identical whatever the core count). Everything is saved with `save_pretrained` /
`Dataset.save_to_disk` under `<cache_dir>/tiny-gpt2/v<version>-seed<seed>[-<sizes hash>]` and
verified by tasks/cache.py on every load. A task subset (`names=[...]`) selects from that one build.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.merge import Params, stack_task_vectors
from bench.registry import SUITES, BenchError, unknown_choice
from tasks.base import SPLITS, ModelSuite, select_tasks
from tasks.cache import cache_root, cached_build, manifest_info
from tasks.models import backbone_params, gpt2_features, quiet_hf, trim_padding
from tasks.quality import format_bars, pair_line, quality_bars
from tasks.text import ANSWER_WORDS, MAX_WORDS, TASKS, build_tokenizer, encode, generate_splits

TASK_NAMES = list(TASKS)
MAX_LENGTH = MAX_WORDS + 1                      # + [EOS]
MODEL = dict(n_embd=64, n_layer=2, n_head=4, n_positions=MAX_LENGTH, resid_pdrop=0.0, embd_pdrop=0.0,
             attn_pdrop=0.0, summary_first_dropout=0.0)
PRETRAIN = dict(lr=3e-3, weight_decay=0.01, batch=128)
FINETUNE = dict(lr=3e-3, weight_decay=0.0, batch=128)
EVAL_BATCH = 512
FANOUT_MIN_STEPS = 50        # fine-tuning steps from which the build fans out over processes
DEFAULT_SIZES = dict(train_size=4000, val_size=200, test_size=500, pretrain_steps=400, finetune_steps=300)


def gpt2_config(tokenizer, num_labels: int = 2):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      num_labels=num_labels, **MODEL)


def _schedule(step: int, steps: int, warmup_frac: float = 0.1) -> float:
    """Linear warm-up then cosine decay to 0 (a factor on the peak learning rate)."""
    warm = max(1, int(warmup_frac * steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


# ---- the suite --------------------------------------------------------------------------------
@SUITES.register("tiny-gpt2", "tiny GPT2ForSequenceClassification (width 64, 2 layers) on 5 templated text tasks, built offline")
class TinyGPT2(ModelSuite):
    name = "tiny-gpt2"
    version = "2"   # 1: an unreleased draft (six tasks, heads trained per task)
    objective = "accuracy"
    modality = "text"
    train_batch_size = 8

    def __init__(self, names: list[str] | None = None, seed: int = 0, cache_dir: str | None = None,
                 train_size: int = 4000, val_size: int = 200, test_size: int = 500,
                 pretrain_steps: int = 400, finetune_steps: int = 300):
        names = select_tasks(names, TASK_NAMES, self.name)
        sizes = dict(train_size=train_size, val_size=val_size, test_size=test_size,
                     pretrain_steps=pretrain_steps, finetune_steps=finetune_steps)
        for k, v in sizes.items():
            if v < 1:
                raise BenchError(f"tasks.{k}={v} must be ≥ 1")
        self.seed, self.sizes, self.tasks = int(seed), sizes, names
        root = Path(cache_dir).expanduser() if cache_dir else cache_root()
        self.cache_path = cached_build(root / self.name / self.build_id(self.seed, sizes),
                                       lambda tmp: build(tmp, self.seed, sizes))
        self._load(self.cache_path)

    @classmethod
    def build_id(cls, seed: int, sizes: dict) -> str:
        """Cache sub-directory of one build: version × seed, plus a hash of non-default sizes."""
        extra = {k: v for k, v in sizes.items() if DEFAULT_SIZES[k] != v}
        tag = "-" + hashlib.sha1(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8] if extra else ""
        return f"v{cls.version}-seed{seed}{tag}"

    @classmethod
    def from_dir(cls, path: Path, names: list[str] | None = None, seed: int = 0, sizes: dict | None = None) -> "TinyGPT2":
        """Load a finished build directory as it is (no cache check): the build uses it for its bars."""
        self = cls.__new__(cls)
        self.seed, self.sizes = seed, dict(sizes or DEFAULT_SIZES)
        self.tasks = list(TASK_NAMES if names is None else names)
        self.cache_path = Path(path)
        self._load(self.cache_path)
        return self

    def config(self):
        return {"seed": self.seed, **self.sizes}

    def _load(self, path: Path) -> None:
        with quiet_hf():
            self._load_quiet(path)

    def _load_quiet(self, path: Path) -> None:
        import datasets
        from transformers import GPT2ForSequenceClassification, GPT2Model, PreTrainedTokenizerFast

        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer")
        self.backbone = GPT2Model.from_pretrained(path / "pretrained").eval().requires_grad_(False)
        self._theta0 = backbone_params(self.backbone)
        heads, bodies = {}, []
        for task in self.tasks:
            model = GPT2ForSequenceClassification.from_pretrained(path / "finetuned" / task)
            heads[task] = model.score.requires_grad_(False)
            bodies.append(backbone_params(model.transformer))
        self.heads = torch.nn.ModuleDict(heads).eval()
        self._task_vectors = stack_task_vectors(self._theta0, bodies)
        self._data = {}
        for task in self.tasks:
            dd = datasets.load_from_disk(str(path / "data" / task))
            self._data[task] = {s: {k: torch.as_tensor(np.asarray(dd[s][c], dtype=np.int64))
                                    for k, c in (("input_ids", "input_ids"), ("attention_mask", "attention_mask"),
                                                 ("labels", "label"))}
                                for s in SPLITS}
            for s in ("val", "test"):    # evaluation order: by length, so trimmed batches carry little padding
                order = torch.argsort(self._data[task][s]["attention_mask"].sum(dim=1), stable=True)
                self._data[task][s] = {k: v[order] for k, v in self._data[task][s].items()}
        self.info = manifest_info(path) if (path / "MANIFEST.json").is_file() else {}

    # ---- what the Evaluator and trainers call --------------------------------------------------
    def prepare(self, batch, device):
        """Right-padded stored ids → the batch cut to its longest sequence, on `device`."""
        return {k: v.to(device, non_blocking=True) for k, v in trim_padding(batch).items()}

    def features(self, params: Params, batch):
        return gpt2_features(self.backbone, params, batch)

    def describe(self) -> str:
        return f"{self.name} v{self.version} (seed {self.seed}): {', '.join(self.tasks)}"


# ---- the build ----------------------------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with `n` intra-op threads (restored after). Training always runs on one thread,
    so that a build is bit-identical whatever the machine's core count."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def build_workers(sizes: dict) -> int:
    """Processes for the per-task work: the usable cores, at most one per task; one (in-process)
    for builds too short to pay for starting interpreters (a few seconds each)."""
    if sizes["finetune_steps"] < FANOUT_MIN_STEPS:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                       # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, len(TASK_NAMES)))


class _Inline:
    """The `Executor.map` of one process, for single-core machines."""

    def map(self, fn, items):
        return map(fn, items)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _pool(workers: int):
    if workers <= 1:
        return _Inline()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (fork would copy torch's thread pools)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def build(out: Path, seed: int, sizes: dict, log=print, workers: int | None = None) -> dict:
    """Write data, tokenizer, θ0 and every θ_i under `out`; return the manifest info (bars, timings).
    Fine-tuning and the merging bars fan out over `workers` processes (default: the usable cores);
    the result does not depend on their number."""
    workers = build_workers(sizes) if workers is None else workers
    with quiet_hf(), torch_threads(1):
        return _build(Path(out), seed, sizes, log, workers)


def _build(out: Path, seed: int, sizes: dict, log, workers: int) -> dict:
    import datasets
    from transformers import GPT2LMHeadModel

    timings = {}
    t = time.perf_counter()
    split_sizes = {"train": sizes["train_size"], "val": sizes["val_size"], "test": sizes["test_size"]}
    raw = {task: generate_splits(task, split_sizes, seed) for task in tqdm(TASK_NAMES, desc="tiny-gpt2 data", leave=False)}
    tokenizer = build_tokenizer([x for task in TASK_NAMES for x in raw[task]["train"][0]], MAX_LENGTH)
    tokenizer.save_pretrained(out / "tokenizer")
    corpus = {"input_ids": [], "attention_mask": []}
    for task in TASK_NAMES:
        splits = {}
        for s in SPLITS:
            texts, labels = raw[task][s]
            enc = encode(tokenizer, texts, MAX_LENGTH)
            splits[s] = datasets.Dataset.from_dict({"text": texts, "label": labels.tolist(),
                                                    "input_ids": enc["input_ids"].tolist(),
                                                    "attention_mask": enc["attention_mask"].tolist()})
            if s == "train":
                for k in corpus:
                    corpus[k].append(torch.from_numpy(enc[k]))
        datasets.DatasetDict(splits).save_to_disk(str(out / "data" / task))
    timings["data_s"] = time.perf_counter() - t

    # θ0: causal-LM pre-training on the mixed corpus (labels never seen)
    t = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lm = GPT2LMHeadModel(gpt2_config(tokenizer))
    pretrain_lm(lm, {k: torch.cat(v) for k, v in corpus.items()}, sizes["pretrain_steps"],
                torch.Generator().manual_seed(seed))
    lm.save_pretrained(out / "pretrained")
    timings["pretrain_s"] = time.perf_counter() - t

    with _pool(workers) as pool:
        # θ_i: body + score head fine-tuned per task from θ0, one task per worker at a time
        t = time.perf_counter()
        jobs = [(str(out), seed, i, sizes["finetune_steps"]) for i in range(len(TASK_NAMES))]
        list(tqdm(pool.map(_finetune_job, jobs), total=len(jobs), desc="tiny-gpt2 fine-tune", leave=False))
        timings["finetune_s"] = time.perf_counter() - t

        # bars: references here, the shared-λ line of every pair spread over the workers
        t = time.perf_counter()
        suite = TinyGPT2.from_dir(out, seed=seed, sizes=sizes)
        pairs = list(itertools.combinations(range(len(TASK_NAMES)), 2))
        chunks = [(str(out), seed, sizes, pairs[k::workers]) for k in range(workers)]
        lines = {}
        for part in tqdm(pool.map(_lines_job, chunks), total=len(chunks), desc="tiny-gpt2 merging bars", leave=False):
            lines.update(part)
        from bench.evaluator import Evaluator

        bars = quality_bars(suite, Evaluator(suite, "cpu", batch_size=EVAL_BATCH), lines=lines)
        timings["bars_s"] = time.perf_counter() - t
    timings["total_s"] = sum(timings.values())
    log(format_bars("tiny-gpt2", bars, timings))
    return {"bars": bars, "timings": {k: round(v, 2) for k, v in timings.items()}, "seed": seed,
            "sizes": sizes, "workers": workers}


def answer_head(wte: torch.Tensor, tokenizer, num_classes: int) -> torch.Tensor:
    """[C, width] score weights: rows of the (tied) input/output embedding for the first C answer words."""
    ids = tokenizer.convert_tokens_to_ids(ANSWER_WORDS[:num_classes])
    if tokenizer.unk_token_id in ids:
        raise RuntimeError(f"answer words {ANSWER_WORDS[:num_classes]} are not all in the vocabulary")
    return wte[ids].detach().clone()


def _finetune_job(job) -> str:
    """Worker: fine-tune task `i` from the saved θ0 and save it (seeded by (seed, i) only)."""
    from transformers import GPT2ForSequenceClassification, GPT2Model, PreTrainedTokenizerFast

    out, seed, i, steps = job
    out, task = Path(out), TASK_NAMES[i]
    with quiet_hf(), torch_threads(1):
        import datasets

        tokenizer = PreTrainedTokenizerFast.from_pretrained(out / "tokenizer")
        theta0 = GPT2Model.from_pretrained(out / "pretrained").state_dict()
        num_classes = len(TASKS[task].classes)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = GPT2ForSequenceClassification(gpt2_config(tokenizer, num_classes))
        model.transformer.load_state_dict(theta0)
        model.score.weight.data.copy_(answer_head(theta0["wte.weight"], tokenizer, num_classes))
        model.score.requires_grad_(False)
        ds = datasets.load_from_disk(str(out / "data" / task))["train"]
        train = {k: torch.as_tensor(np.asarray(ds[c], dtype=np.int64))
                 for k, c in (("input_ids", "input_ids"), ("attention_mask", "attention_mask"), ("labels", "label"))}
        finetune(model, train, steps, torch.Generator().manual_seed(seed * 1000 + i))
        model.save_pretrained(out / "finetuned" / task)
    return task


def _lines_job(job) -> dict:
    """Worker: the shared-λ task-arithmetic line (test accuracies) of each pair (i, j) in the job."""
    from bench.evaluator import Evaluator

    out, seed, sizes, pairs = job
    with quiet_hf(), torch_threads(1):
        suite = TinyGPT2.from_dir(Path(out), seed=seed, sizes=sizes)
        ev = Evaluator(suite, "cpu", batch_size=EVAL_BATCH)
        return {f"{suite.tasks[i]}+{suite.tasks[j]}": pair_line(suite, ev, suite.tasks[i], suite.tasks[j]).tolist()
                for i, j in pairs}


def pretrain_lm(lm, corpus: dict[str, torch.Tensor], steps: int, gen: torch.Generator) -> float:
    """Next-token prediction on random batches of the corpus (pads ignored); returns the last loss."""
    lm.train()
    opt = torch.optim.AdamW(lm.parameters(), lr=PRETRAIN["lr"], weight_decay=PRETRAIN["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps))
    n, loss = len(corpus["input_ids"]), torch.tensor(float("nan"))
    for _ in tqdm(range(steps), desc="tiny-gpt2 pre-train (causal LM)", leave=False):
        idx = torch.randint(n, (PRETRAIN["batch"],), generator=gen)
        b = trim_padding({k: v[idx] for k, v in corpus.items()})
        labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
        loss = lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    lm.eval()
    return float(loss.detach())


def finetune(model, train: dict[str, torch.Tensor], steps: int, gen: torch.Generator) -> float:
    """The whole body, through the model's own forward (its own last-non-pad pooling); the score head
    stays frozen (it has requires_grad off and is not in the optimizer)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=FINETUNE["lr"], weight_decay=FINETUNE["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps))
    n, loss = len(train["labels"]), torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(n, (FINETUNE["batch"],), generator=gen)
        b = trim_padding({k: v[idx] for k, v in train.items()})
        loss = model(**b).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return float(loss.detach())
