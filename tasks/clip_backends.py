"""The CLIP suites' backbone loaders, one per backend, each returning the same `Loaded` structure.

    >>> from bench.tasks.clip_backends import load_random
    >>> b = load_random("hf", "ViT-B-32", "", {"mnist": 10}, seed=0)
    >>> type(b.tower).__name__, b.preprocess.crop, tuple(b.heads["mnist"].shape)
    ('CLIPVisionModel', 224, (10, 512))

- `load_hf`: transformers CLIP, a hub id or a local `save_pretrained` folder: the pre-trained
  `CLIPModel` (vision tower, visual projection, text tower and tokenizer for the heads) and one
  `CLIPVisionModel` per task.
- `load_open_clip`: an open_clip model (built-in name + pretrained tag or checkpoint, `local-dir:`,
  `hf-hub:`) and the fine-tuned visual towers as state dicts (the task-arithmetic release's layout).
  The whole visual tower, its projection included, is merged.
- `load_random`: the real architecture of either backend with random weights, task vectors and
  heads (benchmarks only).

The real loaders resolve the suite's dataset ids together with their model ids (tasks/hub.py), so
one offline error names every missing id.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from bench.api import BenchError, Params, check_compatible, unknown_choice
from bench.tasks import hub
from bench.tasks.models import backbone_params, clip_vision_features, quiet_hf

# Vision-tower sizes of the published architectures (transformers CLIPVisionConfig fields).
ARCHS = {
    "ViT-B-32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     patch_size=32, image_size=224, projection_dim=512),
    "ViT-B-16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     patch_size=16, image_size=224, projection_dim=512),
    "ViT-L-14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     patch_size=14, image_size=224, projection_dim=768),
}
# Folder names of the task-arithmetic release (mlfoundations/task_vectors checkpoints/<model>/<Task>/).
RELEASE_NAMES = {"sun397": "SUN397", "stanford-cars": "Cars", "resisc45": "RESISC45", "eurosat": "EuroSAT",
                 "svhn": "SVHN", "gtsrb": "GTSRB", "mnist": "MNIST", "dtd": "DTD"}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_SCALE = 100.0          # exp of CLIP's trained logit scale (clamped at 100): the random heads' scale
RANDOM_TAU_STD = 1e-3        # weights=random: task vectors are N(0, this²)
CONVERT = "torch.save(torch.load(p, weights_only=False).state_dict(), out)"   # pickled ImageEncoder → state dict
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Preprocess:
    """CLIP eval preprocessing: resize (short side → `resize`, or squash), centre crop `crop`, normalise."""

    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    resize: int = 224
    crop: int = 224
    interpolation: str = "bicubic"      # bicubic | bilinear
    resize_mode: str = "shortest"       # shortest | squash


@dataclass(frozen=True)
class Loaded:
    """What a backend's loader hands the suite; nothing else of the backend is kept."""

    tower: torch.nn.Module              # the vision tower: its parameters are θ (merged)
    projection: torch.nn.Module         # frozen map of its output into the joint space (Identity: inside the tower)
    features: Callable[[torch.nn.Module, torch.nn.Module, Params, Batch], torch.Tensor]  # (tower, projection, θ, batch)
    theta0: Params
    task_vectors: Params                # [T, *shape] per parameter, in task order
    preprocess: Preprocess
    config: dict[str, Any]              # the backend's settings, as the suite config records them
    revisions: dict[str, str] = field(default_factory=dict)   # resolved id → content fingerprint
    paths: dict[str, Path] = field(default_factory=dict)      # every resolved id (the datasets' too)
    encode_text: Callable[[list[str]], torch.Tensor] | None = None   # prompts → embeddings (zero-shot heads)
    logit_scale: float = LOGIT_SCALE
    text_fp: str = ""                   # identifies the text tower and tokenizer: the heads' cache key
    heads: dict[str, torch.Tensor] | None = None   # ready [C, D] head weights (random weights only)


def hf_features(tower, projection, params: Params, batch: Batch) -> torch.Tensor:
    return projection(clip_vision_features(tower, params, batch))


def open_clip_features(tower, projection, params: Params, batch: Batch) -> torch.Tensor:
    return functional_call(tower, params, (batch["pixel_values"],), strict=False)


def stack_task_vectors(theta0: Params, finetuned: Callable[[int], tuple[Params, str]], n: int) -> Params:
    """[n, *shape] per parameter: τ_i = θ_i − θ0, θ_i = finetuned(i) checked against θ0 and dropped."""
    tv = {k: torch.zeros((n, *p.shape), dtype=p.dtype) for k, p in theta0.items()}
    for i in range(n):
        params, what = finetuned(i)
        check_compatible(theta0, params, what)
        for k, t0 in theta0.items():
            tv[k][i] = params[k].to(t0.dtype) - t0
    return tv


