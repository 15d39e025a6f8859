"""tasks=pool: a suite declared in YAML (tasks/pool.py, docs/add-a-model-pool.md).

No network: the tests write tiny checkpoints with save_pretrained (GPT-2 and ViT classifiers, a CLIP
model with its BPE tokenizer), LoRA adapters with peft, and datasets with `datasets` (save_to_disk,
parquet, csv, an image folder), and point pool files at them. Adapters are checked against an
independent implementation: the same adapters merged into full checkpoints by peft's
`merge_and_unload`; the clip_zeroshot family against the published suite's own loader (CLIPSuite).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench.cli import main
from bench.core.registry import SUITES, BenchError
from bench.tasks import clip, gpt2_glue
from bench.tasks.pool import PoolSuite, load_spec
from tests.test_published import bpe_tokenizer_parts, gpt2_tokenizer, image_dataset, perturbed, stored_train_batch

pytest.importorskip("peft", reason="the tests make their LoRA adapters with peft: pip install -e '.[test]'")
ROOT = Path(__file__).resolve().parent.parent
SEED = 0
WORDS = "the cat sat on a mat dog ran far away red blue green big small".split()


@pytest.fixture(scope="module", autouse=True)
def offline_env(tmp_path_factory):
    """No test may reach the hub: offline mode, an empty hub cache, private build and datasets caches."""
    root = tmp_path_factory.mktemp("env")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "hub"), "PARETOBENCH_CACHE": str(root / "cache"),
           "HF_DATASETS_CACHE": str(root / "datasets")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        import datasets

        mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "datasets")
        yield env


# ---- tiny assets ------------------------------------------------------------------------------------------
def sentences(n: int, rng) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 5)))) for _ in range(n)]


def lora(model, targets: list[str], g: torch.Generator, **kw):
    """A peft LoRA model of `model` with random (non-zero) B and head, as if trained."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, **kw))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return peft_model


def save_adapter(peft_model, adapter_dir: Path, merged_dir: Path) -> None:
    """The adapter as peft saves it, and (independently) the same model merged into a full checkpoint."""
    peft_model.save_pretrained(adapter_dir)
    peft_model.merge_and_unload().save_pretrained(merged_dir)


