"""`bench export` writes models that classify: reloaded with transformers alone (and safetensors), they give
the suite's own logits and predictions on the same inputs.

- tiny-clip, tiny-gpt2 (the offline suites): a few PWE-MoE steps, `bench export`, then the recipe that
  export.json's `classify` entry states (CLIPVisionModel + per-image standardisation + linear heads;
  GPT2Model + tokenizer + last non-pad token + score heads) against `suite.logits` and the Evaluator.
- CLIP hub format (tasks/clip.py and the pool's clip_zeroshot): `CLIPVisionModelWithProjection` +
  `CLIPImageProcessor` + zero-shot heads, logits = normalize(image_embeds) @ Wᵀ. A tiny CLIP here; the
  published ViT-B/32 configuration (random weights) in `test_published_size_clip_export_classifies`
  (marker `realsize`).
- export.json: every routed block's routing weights (PWE-MoE), the λ table (phn), and a one-call
  rebuild (`bench.runtime.export.rebuild`) that gives exactly the exported weights.
- transformers 4 loads the export (`test_transformers4_loads_the_export`: a child venv with
  transformers < 5 from the package registry; skipped where pip cannot reach it).
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bench.cli import main as cli
from bench.core.evaluator import Evaluator
from bench.core.registry import SUITES
from bench.runtime.export import rebuild
from tests.test_published import offline_hub

PREF = [0.3, 0.7]
LOGIT_ATOL = 1e-4          # fp32, same weights, same inputs: only summation order may differ (measured ≤ ~3e-6)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the recipes export.json states: transformers, torch and safetensors only (also run under transformers 4) --
def clip_recipe(out, task, pixels_uint8):
    """CLIP hub format: CLIPImageProcessor (here on the suite's stored crops: no resize, no crop), the model's
    image_embeds, normalised, against the scaled zero-shot heads."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    model, info = CLIPVisionModelWithProjection.from_pretrained(out, output_loading_info=True)
    proc = CLIPImageProcessor.from_pretrained(out)
    pixels = proc(images=list(pixels_uint8), do_resize=False, do_center_crop=False, return_tensors="pt").pixel_values
    w = load_file(f"{out}/heads.safetensors")[f"{task}.weight"]
    with torch.no_grad():
        return F.normalize(model.eval()(pixel_values=pixels).image_embeds, dim=-1) @ w.T, info


def tiny_clip_recipe(out, task, pixels_uint8):
    """tiny-clip: per-image standardisation, pooler_output, linear heads with bias."""
    import torch
    from safetensors.torch import load_file
    from transformers import CLIPVisionModel

    model, info = CLIPVisionModel.from_pretrained(out, output_loading_info=True)
    x = torch.as_tensor(pixels_uint8).float() / 255
    x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True).clamp_min(0.02)
    heads = load_file(f"{out}/heads.safetensors")
    with torch.no_grad():
        return model.eval()(pixel_values=x).pooler_output @ heads[f"{task}.weight"].T + heads[f"{task}.bias"], info


