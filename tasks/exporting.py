"""What `bench export` writes per suite family so that an exported model classifies with transformers alone.

Each suite's `save_model(params, directory)` (the hook `bench export` calls) writes its model files
and returns facts for export.json; the ones here add a `classify` entry there: exactly how inputs
are prepared, which output is the feature, and the formula of the logits, with a few lines of code.

- CLIP, transformers backend (clip-vit-b32/b16/l14 `backbone=hf`, the pool's `clip_zeroshot`):
  `save_clip` writes a `CLIPVisionModelWithProjection` (the merged vision tower + the frozen visual
  projection), a `preprocessor_config.json` (`CLIPImageProcessor`: bicubic resize of the short side,
  centre crop, the suite's mean and std) and heads.safetensors, `<task>.weight` [C, D] already scaled
  by the logit scale: logits = normalize(image_embeds) @ Wᵀ.
- CLIP, open_clip backend: the merged visual tower in open_clip's own keys (`visual.*`,
  open_clip_visual.safetensors, projection included), the same heads and formula; no transformers model.
- tiny-clip (`clip_facts`): a `CLIPVisionModel`, features = `pooler_output`, per-image standardised
  pixels, linear heads with bias.
- GPT-2 (tiny-gpt2, gpt2-glue; `gpt2_facts`): a `GPT2Model` + tokenizer, features = the hidden state
  of the last non-pad token (right padding), linear heads (`score`, no bias).

    >>> from bench.tasks.clip_backends import Preprocess
    >>> p = clip_processor(Preprocess(resize=224, crop=224))
    >>> p.size["shortest_edge"], p.crop_size["height"], int(p.resample)
    (224, 224, 3)
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from bench.api import BenchError, Params

# The crop offset convention: transformers' processors take floor((size − crop) / 2), torchvision's
# center_crop (the suites' `bench.tasks.clip.clip_image`, open_clip, OpenAI CLIP) round((size − crop) / 2).
CROP_NOTE = ("pixels from raw images: the suite resizes with PIL bicubic (torchvision on PIL) and centre-crops at "
             "offset round((size - crop) / 2) (round half to even); transformers' CLIPImageProcessorPil resizes "
             "identically but crops at floor((size - crop) / 2), so where size - crop is odd and its floor half is "
             "odd the crop is one pixel off; CLIPImageProcessor (torchvision backend, transformers 5) also resizes "
             "uint8 tensors with antialiasing, off by 1-2 levels. From the suite's stored uint8 crops "
             "(do_resize=False, do_center_crop=False) the pixels, features and logits are the suite's.")


# transformers 5 saves these models without the prefix that transformers 4 expects (and 5 still reads)
LEGACY_PREFIX = {"CLIPVisionModel": "vision_model."}


def transformers4_compatible(model_class: str, directory: Path) -> None:
    """Rewrite what transformers 5's `save_pretrained` writes and transformers 4 misreads, in forms both read:
    a CLIPVisionModel's weight names (transformers 4 would drop every weight unprefixed, with a warning only,
    and run on random ones) and a `PreTrainedTokenizerFast`'s class (transformers 5 writes
    "TokenizersBackend", a name transformers 4's AutoTokenizer refuses)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    directory = Path(directory)
    prefix = LEGACY_PREFIX.get(model_class)
    if prefix is not None:
        index = directory / "model.safetensors.index.json"
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
            else ["model.safetensors"] * (directory / "model.safetensors").is_file()
        for name in files:
            with safe_open(str(directory / name), "pt") as f:
                tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
            if all(k.startswith(prefix) for k in tensors):
                continue
            save_file({k if k.startswith(prefix) else prefix + k: v for k, v in tensors.items()},
                      str(directory / name), metadata=meta or {"format": "pt"})
        if index.is_file():
            data = json.loads(index.read_text())
            data["weight_map"] = {(k if k.startswith(prefix) else prefix + k): v for k, v in data["weight_map"].items()}
            index.write_text(json.dumps(data, indent=2) + "\n")
    tok = directory / "tokenizer_config.json"
    if tok.is_file():
        cfg = json.loads(tok.read_text())
        if cfg.get("tokenizer_class") == "TokenizersBackend":
            cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
            tok.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def write_heads(heads: torch.nn.ModuleDict, directory: Path) -> None:
    """heads.safetensors: `<task>.<weight|bias>` of every frozen head (CPU)."""
    from safetensors.torch import save_file

    save_file({f"{t}.{k}": v.detach().cpu().contiguous() for t, head in heads.items()
               for k, v in head.state_dict().items()}, str(Path(directory) / "heads.safetensors"))


