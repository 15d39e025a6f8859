"""tiny-clip: a tiny `CLIPVisionModel` pre-trained and fine-tuned offline on procedural image tasks.

    python -m bench run method=ta_grid tasks=tiny-clip tasks.names=[digits,dots]

    >>> from bench.core.registry import SUITES
    >>> suite = SUITES.build("tiny-clip", names=["digits", "shapes"])   # doctest: +SKIP
    >>> suite.tasks, suite.task_vectors()["encoder.layers.0.mlp.fc1.weight"].shape  # doctest: +SKIP
    (['digits', 'shapes'], torch.Size([2, 256, 64]))

The backbone is the real transformers `CLIPVisionModel` (module names as in ViT-B/32:
`encoder.layers.N.self_attn.q_proj`, `encoder.layers.N.mlp.fc1`, …) at 32×32 pixels, patch 8, width
64, 4 layers, 4 heads, MLP 256 (214k parameters); features are its `pooler_output`, and each task
has a frozen linear head, as CLIP's zero-shot heads are frozen in the published merging setup.
Images are stored as uint8 and standardised per image in `prepare`.

The build (all seven tasks of tasks/images.py; the recipe is in tasks/tiny_clip_build.py; the pool,
cache and quality bars are tasks/offline.py's) runs:
  1. data: 2500 train / 200 val / 500 test images per task, from the seed (seconds);
  2. θ0: 800 steps of multi-task pre-training of encoder + heads on the mixture, with ~25 % of each
     task's classes held out; the held-out classes' head rows are then set once from θ0's mean class
     features, and every head is frozen. Holding classes out keeps θ0 well below the fine-tuned
     models even on easy tasks;
  3. θ_i: the whole encoder fine-tuned on task i from θ0 (350 steps, batch 128), head frozen;
     τ_i = θ_i − θ0 over every CLIPVisionModel parameter;
  4. quality bars (printed, stored in the manifest): each θ_i ≥ 0.90 on its task, θ0 ≥ 0.10 lower,
     and for all 21 pairs the best point of the shared-λ line ≥ 0.05 below both fine-tuned
     accuracies. (The 11 × 11 grid bar is checked in tests/test_tiny_clip.py.)
θ0 and every θ_i are saved with `save_pretrained`, heads and images as safetensors, under
`<cache_dir>/tiny-clip/v<version>-seed<seed>[-<sizes hash>]`, verified by tasks/cache.py on every
load. A task subset (`names=[...]`) selects from that one build; loading takes well under a second.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from bench.api import Params, stack_task_vectors

from bench.tasks.base import SPLITS
from bench.tasks.images import TASKS
from bench.tasks.models import backbone_params, clip_vision_features
from bench.tasks.offline import OfflineSuite
from bench.tasks.tiny_clip_build import build_theta0, finetune, standardize

TASK_NAMES = list(TASKS)
EVAL_BATCH = 500


class TinyClip(OfflineSuite):
    name = "tiny-clip"
    version = "1"
    modality = "image"
    train_batch_size = 16
    TASK_NAMES = TASK_NAMES
    eval_batch = EVAL_BATCH

    def __init__(
        self,
        names: list[str] | None = None,  # task subset, e.g. [digits,dots]; null = all 7 (digits … dots)
        seed: int = 0,  # seeds the build: data, θ0, θ_i (one cached build per version × seed × sizes)
        cache_dir: str | None = None,  # cache root; null = $PARETOBENCH_CACHE or ~/.cache/paretobench
        train_size: int = 2500,  # training images per task (a build size: other values build a weaker variant)
        val_size: int = 200,  # validation images per task (a build size)
        test_size: int = 500,  # test images per task (a build size)
        pretrain_steps: int = 800,  # θ0 pre-training steps, 16 images of each task a step (a build size)
        finetune_steps: int = 350,  # fine-tuning steps per task, batch 128 (a build size)
        build_workers: int | None = None,  # build processes, results alike; null = usable cores (≤ 7); 1 = in-process
        eval_size: int | None = None,  # val/test examples per task: a stratified seeded subset (null: all)
        eval_seed: int = 0,  # seeds the eval_size subset
    ):
        super().__init__(names, seed, cache_dir, build_workers, eval_size, eval_seed, train_size=train_size, val_size=val_size,
                         test_size=test_size, pretrain_steps=pretrain_steps, finetune_steps=finetune_steps)

    def config(self):
        return {"names": list(self.tasks), **super().config()}   # names are part of recorded suite keys

    # ---- ModelSuite hooks -----------------------------------------------------------------
    def features(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return clip_vision_features(self.backbone, params, batch)

    def prepare(self, batch, device, dtype: torch.dtype | None = None):
        out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        out["pixel_values"] = standardize(out["pixel_values"]).to(dtype or torch.float32)
        return out

    def save_model(self, params: Params, directory: Path) -> dict:
        """ModelSuite's export (CLIPVisionModel + heads) and how to classify with it (bench.tasks.exporting)."""
        from bench.tasks.exporting import clip_facts

        return {**super().save_model(params, directory), **clip_facts(self, self.classes)}

    # ---- OfflineSuite hooks ----------------------------------------------------------------
    def _load(self, path: Path) -> None:
        from transformers import CLIPVisionModel

        meta = json.loads((path / "meta.json").read_text())
        self.classes = {t: meta["classes"][t] for t in self.tasks}
        self.heldout = {t: meta["heldout"][t] for t in self.tasks}
        self.backbone = CLIPVisionModel.from_pretrained(path / "theta0").eval().requires_grad_(False)
        finetuned = [backbone_params(CLIPVisionModel.from_pretrained(path / "finetuned" / t)) for t in self.tasks]
        self._theta0 = backbone_params(self.backbone)
        self._task_vectors = stack_task_vectors(self._theta0, finetuned)
        heads = load_file(path / "heads.safetensors")
        self.heads = torch.nn.ModuleDict()
        for t in self.tasks:
            w = heads[f"{t}.weight"]
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            lin.load_state_dict({"weight": w, "bias": heads[f"{t}.bias"]})
            self.heads[t] = lin.requires_grad_(False)
        self._data = {}
        for t in self.tasks:
            d = load_file(path / "data" / f"{t}.safetensors")
            self._data[t] = {s: {"pixel_values": d[f"{s}.pixel_values"], "labels": d[f"{s}.labels"]} for s in SPLITS}

    @classmethod
    def build_theta0(cls, out, seed, sizes, timings):
        build_theta0(out, seed, sizes, timings, version=cls.version)

    @classmethod
    def finetune_task(cls, out, seed, sizes, task):
        finetune(out, seed, task, sizes["finetune_steps"])
