"""Published suites (tasks/clip.py, tasks/gpt2_glue.py, tasks/hub.py) through their real loaders.

No network here: the tests write tiny HF-format checkpoints (a full `CLIPModel` with a BPE tokenizer,
`CLIPVisionModel` fine-tunes = perturbed copies; GPT-2 + `GPT2ForSequenceClassification` fine-tunes),
an open_clip `local-dir:` model, and tiny datasets (`save_to_disk`, and one in the hub's parquet
layout with a config), point the suites' ids at those directories and run `bench run`. Numbers are
checked against independent implementations: `CLIPModel.forward`'s logits, open_clip's own
preprocessing and zero-shot classifier, `GPT2ForSequenceClassification`, closed-form parameter counts.
"""
from __future__ import annotations

import contextlib
import gzip
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.cli import main
from bench.core.evaluator import Evaluator
from bench.core.registry import SUITES, BenchError
from bench.methods.ta_grid import TAGrid
from bench.tasks import hub
from bench.tasks.clip import CLIPSuite
from bench.tasks.clip import label_mapping, zeroshot_metadata, zeroshot_weights
from bench.tasks.gpt2_glue import tokenize

SEED = 0


@contextlib.contextmanager
def offline_hub(root: Path):
    """Inside: offline mode, an empty hub cache, private build and datasets caches under `root` (the
    offline test suites' cache stays untouched)."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HUB_CACHE", str(root / "hub"))
        mp.setenv("PARETOBENCH_CACHE", str(root / "cache"))
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "datasets")
        yield root


@pytest.fixture(scope="module", autouse=True)
def offline_env(tmp_path_factory):
    """No test may reach the hub."""
    with offline_hub(tmp_path_factory.mktemp("env")) as root:
        yield root


# ---- tiny assets ------------------------------------------------------------------------------------
def bpe_tokenizer_parts(n_merges: int = 300):
    """vocab/merges of CLIP's BPE (open_clip's bundled merges, truncated), built as OpenAI CLIP builds them."""
    from open_clip.tokenizer import bytes_to_unicode

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = [tuple(m.split()) for m in gzip.open(path).read().decode().split("\n")[1:1 + n_merges]]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def gpt2_tokenizer(merges: list[tuple[str, str]]):
    """A byte-level GPT-2 tokenizer: the 256 byte symbols, `merges`, and <|endoftext|> last (its eos)."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import GPT2Tokenizer

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for x, y in merges:
        vocab[x + y] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def perturbed(module: torch.nn.Module, scale: float, g: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def rgb_images(n: int, g: np.random.Generator, sizes=((40, 48), (36, 36), (52, 30))) -> list[Image.Image]:
    return [Image.fromarray(g.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(n)]


def image_dataset(names: list[str], g, n_train=20, n_test=8, validation: int = 0):
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as HFImage

    feats = Features({"image": HFImage(), "label": ClassLabel(names=names)})
    mk = lambda n: Dataset.from_dict({"image": rgb_images(n, g), "label": g.integers(0, len(names), n).tolist()},  # noqa: E731
                                     features=feats)
    splits = {"train": mk(n_train), "test": mk(n_test)}
    if validation:
        splits["validation"] = mk(validation)
    return DatasetDict(splits)


@pytest.fixture(scope="module")
def clip_assets(tmp_path_factory):
    """Pre-trained tiny CLIPModel + tokenizer + preprocessor config, 3 fine-tuned vision towers,
    eurosat (class names permuted), svhn (hub parquet layout, config cropped_digits, with an `extra` split the
    suite never reads), dtd (own validation)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, CLIPVisionModel

    root = tmp_path_factory.mktemp("clip")
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    vocab, merges = bpe_tokenizer_parts()
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=48,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=32, patch_size=8),
                     projection_dim=16)
    clip = CLIPModel(cfg).eval()
    clip.save_pretrained(root / "pre")
    tok.save_pretrained(root / "pre")
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    (root / "pre" / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32},
         "crop_size": {"height": 32, "width": 32}, "image_mean": mean, "image_std": std, "resample": 3}))
    tasks = ["eurosat", "svhn", "dtd"]
    for t in tasks:
        ft = CLIPVisionModel(cfg.vision_config)
        ft.load_state_dict(clip.vision_model.state_dict())
        perturbed(ft, 0.05, g)
        ft.save_pretrained(root / f"ft_{t}")
        if t == "dtd":     # the published fine-tunes' key format (transformers 4): "vision_model." prefix
            from safetensors.torch import save_file

            save_file({f"vision_model.{k}": v.contiguous() for k, v in ft.state_dict().items()},
                      root / f"ft_{t}" / "model.safetensors", metadata={"format": "pt"})
    # a fine-tune of another width (mismatch) and one with a layer less (missing parameters)
    bad = CLIPVisionModel(type(cfg.vision_config)(**{**cfg.vision_config.to_dict(), "intermediate_size": 48}))
    bad.save_pretrained(root / "ft_wide")
    short = CLIPVisionModel(type(cfg.vision_config)(**{**cfg.vision_config.to_dict(), "num_hidden_layers": 1}))
    short.save_pretrained(root / "ft_short")

    rng = np.random.default_rng(SEED)
    euro = zeroshot_metadata("eurosat")["classnames"]
    perm = rng.permutation(len(euro))                    # dataset class j is our class perm[j]
    image_dataset([euro[i].replace(" ", "_") for i in perm], rng).save_to_disk(root / "eurosat")
    svhn = image_dataset([str(i) for i in range(10)], rng)
    for split, ds in {**svhn, "extra": svhn["train"]}.items():   # the hub's parquet conversion layout
        (root / "svhn" / "cropped_digits").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(root / "svhn" / "cropped_digits" / f"{split}-00000-of-00001.parquet"))
    (root / "svhn" / "README.md").write_text(
        "---\nconfigs:\n- config_name: cropped_digits\n  data_files:\n  - split: train\n    path: cropped_digits/train-*\n"
        "  - split: test\n    path: cropped_digits/test-*\n  - split: extra\n    path: cropped_digits/extra-*\n---\n")
    dtd = zeroshot_metadata("dtd")["classnames"]
    image_dataset(dtd, rng, validation=6).save_to_disk(root / "dtd")
    return {"root": root, "clip": clip, "tok": tok, "perm": perm, "mean": mean, "std": std, "svhn": svhn, "tasks": tasks,
            "datasets": {"eurosat": str(root / "eurosat"), "svhn": f"{root / 'svhn'}:cropped_digits",
                         "dtd": str(root / "dtd")}}


def clip_kwargs(a, **kw):
    return {"pretrained": str(a["root"] / "pre"), "finetuned": str(a["root"] / "ft_{task}"),
            "datasets": a["datasets"], "names": a["tasks"], **kw}


def clip_overrides(a) -> list[str]:
    return [f"tasks.pretrained={a['root'] / 'pre'}", f"tasks.finetuned='{a['root'] / 'ft_{task}'}'",
            *[f"tasks.datasets.{t}='{v}'" for t, v in a["datasets"].items()], f"tasks.names=[{','.join(a['tasks'])}]"]


# ---- pure functions ------------------------------------------------------------------------------
def test_carve_is_a_fixed_disjoint_ten_percent():
    tr, va = hub.carve(95)
    assert len(va) == 10 and len(tr) == 85 and not set(tr) & set(va) and sorted([*tr, *va]) == list(range(95))
    assert np.array_equal(hub.carve(95)[1], va)                       # same seed, same rows
    assert np.array_equal(va, np.sort(np.random.default_rng(0).permutation(95)[:10]))


def test_label_mapping_by_name_and_split_config():
    ours = ["annual crop land", "forest", "river"]
    assert label_mapping(["forest", "River", "annual_crop_land"], ours).tolist() == [1, 2, 0]
    assert label_mapping(ours, ours) is None and label_mapping(["a", "b", "c"], ours) is None
    assert hub.split_config("nyu-mll/glue:mnli") == ("nyu-mll/glue", "mnli")
    assert hub.split_config("/data/x/svhn") == ("/data/x/svhn", None)
    meta = {t: zeroshot_metadata(t) for t in ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb",
                                                "mnist", "dtd"]}
    assert {t: len(m["classnames"]) for t, m in meta.items()} == {
        "sun397": 397, "stanford-cars": 196, "resisc45": 45, "eurosat": 10, "svhn": 10, "gtsrb": 43, "mnist": 10, "dtd": 47}
    assert all("{}" in t for m in meta.values() for t in m["templates"])


def test_zeroshot_weights_match_a_loop():
    torch.manual_seed(1)
    table = torch.randn(100, 8)
    encode = lambda texts: torch.stack([table[sum(map(ord, s)) % 100] for s in texts])  # noqa: E731
    w = zeroshot_weights(encode, ["cat", "dog", "owl"], ["a {}.", "the {}!"], 50.0, chunk=3)
    for c, row in zip(["cat", "dog", "owl"], w):
        e = torch.stack([F.normalize(encode([t.replace("{}", c)])[0], dim=0) for t in ["a {}.", "the {}!"]]).mean(0)
        assert torch.allclose(row, 50.0 * e / e.norm(), atol=1e-6)


# ---- CLIP through the real loaders ------------------------------------------------------------------
def test_clip_suite_loads_splits_labels_heads(clip_assets, monkeypatch):
    from datasets import load_from_disk

    a = clip_assets
    suite = SUITES.build("clip-vit-b32", **clip_kwargs(a))
    assert suite.name == "clip-vit-b32" and suite.tasks == a["tasks"] and not suite.random_weights
    # task vectors are exactly θ_i − θ0 of the saved checkpoints
    from safetensors.torch import load_file

    strip = lambda sd: {k.removeprefix("vision_model."): v for k, v in sd.items()  # noqa: E731
                        if not k.startswith(("text_", "visual_projection", "logit_scale"))}
    pre = strip(load_file(a["root"] / "pre" / "model.safetensors"))
    for i, t in enumerate(a["tasks"]):
        ft = strip(load_file(a["root"] / f"ft_{t}" / "model.safetensors"))
        assert set(ft) == set(pre) == set(suite.theta0())
        for n in pre:
            assert torch.equal(suite.task_vectors()[n][i], ft[n] - pre[n]), n
    # splits: eurosat and svhn carve val from train; dtd has its own validation split
    ds = load_from_disk(a["root"] / "eurosat")
    tr, va = hub.carve(len(ds["train"]))
    assert suite.split_sizes("eurosat") == {"train": 18, "val": 2, "test": 8}
    assert suite.split_sizes("dtd") == {"train": 20, "val": 6, "test": 8}
    # val carved from train with the fixed seed; labels are the dataset's ids (the published protocol)
    for split, (name, rows) in {"test": ("test", None), "val": ("train", va), "train": ("train", tr)}.items():
        want = np.asarray(ds[name]["label"])[rows if rows is not None else slice(None)]
        assert suite.eval_data("eurosat", split)["labels"].tolist() == want.tolist(), split
    # images: uint8 at model resolution, identical to open_clip's own eval transform after prepare
    raw = suite.eval_data("svhn", "test")
    import datasets      # svhn's extra split is declared and present, but never converted

    assert not [p for p in Path(datasets.config.HF_DATASETS_CACHE).rglob("*.arrow") if "extra" in p.name]
    assert [p for p in Path(datasets.config.HF_DATASETS_CACHE).rglob("*.arrow") if "train" in p.name]
    assert raw["pixel_values"].dtype == torch.uint8 and tuple(raw["pixel_values"].shape) == (8, 3, 32, 32)
    ref_tf = open_clip.image_transform(32, is_train=False, mean=a["mean"], std=a["std"], interpolation="bicubic",
                                       resize_mode="shortest")
    ref = torch.stack([ref_tf(im) for im in a["svhn"]["test"]["image"]])
    batch = suite.prepare(raw, "cpu")
    assert torch.allclose(batch["pixel_values"], ref, atol=1e-5)
    # zero-shot head: logits equal CLIPModel.forward's logits_per_image (one template for svhn)
    meta = zeroshot_metadata("svhn")
    prompts = [meta["templates"][0].replace("{}", c) for c in meta["classnames"]]
    inputs = a["tok"](prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = a["clip"](input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                         pixel_values=batch["pixel_values"]).logits_per_image
        got = suite.logits(suite.theta0(), "svhn", batch)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # heads are computed once and cached: a second build never re-encodes the prompts
    monkeypatch.setattr(CLIPSuite, "_build_head", staticmethod(lambda *a, **k: pytest.fail("head rebuilt")))
    again = SUITES.build("clip-vit-b32", **clip_kwargs(a))
    assert all(torch.equal(again.heads[t].weight, suite.heads[t].weight) for t in a["tasks"])


def test_labels_are_indices_into_the_shipped_names_unless_remapped(clip_assets, capsys):
    from datasets import load_from_disk

    a = clip_assets
    test = load_from_disk(a["root"] / "eurosat")["test"]
    labels, names, euro = np.asarray(test["label"]), test.features["label"].names, zeroshot_metadata("eurosat")["classnames"]
    j = int(np.flatnonzero(a["perm"] != np.arange(len(euro)))[0])      # the first label the two orders disagree on
    capsys.readouterr()
    suite = SUITES.build("clip-vit-b32", **clip_kwargs(a, names=["eurosat", "dtd"]))
    err = capsys.readouterr().err.strip().splitlines()
    # one loud line for eurosat (names shipped in another order), none for dtd (same order)
    assert len(err) == 1 and err[0].startswith("warning: clip-vit-b32 eurosat: the dataset's class names are the "
                                               "shipped ones in another order")
    assert f"its label {j} is {names[j]!r}, shipped class {j} is {euro[j]!r}" in err[0]
    assert "labels used as indices into the shipped names, as published" in err[0]
    assert suite.eval_data("eurosat", "test")["labels"].tolist() == labels.tolist()
    assert suite.version == "2" and "remap_labels" not in suite.config()
    # opt-in: mapped by name (dataset class j is shipped class perm[j]), said so, recorded in the config and key
    remapped = SUITES.build("clip-vit-b32", **clip_kwargs(a, names=["eurosat", "dtd"], remap_labels=True))
    assert "labels re-mapped by name (tasks.remap_labels=true)" in capsys.readouterr().err
    assert remapped.eval_data("eurosat", "test")["labels"].tolist() == a["perm"][labels].tolist()
    assert remapped.config()["remap_labels"] is True and remapped.key != suite.key
    assert torch.equal(remapped.heads["eurosat"].weight, suite.heads["eurosat"].weight)   # heads never depend on it


def test_clip_ta_grid_through_bench_run(clip_assets, out):
    a = clip_assets
    assert main(["run", "method=ta_grid", "tasks=clip-vit-b32", *clip_overrides(a), "method.points=3",
                 "device=cpu", f"out={out}", "run_id=r1"]) == 0
    rec = json.loads((out / "clip-vit-b32" / "ta_grid" / "r1" / "record.json").read_text())
    assert rec["weights"] == "real" and rec["tasks"] == a["tasks"] and len(rec["points"]) == 3
    assert rec["suite_config"]["datasets"]["svhn"].endswith(":cropped_digits")
    # the recorded pre-trained accuracy on svhn equals CLIPModel's own zero-shot prediction
    meta = zeroshot_metadata("svhn")
    inputs = a["tok"]([meta["templates"][0].replace("{}", c) for c in meta["classnames"]], padding=True,
                      return_tensors="pt")
    tf = open_clip.image_transform(32, is_train=False, mean=a["mean"], std=a["std"])
    test = a["svhn"]["test"]
    with torch.no_grad():
        logits = a["clip"](input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           pixel_values=torch.stack([tf(im) for im in test["image"]])).logits_per_image
    acc = int((logits.argmax(-1) == torch.tensor(test["label"])).sum()) / len(test)
    assert rec["references"]["pretrained"]["svhn"]["accuracy"] == pytest.approx(acc, abs=1e-9)
    # λ = 0 is θ0: the first grid point scores as the pre-trained model
    assert rec["points"][0]["metrics"] == rec["references"]["pretrained"]


def test_mismatched_finetuned_checkpoint_names_the_parameter(clip_assets):
    a = clip_assets
    ft = str(a["root"] / "ft_{task}")
    with pytest.raises(BenchError, match=r"encoder\.layers\.0\.mlp\.fc1\.weight' has shape \(48, 32\), "
                                         r"the pre-trained model has \(64, 32\)"):
        SUITES.build("clip-vit-b32", **clip_kwargs(a, finetuned=ft.replace("{task}", "wide"), names=["eurosat"]))
    with pytest.raises(BenchError, match=r"has no parameter 'encoder\.layers\.1\."):
        SUITES.build("clip-vit-b32", **clip_kwargs(a, finetuned=ft.replace("{task}", "short"), names=["eurosat"]))
    with pytest.raises(BenchError, match=r"tasks\.datasets\.eurosat='/no/such/dir': no such file or directory"):
        SUITES.build("clip-vit-b32", **clip_kwargs(a, datasets={"eurosat": "/no/such/dir"}, names=["eurosat"]))


def test_offline_without_cache_is_one_line_naming_every_id(out, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PARETOBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["run", "method=ta_grid", "tasks=clip-vit-b32", "tasks.names=[sun397,svhn]", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "HF_HUB_OFFLINE is set" in err
    for needle in ["openai/clip-vit-base-patch32", "tanganke/clip-vit-base-patch32_sun397",
                   "tanganke/clip-vit-base-patch32_svhn", "dataset tanganke/sun397",
                   "dataset ufldl-stanford/svhn:cropped_digits", f"{hub.hf_cli()} download",
                   "--include 'cropped_digits/train-*' --include 'cropped_digits/test-*'",
                   "--repo-type dataset --include '*/train-*' --include '*/test-*' --include '*/validation-*'"]:
        assert needle in err, needle
    assert "cropped_digits/*" not in err and "extra" not in err
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert not (tmp_path / "cache").exists()
    assert main(["run", "tasks=gpt2-glue", "tasks.names=[mnli,rte]", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "gpt2, tanganke/gpt2_mnli, tanganke/gpt2_rte, dataset nyu-mll/glue:mnli" in err and len(err.splitlines()) == 1
    assert "--include 'mnli/train-*' --include 'mnli/validation_matched-*'" in err     # never the test splits
    assert "mnli/test" not in err and "mismatched" not in err


def hub_repo(root: Path, names: list[str]) -> dict[str, list[int]]:
    """A dataset repository in the layout of tanganke/stanford_cars: train in two shards, test, and
    corrupted copies of test, all declared in README.md with the class names (the parquet files carry
    no features of their own), plus the metadata `hf download --local-dir` leaves in .cache/."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"train-00000-of-00002": [0, 1, 2], "train-00001-of-00002": [3, 4], "test-00000-of-00001": [5, 6],
            "contrast-00000-of-00001": [7], "gaussian_noise-00000-of-00001": [8]}
    (root / "data").mkdir(parents=True)
    for stem, xs in rows.items():
        pq.write_table(pa.table({"x": xs, "label": [x % len(names) for x in xs]}), root / "data" / f"{stem}.parquet")
    (root / ".cache" / "huggingface" / "download" / "data").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "download" / "data" / "train-00000-of-00002.parquet.metadata").write_text("x")
    splits = ["train", "test", "contrast", "gaussian_noise"]
    (root / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: x\n    dtype: int64\n  - name: label\n    dtype:\n      class_label:\n"
        "        names:\n" + "".join(f"          '{i}': {n}\n" for i, n in enumerate(names))
        + "configs:\n- config_name: default\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: data/{s}-*\n" for s in splits) + "---\n")
    return rows