def write_yaml(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def gpt2_pool(tmp_path_factory):
    """GPT-2 (Conv1D): base LM checkpoint + tokenizer; cola a full fine-tune (save_to_disk, GLUE-like splits),
    rte a LoRA adapter (parquet, sentence pairs), topic an rsLoRA adapter (csv, string labels, own val split)."""
    import datasets
    from peft import TaskType
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("gpt2")
    tok = gpt2_tokenizer([("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("a", "t")])
    eos = tok.eos_token_id
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=eos,
                     eos_token_id=eos)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    GPT2LMHeadModel(cfg).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")

    def classifier(k: int):
        with torch.random.fork_rng():
            torch.manual_seed(k)
            return GPT2ForSequenceClassification.from_pretrained(root / "base", num_labels=k, pad_token_id=eos).eval()

    ft = classifier(2)
    perturbed(ft.transformer, 0.05, g)
    ft.save_pretrained(root / "ft_cola")
    ft.resize_token_embeddings(len(tok) + 2)              # a vocabulary resized for new tokens
    ft.save_pretrained(root / "ft_resized")
    save_adapter(lora(classifier(2), ["c_attn", "c_proj", "wte"], g, task_type=TaskType.SEQ_CLS),
                 root / "lora_rte", root / "merged_rte")
    save_adapter(lora(classifier(3), ["c_attn", "c_fc"], g, task_type=TaskType.SEQ_CLS, use_rslora=True,
                      alpha_pattern={"c_fc": 4}, lora_bias=True), root / "lora_topic", root / "merged_topic")

    rng = np.random.default_rng(SEED)
    D = datasets.Dataset.from_dict
    datasets.DatasetDict({"train": D({"sentence": sentences(24, rng), "label": rng.integers(0, 2, 24).tolist()}),
                          "validation": D({"sentence": sentences(10, rng), "label": rng.integers(0, 2, 10).tolist()})}
                         ).save_to_disk(root / "cola")
    (root / "rte").mkdir()
    for split, n in (("train", 24), ("test", 10)):
        D({"sentence1": sentences(n, rng), "sentence2": sentences(n, rng),
           "label": rng.integers(0, 2, n).tolist()}).to_parquet(str(root / "rte" / f"{split}.parquet"))
    (root / "topic").mkdir()
    for split, n in (("train", 24), ("val", 6), ("test", 10)):
        D({"text": sentences(n, rng), "topic": rng.choice(["sport", "music", "food"], n).tolist()}
          ).to_csv(str(root / "topic" / f"{split}.csv"), index=False)
    tasks = {"cola": {"model": "./ft_cola", "dataset": "./cola", "splits": {"test": "validation"},
                      "inputs": ["sentence"], "label": "label"},
             "rte": {"adapter": "./lora_rte", "format": "parquet",
                     "data_files": {"train": "rte/train.parquet", "test": "rte/test.parquet"},
                     "inputs": ["sentence1", "sentence2"]},
             "topic": {"adapter": "./lora_topic", "format": "csv",
                       "data_files": {"train": "topic/train.csv", "val": "topic/val.csv", "test": "topic/test.csv"},
                       "splits": {"val": "val"}, "inputs": "text", "label": "topic",
                       "label_names": ["sport", "music", "food"]}}
    spec = write_yaml(root / "pool.yaml", {"name": "tiny-gpt2-lora", "family": "text_classification", "base": "./base",
                                           "max_length": 48, "tasks": tasks})
    merged = {t: {**{k: v for k, v in d.items() if k != "adapter"}, "model": f"./merged_{t}"} if "adapter" in d else d
              for t, d in tasks.items()}
    merged_spec = write_yaml(root / "merged.yaml", {"family": "text_classification", "base": "./base", "max_length": 48,
                                                    "tasks": merged})
    return {"root": root, "spec": spec, "merged": merged_spec, "tasks": tasks, "eos": eos}


@pytest.fixture(scope="module")
def vit_pool(tmp_path_factory):
    """ViT (Linear layers): two LoRA adapters with modules_to_save=[classifier], data as an image folder and
    a save_to_disk folder."""
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    root = tmp_path_factory.mktemp("vit")
    cfg = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
                    patch_size=4)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    ViTForImageClassification(cfg).vit.save_pretrained(root / "base")          # a bare ViTModel, as hub bases are
    ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.4, 0.5, 0.6],
                      image_std=[0.2, 0.3, 0.25]).save_pretrained(root / "base")
    for t, k in (("shapes", 3), ("colours", 2)):
        model = ViTForImageClassification.from_pretrained(root / "base", num_labels=k).eval()
        save_adapter(lora(model, ["q_proj", "v_proj", "fc1"], g, modules_to_save=["classifier"]),
                     root / f"lora_{t}", root / f"merged_{t}")
    rng = np.random.default_rng(SEED)
    for split, n in (("train", 12), ("test", 6)):
        for c in ("circle", "square", "star"):
            (root / "shapes" / split / c).mkdir(parents=True)
            for i in range(n // 3):
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / "shapes" / split / c / f"{i}.png")
    image_dataset(["red", "blue"], rng, n_train=12, n_test=6).save_to_disk(root / "colours")
    tasks = {"shapes": {"adapter": "./lora_shapes", "format": "imagefolder", "data_dir": "./shapes"},
             "colours": {"adapter": "./lora_colours", "dataset": "./colours", "inputs": "image"}}
    spec = write_yaml(root / "pool.yaml", {"family": "image_classification", "base": "./base", "tasks": tasks})
    merged = {t: {**{k: v for k, v in d.items() if k != "adapter"}, "model": f"./merged_{t}"} for t, d in tasks.items()}
    return {"root": root, "spec": spec, "merged": write_yaml(root / "merged.yaml",
                                                            {"family": "image_classification", "base": "./base",
                                                             "tasks": merged})}


def assert_same_vectors(a: PoolSuite, b: PoolSuite, atol: float = 1e-6) -> None:
    assert a.tasks == b.tasks and sorted(a.theta0()) == sorted(b.theta0())
    for n, t0 in a.theta0().items():
        assert torch.equal(t0, b.theta0()[n]), n
        assert torch.allclose(a.task_vectors()[n], b.task_vectors()[n], atol=atol, rtol=0), n
    for t in a.tasks:
        ha, hb = a.heads[t].state_dict(), b.heads[t].state_dict()
        assert sorted(ha) == sorted(hb) and all(torch.allclose(ha[k], hb[k], atol=atol) for k in ha), t