def _resolve(refs: list[hub.Ref]) -> tuple[dict[str, Path], dict[str, str]]:
    """Resolved paths of every ref and the fingerprints of those that came from the hub."""
    paths = hub.resolve(refs)            # every id at once: one error naming all missing ids
    return paths, {r.spec: hub.fingerprint(paths[r.spec]) for r in refs if hub.local_path(r.id) is None}


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


# ---- transformers CLIP ------------------------------------------------------------------------------
def load_hf(pretrained: str, finetuned: str, tasks: Sequence[str], data: Sequence[hub.Ref]) -> Loaded:
    """`pretrained`: a full CLIPModel with its tokenizer; `finetuned`: a CLIPVisionModel per task
    (`{task}` replaced); `data`: the dataset refs to resolve with them."""
    from transformers import CLIPVisionModel

    refs = [hub.Ref(pretrained, "tasks.pretrained"),
            *[hub.Ref(finetuned.replace("{task}", t), "tasks.finetuned") for t in tasks], *data]
    paths, revisions = _resolve(refs)
    base = hf_clip(pretrained, paths[pretrained])

    def load_finetuned(i: int) -> tuple[Params, str]:
        spec = finetuned.replace("{task}", tasks[i])
        what = f"fine-tuned model {spec!r} ({tasks[i]})"
        with quiet_hf():
            try:
                ft, info = CLIPVisionModel.from_pretrained(str(paths[spec]), output_loading_info=True)
            except (OSError, ValueError, RuntimeError) as e:
                raise BenchError(f"{what} cannot be loaded as a CLIPVisionModel ({_short(e)})") from None
        _check_loading(info, what)
        return {n: p.detach() for n, p in ft.named_parameters()}, what

    tv = stack_task_vectors(base.theta0, load_finetuned, len(tasks))
    return replace(base, task_vectors=tv, config={"pretrained": pretrained, "finetuned": finetuned},
                   revisions=revisions, paths=paths)


def hf_clip(pretrained: str, path: Path, what: str = "tasks.pretrained") -> Loaded:
    """The pre-trained half of `load_hf` (also the `pool` suite's clip_zeroshot family): the CLIPModel
    at the resolved `path` as a vision tower (θ0), its projection, preprocessing and text encoder;
    no task vectors yet."""
    from transformers import AutoTokenizer, CLIPModel, CLIPVisionModel

    with quiet_hf():
        try:
            clip = CLIPModel.from_pretrained(str(path))
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise BenchError(f"{what}={pretrained!r} is not a CLIP model with a tokenizer "
                             f"({_short(e)})") from None
    clip.eval()
    tower = clip.vision_model                      # a CLIPVisionModel (transformers ≥ 5)
    if not isinstance(tower, CLIPVisionModel):     # transformers 4: a bare CLIPVisionTransformer
        wrapper = CLIPVisionModel(clip.config.vision_config)
        wrapper.vision_model = tower
        tower = wrapper.eval()
    theta0 = backbone_params(tower)
    max_len = min(int(getattr(tokenizer, "model_max_length", 77) or 77),
                  int(clip.config.text_config.max_position_embeddings))

    @torch.inference_mode()
    def encode(texts: list[str]) -> torch.Tensor:
        inputs = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        pooled = clip.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).pooler_output
        return clip.text_projection(pooled)

    return Loaded(tower=tower, projection=clip.visual_projection, features=hf_features, theta0=theta0,
                  task_vectors={}, preprocess=_hf_preprocess(path, clip.config.vision_config.image_size),
                  config={"pretrained": pretrained}, encode_text=encode,
                  logit_scale=float(clip.logit_scale.detach().exp()), text_fp=hub.fingerprint(path))


def _hf_preprocess(path: Path, image_size: int) -> Preprocess:
    """Mean, std, resize and crop from a model folder's preprocessor_config.json (CLIP defaults else)."""
    f = Path(path) / "preprocessor_config.json"
    if not f.is_file():
        return Preprocess(resize=image_size, crop=image_size)
    pp = json.loads(f.read_text())
    size, cs = pp.get("size", image_size), pp.get("crop_size", image_size)
    return Preprocess(mean=tuple(pp.get("image_mean", OPENAI_MEAN)), std=tuple(pp.get("image_std", OPENAI_STD)),
                      resize=int(size.get("shortest_edge", size.get("height", image_size)) if isinstance(size, dict)
                                 else size),
                      crop=int(cs.get("height", image_size) if isinstance(cs, dict) else cs))