def test_dataset_repos_fetch_and_convert_only_the_suite_splits(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub.utils import filter_repo_objects

    names = ["sedan", "coupe", "van"]
    snapshot = tmp_path / "hub" / "datasets--org--cars" / "snapshots" / "c0ffee"
    rows = hub_repo(snapshot, names)
    (tmp_path / "hub" / "datasets--org--cars" / "refs").mkdir()
    (tmp_path / "hub" / "datasets--org--cars" / "refs" / "main").write_text("c0ffee")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = hub.Ref("org/cars", "tasks.datasets.stanford-cars", "dataset")
    # what snapshot_download and `hf download --include` fetch of the repository: the suite's splits only
    repo_files = ["README.md", *[f"data/{stem}.parquet" for stem in rows]]
    assert sorted(filter_repo_objects(repo_files, allow_patterns=ref.patterns())) == [
        "README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet"]
    # the cached snapshot resolves offline; only train and test are converted, shards in order, class
    # names from the card
    path = hub.resolve([ref])["org/cars"]
    assert path == snapshot and hub.fingerprint(path) == "datasets--org--cars@c0ffee"
    dd = hub.load_dataset_dict(path, ref)
    assert list(dd) == ["train", "test"] and dd["train"]["x"] == [0, 1, 2, 3, 4] and dd["test"]["x"] == [5, 6]
    assert dd["train"].features["label"].names == names
    converted = [p.name for p in Path(datasets.config.HF_DATASETS_CACHE).rglob("*.arrow")]
    assert any("train" in n for n in converted) and not any("contrast" in n or "noise" in n for n in converted)
    # a cache without the test files is incomplete: the one line names the id and fetches exactly the splits
    (snapshot / "data" / "test-00000-of-00001.parquet").unlink()
    with pytest.raises(BenchError) as e:
        hub.resolve([ref])
    assert str(e.value).count("download") == 1 and (
        f"{hub.hf_cli()} download org/cars --repo-type dataset {hub.include_args(hub.hf_cli(), ref.patterns())} "
        "(or point") in str(e.value)
    # a split in two folders is ambiguous without a config; with one, only that folder is read
    hub_repo(tmp_path / "two", names)
    (tmp_path / "two" / "other").mkdir()
    (tmp_path / "two" / "data" / "train-00000-of-00002.parquet").rename(tmp_path / "two" / "other" / "train-0.parquet")
    with pytest.raises(BenchError, match=r"holds split 'train' in several folders \(data, other\); name one as the "
                                         r"config, e.g\. org/cars:data"):
        hub.load_dataset_dict(tmp_path / "two", ref)
    dd = hub.load_dataset_dict(tmp_path / "two", hub.Ref("org/cars:data", "tasks.datasets.stanford-cars", "dataset"))
    assert dd["train"]["x"] == [3, 4] and list(dd) == ["train", "test"]


def test_open_clip_backbone_with_release_style_state_dicts(clip_assets, tmp_path):
    from safetensors.torch import save_file

    a = clip_assets
    cfg = {"embed_dim": 16, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "oc").mkdir()
    (tmp_path / "oc" / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.manual_seed(3)
    model = open_clip.create_model(f"local-dir:{tmp_path / 'oc'}").eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "oc" / "open_clip_model.safetensors")
    g = torch.Generator().manual_seed(4)
    towers = {}
    for t, folder in [("eurosat", "EuroSAT"), ("svhn", "SVHN")]:
        visual = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in model.visual.state_dict().items()}
        towers[t] = visual
        (tmp_path / folder).mkdir()
        sd = {f"model.visual.{k}": v for k, v in visual.items()} if t == "eurosat" else visual   # release / bare
        torch.save(sd, tmp_path / folder / "finetuned.pt")
    suite = SUITES.build("clip-vit-b32", backbone="open_clip", open_clip_model=f"local-dir:{tmp_path / 'oc'}",
                         open_clip_finetuned=str(tmp_path / "{Task}" / "finetuned.pt"), datasets=a["datasets"],
                         names=["eurosat", "svhn"])
    for i, t in enumerate(suite.tasks):
        assert torch.equal(suite.finetuned(i)["proj"], towers[t]["proj"]) and "proj" in suite.theta0()
    # heads = open_clip's own zero-shot classifier × logit scale
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'oc'}")
    meta = zeroshot_metadata("eurosat")
    with torch.no_grad():
        ref = open_clip.build_zero_shot_classifier(model, tokenizer, meta["classnames"],
                                                   [lambda c, t=t: t.replace("{}", c) for t in meta["templates"]],
                                                   device="cpu", use_tqdm=False)
    scale = float(model.logit_scale.exp())
    assert torch.allclose(suite.heads["eurosat"].weight, scale * ref.T, atol=1e-5)
    # the fine-tuned model's logits equal open_clip's encode_image with that tower loaded
    batch = suite.prepare(suite.eval_data("svhn", "test"), "cpu")
    model.visual.load_state_dict(towers["svhn"])
    with torch.no_grad():
        f = F.normalize(model.encode_image(batch["pixel_values"]), dim=-1)
        got = suite.logits(suite.finetuned(1), "svhn", batch)
    assert torch.allclose(got, f @ suite.heads["svhn"].weight.T, atol=1e-4)
    # a built-in open_clip name + pretrained tag resolves through the hub cache: offline, one line naming it
    with pytest.raises(BenchError, match=r"HF_HUB_OFFLINE is set: timm/vit_base_patch32_clip_224\.openai; .*"
                                         r"download timm/vit_base_patch32_clip_224\.openai --include "
                                         r"'open_clip_model\.safetensors' --include 'open_clip_pytorch_model\.bin'"):
        SUITES.build("clip-vit-b32", backbone="open_clip", open_clip_finetuned=str(tmp_path / "{Task}" / "finetuned.pt"),
                     datasets=a["datasets"], names=["eurosat", "svhn"])
    # a task-arithmetic front through the one Evaluator
    front = TAGrid(points=2).approximate_front(suite, evaluator=Evaluator(suite), seed=0)
    assert len(front) == 2 and np.isfinite(front.F).all()