# ---- adapters = their merged checkpoints ---------------------------------------------------------------------
def test_gpt2_adapters_give_the_task_vectors_of_their_merged_checkpoints(gpt2_pool):
    """Conv1D (fan_in_fan_out), an Embedding, rsLoRA, alpha_pattern and lora_bias, read without peft, =
    peft's merge_and_unload."""
    a, b = PoolSuite(spec=str(gpt2_pool["spec"])), PoolSuite(spec=str(gpt2_pool["merged"]))
    assert a.tasks == ["cola", "rte", "topic"] and a.family == "text_classification"
    assert_same_vectors(a, b)
    tv = a.task_vectors()
    assert tv["h.0.attn.c_attn.weight"][1].abs().max() > 1e-3           # the adapters did change something
    assert tv["h.0.mlp.c_fc.weight"][1].abs().max() == 0                  # rte adapts c_attn/c_proj only
    assert tv["h.0.mlp.c_fc.weight"][2].abs().max() > 1e-3 and tv["h.0.mlp.c_fc.bias"][2].abs().max() > 1e-3
    assert tv["wte.weight"][1].abs().max() > 1e-3 and tv["wte.weight"][2].abs().max() == 0
    assert a.heads["topic"].score.weight.shape == (3, 16)
    # the logits are GPT2ForSequenceClassification's own at θ_i with task i's head
    from transformers import AutoModelForSequenceClassification

    batch = a.prepare(a.eval_data("topic", "test"), "cpu")
    ref = AutoModelForSequenceClassification.from_pretrained(gpt2_pool["root"] / "merged_topic").eval()
    with torch.no_grad():
        ours = a.logits(a.finetuned(2), "topic", batch)
        theirs = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    labels = a.eval_data("topic", "test")["labels"]
    import pandas as pd

    names = ["sport", "music", "food"]
    expected = sorted(names.index(s) for s in pd.read_csv(gpt2_pool["root"] / "topic" / "test.csv")["topic"])
    assert sorted(labels.tolist()) == expected                             # string labels via label_names
    assert a.split_sizes("cola") == {"train": 22, "val": 2, "test": 10}    # GLUE-like: val carved from train
    assert a.split_sizes("topic") == {"train": 24, "val": 6, "test": 10}


def test_vit_adapters_give_the_task_vectors_of_their_merged_checkpoints(vit_pool):
    """Linear layers and a saved classifier (modules_to_save); image folder and save_to_disk data."""
    a, b = PoolSuite(spec=str(vit_pool["spec"])), PoolSuite(spec=str(vit_pool["merged"]))
    assert_same_vectors(a, b)
    assert a.task_vectors()["layers.0.mlp.fc1.weight"].abs().amax(dim=(1, 2)).min() > 1e-3
    assert a.task_vectors()["layers.0.attention.k_proj.weight"].abs().max() == 0       # not a target
    assert a.modality == "image" and a.preprocess.resize_mode == "squash" and a.preprocess.mean == (0.4, 0.5, 0.6)
    assert a.heads["shapes"].classifier.weight.shape == (3, 16)
    data = a.eval_data("shapes", "test")
    assert data["pixel_values"].shape == (6, 3, 8, 8) and sorted(data["labels"].tolist()) == [0, 0, 1, 1, 2, 2]
    from transformers import ViTForImageClassification

    ref = ViTForImageClassification.from_pretrained(vit_pool["root"] / "merged_shapes").eval()
    batch = a.prepare(data, "cpu")
    with torch.no_grad():
        assert torch.allclose(a.logits(a.finetuned(0), "shapes", batch), ref(pixel_values=batch["pixel_values"]).logits,
                              atol=1e-5)


