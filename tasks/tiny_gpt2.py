"""tiny-gpt2: a tiny `GPT2ForSequenceClassification` pre-trained and fine-tuned offline on templated text tasks.

    python -m bench run method=ta_grid tasks=tiny-gpt2 tasks.names=[sentiment,negation]

    >>> from bench.core.registry import SUITES
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
     (`bench.tasks.text.ANSWER_WORDS`: near, behind, with, beside, above), the way a prompted LM answers
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
Fine-tuning and the merging bars fan out over the build pool of tasks/offline.py (one thread per
process, so a build is bit-identical whatever the core count). Everything is saved with `save_pretrained` /
`Dataset.save_to_disk` under `<cache_dir>/tiny-gpt2/v<version>-seed<seed>[-<sizes hash>]` and
verified by tasks/cache.py on every load. A task subset (`names=[...]`) selects from that one build.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.api import Params, stack_task_vectors

from bench.tasks.base import SPLITS
from bench.tasks.models import backbone_params, gpt2_features, trim_padding
from bench.tasks.offline import OfflineSuite, fit
from bench.tasks.text import ANSWER_WORDS, MAX_WORDS, TASKS, build_tokenizer, encode, generate_splits

TASK_NAMES = list(TASKS)
MAX_LENGTH = MAX_WORDS + 1                      # + [EOS]
MODEL = dict(n_embd=64, n_layer=2, n_head=4, n_positions=MAX_LENGTH, resid_pdrop=0.0, embd_pdrop=0.0,
             attn_pdrop=0.0, summary_first_dropout=0.0)
PRETRAIN = dict(lr=3e-3, weight_decay=0.01, batch=128)
FINETUNE = dict(lr=3e-3, weight_decay=0.0, batch=128)
WARMUP_FRAC = 0.1
EVAL_BATCH = 512


def gpt2_config(tokenizer, num_labels: int = 2):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      num_labels=num_labels, **MODEL)


# ---- the suite --------------------------------------------------------------------------------
class TinyGPT2(OfflineSuite):
    name = "tiny-gpt2"
    version = "2"   # 1: an unreleased draft (six tasks, heads trained per task)
    modality = "text"
    train_batch_size = 8
    TASK_NAMES = TASK_NAMES
    eval_batch = EVAL_BATCH

    def __init__(
        self,
        names: list[str] | None = None,  # task subset, e.g. [sentiment,negation]; null = all 5 (topic … agreement)
        seed: int = 0,  # draws the sentences, the initialisation and the training batches of the build
        cache_dir: str | None = None,  # cache root; null = $PARETOBENCH_CACHE or ~/.cache/paretobench
        train_size: int = 4000,  # training sentences per task (a build size: other values build a separate variant)
        val_size: int = 200,  # validation sentences per task (a build size)
        test_size: int = 500,  # test sentences per task (a build size)
        pretrain_steps: int = 400,  # causal-LM pre-training steps, batch 128 of the mixed corpus (a build size)
        finetune_steps: int = 300,  # fine-tuning steps per task, batch 128, body only (a build size)
        build_workers: int | None = None,  # build processes, results alike; null = usable cores (≤ 5); 1 = in-process
        eval_size: int | None = None,  # val/test examples per task: a stratified seeded subset (null: all)
        eval_seed: int = 0,  # seeds the eval_size subset
    ):
        super().__init__(names, seed, cache_dir, build_workers, eval_size, eval_seed, train_size=train_size, val_size=val_size,
                         test_size=test_size, pretrain_steps=pretrain_steps, finetune_steps=finetune_steps)

    # ---- what the Evaluator and trainers call --------------------------------------------------
    def prepare(self, batch, device, dtype: torch.dtype | None = None):
        """Right-padded stored ids → the batch cut to its longest sequence, on `device` (ids: no dtype)."""
        return {k: v.to(device, non_blocking=True) for k, v in trim_padding(batch).items()}

    def features(self, params: Params, batch):
        return gpt2_features(self.backbone, params, batch)

    def save_model(self, params: Params, directory: Path) -> dict:
        """ModelSuite's export (GPT2Model, tokenizer, heads) and how to classify with it (bench.tasks.exporting)."""
        from bench.tasks.exporting import gpt2_facts

        return {**super().save_model(params, directory),
                **gpt2_facts(self, MAX_LENGTH, classes={t: TASKS[t].classes for t in self.tasks},
                             note="; the tokenizer appends [EOS] to every sentence")}

    # ---- OfflineSuite hooks ------------------------------------------------------------------
    def _load(self, path: Path) -> None:
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
            splits = datasets.load_from_disk(str(path / "data" / task))
            self._data[task] = {s: stored_split(splits[s]) for s in SPLITS}
            for s in ("val", "test"):    # evaluation order: by length, so trimmed batches carry little padding
                order = torch.argsort(self._data[task][s]["attention_mask"].sum(dim=1), stable=True)
                self._data[task][s] = {k: v[order] for k, v in self._data[task][s].items()}

    @classmethod
    def build_theta0(cls, out, seed, sizes, timings):
        """Data and tokenizer, then θ0: causal-LM pre-training on the mixed corpus (labels never seen)."""
        import datasets
        from transformers import GPT2LMHeadModel

        t = time.perf_counter()
        split_sizes = {"train": sizes["train_size"], "val": sizes["val_size"], "test": sizes["test_size"]}
        raw = {task: generate_splits(task, split_sizes, seed)
               for task in tqdm(TASK_NAMES, desc="tiny-gpt2 data", leave=False)}
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

        t = time.perf_counter()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            lm = GPT2LMHeadModel(gpt2_config(tokenizer))
        pretrain_lm(lm, {k: torch.cat(v) for k, v in corpus.items()}, sizes["pretrain_steps"],
                    torch.Generator().manual_seed(seed))
        lm.save_pretrained(out / "pretrained")
        timings["pretrain_s"] = time.perf_counter() - t

    @classmethod
    def finetune_task(cls, out, seed, sizes, task):
        """θ_task: the body fine-tuned from the saved θ0 under the task's frozen answer-word head."""
        import datasets
        from transformers import GPT2ForSequenceClassification, GPT2Model, PreTrainedTokenizerFast

        i = TASK_NAMES.index(task)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out / "tokenizer")
        theta0 = GPT2Model.from_pretrained(out / "pretrained").state_dict()
        num_classes = len(TASKS[task].classes)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = GPT2ForSequenceClassification(gpt2_config(tokenizer, num_classes))
        model.transformer.load_state_dict(theta0)
        model.score.weight.data.copy_(answer_head(theta0["wte.weight"], tokenizer, num_classes))
        model.score.requires_grad_(False)
        train = stored_split(datasets.load_from_disk(str(out / "data" / task))["train"])
        finetune(model, train, sizes["finetune_steps"], torch.Generator().manual_seed(seed * 1000 + i))
        model.save_pretrained(out / "finetuned" / task)