def test_clip_random_weights_on_a_handful_of_images(out):
    assert main(["run", "method=ta_grid", "tasks=clip-vit-b32", "tasks.weights=random", "tasks.synthetic_size=2",
                 "tasks.names=[eurosat,svhn]", "method.points=2", "device=cpu", f"out={out}", "run_id=rnd"]) == 0
    rec = json.loads((out / "clip-vit-b32" / "ta_grid" / "rnd" / "record.json").read_text())
    cfg = rec["suite_config"]
    assert rec["weights"] == "random" and cfg["weights"] == "random" and len(rec["points"]) == 2
    # ViT-B/32 vision tower, closed form: patch conv + class + 50 positions + 2 LN + 12 blocks
    d, m = 768, 3072
    block = 4 * (d * d + d) + (d * m + m) + (m * d + d) + 4 * d
    assert cfg["params"] == 3 * 32 * 32 * d + d + 50 * d + 2 * d + 12 * block + 2 * d == 87456000
    assert cfg["image_size"] == 224 and cfg["split_sizes"]["svhn"] == {"train": 2, "val": 2, "test": 2}
    # without synthetic_size: the published sizes, val carved from train (no model needed to check)
    suite = CLIPSuite.__new__(CLIPSuite)
    suite.random_weights, suite.synthetic_size = True, None
    assert suite.split_sizes("eurosat") == {"train": 19440, "val": 2160, "test": 2700}


