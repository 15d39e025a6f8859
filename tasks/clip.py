"""clip-vit-b32 / clip-vit-b16 / clip-vit-l14: published CLIP vision towers fine-tuned on eight image tasks.

    hf download openai/clip-vit-base-patch32 --include '*.json' --include '*.txt' --include '*.safetensors'
    python -m bench run method=ta_grid tasks=clip-vit-b32 'tasks.names=[sun397,stanford-cars]' device=cuda
    python -m bench run method=ta_grid tasks=clip-vit-b32 tasks.weights=random tasks.synthetic_size=64

The setting of task arithmetic (Ilharco et al., ICLR 2023) as published on the Hugging Face hub by
FusionBench (Tang et al. 2024): pre-trained `openai/clip-vit-base-patch32` (resp. base-patch16,
large-patch14), fine-tuned `tanganke/clip-vit-base-patch32_<task>` for sun397, stanford-cars,
resisc45, eurosat, svhn, gtsrb, mnist and dtd, datasets `tanganke/<task>` (mnist and svhn under their
canonical hub names). One class, registered once per architecture (`arch`, bound by the registry);
every id is config, a hub id or a local directory (tasks/hub.py), in which `{variant}` stands for the
architecture's hub name (base-patch32, base-patch16, large-patch14), `{arch}` for ViT-B-32 etc. and
`{task}` for the task. The backbone comes from one loader per backend (tasks/clip_backends.py).

- Merged: only the vision tower (`CLIPVisionModel`: `embeddings.*`, `pre_layrnorm.*`,
  `encoder.layers.N.*`, `post_layernorm.*`). Features = the frozen visual projection of its pooled
  output (`bench.tasks.models.clip_vision_features`).
- Heads: CLIP zero-shot classifiers from the pre-trained text tower: per class, the normalised mean
  of the normalised text embeddings of its prompts (class names and templates of the task-arithmetic
  release, tasks/clip_zeroshot.json), times the logit scale; image features are normalised first.
  Computed once per (pre-trained model, task) and cached (tasks/cache.py).
- Images: CLIP preprocessing (bicubic resize of the short side, centre crop). Val and test are
  preprocessed once and cached as uint8 at model resolution; train images are preprocessed as a batch
  draws them (`preprocess_workers` threads) and never stored, so a run writes no train data. `prepare`
  normalises on the device.
- `eval_size=N`: val and test cut to a stratified, seeded subset of at most N examples per task
  (`eval_seed`); only the subset is preprocessed; part of the suite key, marked in tables.
- Labels: the dataset's label ids, read as indices into the shipped class names, as FusionBench and
  the task-arithmetic release do (so numbers compare with the papers'). Where the dataset's ClassLabel
  names are the shipped ones in another order, a one-line warning on stderr names the task and the
  first label that differs; `remap_labels=true` maps the labels by name instead (recorded in the config).
- Splits: test = the dataset's test split; val = its validation split, else 10 % of train drawn with
  a fixed seed (tasks/hub.py `carve`); train = the rest of train.
- `backbone=open_clip`: the same tasks and heads on an open_clip model (`open_clip_model` = a built-in
  name with `open_clip_pretrained` a tag or a local checkpoint, or `local-dir:`/`hf-hub:` a folder
  with open_clip_config.json); fine-tuned towers are state dicts at `open_clip_finetuned` (a path
  with `{task}`, or `{Task}` for the release's folder names SUN397, Cars, …; keys `model.visual.*`,
  `visual.*` or the bare tower). The whole visual tower, its projection included, is merged, as in
  the task-arithmetic release. The release pickled whole `ImageEncoder` objects; convert each once
  inside that repository with `torch.save(torch.load(p, weights_only=False).state_dict(), out)`.
- `weights=random`: the real architecture (sizes of `arch`) with random weights, random unit-norm
  heads and synthetic uint8 images of the published split sizes (`synthetic_size` caps them), for
  speed and memory benchmarks only; records say `"weights": "random"` and never enter a leaderboard.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.api import BenchError, Params, unknown_choice
from bench.tasks import hub
from bench.tasks.base import ModelSuite, check_eval_size, device_generator, select_tasks
from bench.tasks.cache import cache_root, cached_build
from bench.tasks.clip_backends import ARCHS, Loaded, Preprocess, load_hf, load_open_clip, load_random

TASKS = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
DATASETS = {"sun397": "tanganke/sun397", "stanford-cars": "tanganke/stanford_cars", "resisc45": "tanganke/resisc45",
            "eurosat": "tanganke/eurosat", "svhn": "ufldl-stanford/svhn:cropped_digits", "gtsrb": "tanganke/gtsrb",
            "mnist": "ylecun/mnist", "dtd": "tanganke/dtd"}
# Published split sizes (train, test), for the synthetic data of weights=random.
SPLIT_SIZES = {"sun397": (19850, 19850), "stanford-cars": (8144, 8041), "resisc45": (18900, 6300),
               "eurosat": (21600, 2700), "svhn": (73257, 26032), "gtsrb": (26640, 12630), "mnist": (60000, 10000),
               "dtd": (3760, 1880)}
SUITE_NAMES = {"ViT-B-32": "clip-vit-b32", "ViT-B-16": "clip-vit-b16", "ViT-L-14": "clip-vit-l14"}
# `{variant}` in the ids: the hub name of each architecture (openai/clip-vit-<variant>, tanganke/...<variant>_<task>)
HF_VARIANTS = {"ViT-B-32": "base-patch32", "ViT-B-16": "base-patch16", "ViT-L-14": "large-patch14"}
CACHE_VERSION = "1"          # of the cached heads and images: bump when they change for the same inputs
METADATA = Path(__file__).with_name("clip_zeroshot.json")


def zeroshot_metadata(task: str) -> dict | None:
    """{"classnames": [...], "templates": [...]} shipped for `task`, or None."""
    meta = json.loads(METADATA.read_text())
    return meta.get(task)


# ---- pure functions (unit-tested) ------------------------------------------------------------------
def zeroshot_weights(encode: Callable[[list[str]], torch.Tensor], classnames: list[str], templates: list[str],
                     logit_scale: float, chunk: int = 512) -> torch.Tensor:
    """[C, D] zero-shot head: per class the normalised mean of its normalised prompt embeddings,
    times the logit scale (task-arithmetic `build_classification_head`)."""
    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    emb = torch.cat([encode(prompts[i:i + chunk]).float() for i in range(0, len(prompts), chunk)])
    emb = F.normalize(emb, dim=-1).reshape(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1) * logit_scale


def label_mapping(dataset_names: list[str] | None, classnames: list[str]) -> np.ndarray | None:
    """Dataset label id → index in `classnames`, when the dataset's ClassLabel names are the same
    classes in another order (compared case-, space- and underscore-insensitively); None = identity."""
    if not dataset_names:
        return None
    norm = lambda s: " ".join(s.replace("_", " ").replace("-", " ").lower().split())  # noqa: E731
    ours = {norm(c): i for i, c in enumerate(classnames)}
    theirs = [norm(c) for c in dataset_names]
    if len(ours) != len(classnames) or sorted(theirs) != sorted(ours) or theirs == [norm(c) for c in classnames]:
        return None
    return np.array([ours[t] for t in theirs], dtype=np.int64)


def clip_image(img, pre: Preprocess) -> np.ndarray:
    """CLIP eval preprocessing without normalisation: RGB, resize (short side → `pre.resize`, or
    squash), centre crop `pre.crop`; uint8 [3, crop, crop] (torchvision functional ops on PIL, as open_clip)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[pre.interpolation]
    img = img.convert("RGB")
    if pre.resize_mode == "squash":
        img = TF.resize(img, [pre.resize, pre.resize], interpolation=mode)
    else:
        img = TF.resize(img, pre.resize, interpolation=mode)
    img = TF.center_crop(img, pre.crop)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