def gpt2_recipe(out, task, columns, max_length):
    """GPT-2: the saved tokenizer on the text column(s) (a pair as a pair; right padding), the last non-pad
    token's hidden state, the score head (+ bias where there is one)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, GPT2Model

    tok = AutoTokenizer.from_pretrained(out)
    model, info = GPT2Model.from_pretrained(out, output_loading_info=True)
    enc = tok(*[list(c) for c in columns], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model.eval()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    features = h[torch.arange(len(h)), enc["attention_mask"].sum(1) - 1]
    heads = load_file(f"{out}/heads.safetensors")
    logits = features @ heads[f"{task}.weight"].T + (heads[f"{task}.bias"] if f"{task}.bias" in heads else 0)
    return logits, {**info, "ids": enc["input_ids"]}


def clean(info: dict) -> bool:
    """from_pretrained read every weight: nothing missing, unexpected or mismatched."""
    return not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))


# ---- runs and exports --------------------------------------------------------------------------------------
def run_and_export(out: Path, method: str, suite_args: list[str], extra: list[str], pref=PREF) -> tuple[Path, dict, Path]:
    """(export directory, export.json, the run's saved state file) of a short run exported at `pref`."""
    args = [f"method={method}", *suite_args, *extra]
    assert cli(["run", *args, f"out={out / 'runs'}"]) == 0
    dest = out / "exported"
    assert cli(["export", *args, f"preference=[{','.join(map(str, pref))}]", f"runs={out / 'runs'}",
                f"out={dest}"]) == 0
    info = json.loads((dest / "export.json").read_text())
    return dest, info, Path(info["rebuild"]["state_file"])


def offline_export(out: Path, name: str, names: list[str]):
    """pwe_moe_ls on offline suite `name` (3 steps), exported at PREF: (export directory, export.json, the
    suite, its parameters at PREF rebuilt from the run's state, the Evaluator's test metrics there)."""
    dest, info, state = run_and_export(out, "pwe_moe_ls", [f"tasks={name}", f"tasks.names=[{','.join(names)}]"],
                                       ["method.steps=3", "method.partitions=1"])
    suite = SUITES.build(name, names=names)
    params = rebuild(state, PREF, suite=suite)
    return dest, info, suite, params, Evaluator(suite).evaluate(params, "test")


def same_accuracy(logits: torch.Tensor, labels: torch.Tensor, measured: float) -> bool:
    """The number of correct predictions is the Evaluator's (its accuracy × examples)."""
    return int((logits.argmax(-1) == labels).sum()) == round(measured * len(labels))


def check_logits(ours: torch.Tensor, want: torch.Tensor, labels: torch.Tensor, accuracy: float) -> None:
    assert ours.shape == want.shape
    print(f"max |logit difference| {float((ours - want).abs().max()):.2e} over {tuple(ours.shape)}")
    assert torch.equal(ours.argmax(-1), want.argmax(-1))
    assert float((ours - want).abs().max()) <= LOGIT_ATOL, float((ours - want).abs().max())
    assert same_accuracy(ours, labels, accuracy)


@pytest.fixture(scope="module")
def tiny_clip_export(tmp_path_factory):
    """pwe_moe_ls on tiny-clip (3 steps), exported at PREF; the suite's logits and accuracies there."""
    names = ["digits", "dots"]
    dest, info, suite, params, evaluated = offline_export(tmp_path_factory.mktemp("tiny-clip"), "tiny-clip", names)
    cases = {}
    for task in names:
        raw = suite.eval_data(task, "test")
        with torch.no_grad():
            want = suite.logits(params, task, suite.prepare(raw, "cpu"))
        cases[task] = {"pixels": raw["pixel_values"], "labels": raw["labels"], "want": want,
                       "accuracy": evaluated[task]["accuracy"]}
    return {"dest": dest, "info": info, "suite": suite, "params": params, "cases": cases}


@pytest.fixture(scope="module")
def tiny_gpt2_export(tmp_path_factory):
    """pwe_moe_ls on tiny-gpt2 (3 steps), exported at PREF; raw test sentences, stored ids, suite logits."""
    import datasets

    from bench.tasks.tiny_gpt2 import stored_split

    names = SUITES.build("tiny-gpt2").tasks[:2]
    dest, info, suite, params, evaluated = offline_export(tmp_path_factory.mktemp("tiny-gpt2"), "tiny-gpt2", names)
    cases = {}
    for task in names:
        ds = datasets.load_from_disk(str(suite.cache_path / "data" / task))["test"]
        stored = stored_split(ds)               # the stored ids of these sentences, in the same order
        with torch.no_grad():
            want = torch.cat([suite.logits(params, task, suite.prepare({k: v[i:i + 100] for k, v in stored.items()},
                                                                       "cpu")) for i in range(0, len(ds), 100)])
        cases[task] = {"texts": list(ds["text"]), "ids": stored["input_ids"], "labels": stored["labels"],
                       "want": want, "accuracy": evaluated[task]["accuracy"]}
    return {"dest": dest, "info": info, "suite": suite, "params": params, "cases": cases}


# ---- tiny-clip ---------------------------------------------------------------------------------------------
def test_tiny_clip_export_classifies_with_transformers_alone(tiny_clip_export):
    e = tiny_clip_export
    c, suite, params = e["info"]["classify"], e["suite"], e["params"]
    assert c["features"].startswith("model(pixel_values=x).pooler_output") and "bias" in c["logits"]
    assert c["classes"]["digits"] == [str(i) for i in range(10)]
    for task, case in e["cases"].items():        # transformers alone, as export.json says
        ours, info = tiny_clip_recipe(e["dest"], task, case["pixels"])
        assert clean(info)
        check_logits(ours, case["want"], case["labels"], case["accuracy"])
    # export.json determines the weights: θ0 + routing·τ on every routed block, θ0 + λ0·Στ elsewhere;
    # the weights are written under transformers 4's names (vision_model.*), which transformers 5 reads too
    exported = {k.removeprefix("vision_model."): v for k, v in load_file(e["dest"] / "model.safetensors").items()}
    theta0, tv = suite.theta0(), suite.task_vectors()
    routed = {p: m for m, ps in e["info"]["routed_parameters"].items() for p in ps}
    assert len(e["info"]["routing"]) == sum(1 for n in theta0 if n.endswith(".mlp.fc1.weight")) == 4
    for n, t0 in theta0.items():
        w = torch.tensor(e["info"]["routing"][routed[n]] if n in routed else [e["info"]["init_lambda"]] * 2)
        assert torch.allclose(exported[n], t0 + torch.einsum("t,t...->...", w, tv[n]), atol=1e-6), n
        assert torch.equal(exported[n], params[n]), n              # rebuild() gives exactly what was written


# ---- tiny-gpt2 ---------------------------------------------------------------------------------------------
def test_tiny_gpt2_export_classifies_with_transformers_alone(tiny_gpt2_export):
    e = tiny_gpt2_export
    c = e["info"]["classify"]
    assert "mask.sum(1) - 1" in c["features"] and c["logits"] == "features @ heads['<task>.weight'].T"
    assert f"max_length={32}" in c["inputs"] and "[EOS]" in c["inputs"]
    for task, case in e["cases"].items():
        ours, info = gpt2_recipe(e["dest"], task, [case["texts"]], 32)
        assert clean(info)
        width = info["ids"].shape[1]
        assert torch.equal(info["ids"], case["ids"][:, :width])        # the tokenizer call gives the stored ids
        check_logits(ours, case["want"], case["labels"], case["accuracy"])
    assert torch.equal(load_file(e["dest"] / "model.safetensors")["h.0.mlp.c_fc.weight"],
                       e["params"]["h.0.mlp.c_fc.weight"])


def test_phn_export_json_holds_the_whole_lambda_table(tmp_path):
    names = ["digits", "dots"]
    dest, info, state = run_and_export(tmp_path, "phn", ["tasks=tiny-clip", f"tasks.names=[{','.join(names)}]"],
                                       ["method.steps=2", "method.partitions=1", "method.hidden=8"])
    suite = SUITES.build("tiny-clip", names=names)
    exported = {k.removeprefix("vision_model."): v for k, v in load_file(dest / "model.safetensors").items()}
    assert set(info["lambda"]) == set(suite.theta0())
    for n, t0 in suite.theta0().items():
        want = t0 + torch.einsum("t,t...->...", torch.tensor(info["lambda"][n]), suite.task_vectors()[n])
        assert torch.allclose(exported[n], want, atol=1e-6), n
    assert info["rebuild"]["python"].startswith("from bench.runtime.export import rebuild")
    rebuilt = rebuild(state, PREF)                  # the suite built from the run's config.yaml
    assert all(torch.equal(rebuilt[n], exported[n]) for n in suite.theta0())


def test_gpt2_glue_export_classifies_with_transformers_alone(tmp_path):
    """gpt2-glue on a tiny GPT-2 in the hub's format (tests/test_published.py's assets): sentence pairs as pairs,
    the EOS token as padding, the fine-tuned score heads."""
    import datasets

    from bench.core.merge import task_arithmetic
    from bench.tasks.gpt2_glue import TEXT_COLUMNS, tokenize
    from tests.test_published import glue_dataset, gpt2_tokenizer, perturbed

    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    with offline_hub(tmp_path):
        root, tasks = tmp_path / "assets", {"cola": 2, "rte": 2}
        tok = gpt2_tokenizer([("Ġ", "t"), ("h", "e"), ("Ġt", "he")])
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, bos_token_id=tok.eos_token_id,
                         eos_token_id=tok.eos_token_id)
        torch.manual_seed(0)
        pre = GPT2LMHeadModel(cfg).eval()
        pre.save_pretrained(root / "pre")
        tok.save_pretrained(root / "pre")
        g, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
        for t, k in tasks.items():
            ft = GPT2ForSequenceClassification(GPT2Config(**{**cfg.to_dict(), "num_labels": k,
                                                             "pad_token_id": tok.eos_token_id})).eval()
            ft.transformer.load_state_dict(pre.transformer.state_dict())
            perturbed(ft, 0.05, g)
            ft.save_pretrained(root / f"ft_{t}")
            glue_dataset(list(TEXT_COLUMNS[t]), k, rng, "validation").save_to_disk(root / t)
        suite = SUITES.build("gpt2-glue", pretrained=str(root / "pre"), finetuned=str(root / "ft_{task}"),
                             datasets={t: str(root / t) for t in tasks}, names=list(tasks))
        params = task_arithmetic(suite.theta0(), suite.task_vectors(), [0.5, 0.5])
        evaluated = Evaluator(suite).evaluate(params, "test")
        dest = tmp_path / "exported"
        dest.mkdir()
        info = suite.save_model(params, dest)
        c = info["classify"]
        assert c["text_columns"] == {t: list(TEXT_COLUMNS[t]) for t in tasks} and "max_length=512" in c["inputs"]
        for t in tasks:
            ds = datasets.load_from_disk(str(root / t))["validation"]      # the split the suite reports as test
            columns = [list(ds[col]) for col in TEXT_COLUMNS[t]]
            ours, loading = gpt2_recipe(dest, t, columns, 512)
            assert clean(loading)
            stored = tokenize(suite.tokenizer, columns, 512, tok.eos_token_id)      # what the suite stores
            assert torch.equal(loading["ids"], torch.as_tensor(stored["input_ids"]).long())
            batch = suite.prepare({k: torch.as_tensor(v) for k, v in stored.items()} |
                                  {"labels": torch.as_tensor(ds["label"])}, "cpu")
            with torch.no_grad():
                want = suite.logits(params, t, batch)
            check_logits(ours, want, batch["labels"], evaluated[t]["accuracy"])