# ---- GPT-2 ------------------------------------------------------------------------------------------
WORDS = "the a cat dog sat ran on under mat tree big small red blue quickly slowly".split()


def glue_dataset(cols: list[str], n_classes: int, g, test_split: str = "validation", n=(20, 7)):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({**{c: Value("string") for c in cols}, "label": ClassLabel(num_classes=n_classes)})
    sent = lambda: " ".join(g.choice(WORDS, g.integers(2, 9)))  # noqa: E731
    mk = lambda k: Dataset.from_dict({**{c: [sent() for _ in range(k)] for c in cols},  # noqa: E731
                                      "label": g.integers(0, n_classes, k).tolist()}, features=feats)
    return DatasetDict({"train": mk(n[0]), test_split: mk(n[1]), **({"validation_mismatched": mk(3)}
                                                                    if test_split == "validation_matched" else {})})


@pytest.fixture(scope="module")
def gpt2_assets(tmp_path_factory):
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("gpt2")
    tok = gpt2_tokenizer([("Ġ", "t"), ("h", "e"), ("Ġt", "he")])
    eos = tok.eos_token_id
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=32, n_layer=2, n_head=2, bos_token_id=eos,
                     eos_token_id=eos)
    torch.manual_seed(SEED)
    pre = GPT2LMHeadModel(cfg).eval()                     # the hub's `gpt2` is an LM-head checkpoint
    pre.save_pretrained(root / "pre")
    tok.save_pretrained(root / "pre")                    # saved without a pad token, like the hub's gpt2
    tok.pad_token = tok.eos_token
    g = torch.Generator().manual_seed(SEED)
    tasks = {"cola": (["sentence"], 2), "rte": (["sentence1", "sentence2"], 2), "mnli": (["premise", "hypothesis"], 3)}
    models = {}
    for t, (_, k) in tasks.items():
        ft_cfg = {k_: v for k_, v in cfg.to_dict().items() if k_ not in ("id2label", "label2id")}
        ft = GPT2ForSequenceClassification(GPT2Config(**{**ft_cfg, "num_labels": k, "pad_token_id": eos})).eval()
        ft.transformer.load_state_dict(pre.transformer.state_dict())
        perturbed(ft.transformer, 0.05, g)
        ft.save_pretrained(root / f"ft_{t}")
        models[t] = ft
    pre.transformer.save_pretrained(root / "ft_body")     # a body without a score head
    rng = np.random.default_rng(SEED)
    data = {}
    for t, (cols, k) in tasks.items():
        dd = glue_dataset(cols, k, rng, "validation_matched" if t == "mnli" else "validation")
        dd.save_to_disk(root / t)
        data[t] = dd
    return {"root": root, "tok": tok, "models": models, "data": data, "tasks": list(tasks), "eos": eos}


