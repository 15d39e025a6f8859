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
`{task}` for the task.

- Merged: only the vision tower (`CLIPVisionModel`: `embeddings.*`, `pre_layrnorm.*`,
  `encoder.layers.N.*`, `post_layernorm.*`). Features = the frozen visual projection of its pooled
  output (`tasks.models.clip_vision_features`).
- Heads: CLIP zero-shot classifiers from the pre-trained text tower: per class, the normalised mean
  of the normalised text embeddings of its prompts (class names and templates of the task-arithmetic
  release, tasks/clip_zeroshot.json), times the logit scale; image features are normalised first.
  Computed once per (pre-trained model, task) and cached (tasks/cache.py).
- Images: CLIP preprocessing (bicubic resize of the short side, centre crop) done once per split and
  cached as uint8 at model resolution; `prepare` normalises on the device. Labels: the dataset's
  ClassLabel ids; when its class names are the shipped ones in another order they are mapped by name.
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

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call
from tqdm.auto import tqdm

from bench.merge import Params, check_compatible
from bench.registry import SUITES, BenchError, unknown_choice
from tasks import hub
from tasks.base import ModelSuite, select_tasks
from tasks.cache import cache_root, cached_build
from tasks.models import backbone_params, clip_vision_features, quiet_hf

TASKS = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
DATASETS = {"sun397": "tanganke/sun397", "stanford-cars": "tanganke/stanford_cars", "resisc45": "tanganke/resisc45",
            "eurosat": "tanganke/eurosat", "svhn": "ufldl-stanford/svhn:cropped_digits", "gtsrb": "tanganke/gtsrb",
            "mnist": "ylecun/mnist", "dtd": "tanganke/dtd"}
# Folder names of the task-arithmetic release (mlfoundations/task_vectors checkpoints/<model>/<Task>/).
RELEASE_NAMES = {"sun397": "SUN397", "stanford-cars": "Cars", "resisc45": "RESISC45", "eurosat": "EuroSAT",
                 "svhn": "SVHN", "gtsrb": "GTSRB", "mnist": "MNIST", "dtd": "DTD"}
# Published split sizes (train, test), for the synthetic data of weights=random.
SPLIT_SIZES = {"sun397": (19850, 19850), "stanford-cars": (8144, 8041), "resisc45": (18900, 6300),
               "eurosat": (21600, 2700), "svhn": (73257, 26032), "gtsrb": (26640, 12630), "mnist": (60000, 10000),
               "dtd": (3760, 1880)}
# Vision-tower sizes of the published architectures (transformers CLIPVisionConfig fields).
ARCHS = {
    "ViT-B-32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     patch_size=32, image_size=224, projection_dim=512),
    "ViT-B-16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     patch_size=16, image_size=224, projection_dim=512),
    "ViT-L-14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     patch_size=14, image_size=224, projection_dim=768),
}
SUITE_NAMES = {"ViT-B-32": "clip-vit-b32", "ViT-B-16": "clip-vit-b16", "ViT-L-14": "clip-vit-l14"}
# `{variant}` in the ids: the hub's name of each architecture (openai/clip-vit-<variant>, tanganke/clip-vit-<variant>_<task>).
HF_VARIANTS = {"ViT-B-32": "base-patch32", "ViT-B-16": "base-patch16", "ViT-L-14": "large-patch14"}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_SCALE = 100.0          # exp of CLIP's trained logit scale (clamped at 100): the random heads' scale
RANDOM_TAU_STD = 1e-3        # weights=random: task vectors are N(0, this²)
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


def clip_image(img, resize: int, crop: int, interpolation: str = "bicubic", resize_mode: str = "shortest") -> np.ndarray:
    """CLIP eval preprocessing without normalisation: RGB, resize (short side → `resize`, or squash),
    centre crop `crop`; returns uint8 [3, crop, crop] (torchvision functional ops on PIL, as open_clip)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[interpolation]
    img = img.convert("RGB")
    if resize_mode == "squash":
        img = TF.resize(img, [resize, resize], interpolation=mode)
    else:
        img = TF.resize(img, resize, interpolation=mode)
    img = TF.center_crop(img, crop)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


class ZeroShotHead(torch.nn.Module):
    """Frozen zero-shot classifier: logits = normalise(features) @ weightᵀ (weight already scaled)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=-1), self.weight.to(x.dtype))