# ---- CLIP in the hub's format ------------------------------------------------------------------------------
def hub_clip(root: Path, published: bool, tasks=("svhn", "mnist"), n_test: int = 6) -> dict:
    """A pre-trained CLIPModel with tokenizer and preprocessor_config.json, a perturbed CLIPVisionModel per task,
    and tiny image datasets of odd sizes. `published`: CLIPConfig's defaults, the sizes of
    openai/clip-vit-base-patch32 (random weights; 224 px); else a 32-pixel toy (short side 36, crop 32)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, CLIPVisionModel

    from tests.test_published import bpe_tokenizer_parts, image_dataset, perturbed

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    vocab, merges = bpe_tokenizer_parts(50)
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if published:
        cfg = CLIPConfig(text_config=ids)           # every size the default: ViT-B/32, 224 px, 512-d projection
        size, crop = 224, 224
    else:
        cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                          num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                                          **ids),
                         vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, image_size=32, patch_size=8), projection_dim=8)
        size, crop = 36, 32
    clip = CLIPModel(cfg).eval()
    clip.save_pretrained(root / "pre")
    tok.save_pretrained(root / "pre")
    (root / "pre" / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": size},
         "crop_size": {"height": crop, "width": crop}, "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3}))
    for t in tasks:
        ft = CLIPVisionModel(cfg.vision_config)
        ft.load_state_dict(clip.vision_model.state_dict())
        perturbed(ft, 0.02, g)
        ft.save_pretrained(root / f"ft_{t}")
    rng = np.random.default_rng(0)
    for t in tasks:
        image_dataset([str(i) for i in range(10)], rng, n_train=8, n_test=n_test).save_to_disk(root / f"data_{t}")
    return {"root": root, "tasks": list(tasks), "cfg": cfg,
            "kwargs": {"pretrained": str(root / "pre"), "finetuned": str(root / "ft_{task}"),
                       "datasets": {t: str(root / f"data_{t}") for t in tasks}, "names": list(tasks)},
            "overrides": [f"tasks.pretrained={root / 'pre'}", f"tasks.finetuned='{root / 'ft_{task}'}'",
                          *[f"tasks.datasets.{t}='{root / f'data_{t}'}'" for t in tasks],
                          f"tasks.names=[{','.join(tasks)}]"]}


def clip_cases(suite, params) -> dict:
    """Per task: the stored uint8 test crops, labels, the suite's logits at `params`, the Evaluator's accuracy."""
    evaluated = Evaluator(suite).evaluate(params, "test")
    cases = {}
    for task in suite.tasks:
        raw = suite.eval_data(task, "test")
        with torch.no_grad():
            want = suite.logits(params, task, suite.prepare(raw, "cpu"))
        cases[task] = {"pixels": raw["pixel_values"], "labels": raw["labels"], "want": want,
                       "accuracy": evaluated[task]["accuracy"]}
    return cases


def check_clip_export(dest: Path, suite, info: dict, cases: dict) -> None:
    c = info["classify"]
    assert info["backbone_class"] == "CLIPVisionModelWithProjection"
    assert c["logits"].startswith("normalize(image_embeds, dim=-1) @ W.T")
    assert c["preprocess"] == {"resize": suite.preprocess.resize, "resize_mode": "shortest",
                               "crop": suite.preprocess.crop, "interpolation": "bicubic",
                               "mean": list(suite.preprocess.mean), "std": list(suite.preprocess.std)}
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "export.json", "heads.safetensors",
                                                      "model.safetensors", "preprocessor_config.json"]
    for task, case in cases.items():
        ours, loading = clip_recipe(dest, task, case["pixels"])
        assert clean(loading)
        check_logits(ours, case["want"], case["labels"], case["accuracy"])


@pytest.fixture(scope="module")
def hub_clip_export(tmp_path_factory):
    """clip-vit-b32 on a toy CLIP in the hub's format: pwe_moe_ls (2 steps) through the CLI, exported at PREF."""
    root = tmp_path_factory.mktemp("hub-clip")
    with offline_hub(root):
        a = hub_clip(root / "assets", published=False)
        dest, info, state = run_and_export(root / "clip", "pwe_moe_ls", ["tasks=clip-vit-b32", *a["overrides"]],
                                           ["method.steps=2", "method.partitions=1", "method.batch_size=2"])
        suite = SUITES.build("clip-vit-b32", **a["kwargs"])
        cases = clip_cases(suite, rebuild(state, PREF, suite=suite))
    return {"dest": dest, "info": info, "suite": suite, "cases": cases, "assets": a}