def test_clip_zeroshot_pool_matches_the_published_loader(tmp_path):
    """clip_zeroshot: a full CLIPVisionModel and a LoRA adapter of one = CLIPSuite on the adapter merged by peft."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, CLIPVisionModel

    vocab, merges = bpe_tokenizer_parts(50)
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=32, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        image_size=8, patch_size=4), projection_dim=8)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    base = CLIPModel(cfg).eval()
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    ft = CLIPVisionModel(cfg.vision_config)
    ft.load_state_dict(base.vision_model.state_dict())
    perturbed(ft, 0.05, g)
    ft.save_pretrained(tmp_path / "ft_a")
    tower = CLIPVisionModel.from_pretrained(tmp_path / "base")
    tower.config._name_or_path = str(tmp_path / "base")
    save_adapter(lora(tower, ["q_proj", "v_proj", "fc1"], g), tmp_path / "lora_b", tmp_path / "ft_b")
    rng = np.random.default_rng(SEED)
    for t in "ab":
        image_dataset(["cat", "dog", "owl"], rng, n_train=10, n_test=4).save_to_disk(tmp_path / f"data_{t}")
    spec = write_yaml(tmp_path / "pool.yaml", {
        "family": "clip_zeroshot", "base": "./base",
        "tasks": {"a": {"model": "./ft_a", "dataset": "./data_a"},
                  "b": {"adapter": "./lora_b", "dataset": "./data_b", "label_names": ["cat", "dog", "owl"]}}})
    ours = PoolSuite(spec=str(spec))
    published = clip.CLIPSuite(pretrained=str(tmp_path / "base"), finetuned=str(tmp_path / "ft_{task}"),
                               datasets={t: str(tmp_path / f"data_{t}") for t in "ab"}, names=["a", "b"])
    assert sorted(ours.theta0()) == sorted(published.theta0())
    for n in ours.theta0():
        assert torch.equal(ours.theta0()[n], published.theta0()[n])
        assert torch.allclose(ours.task_vectors()[n], published.task_vectors()[n], atol=1e-6, rtol=0), n
    assert ours.preprocess == published.preprocess
    for t in "ab":     # zero-shot heads from the base's text tower, the published function and cache
        assert torch.equal(ours.heads[t].weight, published.heads[t].weight) and ours.heads[t].weight.shape == (3, 8)
        for x, y in zip(ours.eval_data(t, "test").values(), published.eval_data(t, "test").values()):
            assert torch.equal(x, y)


# ---- the suite: options, identity, exclusions ---------------------------------------------------------------
def test_names_key_config_and_exclude(gpt2_pool, tmp_path):
    spec = gpt2_pool["spec"]
    sub = PoolSuite(spec=str(spec), names=["topic", "cola"])
    assert sub.tasks == ["topic", "cola"] and sub.task_vectors()["h.0.ln_1.weight"].shape[0] == 2
    cfg = sub.config()
    text = spec.read_text()
    import hashlib

    assert cfg["spec"] == str(spec) and cfg["spec_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert cfg["tasks"]["cola"]["val"].startswith("0.1 of train") and cfg["tasks"]["topic"]["splits"]["val"] == "val"
    key = sub.key
    # the same content elsewhere (absolute paths) has the same key; other content or another checkpoint does not
    absolute = yaml.safe_load(text)
    for d in absolute["tasks"].values():
        for k in ("model", "adapter", "dataset"):
            if k in d:
                d[k] = str((spec.parent / d[k]).resolve())
        if "data_files" in d:
            d["data_files"] = {s: str(spec.parent / f) for s, f in d["data_files"].items()}
    absolute["base"] = str(spec.parent / "base")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a1, a2 = write_yaml(tmp_path / "one" / "p.yaml", absolute), write_yaml(tmp_path / "two" / "p.yaml", absolute)
    k1 = PoolSuite(spec=str(a1), names=["topic", "cola"]).key
    assert k1 == PoolSuite(spec=str(a2), names=["topic", "cola"]).key
    a2.write_text(a2.read_text() + "# a comment changes the content\n")
    assert PoolSuite(spec=str(a2), names=["topic", "cola"]).key != k1
    cfg_file = gpt2_pool["root"] / "lora_topic" / "adapter_config.json"
    os.utime(cfg_file, ns=(cfg_file.stat().st_atime_ns, cfg_file.stat().st_mtime_ns + 10**9))
    assert PoolSuite(spec=str(a1), names=["topic", "cola"]).key != k1
    assert key.startswith("pool@1:")
    # a resized vocabulary: merged only when listed under exclude (held at θ0), else one line naming both shapes
    resized = yaml.safe_load(text)
    resized["tasks"]["cola"]["model"] = "./ft_resized"
    bad = write_yaml(spec.parent / "resized.yaml", resized)
    with pytest.raises(BenchError, match=r"parameter 'wte.weight' has shape \(263, 16\), the base \(261, 16\)"):
        PoolSuite(spec=str(bad))
    resized["exclude"] = ["wte.*"]
    ok = PoolSuite(spec=str(write_yaml(spec.parent / "resized_ok.yaml", resized)))
    assert "wte.weight" not in ok.theta0() and "wpe.weight" in ok.theta0()
    full = PoolSuite(spec=str(spec))
    for n in ok.theta0():
        assert torch.allclose(ok.task_vectors()[n][0], full.task_vectors()[n][0])


def test_ls_pool_shows_its_options(capsys):
    assert main(["ls", "pool"]) == 0
    out = capsys.readouterr().out
    assert "spec=null" in out and "names=null" in out and "preprocess_workers=4" in out
    assert "pool" in SUITES.names()


# ---- runs: every method on a 3-task pool, two tasks LoRA ------------------------------------------------------
METHOD_ARGS = {"ta_grid": ["method.points=3"],
               "map": ["method.points=10", "method.pop_size=16", "method.generations=5", "method.reevaluate=3",
                       "method.folds=2"],
               "pwe_moe_ls": ["method.steps=3", "method.partitions=2", "method.batch_size=4"]}


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_every_method_runs_on_a_pool_as_a_process(method, gpt2_pool, offline_env, tmp_path):
    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "bench", "run", f"method={method}", "tasks=pool",
                        f"tasks.spec={gpt2_pool['spec']}", *METHOD_ARGS[method], f"out={out}"],
                       cwd=ROOT, env={**os.environ, **offline_env, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    path = Path(r.stdout.strip().splitlines()[-1])
    rec = json.loads(path.read_text())
    assert path.parent.parent.parent.name == "pool" and rec["suite"] == "pool" and rec["method"] == method
    assert rec["tasks"] == ["cola", "rte", "topic"] and rec["suite_key"].startswith("pool@1:")
    assert rec["suite_config"]["spec"] == str(gpt2_pool["spec"]) and len(rec["suite_config"]["spec_sha256"]) == 64
    assert rec["indicators"]["n_points"] >= 1 and all(0 <= p["metrics"]["rte"]["accuracy"] <= 1 for p in rec["points"])


# ---- bad input: one line, exit 2, nothing written ---------------------------------------------------------------
def bad_cases(a) -> list[tuple[str, dict | str, str]]:
    """(id, pool file content (a dict, or YAML text), what the one line must say)."""
    good = yaml.safe_load(a["spec"].read_text())
    tasks = good["tasks"]
    return [
        ("missing key", "family: text_classification\ntasks:\n  cola: {model: ./ft_cola, dataset: ./cola}\n",
         "bad.yaml:1: the pool has no key 'base'"),
        ("task missing key", {**good, "tasks": {**tasks, "rte": {"adapter": "./lora_rte"}}},
         "tasks.rte needs exactly one of dataset:"),
        ("wrong type", "family: text_classification\nbase: ./base\nmax_length: many\ntasks: {}\n",
         "bad.yaml:3: max_length must be an integer, got str 'many'"),
        ("wrong type in a task", {**good, "tasks": {**tasks, "cola": {**tasks["cola"], "inputs": {"a": 1}}}},
         "tasks.cola.inputs must be a non-empty list of strings"),
        ("unknown family", {**good, "family": "text_classifcation"},
         "bad.yaml:2: unknown family 'text_classifcation' (did you mean 'text_classification'?); valid choices: "
         "image_classification, clip_zeroshot, text_classification"),
        ("architecture", {**good, "tasks": {**tasks, "cola": {**tasks["cola"], "model": a["bert"]}}},
         f"task 'cola': '{a['bert']}' is a BertForSequenceClassification (model_type bert), the base "
         f"'{a['root'] / 'base'}' a GPT2LMHeadModel (model_type gpt2)"),
        ("adapter base", {**good, "tasks": {**tasks, "rte": {**tasks["rte"], "adapter": a["foreign"]}}},
         f"adapter '{a['foreign']}' was trained on '/elsewhere/gpt2', not the pool's base '{a['root'] / 'base'}'"),
        ("label column", {**good, "tasks": {**tasks, "rte": {**tasks["rte"], "label": "lable"}}},
         "has no column 'lable' (label) in split 'train'; its columns: sentence1, sentence2, label"),
        ("missing checkpoint", {**good, "tasks": {**tasks, "cola": {**tasks["cola"], "model": "./nope"}}},
         "tasks.cola.model='" + str(a["root"] / "nope") + "': no such file or directory"),
    ]


@pytest.fixture(scope="module")
def bad_assets(gpt2_pool, tmp_path_factory):
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("bad")
    BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32)).save_pretrained(root / "bert")
    shutil.copytree(gpt2_pool["root"] / "lora_rte", root / "foreign")
    cfg = json.loads((root / "foreign" / "adapter_config.json").read_text())
    (root / "foreign" / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "/elsewhere/gpt2"}))
    return {**gpt2_pool, "bert": str(root / "bert"), "foreign": str(root / "foreign")}


def test_bad_pools_are_one_line_exit_2_and_write_nothing(bad_assets, capsys, tmp_path):
    for case, content, needle in bad_cases(bad_assets):
        spec = bad_assets["root"] / "bad.yaml"
        spec.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        out = tmp_path / case.replace(" ", "_")
        code = main(["run", "method=ta_grid", "tasks=pool", f"tasks.spec={spec}", f"out={out}"])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (case, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (case, err)
        assert not out.exists(), case


def test_example_pools_validate_and_mirror_the_published_suites(capsys):
    """examples/pools/*.yaml parse and check; they name the published suites' ids, data, columns, splits.
    Offline with an empty hub cache, building one stops at the ids (one line listing them), after validation."""
    c = load_spec(ROOT / "examples" / "pools" / "clip-vit-b32.yaml")
    assert c.family == "clip_zeroshot" and c.base == "openai/clip-vit-base-patch32" and list(c.tasks) == clip.TASKS
    for t, ts in c.tasks.items():
        assert ts.model == f"tanganke/clip-vit-base-patch32_{t}" and ts.dataset == clip.DATASETS[t]
        assert ts.splits == {"train": "train", "test": "test"} and ts.inputs == ("image",) and ts.label == "label"
        assert ts.label_names is None and clip.zeroshot_metadata(t) is not None     # the shipped class names
    g = load_spec(ROOT / "examples" / "pools" / "gpt2-glue.yaml")
    assert g.family == "text_classification" and g.base == "gpt2" and list(g.tasks) == gpt2_glue.TASKS
    assert g.max_length == 512
    for t, ts in g.tasks.items():
        assert ts.model == f"tanganke/gpt2_{t}" and ts.dataset == gpt2_glue.DATASETS[t]
        assert ts.inputs == gpt2_glue.TEXT_COLUMNS[t] and ts.label == "label"
        assert ts.splits == {"train": "train", "test": gpt2_glue.TEST_SPLIT.get(t, "validation")}
    for name in ("clip-vit-b32", "gpt2-glue"):
        with pytest.raises(BenchError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
            PoolSuite(spec=str(ROOT / "examples" / "pools" / f"{name}.yaml"), names=None)


@pytest.mark.parametrize("pool", ["gpt2_pool", "vit_pool"])
def test_pool_train_batches_stream_and_eval_size_subsets(pool, request):
    """Train batches are the rows the seed draws, prepared as drawn (equal to the same draw from the
    whole split stored as before); tasks.eval_size cuts val/test only."""
    spec = str(request.getfixturevalue(pool)["spec"])
    suite, sub = PoolSuite(spec=spec), PoolSuite(spec=spec, eval_size=2)
    for i, t in enumerate(suite.tasks):
        got = suite.train_batch(t, 5, torch.Generator().manual_seed(i))
        want = stored_train_batch(suite, t, 5, i)                  # the same draw from the whole stored split
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), t
        assert len(sub.eval_data(t, "test")["labels"]) == min(2, len(suite.eval_data(t, "test")["labels"]))
        assert sub.train_size(t) == suite.train_size(t) == len(suite._split_data(t, "train")["labels"])
    assert sub.key != suite.key and sub.config()["eval_size"] == 2