def _release_path(pattern: str, task: str) -> str:
    return pattern.replace("{task}", task).replace("{Task}", RELEASE_NAMES.get(task, task))


def _visual_state_dict(obj: Any, what: str) -> Params:
    """The visual tower's tensors from an open_clip state dict: keys `model.visual.*`, `visual.*`
    (prefix dropped) or a bare tower."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise BenchError(f"{what} is not a state dict of tensors; convert a pickled ImageEncoder with "
                         f"torch.save(torch.load(p, weights_only=False).state_dict(), out)")
    obj = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    visual = {k.split("visual.", 1)[1]: v for k, v in obj.items() if k.startswith(("visual.", "model.visual."))}
    return visual or dict(obj)


def _load_state_dict(path: Path, what: str) -> Any:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:   # pickled modules are refused by weights_only loading
        raise BenchError(f"{what}={str(path)!r} cannot be read as a state dict ({type(e).__name__}); a pickled "
                         f"ImageEncoder of the task-arithmetic release must be converted once: "
                         f"torch.save(torch.load(p, weights_only=False).state_dict(), out)") from None


# ---- the suite -------------------------------------------------------------------------------------
_DESC = ("CLIP {}: vision tower fine-tuned on sun397, stanford-cars, resisc45, eurosat, svhn, gtsrb, mnist, dtd "
         "(hub or local; zero-shot heads; weights=random for benchmarks)")


@SUITES.register("clip-vit-l14", _DESC.format("ViT-L/14"), arch="ViT-L-14")
@SUITES.register("clip-vit-b16", _DESC.format("ViT-B/16"), arch="ViT-B-16")
@SUITES.register("clip-vit-b32", _DESC.format("ViT-B/32"), arch="ViT-B-32")
class CLIPSuite(ModelSuite):
    version = "1"
    objective = "accuracy"
    modality = "image"
    train_batch_size = 16          # images per task per step (the PWE-MoE authors')

    def __init__(self, arch: Literal["ViT-B-32", "ViT-B-16", "ViT-L-14"] = "ViT-B-32",
                 names: list[str] = TASKS,
                 backbone: Literal["hf", "open_clip"] = "hf",
                 weights: Literal["real", "random"] = "real",
                 pretrained: str = "openai/clip-vit-{variant}",
                 finetuned: str = "tanganke/clip-vit-{variant}_{task}",
                 datasets: dict = DATASETS,
                 open_clip_model: str = "{arch}-quickgelu",
                 open_clip_pretrained: str = "openai",
                 open_clip_finetuned: str | None = None,
                 synthetic_size: int | None = None,
                 seed: int = 0,
                 preprocess_workers: int = 8):
        if arch not in ARCHS:
            raise BenchError(unknown_choice("value for tasks.arch:", arch, list(ARCHS)))
        self.name = SUITE_NAMES[arch]
        self.arch, self.backbone_kind, self.weights = arch, backbone, weights
        fill = lambda s: s.replace("{variant}", HF_VARIANTS[arch]).replace("{arch}", arch)  # noqa: E731
        self.pretrained_id, self.finetuned_id = fill(pretrained), fill(finetuned)
        self.datasets = {str(k): str(v) for k, v in dict(datasets).items()}
        self.open_clip_model, self.open_clip_pretrained = fill(open_clip_model), open_clip_pretrained
        self.open_clip_finetuned = open_clip_finetuned
        self.synthetic_size, self.seed, self.preprocess_workers = synthetic_size, seed, preprocess_workers
        self.random_weights = weights == "random"
        self.tasks = self._check_names(list(names))
        if synthetic_size is not None and synthetic_size < 1:
            raise BenchError(f"tasks.synthetic_size={synthetic_size} must be ≥ 1 (or null for the published sizes)")
        self._data = {t: {} for t in self.tasks}
        self._sources: dict[str, dict] = {}
        self.revisions: dict[str, str] = {}
        if self.random_weights:
            self._build_random()
        else:
            self._build_real()
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.backbone.eval().requires_grad_(False)
        self.projection.eval().requires_grad_(False)

    # ---- construction ---------------------------------------------------------------------------
    def _check_names(self, names: list[str]) -> list[str]:
        known = list(self.datasets) if not self.random_weights else [t for t in self.datasets if t in SPLIT_SIZES]
        return select_tasks(names, known, self.name)

    def _build_real(self) -> None:
        refs = [hub.Ref(self.datasets[t], f"tasks.datasets.{t}", "dataset") for t in self.tasks]
        if self.backbone_kind == "hf":
            refs = [hub.Ref(self.pretrained_id, "tasks.pretrained"),
                    *[hub.Ref(self.finetuned_id.replace("{task}", t), "tasks.finetuned") for t in self.tasks], *refs]
        else:
            refs = self._open_clip_refs() + refs
        paths = hub.resolve(refs)            # every id at once: one error naming all missing ids
        self.revisions = {r.spec: hub.fingerprint(paths[r.spec]) for r in refs if hub.local_path(r.id) is None}
        if self.backbone_kind == "hf":
            encode, logit_scale, model_fp = self._load_hf(paths)
        else:
            encode, logit_scale, model_fp = self._load_open_clip(paths)
        heads = {}
        for t in self.tasks:
            spec = self.datasets[t]
            dd = hub.load_dataset_dict(paths[spec], hub.split_config(spec)[1], f"tasks.datasets.{t}")
            heads[t] = self._head(t, dd, encode, logit_scale, model_fp)
            self._sources[t]["data_fp"] = hub.digest([hub.fingerprint(paths[spec]), spec])
        self.heads = torch.nn.ModuleDict({t: ZeroShotHead(w) for t, w in heads.items()})

    def _load_hf(self, paths: dict[str, Path]):
        from transformers import AutoTokenizer, CLIPModel, CLIPVisionModel

        pre = paths[self.pretrained_id]
        with quiet_hf():
            try:
                clip = CLIPModel.from_pretrained(str(pre))
                tokenizer = AutoTokenizer.from_pretrained(str(pre))
            except (OSError, ValueError) as e:
                raise BenchError(f"tasks.pretrained={self.pretrained_id!r} is not a CLIP model with a tokenizer "
                                 f"({' '.join(str(e).split())[:200]})") from None
        clip.eval()
        self.backbone = clip.vision_model                   # a CLIPVisionModel (transformers ≥ 5)
        if not isinstance(self.backbone, CLIPVisionModel):  # transformers 4: a bare CLIPVisionTransformer
            wrapper = CLIPVisionModel(clip.config.vision_config)
            wrapper.vision_model = self.backbone
            self.backbone = wrapper.eval()
        self.projection = clip.visual_projection
        self._theta0 = backbone_params(self.backbone)
        self.mean, self.std, self.resize, self.crop = _hf_preprocess(pre, clip.config.vision_config.image_size)
        self.interpolation, self.resize_mode = "bicubic", "shortest"
        tv = {n: torch.zeros((len(self.tasks), *p.shape), dtype=p.dtype) for n, p in self._theta0.items()}
        for i, t in enumerate(self.tasks):
            spec = self.finetuned_id.replace("{task}", t)
            with quiet_hf():
                try:
                    ft, info = CLIPVisionModel.from_pretrained(str(paths[spec]), output_loading_info=True)
                except (OSError, ValueError, RuntimeError) as e:
                    raise BenchError(f"fine-tuned model {spec!r} ({t}) cannot be loaded as a CLIPVisionModel "
                                     f"({' '.join(str(e).split())[:200]})") from None
            _check_loading(info, f"fine-tuned model {spec!r} ({t})")
            params = {n: p.detach() for n, p in ft.named_parameters()}
            check_compatible(self._theta0, params, f"fine-tuned model {spec!r} ({t})")
            for n, t0 in self._theta0.items():
                tv[n][i] = params[n].to(t0.dtype) - t0
            del ft, params
        self._task_vectors = tv
        tokenizer_max = min(int(getattr(tokenizer, "model_max_length", 77) or 77),
                            int(clip.config.text_config.max_position_embeddings))

        @torch.inference_mode()
        def encode(texts: list[str]) -> torch.Tensor:
            inputs = tokenizer(texts, padding=True, truncation=True, max_length=tokenizer_max, return_tensors="pt")
            pooled = clip.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).pooler_output
            return clip.text_projection(pooled)

        return encode, float(clip.logit_scale.exp()), hub.fingerprint(pre)

    def _open_clip_refs(self) -> list[hub.Ref]:
        import open_clip

        model = self.open_clip_model
        self._oc_model_spec, self._oc_pretrained_ref = model, None
        if model.startswith("hf-hub:"):
            ref = hub.Ref(model[len("hf-hub:"):], "tasks.open_clip_model",
                          include=("open_clip_config.json", "*.safetensors", "*.bin", "*.json", "*.txt"))
            self._oc_model_ref = ref
            refs = [ref]
        else:
            self._oc_model_ref = None
            refs = []
            local = hub.local_path(model[len("local-dir:"):] if model.startswith("local-dir:") else model)
            if local is not None:
                if not (local / "open_clip_config.json").is_file():
                    raise BenchError(f"tasks.open_clip_model={model!r}: no open_clip_config.json in that directory")
                self._oc_model_spec = f"local-dir:{local}"
            elif open_clip.get_model_config(model) is None:
                raise BenchError(unknown_choice("open_clip model", model, open_clip.list_models())
                                 + "; or local-dir:PATH / hf-hub:ID")
            elif self.open_clip_pretrained and hub.local_path(self.open_clip_pretrained) is None:
                tag = self.open_clip_pretrained
                cfg = open_clip.get_pretrained_cfg(model, tag)
                if not cfg:
                    raise BenchError(unknown_choice(f"pretrained tag for {model}:", tag,
                                                    open_clip.list_pretrained_tags_by_model(model))
                                     + " (or a local checkpoint file)")
                if cfg.get("hf_hub"):      # 'org/name/' (default file names) or 'org/name/file'
                    repo, filename = os.path.split(cfg["hf_hub"])
                    files = (filename,) if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
                    self._oc_pretrained_ref = (hub.Ref(repo, "tasks.open_clip_pretrained", include=files), files)
                    refs.append(self._oc_pretrained_ref[0])
                # else: a tag with a download URL only; open_clip fetches it itself
            elif self.open_clip_pretrained and not Path(self.open_clip_pretrained).expanduser().is_file():
                raise BenchError(f"tasks.open_clip_pretrained={self.open_clip_pretrained!r}: no such checkpoint file")
        if self.open_clip_finetuned is None:
            raise BenchError("backbone=open_clip needs tasks.open_clip_finetuned=PATH with {task} or {Task} "
                             "(state dicts of the fine-tuned visual towers)")
        for t in self.tasks:
            p = Path(_release_path(self.open_clip_finetuned, t)).expanduser()
            if not p.is_file():
                raise BenchError(f"tasks.open_clip_finetuned: no file {str(p)!r} for task {t!r}")
        return refs

    def _load_open_clip(self, paths: dict[str, Path]):
        import open_clip

        spec, pretrained = self._oc_model_spec, None
        if self._oc_model_ref is not None:
            spec = f"local-dir:{paths[self._oc_model_ref.spec]}"
        elif self._oc_pretrained_ref is not None:
            ref, files = self._oc_pretrained_ref
            pretrained = str(next((paths[ref.spec] / f for f in files if (paths[ref.spec] / f).is_file()), None)
                             or paths[ref.spec] / files[0])
        elif not spec.startswith("local-dir:") and self.open_clip_pretrained:
            pretrained = str(Path(self.open_clip_pretrained).expanduser())
        with quiet_hf():
            try:
                model = open_clip.create_model(spec, pretrained=pretrained, weights_only=True)
                tokenizer = open_clip.get_tokenizer(spec)
            except Exception as e:    # open_clip raises RuntimeError/ValueError/FileNotFoundError alike
                raise BenchError(f"open_clip model {spec!r} (pretrained={pretrained!r}) cannot be created "
                                 f"({' '.join(str(e).split())[:200]})") from None
        model.eval()
        self.backbone = model.visual
        self.projection = torch.nn.Identity()           # open_clip's tower ends in its projection
        self._theta0 = backbone_params(self.backbone)
        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", 224)
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean, self.std = tuple(pp.get("mean", OPENAI_MEAN)), tuple(pp.get("std", OPENAI_STD))
        self.resize = self.crop = size
        self.interpolation = pp.get("interpolation", "bicubic")
        self.resize_mode = pp.get("resize_mode", "shortest")
        if self.interpolation not in ("bicubic", "bilinear") or self.resize_mode not in ("shortest", "squash"):
            raise BenchError(f"open_clip preprocessing {self.interpolation}/{self.resize_mode} is not supported; "
                             f"valid: bicubic|bilinear, shortest|squash")
        tv = {n: torch.zeros((len(self.tasks), *p.shape), dtype=p.dtype) for n, p in self._theta0.items()}
        for i, t in enumerate(self.tasks):
            path = Path(_release_path(self.open_clip_finetuned, t)).expanduser()
            what = f"fine-tuned tower {str(path)!r} ({t})"
            params = _visual_state_dict(_load_state_dict(path, "tasks.open_clip_finetuned"), what)
            check_compatible(self._theta0, params, what)
            for n, t0 in self._theta0.items():
                tv[n][i] = params[n].to(t0.dtype) - t0
        self._task_vectors = tv
        self.revisions.update({f"open_clip_finetuned:{t}":
                               hub.fingerprint(Path(_release_path(self.open_clip_finetuned, t)).expanduser())
                               for t in self.tasks})

        @torch.inference_mode()
        def encode(texts: list[str]) -> torch.Tensor:
            return model.encode_text(tokenizer(texts))

        model_fp = hub.digest([spec, pretrained and hub.fingerprint(Path(pretrained))])
        return encode, float(model.logit_scale.exp()), model_fp

    def _head(self, task: str, dd, encode, logit_scale: float, model_fp: str) -> torch.Tensor:
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
        self._sources[task] = {"dd": dd, "splits": sp, "image_col": image_col, "label_col": label_col,
                               "label_map": label_mapping(ds_names, classnames), "num_classes": len(classnames)}
        key = hub.digest({"model": model_fp, "backbone": self.backbone_kind, "classnames": classnames,
                          "templates": templates, "version": self.version})
        directory = cached_build(cache_root() / "clip-heads" / f"{task}-{key}",
                                 lambda tmp: self._build_head(tmp, encode, classnames, templates, logit_scale))
        from safetensors.torch import load_file

        return load_file(str(directory / "head.safetensors"))["weight"]

    @staticmethod
    def _build_head(tmp: Path, encode, classnames, templates, logit_scale) -> dict:
        from safetensors.torch import save_file

        w = zeroshot_weights(encode, classnames, templates, logit_scale)
        save_file({"weight": w.contiguous()}, str(tmp / "head.safetensors"))
        return {"classes": len(classnames), "templates": len(templates)}

    def _build_random(self) -> None:
        from transformers import CLIPVisionConfig, CLIPVisionModel

        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):     # initialisers draw from the global generator
            torch.manual_seed(self.seed)
            if self.backbone_kind == "hf":
                sizes = dict(ARCHS[self.arch])
                proj_dim = sizes.pop("projection_dim")
                self.backbone = CLIPVisionModel(CLIPVisionConfig(**sizes))
                self.projection = torch.nn.Linear(sizes["hidden_size"], proj_dim, bias=False)
                self.resize = self.crop = sizes["image_size"]
            else:
                import open_clip

                name = self.open_clip_model
                if name.startswith("hf-hub:"):
                    raise BenchError(f"tasks.open_clip_model={name!r}: weights=random builds a built-in open_clip "
                                     f"architecture or a local-dir: config, never from the hub")
                if not name.startswith("local-dir:") and hub.local_path(name) is not None:
                    name = f"local-dir:{name}"
                elif not name.startswith("local-dir:") and open_clip.get_model_config(name) is None:
                    raise BenchError(unknown_choice("open_clip model", name, open_clip.list_models()))
                with quiet_hf():
                    model = open_clip.create_model(name, pretrained=None)
                self.backbone, self.projection = model.visual, torch.nn.Identity()
                size = open_clip.get_model_preprocess_cfg(model).get("size", 224)
                self.resize = self.crop = int(size[0] if isinstance(size, (tuple, list)) else size)
                proj_dim = int(model.visual.output_dim)
        self.mean, self.std = OPENAI_MEAN, OPENAI_STD
        self.interpolation, self.resize_mode = "bicubic", "shortest"
        self._theta0 = backbone_params(self.backbone)
        self._task_vectors = {n: torch.empty((len(self.tasks), *p.shape)).normal_(0.0, RANDOM_TAU_STD, generator=g)
                              for n, p in self._theta0.items()}
        heads = {}
        for t in self.tasks:
            c = len(zeroshot_metadata(t)["classnames"])
            heads[t] = ZeroShotHead(F.normalize(torch.randn(c, proj_dim, generator=g), dim=-1) * LOGIT_SCALE)
            self._sources[t] = {"num_classes": c}
        self.heads = torch.nn.ModuleDict(heads)

    # ---- what methods and the evaluator read ------------------------------------------------------
    def features(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.backbone_kind == "hf":
            return self.projection(clip_vision_features(self.backbone, params, batch))
        return functional_call(self.backbone, params, (batch["pixel_values"],), strict=False)

    def prepare(self, batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
        device = torch.device(device)
        pixels = batch["pixel_values"].to(device, non_blocking=True).float().div_(255.0)
        pixels = (pixels - self._mean_t.to(device)) / self._std_t.to(device)
        return {"pixel_values": pixels, "labels": batch["labels"].to(device, non_blocking=True).long()}

    def train_batch(self, task: str, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.random_weights:     # synthetic: drawn per batch, never stored
            s = self.crop
            raw = {"pixel_values": torch.randint(0, 256, (batch_size, 3, s, s), generator=generator, dtype=torch.uint8),
                   "labels": torch.randint(self._sources[task]["num_classes"], (batch_size,), generator=generator)}
            return self.prepare(raw, self.device)
        return super().train_batch(task, batch_size, generator)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.backbone, self.projection, self.heads]

    # ---- data -----------------------------------------------------------------------------------
    def split_sizes(self, task: str) -> dict[str, int]:
        """Examples per split: the published sizes (val carved from train) or `synthetic_size`."""
        return hub.split_sizes(self, task, SPLIT_SIZES)

    def _split_data(self, task: str, split: str) -> dict[str, torch.Tensor]:
        if self.random_weights:
            n = self.split_sizes(task)[split]
            g = torch.Generator().manual_seed(int(hub.digest([self.seed, task, split]), 16) % 2**63)
            return {"pixel_values": torch.randint(0, 256, (n, 3, self.crop, self.crop), generator=g, dtype=torch.uint8),
                    "labels": torch.randint(self._sources[task]["num_classes"], (n,), generator=g)}
        src = self._sources[task]
        name, idx = src["splits"][split]
        label_map = src["label_map"]
        key = hub.digest({"data": src["data_fp"], "split": name, "rows": None if idx is None else hub.digest(idx.tolist()),
                          "resize": self.resize, "crop": self.crop, "interpolation": self.interpolation,
                          "resize_mode": self.resize_mode, "label_map": None if label_map is None else label_map.tolist(),
                          "version": self.version})
        directory = cached_build(cache_root() / "clip-data" / f"{task}-{split}-{key}",
                                 lambda tmp: self._preprocess(tmp, task, name, idx))
        return hub.load_arrays(directory)

    def _preprocess(self, tmp: Path, task: str, split_name: str, idx: np.ndarray | None) -> dict:
        src = self._sources[task]
        ds = src["dd"][split_name]
        rows = np.arange(len(ds)) if idx is None else idx
        n, s = len(rows), self.crop
        pixels = np.lib.format.open_memmap(tmp / "pixel_values.npy", mode="w+", dtype=np.uint8, shape=(n, 3, s, s))
        labels = np.empty(n, dtype=np.int64)
        fn = lambda img: clip_image(img, self.resize, self.crop, self.interpolation, self.resize_mode)  # noqa: E731
        chunk = 256
        with ThreadPoolExecutor(max(1, min(self.preprocess_workers, os.cpu_count() or 1))) as pool, \
                tqdm(total=n, desc=f"preprocessing {task}/{split_name}", unit="img", leave=False,
                     disable=n < 2048) as bar:
            for start in range(0, n, chunk):
                part = ds[[int(i) for i in rows[start:start + chunk]]]
                pixels[start:start + len(part[src["label_col"]])] = np.stack(list(pool.map(fn, part[src["image_col"]])))
                labels[start:start + len(part[src["label_col"]])] = part[src["label_col"]]
                bar.update(len(part[src["label_col"]]))
        if src["label_map"] is not None:
            labels = src["label_map"][labels]
        if n and (labels.min() < 0 or labels.max() >= src["num_classes"]):
            raise BenchError(f"dataset {self.datasets[task]!r} ({task}) has labels outside 0..{src['num_classes'] - 1}")
        pixels.flush()
        del pixels
        hub.save_arrays(tmp, {"labels": labels})
        return {"task": task, "split": split_name, "examples": n}

    # ---- identity -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = {"arch": self.arch, "backbone": self.backbone_kind, "weights": self.weights}
        if self.random_weights:
            cfg.update(synthetic_size=self.synthetic_size, seed=self.seed,
                       open_clip_model=self.open_clip_model if self.backbone_kind == "open_clip" else None,
                       params=sum(p.numel() for p in self._theta0.values()), image_size=self.crop,
                       split_sizes={t: self.split_sizes(t) for t in self.tasks})
            return cfg
        if self.backbone_kind == "hf":
            cfg.update(pretrained=self.pretrained_id, finetuned=self.finetuned_id)
        else:
            cfg.update(open_clip_model=self.open_clip_model, open_clip_pretrained=self.open_clip_pretrained,
                       open_clip_finetuned=self.open_clip_finetuned)
        cfg.update(datasets={t: self.datasets[t] for t in self.tasks}, revisions=self.revisions,
                   val=f"{hub.VAL_FRACTION} of train, seed {hub.VAL_SEED}, when no validation split")
        return cfg


def _hf_preprocess(path: Path, image_size: int) -> tuple[tuple, tuple, int, int]:
    """(mean, std, resize, crop) from a model folder's preprocessor_config.json (CLIP defaults else)."""
    mean, std, resize, crop = OPENAI_MEAN, OPENAI_STD, image_size, image_size
    f = Path(path) / "preprocessor_config.json"
    if f.is_file():
        pp = json.loads(f.read_text())
        mean, std = tuple(pp.get("image_mean", mean)), tuple(pp.get("image_std", std))
        size, cs = pp.get("size", resize), pp.get("crop_size", crop)
        resize = int(size.get("shortest_edge", size.get("height", resize)) if isinstance(size, dict) else size)
        crop = int(cs.get("height", crop) if isinstance(cs, dict) else cs)
    return mean, std, resize, crop


def _check_loading(info: dict, what: str) -> None:
    """transformers' loading report → a BenchError naming the first missing or mismatched parameter."""
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise BenchError(f"{what} has no parameter {missing[0]!r} ({len(missing)} missing)")
    mism = sorted(info.get("mismatched_keys") or [])
    if mism:
        first = mism[0][0] if isinstance(mism[0], tuple) else mism[0]
        raise BenchError(f"{what}: parameter {first!r} does not match its own config's shape")