def test_clip_export_classifies_with_transformers_alone(hub_clip_export):
    e = hub_clip_export
    assert (e["suite"].preprocess.resize, e["suite"].preprocess.crop) == (36, 32)
    assert e["info"]["classify"]["classes"]["mnist"] == [str(i) for i in range(10)]
    assert len(e["info"]["routing"]) == e["assets"]["cfg"].vision_config.num_hidden_layers
    check_clip_export(e["dest"], e["suite"], e["info"], e["cases"])


def test_pool_clip_zeroshot_export_classifies_with_transformers_alone(tmp_path):
    """The pool's clip_zeroshot family through its save_model (at a task-arithmetic point)."""
    from bench.core.merge import task_arithmetic
    from bench.tasks.pool import PoolSuite

    with offline_hub(tmp_path):
        a = hub_clip(tmp_path / "assets", published=False)
        (a["root"] / "pool.yaml").write_text(json.dumps(
            {"family": "clip_zeroshot", "base": "./pre",
             "tasks": {t: {"model": f"./ft_{t}", "dataset": f"./data_{t}"} for t in a["tasks"]}}))
        pool = PoolSuite(spec=str(a["root"] / "pool.yaml"))
        params = task_arithmetic(pool.theta0(), pool.task_vectors(), [0.4, 0.2])
        dest = tmp_path / "exported"
        dest.mkdir()
        info = pool.save_model(params, dest)
        (dest / "export.json").write_text(json.dumps(info))
        check_clip_export(dest, pool, info, clip_cases(pool, params))