def _check_loading(info: dict, what: str) -> None:
    """transformers' loading report → a BenchError naming the first missing or mismatched parameter."""
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise BenchError(f"{what} has no parameter {missing[0]!r} ({len(missing)} missing)")
    mism = sorted(info.get("mismatched_keys") or [])
    if mism:
        first = mism[0][0] if isinstance(mism[0], tuple) else mism[0]
        raise BenchError(f"{what}: parameter {first!r} does not match its own config's shape")


# ---- open_clip --------------------------------------------------------------------------------------
def load_open_clip(model: str, pretrained: str, finetuned: str | None, tasks: Sequence[str],
                   data: Sequence[hub.Ref]) -> Loaded:
    """`model`: a built-in open_clip name (weights: `pretrained`, a tag or a checkpoint file),
    `local-dir:PATH` or `hf-hub:ID`; `finetuned`: state-dict path per task with `{task}` or `{Task}`."""
    import open_clip

    spec, model_ref, weights = _open_clip_source(model, pretrained)
    if finetuned is None:
        raise BenchError("backbone=open_clip needs tasks.open_clip_finetuned=PATH with {task} or {Task} "
                         "(state dicts of the fine-tuned visual towers)")
    files = [Path(_release_path(finetuned, t)).expanduser() for t in tasks]
    for t, p in zip(tasks, files):
        if not p.is_file():
            raise BenchError(f"tasks.open_clip_finetuned: no file {str(p)!r} for task {t!r}")
    paths, revisions = _resolve([r for r in (model_ref, weights and weights[0]) if r] + list(data))
    checkpoint = None
    if model_ref is not None:
        spec = f"local-dir:{paths[model_ref.spec]}"
    elif weights is not None:
        root = paths[weights[0].spec]
        checkpoint = str(next((root / f for f in weights[1] if (root / f).is_file()), root / weights[1][0]))
    elif not spec.startswith("local-dir:") and pretrained:
        checkpoint = str(Path(pretrained).expanduser())
    with quiet_hf():
        try:
            clip = open_clip.create_model(spec, pretrained=checkpoint, weights_only=True)
            tokenizer = open_clip.get_tokenizer(spec)
        except Exception as e:    # open_clip raises RuntimeError/ValueError/FileNotFoundError alike
            raise BenchError(f"open_clip model {spec!r} (pretrained={checkpoint!r}) cannot be created "
                             f"({_short(e)})") from None
    clip.eval()
    tower = clip.visual
    theta0 = backbone_params(tower)
    pp = open_clip.get_model_preprocess_cfg(clip)
    size = _size(pp)
    preprocess = Preprocess(mean=tuple(pp.get("mean", OPENAI_MEAN)), std=tuple(pp.get("std", OPENAI_STD)),
                            resize=size, crop=size, interpolation=pp.get("interpolation", "bicubic"),
                            resize_mode=pp.get("resize_mode", "shortest"))
    if preprocess.interpolation not in ("bicubic", "bilinear") or preprocess.resize_mode not in ("shortest", "squash"):
        raise BenchError(f"open_clip preprocessing {preprocess.interpolation}/{preprocess.resize_mode} is not "
                         f"supported; valid: bicubic|bilinear, shortest|squash")

    def load_finetuned(i: int) -> tuple[Params, str]:
        what = f"fine-tuned tower {str(files[i])!r} ({tasks[i]})"
        return _visual_state_dict(_load_state_dict(files[i], "tasks.open_clip_finetuned"), what), what

    tv = stack_task_vectors(theta0, load_finetuned, len(tasks))
    revisions.update({f"open_clip_finetuned:{t}": hub.fingerprint(p) for t, p in zip(tasks, files)})

    @torch.inference_mode()
    def encode(texts: list[str]) -> torch.Tensor:
        return clip.encode_text(tokenizer(texts))

    # open_clip's tower ends in its projection: nothing after it
    return Loaded(tower=tower, projection=torch.nn.Identity(), features=open_clip_features, theta0=theta0,
                  task_vectors=tv, preprocess=preprocess,
                  config={"open_clip_model": model, "open_clip_pretrained": pretrained,
                          "open_clip_finetuned": finetuned},
                  revisions=revisions, paths=paths, encode_text=encode,
                  logit_scale=float(clip.logit_scale.detach().exp()),
                  text_fp=hub.digest([spec, checkpoint and hub.fingerprint(Path(checkpoint))]))


