"""gpt2-glue: GPT-2 (124M) fine-tuned on seven GLUE tasks, one classification head per task.

    hf download gpt2 --include '*.json' --include '*.txt' --include '*.safetensors'     # … see README
    python -m bench run method=ta_grid tasks=gpt2-glue 'tasks.names=[cola,sst2]' device=cuda
    python -m bench run method=ta_grid tasks=gpt2-glue tasks.weights=random tasks.synthetic_size=64

The setting published by FusionBench (Tang et al. 2024): pre-trained `gpt2`, fine-tuned
`tanganke/gpt2_<task>` (`GPT2ForSequenceClassification`) for cola, mnli, mrpc, qnli, qqp, rte and
sst2, data `nyu-mll/glue:<task>`. Every id is config (a hub id or a local directory, tasks/hub.py).

- Merged: only the transformer body (`GPT2Model`: `wte`, `wpe`, `h.N.*`, `ln_f`). Each task keeps
  its own fine-tuned `score` layer as its frozen head; features are the hidden state of the last
  non-pad token (`bench.tasks.models.gpt2_features`), as `GPT2ForSequenceClassification` pools.
- Inputs: the pre-trained tokenizer on the task's text column(s) (a sentence pair is passed as a
  pair, as FusionBench tokenises), truncated to `max_length` = 512 tokens as FusionBench's tokenizer
  does (GPT-2 itself takes 1024), right-padded with the EOS token.
  Stored per split padded to that split's longest sequence and cut per batch to the batch's longest
  (`bench.tasks.models.trim_padding`); evaluation splits are sorted by length so batches carry little padding.
  Train sentences are tokenised as a batch draws them, never stored. `eval_size=N` cuts val and test
  to a stratified, seeded subset of at most N examples per task (part of the suite key).
- Splits: GLUE's test labels are hidden, so the suite's **test** split is GLUE's validation split
  (validation_matched for mnli), the split the published numbers report; **val** is 10 % of GLUE
  train drawn with a fixed seed (tasks/hub.py `carve`); **train** is the rest of GLUE train.
- `weights=random`: GPT-2 124M's architecture with random weights and heads, and synthetic token
  sequences (lengths uniform in 8..`synthetic_seq_len`) of the published split sizes
  (`synthetic_size` caps them): speed and memory benchmarks only, never a leaderboard.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from bench.api import BenchError, Params, check_compatible
from bench.tasks import hub
from bench.tasks.base import ModelSuite, check_eval_size, select_tasks
from bench.tasks.models import backbone_params, gpt2_features, quiet_hf, trim_padding

TASKS = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2"]
DATASETS = {t: f"nyu-mll/glue:{t}" for t in TASKS}
TEXT_COLUMNS = {"cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
                "rte": ("sentence1", "sentence2"), "qqp": ("question1", "question2"),
                "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence")}
NUM_CLASSES = {"cola": 2, "mnli": 3, "mrpc": 2, "qnli": 2, "qqp": 2, "rte": 2, "sst2": 2}
TEST_SPLIT = {"mnli": "validation_matched"}       # GLUE split reported as the suite's test split; else "validation"
# Published GLUE split sizes (train, validation), for the synthetic data of weights=random.
SPLIT_SIZES = {"cola": (8551, 1043), "mnli": (392702, 9815), "mrpc": (3668, 408), "qnli": (104743, 5463),
               "qqp": (363846, 40430), "rte": (2490, 277), "sst2": (67349, 872)}
GPT2_124M = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
RANDOM_TAU_STD = 1e-3


def tokenize(tokenizer, columns: list[list[str]], max_length: int, pad_id: int,
             segments: bool = False) -> dict[str, np.ndarray]:
    """Tokenise one or two text columns (pairs as pairs), truncate to `max_length`, right-pad with
    `pad_id` to the longest; int32 ids, uint8 mask (and, with `segments`, uint8 token_type_ids where
    the tokenizer makes them, e.g. BERT's sentence A/B ids)."""
    enc = tokenizer(*columns, truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    n, width = len(ids), max((len(x) for x in ids), default=1)
    out_ids = np.full((n, max(width, 1)), pad_id, dtype=np.int32)
    mask = np.zeros((n, max(width, 1)), dtype=np.uint8)
    for i, x in enumerate(ids):
        out_ids[i, :len(x)] = x
        mask[i, :len(x)] = 1
    out = {"input_ids": out_ids, "attention_mask": mask}
    if segments and "token_type_ids" in enc:
        types = np.zeros((n, max(width, 1)), dtype=np.uint8)
        for i, x in enumerate(enc["token_type_ids"]):
            types[i, :len(x)] = x
        out["token_type_ids"] = types
    return out


class GPT2GLUE(ModelSuite):
    name = "gpt2-glue"
    version = "2"                  # 2: inputs truncated at 512 tokens (was 1024), as FusionBench
    objective = "accuracy"
    modality = "text"
    train_batch_size = 8           # sentences per task per step (the PWE-MoE authors')
    streams_train = True           # train sentences tokenised as drawn, never the whole split

    def __init__(self,
                 names: list[str] = TASKS,  # any subset, e.g. [cola,sst2]
                 weights: Literal["real", "random"] = "real",  # random: 124M shapes, random weights, synthetic tokens
                 pretrained: str = "gpt2",  # GPT2Model body + tokenizer
                 finetuned: str = "tanganke/gpt2_{task}",  # a GPT2ForSequenceClassification per task
                 datasets: dict = DATASETS,  # id[:config] per task: hub dataset or local folder
                 max_length: int = 512,  # truncation in tokens, as FusionBench (GPT-2 itself takes 1024)
                 synthetic_size: int | None = None,  # weights=random: examples per split (null: published sizes)
                 synthetic_seq_len: int = 128,  # weights=random: sequence lengths uniform in 8..this
                 seed: int = 0,  # weights=random: draws weights, task vectors, heads and data
                 eval_size: int | None = None,  # val/test examples per task: a stratified seeded subset (null: all)
                 eval_seed: int = 0):  # seeds the eval_size subset
        self.weights, self.pretrained_id, self.finetuned_id = weights, pretrained, finetuned
        self.datasets = {str(k): str(v) for k, v in dict(datasets).items()}
        self.max_length, self.synthetic_size, self.synthetic_seq_len, self.seed = \
            max_length, synthetic_size, synthetic_seq_len, seed
        self.random_weights = weights == "random"
        known = [t for t in self.datasets if t in SPLIT_SIZES] if self.random_weights else list(self.datasets)
        names = select_tasks(list(names), known, self.name)
        if max_length < 2:
            raise BenchError(f"tasks.max_length={max_length} must be ≥ 2")
        if synthetic_size is not None and synthetic_size < 1:
            raise BenchError(f"tasks.synthetic_size={synthetic_size} must be ≥ 1 (or null for the published sizes)")
        if synthetic_seq_len < 8:
            raise BenchError(f"tasks.synthetic_seq_len={synthetic_seq_len} must be ≥ 8")
        check_eval_size(eval_size, self.random_weights)
        self.eval_size, self.eval_seed = eval_size, eval_seed
        self.tasks = names
        self._data = {t: {} for t in self.tasks}
        self._sources: dict[str, dict] = {}
        self.revisions: dict[str, str] = {}
        if self.random_weights:
            self._build_random()
        else:
            self._build_real()
        self.backbone.eval().requires_grad_(False)
        self.heads.eval().requires_grad_(False)

    # ---- construction ---------------------------------------------------------------------------
    def _build_real(self) -> None:
        from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2Model

        # GLUE train and the split reported as test: never GLUE's unlabelled test splits
        data = {t: hub.Ref(self.datasets[t], f"tasks.datasets.{t}", "dataset",
                           splits=("train", TEST_SPLIT.get(t, "validation")), optional=()) for t in self.tasks}
        refs = [hub.Ref(self.pretrained_id, "tasks.pretrained"),
                *[hub.Ref(self.finetuned_id.replace("{task}", t), "tasks.finetuned") for t in self.tasks],
                *data.values()]
        paths = hub.resolve(refs)            # every id at once: one error naming all missing ids
        self.revisions = {r.spec: hub.fingerprint(paths[r.spec]) for r in refs if hub.local_path(r.id) is None}
        pre = paths[self.pretrained_id]
        with quiet_hf():
            try:
                self.backbone = GPT2Model.from_pretrained(str(pre))
                self.tokenizer = AutoTokenizer.from_pretrained(str(pre))
            except (OSError, ValueError) as e:
                raise BenchError(f"tasks.pretrained={self.pretrained_id!r} is not a GPT-2 model with a tokenizer "
                                 f"({' '.join(str(e).split())[:200]})") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self._theta0 = backbone_params(self.backbone)
        self._max_len = min(self.max_length, int(self.backbone.config.n_positions))
        tv = {n: torch.zeros((len(self.tasks), *p.shape), dtype=p.dtype) for n, p in self._theta0.items()}
        heads = {}
        for i, t in enumerate(self.tasks):
            spec = self.finetuned_id.replace("{task}", t)
            what = f"fine-tuned model {spec!r} ({t})"
            with quiet_hf():
                try:
                    ft, info = GPT2ForSequenceClassification.from_pretrained(str(paths[spec]), output_loading_info=True)
                except (OSError, ValueError, RuntimeError) as e:
                    raise BenchError(f"{what} cannot be loaded as a GPT2ForSequenceClassification "
                                     f"({' '.join(str(e).split())[:200]})") from None
            missing = sorted(info.get("missing_keys") or [])
            if missing:
                raise BenchError(f"{what} has no parameter {missing[0]!r}"
                                 + (" (not a sequence-classification checkpoint)" if missing[0].startswith("score") else ""))
            body = {n: p.detach() for n, p in ft.transformer.named_parameters()}
            check_compatible(self._theta0, body, what)
            for n, t0 in self._theta0.items():
                tv[n][i] = body[n].to(t0.dtype) - t0
            head = torch.nn.Linear(ft.score.in_features, ft.score.out_features, bias=ft.score.bias is not None)
            head.load_state_dict(ft.score.state_dict())
            heads[t] = head
            del ft, body
        self._task_vectors = tv
        self.heads = torch.nn.ModuleDict(heads)
        pad_id = int(self.tokenizer.pad_token_id)
        for t in self.tasks:
            spec = self.datasets[t]
            what = f"dataset {spec!r} ({t})"
            dd = hub.load_dataset_dict(paths[spec], data[t])
            sp = hub.splits(dd, TEST_SPLIT.get(t, "validation"), what)
            # GLUE has its own validation split, which here is the test split: val is carved from train.
            if sp["val"][0] != "train":
                tr, va = hub.carve(len(dd["train"]))
                sp = {"train": ("train", tr), "val": ("train", va), "test": sp["test"]}
            cols = list(dd["train"].column_names)
            text = TEXT_COLUMNS.get(t) or next((c for c in (("sentence1", "sentence2"), ("sentence",))
                                                if all(x in cols for x in c)), None)
            if text is None or not all(c in cols for c in text):
                raise BenchError(f"{what} has no text column(s) {text or 'sentence / sentence1+sentence2'}; "
                                 f"its columns: {', '.join(cols)}")
            label_col = hub.pick(cols, ("label", "labels"), what, "label")
            feature = dd["train"].features[label_col]
            n_cls = len(getattr(feature, "names", None) or []) or NUM_CLASSES.get(t)
            n_head = heads[t].out_features
            if n_cls is not None and n_cls != n_head:
                raise BenchError(f"{what} has {n_cls} classes but the head of {self.finetuned_id.replace('{task}', t)!r} "
                                 f"has {n_head} outputs")
            self._sources[t] = {"dd": dd, "splits": sp, "text": text, "label_col": label_col, "pad_id": pad_id,
                                "num_classes": n_head,
                                "data_fp": hub.digest([hub.fingerprint(paths[spec]), spec, hub.fingerprint(pre)])}

    def _build_random(self) -> None:
        from transformers import GPT2Config, GPT2Model

        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):     # initialisers draw from the global generator
            torch.manual_seed(self.seed)
            self.backbone = GPT2Model(GPT2Config(**GPT2_124M))
        self._theta0 = backbone_params(self.backbone)
        self._task_vectors = {n: torch.empty((len(self.tasks), *p.shape)).normal_(0.0, RANDOM_TAU_STD, generator=g)
                              for n, p in self._theta0.items()}
        heads = {}
        for t in self.tasks:
            head = torch.nn.Linear(GPT2_124M["n_embd"], NUM_CLASSES[t], bias=False)
            torch.nn.init.normal_(head.weight, std=0.02, generator=g)
            heads[t] = head
            self._sources[t] = {"num_classes": NUM_CLASSES[t]}
        self.heads = torch.nn.ModuleDict(heads)

    # ---- what methods and the evaluator read ------------------------------------------------------
    def features(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return gpt2_features(self.backbone, params, batch)

    def save_model(self, params: Params, directory: Path) -> dict[str, Any]:
        """ModelSuite's export (GPT2Model, tokenizer, score heads) and how to classify with it (bench.tasks.exporting)."""
        from bench.tasks.exporting import gpt2_facts

        return {**super().save_model(params, directory),
                **gpt2_facts(self, getattr(self, "_max_len", self.max_length),
                             {t: list(TEXT_COLUMNS.get(t) or self._sources.get(t, {}).get("text") or ())
                              for t in self.tasks})}

    def prepare(self, batch: dict[str, torch.Tensor], device, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        out = {"input_ids": batch["input_ids"].to(device, non_blocking=True).long(),
               "attention_mask": batch["attention_mask"].to(device, non_blocking=True).long(),
               "labels": batch["labels"].to(device, non_blocking=True).long()}
        return trim_padding(out)

    def train_batch(self, task: str, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.random_weights:       # synthetic: drawn per batch, never stored
            raw = _synthetic(batch_size, self.synthetic_seq_len, self._sources[task]["num_classes"], generator)
            return self.prepare(raw, self.device)
        return super().train_batch(task, batch_size, generator)

    # ---- data -----------------------------------------------------------------------------------
    def split_sizes(self, task: str) -> dict[str, int]:
        """Examples per split: the published sizes (val carved from train) or `synthetic_size`."""
        return hub.split_sizes(self, task, SPLIT_SIZES)

    def _read_labels(self, task: str, split: str) -> np.ndarray:
        return hub.read_labels(self._sources[task], split, f"dataset {self.datasets[task]!r} ({task})",
                               " (GLUE's test split hides its labels)")

    def _train_examples(self, task: str, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Train rows `positions` tokenised now, padded to their longest (`prepare` trims as it trims a stored split)."""
        src = self._sources[task]
        arrays = self._encode(task, hub.train_rows(src, positions))
        arrays["labels"] = self.split_labels(task, "train")[positions]
        return {k: torch.from_numpy(v) for k, v in arrays.items()}

    def _split_data(self, task: str, split: str) -> dict[str, torch.Tensor]:
        if self.random_weights:
            g = torch.Generator().manual_seed(int(hub.digest([self.seed, task, split]), 16) % 2**63)
            return _synthetic(self.split_sizes(task)[split], self.synthetic_seq_len,
                              self._sources[task]["num_classes"], g, sort=split != "train")
        src = self._sources[task]
        name, idx = self.split_rows(task, split)
        facts = {"data": src["data_fp"], "split": name, "max_length": self._max_len, "sorted": split != "train",
                 "version": self.version}
        return hub.stored_split("glue-data", task, split, idx, facts,
                                lambda tmp: self._tokenize(tmp, task, name, idx, sort=split != "train"))

    def _encode(self, task: str, rows) -> dict[str, np.ndarray]:
        """Rows of `task` (a dataset or its columns) tokenised: one form for stored splits and streamed batches."""
        src = self._sources[task]
        return tokenize(self.tokenizer, [list(rows[c]) for c in src["text"]], self._max_len, src["pad_id"])

    def _tokenize(self, tmp: Path, task: str, split_name: str, idx: np.ndarray | None, sort: bool) -> dict:
        src = self._sources[task]
        ds = src["dd"][split_name]
        if idx is not None:
            ds = ds.select(idx.tolist())
        arrays = self._encode(task, ds)
        labels = np.asarray(ds[src["label_col"]], dtype=np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= src["num_classes"]):
            raise BenchError(f"dataset {self.datasets[task]!r} ({task}) split {split_name!r} has labels outside "
                             f"0..{src['num_classes'] - 1} (GLUE's test split hides its labels)")
        arrays["labels"] = labels
        if sort:    # shortest first: batches of similar length carry little padding
            order = np.argsort(arrays["attention_mask"].sum(axis=1), kind="stable")
            arrays = {k: v[order] for k, v in arrays.items()}
        hub.save_arrays(tmp, arrays)
        return {"task": task, "split": split_name, "examples": int(len(labels))}

    # ---- identity -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = {"weights": self.weights}
        if self.random_weights:
            cfg.update(synthetic_size=self.synthetic_size, synthetic_seq_len=self.synthetic_seq_len, seed=self.seed,
                       params=sum(p.numel() for p in self._theta0.values()),
                       split_sizes={t: self.split_sizes(t) for t in self.tasks})
            return cfg
        cfg.update(pretrained=self.pretrained_id, finetuned=self.finetuned_id, max_length=self.max_length,
                   datasets={t: self.datasets[t] for t in self.tasks}, revisions=self.revisions,
                   test={t: TEST_SPLIT.get(t, "validation") for t in self.tasks},
                   val=f"{hub.VAL_FRACTION} of train, seed {hub.VAL_SEED}")
        return {**cfg, **self.eval_config()}


def _synthetic(n: int, max_len: int, num_classes: int, g: torch.Generator, sort: bool = False) -> dict[str, torch.Tensor]:
    """n random token sequences, lengths uniform in 8..max_len, right-padded (id 0, mask 0)."""
    lengths = torch.randint(8, max_len + 1, (n,), generator=g)
    if sort:
        lengths = lengths.sort().values
    ids = torch.randint(0, GPT2_124M["vocab_size"], (n, max_len), generator=g, dtype=torch.int32)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).to(torch.uint8)
    return {"input_ids": ids * mask, "attention_mask": mask,
            "labels": torch.randint(num_classes, (n,), generator=g)}