def gpt2_kwargs(a, **kw):
    return {"pretrained": str(a["root"] / "pre"), "finetuned": str(a["root"] / "ft_{task}"),
            "datasets": {t: str(a["root"] / t) for t in a["tasks"]}, "names": a["tasks"], **kw}


def test_gpt2_glue_matches_sequence_classification_and_runs(gpt2_assets, out):
    a = gpt2_assets
    suite = SUITES.build("gpt2-glue", **gpt2_kwargs(a))
    assert suite.split_sizes("mnli") == {"train": 18, "val": 2, "test": 7}      # test = validation_matched
    assert suite.split_sizes("cola") == {"train": 18, "val": 2, "test": 7}      # test = GLUE validation
    for i, t in enumerate(a["tasks"]):
        raw = suite.eval_data(t, "test")
        batch = suite.prepare({k: v[:4] for k, v in raw.items()}, "cpu")
        assert batch["input_ids"].shape[1] == int(raw["attention_mask"][:4].sum(1).max())   # trimmed to the batch
        full = suite.prepare(raw, "cpu")
        with torch.no_grad():
            got = suite.logits(suite.finetuned(i), t, full)
            ids = full["input_ids"].masked_fill(full["attention_mask"] == 0, a["eos"])
            want = a["models"][t](input_ids=ids, attention_mask=full["attention_mask"]).logits
        assert torch.allclose(got, want, atol=1e-5), t
    # the stored test split is GLUE validation, tokenised as the pre-trained tokenizer does, sorted by length
    cols = [list(a["data"]["rte"]["validation"][c]) for c in ("sentence1", "sentence2")]
    enc = a["tok"](*cols)
    raw = suite.eval_data("rte", "test")
    lengths = raw["attention_mask"].sum(1).tolist()
    assert lengths == sorted(len(x) for x in enc["input_ids"])
    assert np.array_equal(tokenize(a["tok"], cols, 64, a["eos"])["attention_mask"].sum(1), [len(x) for x in enc["input_ids"]])
    # through `bench run`: the recorded fine-tuned accuracy on cola is the HF model's accuracy on GLUE validation
    ov = [f"tasks.pretrained={a['root'] / 'pre'}", f"tasks.finetuned='{a['root'] / 'ft_{task}'}'",
          *[f"tasks.datasets.{t}={a['root'] / t}" for t in a["tasks"]], f"tasks.names=[{','.join(a['tasks'])}]"]
    assert main(["run", "method=ta_grid", "tasks=gpt2-glue", *ov, "method.points=2", "device=cpu", f"out={out}",
                 "run_id=g"]) == 0
    rec = json.loads((out / "gpt2-glue" / "ta_grid" / "g" / "record.json").read_text())
    val = a["data"]["cola"]["validation"]
    enc = a["tok"](list(val["sentence"]), padding=True, return_tensors="pt")
    with torch.no_grad():
        pred = a["models"]["cola"](**enc).logits.argmax(-1)
    assert rec["references"]["finetuned"]["cola"]["accuracy"] == pytest.approx(
        int((pred == torch.tensor(val["label"])).sum()) / len(val), abs=1e-12)
    assert rec["suite_config"]["test"] == {"cola": "validation", "rte": "validation", "mnli": "validation_matched"}
    with pytest.raises(BenchError, match=r"has no parameter 'score\.weight' \(not a sequence-classification"):
        SUITES.build("gpt2-glue", **gpt2_kwargs(a, finetuned=str(a["root"] / "ft_body"), names=["cola"]))