# ---- the build recipe -----------------------------------------------------------------------------
def stored_split(ds) -> dict[str, torch.Tensor]:
    """A saved `datasets` split as int64 tensors: input_ids, attention_mask, labels."""
    return {k: torch.as_tensor(np.asarray(ds[c], dtype=np.int64))
            for k, c in (("input_ids", "input_ids"), ("attention_mask", "attention_mask"), ("labels", "label"))}


def answer_head(wte: torch.Tensor, tokenizer, num_classes: int) -> torch.Tensor:
    """[C, width] score weights: rows of the (tied) input/output embedding for the first C answer words."""
    ids = tokenizer.convert_tokens_to_ids(ANSWER_WORDS[:num_classes])
    if tokenizer.unk_token_id in ids:
        raise RuntimeError(f"answer words {ANSWER_WORDS[:num_classes]} are not all in the vocabulary")
    return wte[ids].detach().clone()


def pretrain_lm(lm, corpus: dict[str, torch.Tensor], steps: int, gen: torch.Generator) -> None:
    """Next-token prediction on random batches of the corpus (pads ignored)."""
    n = len(corpus["input_ids"])

    def loss_at() -> torch.Tensor:
        idx = torch.randint(n, (PRETRAIN["batch"],), generator=gen)
        b = trim_padding({k: v[idx] for k, v in corpus.items()})
        labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
        return lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels).loss

    lm.train()
    fit(lm.parameters(), loss_at, steps, lr=PRETRAIN["lr"], weight_decay=PRETRAIN["weight_decay"],
        warmup_frac=WARMUP_FRAC, desc="tiny-gpt2 pre-train (causal LM)")
    lm.eval()


def finetune(model, train: dict[str, torch.Tensor], steps: int, gen: torch.Generator) -> None:
    """The whole body, through the model's own forward (its own last-non-pad pooling); the score head
    stays frozen (it has requires_grad off and is not in the optimizer)."""
    n = len(train["labels"])

    def loss_at() -> torch.Tensor:
        idx = torch.randint(n, (FINETUNE["batch"],), generator=gen)
        return model(**trim_padding({k: v[idx] for k, v in train.items()})).loss

    model.train()
    fit([p for p in model.parameters() if p.requires_grad], loss_at, steps, lr=FINETUNE["lr"],
        weight_decay=FINETUNE["weight_decay"], warmup_frac=WARMUP_FRAC)
    model.eval()