def test_clip_processor_on_raw_images_against_the_suites_crop(tmp_path):
    """The saved processor on raw PIL images against `clip_image` (torchvision on PIL, as open_clip/OpenAI).
    CLIPImageProcessorPil resizes identically and crops at floor((size − crop)/2) where torchvision takes
    round((size − crop)/2) (half to even): exact, except one pixel off exactly where those offsets differ.
    CLIPImageProcessor (transformers 5's default, the torchvision backend) resizes uint8 tensors with
    antialias: ≤ 2 levels from the PIL resize on top of the same crop offsets (measured on noise images)."""
    import transformers
    from PIL import Image

    from bench.tasks.clip import clip_image
    from bench.tasks.clip_backends import Preprocess
    from bench.tasks.exporting import clip_processor

    pil_cls = getattr(transformers, "CLIPImageProcessorPil", None)      # transformers 5; in 4 the default is PIL
    rng = np.random.default_rng(0)
    sizes = [(40, 48), (36, 36), (52, 30), (33, 45), (300, 200), (225, 311), (17, 64), (480, 640)]
    report = []
    for pre in (Preprocess(resize=224, crop=224), Preprocess(resize=36, crop=32)):
        where = tmp_path / f"p{pre.resize}"
        clip_processor(pre).save_pretrained(where)
        raw = dict(do_rescale=False, do_normalize=False)
        procs = {"CLIPImageProcessor": transformers.CLIPImageProcessor.from_pretrained(where, **raw)}
        if pil_cls is not None:
            procs["CLIPImageProcessorPil"] = pil_cls.from_pretrained(where, **raw)
        counts = {k: [0, 0, 0] for k in procs}            # images that differ, pixel values that differ, max |Δ|
        shifted = 0
        for h, w in sizes:
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            ref = clip_image(img, pre).astype(np.int64)
            rh, rw = (pre.resize, int(pre.resize * w / h)) if h <= w else (int(pre.resize * h / w), pre.resize)
            agree = all((s - pre.crop) // 2 == int(round((s - pre.crop) / 2)) for s in (rh, rw))
            shifted += not agree
            out = {}
            for name, proc in procs.items():
                out[name] = np.asarray(proc(images=img, return_tensors="np")["pixel_values"][0]).astype(np.int64)
                d = np.abs(out[name] - ref)
                counts[name][0] += int(d.max() > 0)
                counts[name][1] += int((d > 0).sum())
                counts[name][2] = max(counts[name][2], int(d.max()))
            if pil_cls is not None:
                assert (out["CLIPImageProcessorPil"] == ref).all() == agree, (h, w)   # exact where offsets agree
                assert np.abs(out["CLIPImageProcessor"] - out["CLIPImageProcessorPil"]).max() <= 2, (h, w)
        for name, (imgs, px, mx) in counts.items():
            report.append(f"{name} resize {pre.resize} crop {pre.crop}: {imgs}/{len(sizes)} images differ from "
                          f"clip_image ({shifted} with a crop offset one pixel apart), {px} pixel values, max |Δ| {mx}")
    print("\n".join(report))


# ---- the published ViT-B/32 configuration ------------------------------------------------------------------
@pytest.mark.realsize
def test_published_size_clip_export_classifies(tmp_path):
    """CLIPConfig's defaults (openai/clip-vit-base-patch32 sizes, random weights), PWE-MoE, export, reload."""
    from transformers import CLIPVisionModelWithProjection

    t0 = time.perf_counter()
    with offline_hub(tmp_path):
        a = hub_clip(tmp_path / "assets", published=True, n_test=4)
        dest, info, state = run_and_export(tmp_path / "clip", "pwe_moe_ls", ["tasks=clip-vit-b32", *a["overrides"]],
                                           ["method.steps=1", "method.partitions=1", "method.batch_size=1"])
        suite = SUITES.build("clip-vit-b32", **a["kwargs"])
        cases = clip_cases(suite, rebuild(state, PREF, suite=suite))
    cfg = CLIPVisionModelWithProjection.from_pretrained(dest).config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size, cfg.image_size, cfg.projection_dim) == \
        (768, 12, 32, 224, 512)
    assert len(info["routing"]) == 12
    assert info["classify"]["logit_scale"] == pytest.approx(float(np.exp(a["cfg"].logit_scale_init_value)), rel=1e-5)
    check_clip_export(dest, suite, info, cases)
    print(f"published-size CLIP export check: {time.perf_counter() - t0:.1f} s")