def test_gpt2_inputs_are_truncated_at_512_tokens_as_published(gpt2_assets, tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    a = gpt2_assets
    long, short = " ".join(["quickly"] * 400), "a dog"
    n_long, n_short = (len(a["tok"](x)["input_ids"]) for x in (long, short))
    assert n_long > 1024                                  # longer than GPT-2's (and the tiny model's) 1024 positions
    feats = Features({"sentence": Value("string"), "label": ClassLabel(num_classes=2)})
    mk = lambda texts: Dataset.from_dict({"sentence": texts, "label": [0] * len(texts)}, features=feats)  # noqa: E731
    DatasetDict({"train": mk(["the cat"] * 9 + [long]), "validation": mk([long, short])}).save_to_disk(tmp_path / "cola")
    kw = gpt2_kwargs(a, names=["cola"], datasets={"cola": str(tmp_path / "cola")})
    suite = SUITES.build("gpt2-glue", **kw)
    assert suite.version == "2" and suite.config()["max_length"] == 512
    raw = suite.eval_data("cola", "test")
    assert raw["attention_mask"].sum(1).tolist() == [n_short, 512]
    assert raw["input_ids"][1, :512].tolist() == a["tok"](long)["input_ids"][:512]      # the first 512 tokens
    # a stated setting: any other truncation is asked for, and capped by the model's positions
    longer = SUITES.build("gpt2-glue", **kw, max_length=4096)
    assert longer.eval_data("cola", "test")["attention_mask"].sum(1).tolist() == [n_short, 1024]
    assert longer.config()["max_length"] == 4096 and longer.key != suite.key


def test_gpt2_random_weights_short_sequences(out):
    assert main(["run", "method=ta_grid", "tasks=gpt2-glue", "tasks.weights=random", "tasks.synthetic_size=4",
                 "tasks.synthetic_seq_len=16", "tasks.names=[cola,mnli]", "method.points=2", "device=cpu",
                 f"out={out}", "run_id=rnd"]) == 0
    rec = json.loads((out / "gpt2-glue" / "ta_grid" / "rnd" / "record.json").read_text())
    assert rec["weights"] == "random" and len(rec["points"]) == 2
    d = 768   # GPT-2 124M, closed form: token + position embeddings, 12 blocks, final LN
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert rec["suite_config"]["params"] == 50257 * d + 1024 * d + 12 * block + 2 * d == 124439808
    assert rec["suite_config"]["split_sizes"]["mnli"] == {"train": 4, "val": 4, "test": 4}
    # synthetic batches: lengths in 8..16, right padding, cut to the batch's longest
    from bench.tasks.gpt2_glue import _synthetic

    raw = _synthetic(64, 16, 3, torch.Generator().manual_seed(0), sort=True)
    lengths = raw["attention_mask"].sum(1)
    assert int(lengths.min()) >= 8 and int(lengths.max()) <= 16 and torch.equal(lengths, lengths.sort().values)
    assert bool((raw["input_ids"][raw["attention_mask"] == 0] == 0).all()) and int(raw["labels"].max()) <= 2


# ---- train batches streamed; evaluation subsets (tasks.eval_size) --------------------------------------
def stored_train_batch(suite, task: str, batch_size: int, seed: int):
    """The batch as the suites drew it before streaming: the whole train split preprocessed (its stored
    form, `_split_data`), then the same host index draw gathered from it."""
    data = suite._split_data(task, "train")
    idx = torch.randint(len(data["labels"]), (batch_size,), generator=torch.Generator().manual_seed(seed))
    return suite.prepare({k: v[idx] for k, v in data.items()}, "cpu")


@pytest.mark.parametrize("family", ["clip", "gpt2"])
def test_train_batches_are_prepared_as_drawn_and_equal_the_stored_splits(family, clip_assets, gpt2_assets):
    from bench.tasks.cache import cache_root

    a = clip_assets if family == "clip" else gpt2_assets
    name, kw = ("clip-vit-b32", clip_kwargs(a)) if family == "clip" else ("gpt2-glue", gpt2_kwargs(a))
    store = cache_root() / ("clip-data" if family == "clip" else "glue-data")
    before = set(store.glob("*")) if store.exists() else set()
    suite = SUITES.build(name, **kw)
    got = {t: suite.train_batch(t, 7, torch.Generator().manual_seed(i)) for i, t in enumerate(a["tasks"])}
    new = set(store.glob("*")) - before if store.exists() else set()
    assert not [p for p in new if "-train-" in p.name], "a train split was preprocessed"
    for i, t in enumerate(a["tasks"]):                    # 7 draws of ~18 rows: repeats are likely, and fine
        want = stored_train_batch(suite, t, 7, i)
        assert got[t].keys() == want.keys()
        for k in want:
            assert torch.equal(got[t][k], want[k]), (t, k)


def test_stratified_subset_is_the_largest_remainder_allocation():
    from fractions import Fraction

    from bench.tasks.base import stratified_subset

    rng = np.random.default_rng(3)
    for trial in range(30):
        labels = rng.integers(0, rng.integers(1, 9), rng.integers(1, 200))
        n = int(rng.integers(1, len(labels) + 3))
        rows = stratified_subset(labels, n, seed=trial)
        assert np.array_equal(rows, stratified_subset(labels, n, seed=trial))      # seeded
        assert np.all(np.diff(rows) > 0) and len(rows) == min(n, len(labels))      # sorted, distinct
        if n >= len(labels):
            assert np.array_equal(rows, np.arange(len(labels)))
            continue
        # independently: exact quotas n·share; each class gets ⌊quota⌋ or ⌈quota⌉, the ⌈⌉ ones have the largest remainders
        classes, counts = np.unique(labels, return_counts=True)
        quota = {c: Fraction(int(k) * n, len(labels)) for c, k in zip(classes, counts)}
        got = {c: int(np.sum(labels[rows] == c)) for c in classes}
        assert sum(got.values()) == n
        up = [c for c in classes if got[c] > quota[c]]
        for c in classes:
            assert got[c] in (quota[c].numerator // quota[c].denominator, -(-quota[c].numerator // quota[c].denominator))
        down_rem = [quota[c] - int(quota[c]) for c in classes if got[c] <= quota[c] and quota[c] != int(quota[c])]
        assert all(quota[c] - int(quota[c]) >= r for c in up for r in down_rem)
    assert not np.array_equal(stratified_subset(np.zeros(100), 10, 0), stratified_subset(np.zeros(100), 10, 1))


def test_eval_size_cuts_val_and_test_only_and_preprocesses_only_the_subset(clip_assets, gpt2_assets, out):
    from bench.tasks.cache import cache_root

    a = clip_assets
    full = SUITES.build("clip-vit-b32", **clip_kwargs(a))
    sub = SUITES.build("clip-vit-b32", **clip_kwargs(a, eval_size=3))
    assert sub.key != full.key and sub.config()["eval_size"] == 3 and "eval_size" not in full.config()
    assert sub.describe().endswith("[eval subset ≤ 3/task]")
    for t in a["tasks"]:
        for split in ("val", "test"):
            f, s = full.eval_data(t, split), sub.eval_data(t, split)
            n = len(f["labels"])
            rows = sub.eval_rows(t, split, f["labels"].numpy())
            assert len(s["labels"]) == min(3, n)
            if rows is None:
                assert n <= 3
                continue
            for k in f:                                   # the subset is those rows of the full split, in order
                assert torch.equal(s[k], f[k][torch.from_numpy(rows)]), (t, split, k)
        assert sub.train_size(t) == full.train_size(t)
    # the cached test images of a subset hold the subset only (uint8 [3, 3, 32, 32] + the .npy header)
    stored = [np.load(p, mmap_mode="r").shape for p in (cache_root() / "clip-data").glob("svhn-test-*/pixel_values.npy")]
    assert (3, 3, 32, 32) in stored
    # GPT-2 too, and with eval_size ≥ a split the split is whole
    g = SUITES.build("gpt2-glue", **gpt2_kwargs(gpt2_assets, eval_size=5))
    assert [len(g.eval_data(t, "test")["labels"]) for t in g.tasks] == [5, 5, 5]
    assert [len(g.eval_data(t, "val")["labels"]) for t in g.tasks] == [2, 2, 2]
    # the record carries it; the table marks the subset and never mixes it with full-set rows
    for extra, rid in (([], "full"), (["tasks.eval_size=3"], "sub")):
        assert main(["run", "method=ta_grid", "tasks=clip-vit-b32", *clip_overrides(a), "method.points=2", *extra,
                     f"out={out}", f"run_id={rid}"]) == 0
    rec = json.loads((out / "clip-vit-b32" / "ta_grid" / "sub" / "record.json").read_text())
    assert rec["suite_config"]["eval_size"] == 3 and rec["suite_config"]["eval_seed"] == 0
    from bench.reports.report import render
    from bench.reports.tables import load_leaderboard

    lb = load_leaderboard(str(out), resamples=0)
    assert sorted(t.eval_size or 0 for t in lb.tables) == [0, 3]
    md = render(lb, "md")
    assert md.count("[eval subset ≤ 3/task]") == 1 and "not comparable with full-set tables" in md
    csv = render(lb, "csv").splitlines()
    assert csv[0].split(",")[3] == "eval_size" and sorted(line.split(",")[3] for line in csv[1:]) == ["", "3"]
    with pytest.raises(BenchError, match=r"tasks.eval_size=0 must be ≥ 1"):
        SUITES.build("clip-vit-b32", **clip_kwargs(a, eval_size=0))
    with pytest.raises(BenchError, match=r"with tasks.weights=random use tasks.synthetic_size"):
        SUITES.build("clip-vit-b32", weights="random", names=["mnist"], synthetic_size=4, eval_size=2)
