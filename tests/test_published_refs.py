"""Published reference values (results/published/*.yaml) and `bench check published=NAME` (bench/runtime/published.py).

The files are checked as data (source, protocol that composes, stated averages against the values,
unrounded values against the rounded ones, the recorded discrepancies). The command runs end to end
on the tiny hub-layout checkpoints and datasets of tests/test_published.py (offline, nothing cached),
its references rewritten with values computed here independently (plain transformers forward
passes), so it exits 0, and 1 with one value moved beyond its tolerance; the router parameter
counts are checked on the real ViT-B/32 architecture with random weights (no download).
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import yaml

from bench.runtime import published
from bench.cli import COMMANDS, main as cli_main
from bench.runtime.config import compose
from bench.runtime.published import PUBLISHED, check_published, load_reference
from bench.core.registry import BenchError
from bench.tasks.clip import TASKS as CLIP_TASKS, zeroshot_metadata
from bench.tasks.gpt2_glue import TASKS as GLUE_TASKS, TEXT_COLUMNS, TEST_SPLIT

# tiny CLIP / GPT-2 checkpoints and datasets in the hub's layout, and the offline env (HF_HUB_OFFLINE=1,
# an empty hub cache, a private build cache): the fixtures of tests/test_published.py
from tests.test_published import clip_assets, clip_overrides, gpt2_assets, offline_env  # noqa: F401

EXPECTED = {"fusionbench-clip-vit-b32-pretrained", "fusionbench-clip-vit-b32-finetuned", "fusionbench-clip-vit-b32-ta",
            "fusionbench-gpt2-glue-finetuned", "fusionbench-gpt2-glue-ta", "pwe-moe-router-params-vit-b32"}
SUITE_TASKS = {"clip-vit-b32": CLIP_TASKS, "gpt2-glue": GLUE_TASKS}


# ---- the files ------------------------------------------------------------------------------------
def test_every_reference_has_source_protocol_and_consistent_values():
    assert set(published.names()) == EXPECTED
    for name in published.names():
        ref = load_reference(name)
        assert ref.source["document"] and ref.source["table"] and (ref.source.get("url") or "").startswith("https://")
        assert ref.tolerance["why"] and ref.discrepancies, name        # a reason, and what was (not) found
        cfg = compose(published.overrides_for(ref, ["device=cpu"]))    # the protocol is a valid `bench run` config
        if ref.kind == "router_params":
            assert cfg.suite_kwargs["weights"] == "random" and ref.tol("2") == 0
            continue
        for key in ("split", "metric", "pretrained", "finetuned", "datasets", "merge"):
            assert ref.protocol.get(key), (name, key)
        assert list(ref.values) == SUITE_TASKS[cfg.suite_name], name  # every task of the suite, in its order
        # the stated average is the mean of the values up to rounding: each value and the average are rounded
        # to `decimals`, so they may differ by one unit; beyond half a unit the file says so
        unit = 10.0 ** -ref.decimals
        gap = abs(ref.mean() - ref.average)
        assert gap <= unit + 1e-9, (name, ref.mean(), ref.average)
        if gap > unit / 2 + 1e-9:
            assert any(d.startswith("average") for d in ref.discrepancies), name
        if ref.kind == "merged":
            lam = ref.protocol["select"]["lambda"]
            assert f"method.hi={lam}" in ref.protocol["overrides"] and cfg.method_name == "ta_grid"
        if ref.unrounded:                                             # the source's unrounded values round to the table's
            got = {t: round(100 * v, ref.decimals) for t, v in ref.unrounded["values"].items()}
            assert got == ref.values, name


def test_mnist_discrepancy_is_recorded():
    ref = load_reference("fusionbench-clip-vit-b32-pretrained")
    assert ref.values["mnist"] == 48.3 and ref.average == 48.2
    mnist = [d for d in ref.discrepancies if d.startswith("MNIST")]
    assert len(mnist) == 1 and "48.2" in mnist[0] and "Table: Multi-task model merging" in mnist[0]
    other = dict(ref.values, mnist=48.2)                               # the merging table's row
    assert abs(sum(other.values()) / 8 - 48.2) <= 0.05 and abs(ref.mean() - 48.2) <= 0.05 + 1e-9


def test_unknown_or_malformed_reference_is_one_line(tmp_path, capsys):
    assert published.main(["published=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown published reference 'nope'" in err
    assert all(n in err for n in EXPECTED)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "source": {"document": "x"}, "protocol": {}, "values": {},
                                   "tolerance": {}}))
    with pytest.raises(BenchError, match="source needs a document and a table"):
        load_reference(str(bad))


# ---- PWE-MoE router parameters on the real ViT-B/32 (random weights) ------------------------------------
def test_router_parameter_counts_on_the_real_vit_b32(capsys):
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.modeling_clip import CLIPMLP

    from bench.tasks.clip_backends import ARCHS

    # independently: the MLP blocks of the real architecture (built on the meta device: shapes, no memory), each
    # with the authors' router nn.Sequential(Linear(T, 2T), ReLU, Linear(2T, T))
    sizes = {k: v for k, v in ARCHS["ViT-B-32"].items() if k != "projection_dim"}
    with torch.device("meta"):
        tower = CLIPVisionModel(CLIPVisionConfig(**sizes))
    mlps = sum(isinstance(m, CLIPMLP) for m in tower.modules())
    router = lambda T: torch.nn.Sequential(torch.nn.Linear(T, 2 * T), torch.nn.ReLU(), torch.nn.Linear(2 * T, T))  # noqa: E731
    want = {str(T): mlps * sum(p.numel() for p in router(T).parameters()) for T in (2, 3, 8)}
    assert mlps == 12 and want == {"2": 264, "3": 540, "8": 3360}
    ref = load_reference("pwe-moe-router-params-vit-b32")
    assert ref.values == {k: float(v) for k, v in want.items()}
    # the command: the method's own net on the 87M-parameter ViT-B/32 built with random weights
    assert check_published("pwe-moe-router-params-vit-b32", ["device=cpu"]) == 0
    out = capsys.readouterr().out
    for T, n in want.items():
        assert any(line.split()[:3] == [f"T={T}", str(n), str(n)] and line.endswith("ok") for line in out.splitlines())
    assert "12 upscaled modules (encoder.layers.0.mlp" in out and "weights=random" in out


# ---- end to end on fake checkpoints ---------------------------------------------------------------------
def reference_copy(name: str, tmp_path, values: dict[str, float], stem: str) -> str:
    """The shipped reference `name` with `values` (and their mean) in place of the published ones."""
    d = yaml.safe_load((PUBLISHED / f"{name}.yaml").read_text())
    d.update(name=stem, values={t: round(v, 4) for t, v in values.items()}, unrounded=None,
             average=round(float(np.mean(list(values.values()))), 4), decimals=2)
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
    return str(path)


@torch.no_grad()
def clip_zero_shot_accuracy(a, task: str) -> float:
    """The pre-trained tiny CLIPModel's zero-shot accuracy (%) on `task`'s test split: per class the normalised
    mean of its prompts' normalised `text_embeds`, against `image_embeds`, with open_clip's eval transform."""
    from datasets import load_from_disk

    clip, tok = a["clip"], a["tok"]
    meta = zeroshot_metadata(task)
    prompts = [t.replace("{}", c) for c in meta["classnames"] for t in meta["templates"]]
    test = a["svhn"]["test"] if task == "svhn" else load_from_disk(a["root"] / task)["test"]
    tf = open_clip.image_transform(32, is_train=False, mean=a["mean"], std=a["std"])
    inputs = tok(prompts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    o = clip(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
             pixel_values=torch.stack([tf(im) for im in test["image"]]))
    head = F.normalize(o.text_embeds.reshape(len(meta["classnames"]), len(meta["templates"]), -1).mean(1), dim=-1)
    pred = (o.image_embeds @ head.T).argmax(-1)
    return 100.0 * float((pred == torch.tensor(test["label"])).double().mean())


def test_check_pretrained_reference_on_fake_clip_checkpoints(clip_assets, tmp_path, capsys):
    a = clip_assets
    values = {t: clip_zero_shot_accuracy(a, t) for t in a["tasks"]}   # (random tiny models: near chance, 8 images)
    good = reference_copy("fusionbench-clip-vit-b32-pretrained", tmp_path, values, "fake-clip-pretrained")
    assert published.main([f"published={good}", *clip_overrides(a), "device=cpu"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.endswith((" ok", "FAIL"))}
    assert set(rows) == {*a["tasks"], "average"} and all(r.endswith(" ok") for r in rows.values())
    assert "measured: clip-vit-b32 pretrained on the test split, cpu (cpu, fp32)" in out
    # one value moved beyond its tolerance: exit 1, that task named
    ref = load_reference(good)
    moved = dict(values, dtd=values["dtd"] + ref.tol("dtd") + 1.0)
    bad = reference_copy("fusionbench-clip-vit-b32-pretrained", tmp_path, moved, "fake-clip-pretrained-moved")
    assert published.main([f"published={bad}", *clip_overrides(a), "device=cpu"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.endswith((" ok", "FAIL"))}
    assert rows["dtd"].endswith("FAIL") and rows["eurosat"].endswith("ok") and rows["svhn"].endswith("ok")
    assert out.strip().splitlines()[-1].startswith("FAIL: dtd (|diff| ")


@torch.no_grad()
def glue_accuracy(a, task: str, body: dict[str, torch.Tensor] | None = None) -> float:
    """Accuracy (%) of the tiny fine-tuned GPT2ForSequenceClassification of `task` on its GLUE validation split,
    with its transformer body replaced by `body` when given."""
    model = copy.deepcopy(a["models"][task])
    if body is not None:
        for n, p in model.transformer.named_parameters():
            p.copy_(body[n])
    val = a["data"][task][TEST_SPLIT.get(task, "validation")]
    enc = a["tok"](*[list(val[c]) for c in TEXT_COLUMNS[task]], padding=True, return_tensors="pt")
    pred = model(**enc).logits.argmax(-1)
    return 100.0 * float((pred == torch.tensor(val["label"])).double().mean())


def test_check_gpt2_references_on_fake_checkpoints(gpt2_assets, tmp_path, capsys):
    from transformers import GPT2LMHeadModel

    a = gpt2_assets
    ov = [f"tasks.pretrained={a['root'] / 'pre'}", f"tasks.finetuned='{a['root'] / 'ft_{task}'}'",
          *[f"tasks.datasets.{t}={a['root'] / t}" for t in a["tasks"]], f"tasks.names=[{','.join(a['tasks'])}]",
          "device=cpu", f"out={tmp_path / 'runs'}"]
    # fine-tuned: each model as saved, on its own task
    ft = {t: glue_accuracy(a, t) for t in a["tasks"]}
    path = reference_copy("fusionbench-gpt2-glue-finetuned", tmp_path, ft, "fake-gpt2-finetuned")
    assert published.main([f"published={path}", *ov]) == 0
    capsys.readouterr()
    # task arithmetic at the protocol's λ = 0.5: θ0 + 0.5 Σ τ_i over the body, each task's own head
    lam = load_reference("fusionbench-gpt2-glue-ta").protocol["select"]["lambda"]
    theta0 = dict(GPT2LMHeadModel.from_pretrained(a["root"] / "pre").transformer.named_parameters())
    body = {n: p + lam * sum(dict(a["models"][t].transformer.named_parameters())[n] - p for t in a["tasks"])
            for n, p in theta0.items()}
    ta = {t: glue_accuracy(a, t, body) for t in a["tasks"]}
    assert ta != ft and len(set(ta.values())) > 1                      # neither the end point nor all equal
    path = reference_copy("fusionbench-gpt2-glue-ta", tmp_path, ta, "fake-gpt2-ta")
    assert published.main([f"published={path}", *ov]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.endswith((" ok", "FAIL"))}
    assert set(rows) == {*a["tasks"], "average"} and all(r.endswith(" ok") for r in rows.values())
    record = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("record: "))
    rec = json.loads(open(record).read())
    assert rec["method"] == "ta_grid" and sorted({x for p in rec["points"] for x in p["x"].values()}) == [0.0, lam]
    assert record.startswith(str(tmp_path / "runs" / "gpt2-glue" / "ta_grid"))
    # a subset of the reference's tasks: compared task by task, the average left out and said so
    more = reference_copy("fusionbench-gpt2-glue-ta", tmp_path, {**ta, "sst2": 50.0}, "fake-gpt2-ta-more")
    assert published.main([f"published={more}", *ov]) == 0
    assert "average not compared: 3 of the reference's 4 tasks measured" in capsys.readouterr().out


def test_offline_without_cache_names_what_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("PARETOBENCH_CACHE", str(tmp_path / "cache"))
    assert published.main(["published=fusionbench-clip-vit-b32-ta", f"out={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: fusionbench-clip-vit-b32-ta: not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    for needle in ["openai/clip-vit-base-patch32", "tanganke/clip-vit-base-patch32_sun397", "dataset tanganke/dtd",
                   "download"]:
        assert needle in err, needle
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]        # nothing fetched, built or recorded


@pytest.mark.skipif("published" not in COMMANDS["check"].options, reason="bench/cli.py hook for published= not wired yet")
def test_bench_check_published_through_the_cli(capsys):
    assert cli_main(["check", "published=nope"]) == 2
    assert "unknown published reference 'nope'" in capsys.readouterr().err


# ---- the authors' settings as method presets ------------------------------------------------------------
def test_pwe_moe_presets_follow_the_authors_scripts_and_fusionbench():
    from bench.core.rays import ray_grid

    spec = compose(["method=pwe_moe_authors", "tasks=toy-quadratic"])
    authors = spec.method
    assert (spec.method_name, authors.lr, authors.steps, authors.dirichlet_alpha, authors.init_lambda, authors.upscale,
            authors.batch_size) == ("pwe_moe_ls", 0.01, 4000, 1.0, 0.3, "mlp", None)
    assert len(ray_grid(2, authors.partitions, authors.max_rays)) == 11
    spec = compose(["method=pwe_moe_fusionbench", "tasks=toy-quadratic", "method.init_lambda=0.6"])
    fb = spec.method
    assert (spec.method_name, fb.lr, fb.steps, fb.upscale, fb.batch_size, fb.init_lambda) == \
        ("pwe_moe_ls", 1e-5, 8000, "mlp+attn", 16, 0.6)
    assert np.array_equal(ray_grid(8, fb.partitions, fb.max_rays), np.eye(8)[::-1])   # the one-hot preferences only
    assert math.isclose(compose(["method=pwe_moe_authors", "tasks=toy-quadratic", "method.lr=0.5"]).method.lr, 0.5)