class ZeroShotHead(torch.nn.Module):
    """Frozen zero-shot classifier: logits = normalise(features) @ weightᵀ (weight already scaled)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=-1), self.weight.to(x.dtype))


@functools.lru_cache(maxsize=None)
def _threads(workers: int) -> ThreadPoolExecutor:
    """One pool of image threads per size for the process (PIL decodes and resizes outside the GIL)."""
    return ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1)), thread_name_prefix="clip-image")


def clip_images(images, pre: Preprocess, workers: int) -> np.ndarray:
    """`clip_image` of every image, on `workers` threads: uint8 [n, 3, crop, crop]."""
    return np.stack(list(_threads(workers).map(lambda img: clip_image(img, pre), images)))


def write_images(tmp: Path, ds, rows: np.ndarray, image_col: str, label_col: str | None, pre: Preprocess,
                 workers: int, desc: str) -> np.ndarray | None:
    """Preprocess rows `rows` of dataset split `ds` (`clip_images`) into tmp/pixel_values.npy (uint8
    [n, 3, crop, crop], written in chunks); returns their labels (int64; None without `label_col`)."""
    n, s = len(rows), pre.crop
    pixels = np.lib.format.open_memmap(tmp / "pixel_values.npy", mode="w+", dtype=np.uint8, shape=(n, 3, s, s))
    labels = np.empty(n, dtype=np.int64)
    chunk = 256
    with tqdm(total=n, desc=desc, unit="img", leave=False, disable=n < 2048) as bar:
        for start in range(0, n, chunk):
            part = hub.rows_of(ds, rows[start:start + chunk])
            stop = start + len(part[image_col])
            if stop > start:
                pixels[start:stop] = clip_images(part[image_col], pre, workers)
            if label_col is not None:
                labels[start:stop] = part[label_col]
            bar.update(stop - start)
    pixels.flush()
    del pixels
    return labels if label_col is not None else None


# ---- the suite -------------------------------------------------------------------------------------
_DESC = ("CLIP {}: vision tower fine-tuned on sun397, stanford-cars, resisc45, eurosat, svhn, gtsrb, mnist, dtd "
         "(hub or local; zero-shot heads; weights=random for benchmarks)")


class CLIPSuite(ModelSuite):
    version = "2"                  # 2: labels are never re-mapped by name unless asked (remap_labels)
    objective = "accuracy"
    modality = "image"
    train_batch_size = 16          # images per task per step (the PWE-MoE authors')
    streams_train = True           # train images preprocessed as drawn, never the whole split

    def __init__(self,
                 arch: Literal["ViT-B-32", "ViT-B-16", "ViT-L-14"] = "ViT-B-32",  # set by the suite's name
                 names: list[str] = TASKS,  # any subset, e.g. [sun397,stanford-cars]
                 backbone: Literal["hf", "open_clip"] = "hf",  # hf (transformers CLIP) | open_clip
                 weights: Literal["real", "random"] = "real",  # random: real shapes, random weights, synthetic data
                 pretrained: str = "openai/clip-vit-{variant}",  # CLIPModel: vision + text towers, tokenizer
                 finetuned: str = "tanganke/clip-vit-{variant}_{task}",  # a CLIPVisionModel per task
                 datasets: dict = DATASETS,  # id[:config] per task: hub dataset or local folder
                 open_clip_model: str = "{arch}-quickgelu",  # open_clip: built-in name, local-dir:PATH, hf-hub:ID
                 open_clip_pretrained: str = "openai",  # open_clip: pretrained tag or local checkpoint file
                 open_clip_finetuned: str | None = None,  # open_clip: state dict path with {task} or {Task} (Cars, ...)
                 synthetic_size: int | None = None,  # weights=random: examples per split (null: published sizes)
                 seed: int = 0,  # weights=random: draws weights, task vectors, heads and data
                 preprocess_workers: int = 8,  # threads preprocessing images (val/test once; train batches as drawn)
                 remap_labels: bool = False,  # map labels by class name where the dataset orders them otherwise
                 eval_size: int | None = None,  # val/test examples per task: a stratified seeded subset (null: all)
                 eval_seed: int = 0):  # seeds the eval_size subset
        if arch not in ARCHS:
            raise BenchError(unknown_choice("value for tasks.arch:", arch, list(ARCHS)))
        self.name = SUITE_NAMES[arch]
        self.arch, self.backbone_kind, self.weights = arch, backbone, weights
        fill = lambda s: s.replace("{variant}", HF_VARIANTS[arch]).replace("{arch}", arch)  # noqa: E731
        self.datasets = {str(k): str(v) for k, v in dict(datasets).items()}
        self.synthetic_size, self.seed, self.preprocess_workers = synthetic_size, seed, preprocess_workers
        self.remap_labels = remap_labels
        self.random_weights = weights == "random"
        known = [t for t in self.datasets if t in SPLIT_SIZES] if self.random_weights else list(self.datasets)
        self.tasks = select_tasks(list(names), known, self.name)
        if synthetic_size is not None and synthetic_size < 1:
            raise BenchError(f"tasks.synthetic_size={synthetic_size} must be ≥ 1 (or null for the published sizes)")
        check_eval_size(eval_size, self.random_weights)
        self.eval_size, self.eval_seed = eval_size, eval_seed
        self._data = {t: {} for t in self.tasks}
        self._sources: dict[str, dict] = {}
        # train + test, and a validation split where the dataset has one: nothing else is fetched or read
        data = {t: hub.Ref(self.datasets[t], f"tasks.datasets.{t}", "dataset") for t in self.tasks}
        if self.random_weights:
            loaded = load_random(backbone, arch, fill(open_clip_model),
                                 {t: len(zeroshot_metadata(t)["classnames"]) for t in self.tasks}, seed)
        elif backbone == "hf":
            loaded = load_hf(fill(pretrained), fill(finetuned), self.tasks, list(data.values()))
        else:
            loaded = load_open_clip(fill(open_clip_model), open_clip_pretrained, open_clip_finetuned, self.tasks,
                                    list(data.values()))
        self.backbone, self.projection, self._features = loaded.tower, loaded.projection, loaded.features
        self._theta0, self._task_vectors = loaded.theta0, loaded.task_vectors
        self.preprocess, self.revisions, self._backend_config = loaded.preprocess, loaded.revisions, loaded.config
        heads = self._zeroshot_heads(loaded, data) if loaded.heads is None else loaded.heads
        self.heads = torch.nn.ModuleDict({t: ZeroShotHead(w) for t, w in heads.items()})
        self._mean_t = torch.tensor(self.preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.backbone.eval().requires_grad_(False)
        self.projection.eval().requires_grad_(False)

    # ---- zero-shot heads --------------------------------------------------------------------------
    def _zeroshot_heads(self, loaded: Loaded, data: dict[str, hub.Ref]) -> dict[str, torch.Tensor]:
        """[C, D] head weights per task from the text tower; reads each dataset's classes and splits."""
        heads = {}
        for t in self.tasks:
            spec = self.datasets[t]
            dd = hub.load_dataset_dict(loaded.paths[spec], data[t])
            heads[t] = self._head(t, dd, loaded)
            self._sources[t]["data_fp"] = hub.digest([hub.fingerprint(loaded.paths[spec]), spec])
        return heads

    def _head(self, task: str, dd, loaded: Loaded) -> torch.Tensor:
        what = f"dataset {self.datasets[task]!r} ({task})"
        sp = hub.splits(dd, "test", what)
        cols = list(dd["train"].column_names)
        image_col = hub.pick(cols, ("image", "img"), what, "image")
        label_col = hub.pick(cols, ("label", "labels", "fine_label"), what, "label")
        feature = dd["train"].features[label_col]
        ds_names = list(getattr(feature, "names", None) or []) or None
        meta = zeroshot_metadata(task)
        if meta is None:
            if ds_names is None:
                raise BenchError(f"{what}: no class names shipped for {task!r} and its label column has none "
                                 f"(use a datasets ClassLabel feature)")
            meta = {"classnames": [n.replace("_", " ") for n in ds_names], "templates": ["a photo of a {}."]}
        classnames, templates = meta["classnames"], meta["templates"]
        if ds_names is not None and len(ds_names) != len(classnames):
            raise BenchError(f"{what} has {len(ds_names)} classes, the {task!r} class names {len(classnames)}")
        label_map = label_mapping(ds_names, classnames)
        if label_map is not None:    # loud either way: numbers differ from the published protocol's
            j = int(np.flatnonzero(label_map != np.arange(len(label_map)))[0])
            print(f"warning: {self.name} {task}: the dataset's class names are the shipped ones in another order "
                  f"(its label {j} is {ds_names[j]!r}, shipped class {j} is {classnames[j]!r}); "
                  + ("labels re-mapped by name (tasks.remap_labels=true)" if self.remap_labels else
                     "labels used as indices into the shipped names, as published "
                     "(tasks.remap_labels=true maps them by name)"), file=sys.stderr)
        self._sources[task] = {"dd": dd, "splits": sp, "image_col": image_col, "label_col": label_col,
                               "label_map": label_map if self.remap_labels else None, "num_classes": len(classnames)}
        key = hub.digest({"model": loaded.text_fp, "backbone": self.backbone_kind, "classnames": classnames,
                          "templates": templates, "version": CACHE_VERSION})
        directory = cached_build(cache_root() / "clip-heads" / f"{task}-{key}",
                                 lambda tmp: self._build_head(tmp, loaded.encode_text, classnames, templates,
                                                              loaded.logit_scale))
        from safetensors.torch import load_file

        return load_file(str(directory / "head.safetensors"))["weight"]

    @staticmethod
    def _build_head(tmp: Path, encode, classnames, templates, logit_scale) -> dict:
        from safetensors.torch import save_file

        w = zeroshot_weights(encode, classnames, templates, logit_scale)
        save_file({"weight": w.contiguous()}, str(tmp / "head.safetensors"))
        return {"classes": len(classnames), "templates": len(templates)}

    # ---- what methods and the evaluator read ------------------------------------------------------
    def features(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._features(self.backbone, self.projection, params, batch)

    def prepare(self, batch: dict[str, torch.Tensor], device, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """uint8 on the device → normalised pixels, computed in the forward's dtype (bf16 under autocast)."""
        device, dtype = torch.device(device), dtype or torch.float32
        pixels = batch["pixel_values"].to(device, non_blocking=True).to(dtype).div_(255.0)
        pixels = (pixels - self._mean_t.to(device, dtype)) / self._std_t.to(device, dtype)
        return {"pixel_values": pixels, "labels": batch["labels"].to(device, non_blocking=True).long()}

    def train_batch(self, task: str, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.random_weights:     # synthetic: drawn per batch on the device, never stored
            s, g = self.preprocess.crop, device_generator(generator, self.device)
            raw = {"pixel_values": torch.randint(0, 256, (batch_size, 3, s, s), generator=g, dtype=torch.uint8,
                                                 device=self.device),
                   "labels": torch.randint(self._num_classes(task), (batch_size,), generator=g, device=self.device)}
            return self.prepare(raw, self.device)
        return super().train_batch(task, batch_size, generator)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.backbone, self.projection, self.heads]

    def save_model(self, params: Params, directory: Path) -> dict[str, Any]:
        """A model that classifies from pixels with transformers alone (bench.tasks.exporting.save_clip)."""
        from bench.tasks.exporting import save_clip

        return save_clip(self, params, directory, {t: (zeroshot_metadata(t) or {}).get("classnames") for t in self.tasks})

    # ---- data -----------------------------------------------------------------------------------
    def _num_classes(self, task: str) -> int:
        return self.heads[task].weight.shape[0]

    def split_sizes(self, task: str) -> dict[str, int]:
        """Examples per split: the published sizes (val carved from train) or `synthetic_size`."""
        return hub.split_sizes(self, task, SPLIT_SIZES)

    def _read_labels(self, task: str, split: str) -> np.ndarray:
        src = self._sources[task]
        labels = hub.read_labels(src, split, f"dataset {self.datasets[task]!r} ({task})")
        return labels if src["label_map"] is None else src["label_map"][labels]

    def _train_examples(self, task: str, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Train rows `positions` preprocessed now (`clip_images`), as the stored splits hold them."""
        src = self._sources[task]
        part = hub.train_rows(src, positions)
        return {"pixel_values": torch.from_numpy(clip_images(part[src["image_col"]], self.preprocess,
                                                             self.preprocess_workers)),
                "labels": torch.from_numpy(self.split_labels(task, "train")[positions])}

    def _split_data(self, task: str, split: str) -> dict[str, torch.Tensor]:
        if self.random_weights:      # generated where it is used: ~16 GB for 8 tasks at 224 px
            n, s, d = self.split_sizes(task)[split], self.preprocess.crop, self.device
            g = torch.Generator(d).manual_seed(int(hub.digest([self.seed, task, split]), 16) % 2**63)
            return {"pixel_values": torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8, device=d),
                    "labels": torch.randint(self._num_classes(task), (n,), generator=g, device=d)}
        src = self._sources[task]
        name, idx = self.split_rows(task, split)
        label_map = src["label_map"]
        pre = self.preprocess
        facts = {"data": src["data_fp"], "split": name, "resize": pre.resize, "crop": pre.crop,
                 "interpolation": pre.interpolation, "resize_mode": pre.resize_mode,
                 "label_map": None if label_map is None else label_map.tolist(), "version": CACHE_VERSION}
        return hub.stored_split("clip-data", task, split, idx, facts, lambda tmp: self._preprocess(tmp, task, name, idx))

    def _preprocess(self, tmp: Path, task: str, split_name: str, idx: np.ndarray | None) -> dict:
        src = self._sources[task]
        ds = src["dd"][split_name]
        rows = np.arange(len(ds)) if idx is None else idx
        n = len(rows)
        labels = write_images(tmp, ds, rows, src["image_col"], src["label_col"], self.preprocess,
                              self.preprocess_workers, f"preprocessing {task}/{split_name}")
        if src["label_map"] is not None:
            labels = src["label_map"][labels]
        if n and (labels.min() < 0 or labels.max() >= src["num_classes"]):
            raise BenchError(f"dataset {self.datasets[task]!r} ({task}) has labels outside 0..{src['num_classes'] - 1}")
        hub.save_arrays(tmp, {"labels": labels})
        return {"task": task, "split": split_name, "examples": n}

    # ---- identity -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = {"arch": self.arch, "backbone": self.backbone_kind, "weights": self.weights}
        if self.random_weights:
            cfg.update(synthetic_size=self.synthetic_size, seed=self.seed, **self._backend_config,
                       params=sum(p.numel() for p in self._theta0.values()), image_size=self.preprocess.crop,
                       split_sizes={t: self.split_sizes(t) for t in self.tasks})
            return cfg
        cfg.update(**self._backend_config, datasets={t: self.datasets[t] for t in self.tasks}, revisions=self.revisions,
                   val=f"{hub.VAL_FRACTION} of train, seed {hub.VAL_SEED}, when no validation split")
        if self.remap_labels:
            cfg["remap_labels"] = True
        return {**cfg, **self.eval_config()}