def _open_clip_source(model: str, pretrained: str) -> tuple[str, hub.Ref | None, tuple[hub.Ref, tuple[str, ...]] | None]:
    """(open_clip model spec, hub ref of an `hf-hub:` model, (hub ref, file names) of a pretrained
    tag's weights); every name checked before anything is fetched."""
    import open_clip

    if model.startswith("hf-hub:"):
        return model, hub.Ref(model[len("hf-hub:"):], "tasks.open_clip_model",
                              include=("open_clip_config.json", "*.safetensors", "*.bin", "*.json", "*.txt")), None
    local = hub.local_path(model[len("local-dir:"):] if model.startswith("local-dir:") else model)
    if local is not None:
        if not (local / "open_clip_config.json").is_file():
            raise BenchError(f"tasks.open_clip_model={model!r}: no open_clip_config.json in that directory")
        return f"local-dir:{local}", None, None
    if open_clip.get_model_config(model) is None:
        raise BenchError(unknown_choice("open_clip model", model, open_clip.list_models())
                         + "; or local-dir:PATH / hf-hub:ID")
    if pretrained and hub.local_path(pretrained) is None:
        cfg = open_clip.get_pretrained_cfg(model, pretrained)
        if not cfg:
            raise BenchError(unknown_choice(f"pretrained tag for {model}:", pretrained,
                                            open_clip.list_pretrained_tags_by_model(model))
                             + " (or a local checkpoint file)")
        if cfg.get("hf_hub"):      # 'org/name/' (default file names) or 'org/name/file'
            repo, filename = os.path.split(cfg["hf_hub"])
            files = (filename,) if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
            return model, None, (hub.Ref(repo, "tasks.open_clip_pretrained", include=files), files)
        return model, None, None   # a tag with a download URL only: open_clip fetches it itself
    if pretrained and not Path(pretrained).expanduser().is_file():
        raise BenchError(f"tasks.open_clip_pretrained={pretrained!r}: no such checkpoint file")
    return model, None, None


def _size(pp: dict) -> int:
    size = pp.get("size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _release_path(pattern: str, task: str) -> str:
    return pattern.replace("{task}", task).replace("{Task}", RELEASE_NAMES.get(task, task))


def _visual_state_dict(obj: Any, what: str) -> Params:
    """The visual tower's tensors from an open_clip state dict: keys `model.visual.*`, `visual.*`
    (prefix dropped) or a bare tower."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise BenchError(f"{what} is not a state dict of tensors; convert a pickled ImageEncoder with {CONVERT}")
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
                         f"ImageEncoder of the task-arithmetic release must be converted once: {CONVERT}") from None


# ---- random weights -----------------------------------------------------------------------------------
def load_random(backbone: str, arch: str, open_clip_model: str, classes: dict[str, int], seed: int) -> Loaded:
    """The real architecture (`arch` for transformers, `open_clip_model` for open_clip) with random
    weights, N(0, RANDOM_TAU_STD²) task vectors and random unit-norm heads of `classes[task]` rows."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):     # initialisers draw from the global generator
        torch.manual_seed(seed)
        if backbone == "hf":
            tower, projection, features, size, dim = _random_hf(arch)
        else:
            tower, projection, features, size, dim = _random_open_clip(open_clip_model)
    theta0 = backbone_params(tower)
    tv = {n: torch.empty((len(classes), *p.shape)).normal_(0.0, RANDOM_TAU_STD, generator=g) for n, p in theta0.items()}
    heads = {t: F.normalize(torch.randn(c, dim, generator=g), dim=-1) * LOGIT_SCALE for t, c in classes.items()}
    return Loaded(tower=tower, projection=projection, features=features, theta0=theta0, task_vectors=tv,
                  preprocess=Preprocess(resize=size, crop=size), heads=heads,
                  config={"open_clip_model": open_clip_model if backbone == "open_clip" else None})


def _random_hf(arch: str):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    sizes = dict(ARCHS[arch])
    dim = sizes.pop("projection_dim")
    tower = CLIPVisionModel(CLIPVisionConfig(**sizes))
    return tower, torch.nn.Linear(sizes["hidden_size"], dim, bias=False), hf_features, sizes["image_size"], dim


def _random_open_clip(name: str):
    import open_clip

    if name.startswith("hf-hub:"):
        raise BenchError(f"tasks.open_clip_model={name!r}: weights=random builds a built-in open_clip "
                         f"architecture or a local-dir: config, never from the hub")
    if not name.startswith("local-dir:") and hub.local_path(name) is not None:
        name = f"local-dir:{name}"
    elif not name.startswith("local-dir:") and open_clip.get_model_config(name) is None:
        raise BenchError(unknown_choice("open_clip model", name, open_clip.list_models()))
    with quiet_hf():
        model = open_clip.create_model(name, pretrained=None)
    size = _size(open_clip.get_model_preprocess_cfg(model))
    return model.visual, torch.nn.Identity(), open_clip_features, size, int(model.visual.output_dim)