# ---- transformers 4 ----------------------------------------------------------------------------------------
TF4_REQUIREMENTS = ["transformers>=4.57,<5", "huggingface_hub>=0.34,<1", "tokenizers>=0.22,<=0.23.0"]


def transformers4() -> Path:
    """A folder holding transformers 4 (+ the huggingface_hub and tokenizers it accepts), installed once with
    `pip install --no-deps --target` into the repo's git-ignored .cache; put first on PYTHONPATH it shadows
    transformers 5 and uses this environment's torch, safetensors and numpy. Skips where pip cannot install."""
    target = Path(os.environ.get("PARETOBENCH_TF4", ROOT / ".cache" / "transformers4"))
    if list(target.glob("transformers-4.*.dist-info")):
        return target
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--target", str(target), *TF4_REQUIREMENTS]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("pip could not install transformers<5 within 300 s (no package registry?)")
    if done.returncode != 0 or not list(target.glob("transformers-4.*.dist-info")):
        pytest.skip(f"pip could not install transformers<5 (no package registry?): {done.stderr.strip()[-300:]}")
    return target


def test_transformers4_loads_the_export(tiny_clip_export, tiny_gpt2_export, hub_clip_export, tmp_path):
    """The exports (written by transformers 5) read by transformers 4.57 with the same recipes: every weight
    found (CLIPVisionModel's under transformers 4's names, the tokenizer's class a name 4 knows), the
    suite's predictions."""
    target = transformers4()
    jobs = []
    for kind, e in (("clip", hub_clip_export), ("tiny_clip", tiny_clip_export), ("gpt2", tiny_gpt2_export)):
        for task, case in e["cases"].items():
            name = f"{kind}-{task}"
            if kind == "gpt2":
                (tmp_path / f"{name}.json").write_text(json.dumps(case["texts"]))
            else:
                np.save(tmp_path / f"{name}.npy", case["pixels"].numpy())
            jobs.append((kind, name, str(e["dest"]), task))
    script = "\n\n".join([
        "import json, sys, numpy as np, torch, transformers",
        "torch.set_num_threads(1)",
        *(inspect.getsource(f) for f in (clip_recipe, tiny_clip_recipe, gpt2_recipe, clean)),
        f"jobs = {jobs!r}",
        "out = {'version': transformers.__version__, 'where': transformers.__file__}\n"
        "for kind, name, dest, task in jobs:\n"
        "    if kind == 'gpt2':\n"
        f"        logits, info = gpt2_recipe(dest, task, [json.load(open(f'{tmp_path}/{{name}}.json'))], 32)\n"
        "    else:\n"
        f"        pixels = torch.from_numpy(np.load(f'{tmp_path}/{{name}}.npy'))\n"
        "        logits, info = (clip_recipe if kind == 'clip' else tiny_clip_recipe)(dest, task, pixels)\n"
        f"    np.save(f'{tmp_path}/{{name}}.out.npy', logits.numpy())\n"
        "    out[name] = clean(info)\n"
        f"json.dump(out, open('{tmp_path}/result.json', 'w'))"])
    (tmp_path / "tf4.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, str(tmp_path / "tf4.py")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["version"].startswith("4.") and result["where"].startswith(str(target)), result
    for kind, name, _, task in jobs:
        assert result[name] is True, f"{name}: transformers {result['version']} did not read every weight"
        e = {"clip": hub_clip_export, "tiny_clip": tiny_clip_export, "gpt2": tiny_gpt2_export}[kind]
        case = e["cases"][task]
        check_logits(torch.from_numpy(np.load(tmp_path / f"{name}.out.npy")), case["want"], case["labels"],
                     case["accuracy"])