def _with_bias(heads: torch.nn.ModuleDict) -> bool:
    return any("bias" in h.state_dict() for h in heads.values())


def _classes(classes: dict[str, list[str] | None] | None) -> dict[str, list[str]]:
    return {t: list(c) for t, c in (classes or {}).items() if c}


# ---- CLIP ---------------------------------------------------------------------------------------------
def clip_with_projection(tower: torch.nn.Module, projection: torch.nn.Linear, params: Params):
    """A `CLIPVisionModelWithProjection` holding `params` (the merged tower, named as the suite's
    `CLIPVisionModel`: `embeddings.*` in transformers 5, `vision_model.embeddings.*` in 4) and the
    frozen `projection`'s weight."""
    from transformers import CLIPVisionModelWithProjection

    config = copy.deepcopy(tower.config)
    config.projection_dim = int(projection.weight.shape[0])
    config.architectures = ["CLIPVisionModelWithProjection"]
    with torch.random.fork_rng(devices=[]):        # the random init (overwritten) never touches the run's stream
        model = CLIPVisionModelWithProjection(config).eval()
    state = {"vision_model." + k.removeprefix("vision_model."): v for k, v in params.items()}
    return load_merged(model, {**state, "visual_projection.weight": projection.weight})


def load_merged(model: torch.nn.Module, params: Params) -> torch.nn.Module:
    """`model` holding `params` (on the CPU); every parameter must be given (buffers may be left as they
    are), and no name it does not have: else one line naming the first few."""
    missing, unexpected = model.load_state_dict({k: v.detach().cpu() for k, v in params.items()}, strict=False)
    missing = [k for k in missing if k in dict(model.named_parameters())]
    if missing or unexpected:
        raise BenchError(f"merged parameters do not fit {type(model).__name__}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return model


def clip_processor(pre):
    """The `CLIPImageProcessor` of a suite's `Preprocess` (bicubic or bilinear; short side then crop,
    or squashed to a square)."""
    from transformers import CLIPImageProcessor

    resample = {"bicubic": 3, "bilinear": 2}[pre.interpolation]
    size = ({"shortest_edge": int(pre.resize)} if pre.resize_mode == "shortest"
            else {"height": int(pre.resize), "width": int(pre.resize)})
    return CLIPImageProcessor(do_resize=True, size=size, resample=resample, do_center_crop=True,
                              crop_size={"height": int(pre.crop), "width": int(pre.crop)}, do_rescale=True,
                              rescale_factor=1 / 255, do_normalize=True, image_mean=[float(x) for x in pre.mean],
                              image_std=[float(x) for x in pre.std], do_convert_rgb=True)


def _preprocess_facts(pre) -> dict[str, Any]:
    return {"resize": int(pre.resize), "resize_mode": pre.resize_mode, "crop": int(pre.crop),
            "interpolation": pre.interpolation, "mean": [float(x) for x in pre.mean],
            "std": [float(x) for x in pre.std]}


CLIP_CODE = [
    "import torch, torch.nn.functional as F",
    "from PIL import Image",
    "from safetensors.torch import load_file",
    "from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection",
    "model = CLIPVisionModelWithProjection.from_pretrained(out).eval()",
    "pixels = CLIPImageProcessor.from_pretrained(out)(images=[Image.open(path)], return_tensors='pt').pixel_values",
    "W = load_file(f'{out}/heads.safetensors')[f'{task}.weight']",
    "with torch.no_grad(): logits = F.normalize(model(pixel_values=pixels).image_embeds, dim=-1) @ W.T",
    "prediction = logits.argmax(-1)",
]


def save_clip(suite, params: Params, directory: Path, classes: dict[str, list[str] | None] | None = None) -> dict:
    """A CLIP suite's export (`suite.backbone`, `.projection`, `.preprocess`, `.heads`): see the module
    docstring. `classes`: the class names per task where known (listed in export.json)."""
    from bench.tasks.models import quiet_hf

    directory = Path(directory)
    head_w = {t: h.weight.detach().float() for t, h in suite.heads.items()}
    scale = float(torch.cat([w.norm(dim=-1) for w in head_w.values()]).mean())
    common = {"logits": "normalize(image_embeds, dim=-1) @ W.T, W = heads.safetensors '<task>.weight' [C, D]",
              "heads": f"'<task>.weight' [C, D]: unit-norm class embeddings × the logit scale (here {scale:.4g}), "
                       f"no bias",
              "logit_scale": scale, "preprocess": _preprocess_facts(suite.preprocess)}
    if not isinstance(suite.projection, torch.nn.Linear):      # open_clip: the projection is inside the tower
        return _save_open_clip(suite, params, directory, common, classes)
    model = clip_with_projection(suite.backbone, suite.projection, params)
    with quiet_hf():
        model.save_pretrained(directory)
        clip_processor(suite.preprocess).save_pretrained(directory)
    write_heads(suite.heads, directory)
    pre = suite.preprocess
    how = (f"short side to {pre.resize} ({pre.interpolation}), centre crop {pre.crop}" if pre.resize_mode == "shortest"
           else f"squashed to {pre.resize}×{pre.resize} ({pre.interpolation}), centre crop {pre.crop}")
    classify = {"model": "CLIPVisionModelWithProjection.from_pretrained(out): the merged vision tower and the "
                         "frozen visual projection",
                "inputs": f"CLIPImageProcessor.from_pretrained(out)(images=..., return_tensors='pt').pixel_values: "
                          f"RGB, {how}, /255, (x - mean) / std",
                "features": "image_embeds = model(pixel_values=pixel_values).image_embeds  [B, D]",
                **common, "pixels": CROP_NOTE, "code": CLIP_CODE}
    if classes:
        classify["classes"] = _classes(classes)
    return {"backbone_class": type(model).__name__, "classify": classify}


def _save_open_clip(suite, params: Params, directory: Path, common: dict, classes) -> dict:
    """open_clip: the merged visual tower in open_clip's keys (`visual.*`) and the heads; no transformers model."""
    from safetensors.torch import save_file

    cfg = getattr(suite, "_backend_config", {}) or {}
    state = {f"visual.{k}": v.detach().float().cpu().contiguous() for k, v in params.items()}
    save_file(state, str(directory / "open_clip_visual.safetensors"))
    write_heads(suite.heads, directory)
    model, pretrained = cfg.get("open_clip_model"), cfg.get("open_clip_pretrained")
    pre = suite.preprocess
    classify = {"model": f"open_clip.create_model({model!r}, pretrained={pretrained!r}) (the suite's open_clip_model "
                         f"and open_clip_pretrained), then model.load_state_dict(load_file('open_clip_visual.safetensors'),"
                         f" strict=False): the merged visual tower, its projection included; no transformers model "
                         f"is written",
                "inputs": f"open_clip.image_transform({pre.crop}, is_train=False, mean=..., std=..., "
                          f"interpolation={pre.interpolation!r}, resize_mode={pre.resize_mode!r}) per PIL image",
                "features": "image_embeds = model.visual(pixel_values)  [B, D]",
                **common}
    if classes:
        classify["classes"] = _classes(classes)
    return {"backbone_class": None, "open_clip": {"model": model, "pretrained": pretrained,
                                                  "file": "open_clip_visual.safetensors"}, "classify": classify}


# ---- tiny-clip ----------------------------------------------------------------------------------------
TINY_CLIP_CODE = [
    "import torch",
    "from safetensors.torch import load_file",
    "from transformers import CLIPVisionModel",
    "model = CLIPVisionModel.from_pretrained(out).eval()",
    "x = pixels_uint8.float() / 255                                  # [B, 3, 32, 32], RGB",
    "x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True).clamp_min(0.02)",
    "heads = load_file(f'{out}/heads.safetensors')",
    "with torch.no_grad(): logits = model(pixel_values=x).pooler_output @ heads[f'{task}.weight'].T + heads[f'{task}.bias']",
]


def clip_facts(suite, classes: dict[str, list[str]] | None = None) -> dict:
    """tiny-clip's `classify` entry (the model files are ModelSuite.save_model's)."""
    size = int(suite.backbone.config.image_size)
    classify = {"model": "CLIPVisionModel.from_pretrained(out)",
                "inputs": f"uint8 RGB images [B, 3, {size}, {size}] (no resize, no crop), x = pixels / 255, then "
                          f"each image standardised over (C, H, W): (x - mean) / std, std unbiased and clamped "
                          f"at >= 0.02 (bench.tasks.tiny_clip_build.standardize)",
                "features": "model(pixel_values=x).pooler_output  [B, hidden]",
                "logits": "features @ heads['<task>.weight'].T + heads['<task>.bias']",
                "code": TINY_CLIP_CODE}
    if classes:
        classify["classes"] = _classes(classes)
    return {"classify": classify}


# ---- GPT-2 ----------------------------------------------------------------------------------------------
def gpt2_facts(suite, max_length: int, text_columns: dict[str, list[str]] | None = None,
               classes: dict[str, list[str]] | None = None, note: str = "") -> dict:
    """tiny-gpt2's and gpt2-glue's `classify` entry: tokenizer call, last-non-pad pooling, linear heads."""
    bias = _with_bias(suite.heads)
    tok = suite.tokenizer
    if tok is None:        # weights=random: synthetic token ids, no tokenizer is written
        note += "; this suite has no tokenizer (weights=random): feed token ids right-padded, with their mask"
    pad = f"{tok.pad_token!r} (id {tok.pad_token_id})" if tok is not None else "any id"
    logits = "features @ heads['<task>.weight'].T" + (" + heads['<task>.bias']" if bias else "")
    classify = {"model": "GPT2Model.from_pretrained(out); tokenizer: AutoTokenizer.from_pretrained(out)",
                "inputs": f"tokenizer(texts, truncation=True, max_length={max_length}, padding=True, "
                          f"return_tensors='pt') (a sentence pair as tokenizer(first, second)); right padding with "
                          f"{pad}{note}",
                "features": "h = model(input_ids=ids, attention_mask=mask).last_hidden_state (no token_type_ids: "
                            "GPT-2 would add their embeddings); features = h[arange(B), mask.sum(1) - 1], the "
                            "hidden state of the last non-pad token",
                "logits": logits,
                "code": ["import torch",
                         "from safetensors.torch import load_file",
                         "from transformers import AutoTokenizer, GPT2Model",
                         "tok, model = AutoTokenizer.from_pretrained(out), GPT2Model.from_pretrained(out).eval()",
                         f"enc = tok(texts, truncation=True, max_length={max_length}, padding=True, return_tensors='pt')",
                         "with torch.no_grad(): h = model(input_ids=enc['input_ids'], "
                         "attention_mask=enc['attention_mask']).last_hidden_state",
                         "features = h[torch.arange(len(h)), enc['attention_mask'].sum(1) - 1]",
                         "heads = load_file(f'{out}/heads.safetensors')",
                         "logits = features @ heads[f'{task}.weight'].T"
                         + (" + heads[f'{task}.bias']" if bias else "")]}
    if text_columns:
        classify["text_columns"] = {t: list(c) for t, c in text_columns.items()}
    if classes:
        classify["classes"] = _classes(classes)
    return {"classify": classify}
