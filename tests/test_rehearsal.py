"""Rehearsal of the published path (issue #24): a user's machine, offline, with the published
checkpoints and datasets (at their real sizes and layouts, random weights, a few rows of data) in the
Hugging Face cache, running the README's commands with nothing but budget options added.

The test writes a hub cache (HF_HOME/hub, pointed at by HF_HUB_CACHE) laid out exactly as
huggingface_hub leaves a download: `<models|datasets>--org--name/` with `blobs/<sha256 of LFS files,
git blob sha1 of the others>`, `snapshots/<40-hex commit>/<path>` relative symlinks to them and
`refs/main` holding the commit. In it, under the suites' DEFAULT ids (no id is overridden on any
command line):

* `openai/clip-vit-base-patch32`: a `CLIPModel` of the published configuration (ViT-B/32 vision tower:
  width 768, 12 layers, patch 32, 224 px; text tower 512 wide, 12 layers, 77 positions, vocabulary
  49408; projection 512; the published config's legacy token ids bos 0 / eos 2 / pad 1), random
  weights, 151M parameters; a `CLIPTokenizer` built from CLIP's real BPE (open_clip's
  bpe_simple_vocab_16e6.txt.gz: all 48,894 merges OpenAI's tokenizer uses, vocab.json/merges.txt as
  OpenAI builds them); the published preprocessor_config.json (old integer `size`/`crop_size` format).
* `tanganke/clip-vit-base-patch32_{eurosat,mnist}`: `CLIPVisionModel` fine-tunes = θ0 + N(0, TAU_STD²),
  saved in the published (transformers 4) key format, `vision_model.` prefix.
* datasets `tanganke/eurosat` (data/{train,test,contrast}-*.parquet: 64 px RGB, a corrupted split the
  suite must not read) and `ylecun/mnist` (config folder mnist/: 28 px grayscale), N_ROWS rows per
  split, columns `image`/`label`, ClassLabel features with the tasks' real class counts both in the
  parquet files and in the dataset card (README.md, as the hub's cards declare them).
* `gpt2`: GPT-2 124M (the hub's config.json verbatim), random weights, stored as the hub's
  model.safetensors is: body keys without the `transformer.` prefix, the causal-mask buffers
  `h.N.attn.bias`, no lm_head (tied). Its tokenizer is a byte-level BPE of GPT-2's vocabulary SIZE
  and layout (256 byte symbols in GPT-2's order, 50,000 merges, <|endoftext|> = 50256), but not
  GPT-2's vocabulary: the real vocab.json/merges.txt are not available offline (no hub access here),
  so the merges are trained with `tokenizers` on CLIP's word list. tokenizer_config.json is the hub's
  (`{"model_max_length": 1024}`, no pad token).
* `tanganke/gpt2_{cola,rte}`: `GPT2ForSequenceClassification` (num_labels 2, pad_token_id 50256),
  body = θ0 + N(0, TAU_STD²), random score head.
* `nyu-mll/glue` configs cola/ and rte/: {train,validation,test}-*.parquet with GLUE's columns
  (sentence | sentence1, sentence2; label ClassLabel; idx), the test split unlabelled (-1), as GLUE's.

Then, with HF_HUB_OFFLINE=1 and a private PARETOBENCH_CACHE, each suite runs as a user types it, on
two tasks (clip-vit-b32: eurosat, mnist; gpt2-glue: cola, rte), one process per command in a scratch
working directory (results under its results/runs): ta_grid (3 shared-λ points), pwe_moe_ls (2 router
steps, 3 rays), epo (full space, 2 steps, one ray), then `bench export` of the pwe_moe_ls run at
preference [0.3, 0.7]. Each command is the README's plus these budget options, `threads=1` (`make
test` runs two test files at once on 2 cores: torch's default two threads ran ViT-B/32 3× slower
there, 73 s against 25 s for the ta_grid command) and, on CLIP, `method.batch_size=4` (16 images per
task per step cost 11 s a step). Checked: every record (points, references, indicators, cost), the
suite config's revisions naming the fake commits (every id, data included, came from the hub cache),
an independent zero-shot evaluation of the pre-trained CLIP model (transformers' CLIPModel, open_clip's
preprocessing) equal to the record's, and the export: reloaded with transformers (the class its
config names), its weights equal θ0 + Σ_i w_i τ_i computed here from the checkpoints as written and
the routers the run saved (routed MLP blocks; every other weight θ0 + 0.3 Σ τ_i) within EXPORT_ATOL
(measured max |Δ| 1.5e-8 on CLIP, 7.5e-9 on GPT-2), anything else it holds (a visual projection)
the pre-trained tensor, GPT-2's heads the fine-tuned score layers.

Each command runs in its own process forked from one server that imported torch, transformers and the
harness once (as tests/test_readme.py runs the README's commands): a fresh `python -m bench` spends
~5 s on imports, 8 times here. The child runs the `bench` package as __main__ (runpy, as `python -m`
does) with the command's words, the machine's environment and working directory.

Everything but the scaffolding test is marked `realsize`: `pytest -m "not realsize"` skips it
locally; `make test` (CI) runs it. Measured on 2 cores shared with other work (load ~3), 2026-12-06:
the whole file 158 s (writing the hub repositories: CLIP 9–18 s, GPT-2 6–9 s, 2.7 GB; CLIP ta_grid
15–26 s, pwe_moe_ls 17–19 s, its export 6–7 s, epo 18–22 s; GPT-2 ta_grid 8–9 s, pwe_moe_ls 11–17 s,
export 6–8 s, epo 25–28 s; the test's own checks ~25 s). Peak RSS of a run: 2.6–4.7 GB on CLIP,
3.1–7.2 GB on GPT-2 (full-space EPO on 124M parameters is the 7.2 GB).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_readme import Server

SEED = 0
N_ROWS = 8                     # rows per split of every dataset
TAU_STD = 2e-3                 # fine-tunes: θ0 + N(0, TAU_STD²) per weight (real task vectors are a few % of θ0)
EXPORT_ATOL = 1e-6             # exported weights against θ0 + Σ w_i τ_i computed here (float32)
CMD_TIMEOUT_S = 600
CLIP_TASKS = ["eurosat", "mnist"]
GLUE_TASKS = ["cola", "rte"]
PREFERENCE = [0.3, 0.7]
CLIP_MERGES = 49152 - 256 - 2  # merges OpenAI's CLIP tokenizer uses (vocab 49408 = 2·256 + merges + 2)
LFS_SUFFIXES = (".safetensors", ".parquet", ".bin")

# The hub's gpt2/config.json, verbatim.
GPT2_CONFIG = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12,
    "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None, "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}}, "vocab_size": 50257}
# The hub's openai/clip-vit-base-patch32/preprocessor_config.json, verbatim.
CLIP_PREPROCESSOR = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                     "feature_extractor_type": "CLIPFeatureExtractor",
                     "image_mean": [0.48145466, 0.4578275, 0.40821073],
                     "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}
# (config name, folder) of the image dataset repositories, as on the hub
REPO_LAYOUT = {"tanganke/eurosat": ("default", "data"), "ylecun/mnist": ("mnist", "mnist")}
GLUE = {"cola": {"text": ["sentence"], "names": ["unacceptable", "acceptable"]},
        "rte": {"text": ["sentence1", "sentence2"], "names": ["entailment", "not_entailment"]}}
WORDS = ("the a one this that cat dog bird child teacher river city house garden book letter song road "
         "sat ran saw wrote sang found gave took quickly slowly never always under over near beside green "
         "old small large bright quiet because although and or but").split()
TIMINGS: dict[str, float] = {}


# ---- the hub cache, as huggingface_hub lays it out -----------------------------------------------------
def commit_of(repo_type: str, repo_id: str) -> str:
    return hashlib.sha1(f"paretobench rehearsal {repo_type} {repo_id}".encode()).hexdigest()


def cache_name(repo_type: str, repo_id: str) -> str:
    return f"{repo_type}s--{repo_id.replace('/', '--')}"


def _blob_id(path: Path) -> str:
    """The name huggingface_hub gives a file's blob: the sha256 of an LFS file, the git blob sha1 of the rest."""
    size = path.stat().st_size
    h = hashlib.sha256() if path.suffix in LFS_SUFFIXES or size > 10 * 2**20 else hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(16 * 2**20):
            h.update(chunk)
    return h.hexdigest()


def publish(cache: Path, repo_type: str, repo_id: str, staging: Path) -> Path:
    """Move every file under `staging` into the hub cache as a download of `repo_id` at its commit
    (commit_of); returns the snapshot folder."""
    repo = Path(cache) / cache_name(repo_type, repo_id)
    commit = commit_of(repo_type, repo_id)
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in Path(staging).rglob("*") if p.is_file()):
        blob = repo / "blobs" / _blob_id(f)
        os.replace(f, blob)
        link = snapshot / f.relative_to(staging)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs" / "main").write_text(commit)           # no newline, as huggingface_hub writes it
    shutil.rmtree(staging)
    return snapshot


def write_dataset(staging: Path, configs: dict[str, tuple[str, dict]]) -> None:
    """A dataset repository: per config (name → (folder, {split: datasets.Dataset})) the parquet files
    `<folder>/<split>-00000-of-00001.parquet` and a dataset card declaring configs and features."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    infos, card_configs = {}, []
    for name, (folder, splits) in configs.items():
        (staging / folder).mkdir(parents=True, exist_ok=True)
        for split, ds in splits.items():
            ds.to_parquet(str(staging / folder / f"{split}-00000-of-00001.parquet"))
        card_configs.append({"config_name": name, "data_files": [{"split": s, "path": f"{folder}/{s}-*"} for s in splits]})
        infos[name] = DatasetInfo(features=next(iter(splits.values())).features, config_name=name)
    data = DatasetCardData(configs=card_configs)
    DatasetInfosDict(infos).to_dataset_card_data(data)
    DatasetCard(f"---\n{data.to_yaml()}\n---\n").save(staging / "README.md")


# ---- tokenizers -----------------------------------------------------------------------------------------
def clip_tokenizer():
    """OpenAI CLIP's tokenizer (vocab 49408) from the BPE merges open_clip ships."""
    from transformers import CLIPTokenizer

    from tests.test_published import bpe_tokenizer_parts

    vocab, merges = bpe_tokenizer_parts(CLIP_MERGES)
    assert len(vocab) == 49408
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def gpt2_size_tokenizer():
    """A byte-level BPE in GPT-2's layout and size (256 byte symbols, 50,000 merges, <|endoftext|> =
    50256), its merges trained on CLIP's word list (GPT-2's own merges are not available offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tests.test_published import gpt2_tokenizer

    path = Path(__import__("open_clip").__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = [m.split() for m in gzip.open(path).read().decode().split("\n")[1:1 + CLIP_MERGES]]
    words = ["".join(m).replace("</w>", "") for m in merges if m[1].endswith("</w>")]

    def corpus():                         # CLIP's words, more frequent the earlier merged; with and without a space
        for i, w in enumerate(words):
            yield " ".join([w] * (1 + (len(words) - i) // 2000)) + " " + w.capitalize()

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=50257, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    trained = [tuple(m.split(" ") if isinstance(m, str) else m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    tok = gpt2_tokenizer(trained[:50000])
    assert len(tok) == 50257 and tok.eos_token_id == 50256, (len(tok), tok.eos_token_id)
    return tok


# ---- the published repositories -------------------------------------------------------------------------
def _tau(shape, g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g) * TAU_STD


def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, rng.integers(4, 14))).capitalize() + "." for _ in range(n)]


def build_clip(hub: Path, tmp: Path) -> None:
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    from bench.tasks.clip import DATASETS, zeroshot_metadata
    from bench.tasks.hub import split_config

    torch.manual_seed(SEED)
    g, rng = torch.Generator().manual_seed(SEED), np.random.default_rng(SEED)
    cfg = CLIPConfig(text_config={"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}, projection_dim=512)
    v, t = cfg.vision_config, cfg.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.patch_size, v.image_size, v.intermediate_size) == (768, 12, 32, 224, 3072)
    assert (t.hidden_size, t.num_hidden_layers, t.vocab_size, t.max_position_embeddings) == (512, 12, 49408, 77)
    clip = CLIPModel(cfg).eval()
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(100.0))          # the released model's (trained, clamped at 100)
    stage = tmp / "clip"
    clip.save_pretrained(stage)
    clip_tokenizer().save_pretrained(stage)
    (stage / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR, indent=2))
    publish(hub, "model", "openai/clip-vit-base-patch32", stage)
    vision = {k: p.detach() for k, p in clip.state_dict().items() if k.startswith("vision_model.")}
    del clip
    for task in CLIP_TASKS:
        stage = tmp / f"ft_{task}"
        vc = type(cfg.vision_config)(**cfg.vision_config.to_dict())
        vc.architectures = ["CLIPVisionModel"]
        vc.save_pretrained(stage)
        save_file({k: (p + _tau(p.shape, g)).contiguous() for k, p in vision.items()}, str(stage / "model.safetensors"),
                  metadata={"format": "pt"})
        publish(hub, "model", f"tanganke/clip-vit-base-patch32_{task}", stage)
    # datasets: the real repositories' image sizes and modes
    image = {"eurosat": (64, 64, 3), "mnist": (28, 28)}       # RGB, grayscale ("L")
    for task in CLIP_TASKS:
        repo, config = split_config(DATASETS[task])
        assert (repo, config) == (SUITES["clip-vit-b32"]["data"][task][1], None)   # the defaults name no config
        names = [c.replace(" ", "_") for c in zeroshot_metadata(task)["classnames"]]
        feats = Features({"image": HFImage(), "label": ClassLabel(names=names)})
        def split(n: int) -> Dataset:
            images = [Image.fromarray(rng.integers(0, 256, image[task], dtype=np.uint8)) for _ in range(n)]
            return Dataset.from_dict({"image": images, "label": rng.integers(0, len(names), n).tolist()}, features=feats)

        splits = {"train": split(N_ROWS), "test": split(N_ROWS)}
        if task == "eurosat":
            splits["contrast"] = split(2)             # one of the corrupted test copies the suite never reads
        stage = tmp / f"data_{task}"
        write_dataset(stage, {REPO_LAYOUT[repo][0]: (REPO_LAYOUT[repo][1], splits)})
        publish(hub, "dataset", repo, stage)


def build_gpt2(hub: Path, tmp: Path) -> None:
    from datasets import ClassLabel, Dataset, Features, Value
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED + 1)
    g, rng = torch.Generator().manual_seed(SEED + 1), np.random.default_rng(SEED + 1)
    lm = GPT2LMHeadModel(GPT2Config(**GPT2_CONFIG)).eval()
    body = {k.removeprefix("transformer."): p.detach() for k, p in lm.state_dict().items() if k.startswith("transformer.")}
    del lm
    assert sum(p.numel() for p in body.values()) == 124439808
    stage = tmp / "gpt2"
    stage.mkdir(parents=True)
    mask = torch.tril(torch.ones(1024, 1024)).view(1, 1, 1024, 1024)
    save_file({**{k: p.contiguous() for k, p in body.items()},
               **{f"h.{i}.attn.bias": mask.clone() for i in range(GPT2_CONFIG["n_layer"])}},
              str(stage / "model.safetensors"), metadata={"format": "pt"})
    (stage / "config.json").write_text(json.dumps(GPT2_CONFIG, indent=2))
    tok = gpt2_size_tokenizer()
    tok.save_pretrained(stage)
    for f in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja"):
        (stage / f).unlink(missing_ok=True)
    (stage / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    publish(hub, "model", "gpt2", stage)
    for task in GLUE_TASKS:
        names = GLUE[task]["names"]
        ft = GPT2Config(**{k: v for k, v in GPT2_CONFIG.items() if k != "architectures"}, num_labels=len(names),
                        pad_token_id=50256, architectures=["GPT2ForSequenceClassification"])
        stage = tmp / f"ft_{task}"
        ft.save_pretrained(stage)
        save_file({**{f"transformer.{k}": (p + _tau(p.shape, g)).contiguous() for k, p in body.items()},
                   "score.weight": torch.randn(len(names), 768, generator=g) * 0.02},
                  str(stage / "model.safetensors"), metadata={"format": "pt"})
        publish(hub, "model", f"tanganke/gpt2_{task}", stage)
    configs = {}
    for task in GLUE_TASKS:
        cols = GLUE[task]["text"]
        feats = Features({**{c: Value("string") for c in cols},
                          "label": ClassLabel(names=GLUE[task]["names"]), "idx": Value("int32")})

        def split(n: int, labelled: bool = True):
            return Dataset.from_dict({**{c: _sentences(rng, n) for c in cols},
                                      "label": rng.integers(0, 2, n).tolist() if labelled else [-1] * n,
                                      "idx": list(range(n))}, features=feats)

        configs[task] = (task, {"train": split(N_ROWS), "validation": split(N_ROWS), "test": split(N_ROWS, False)})
    stage = tmp / "glue"
    write_dataset(stage, configs)
    publish(hub, "dataset", "nyu-mll/glue", stage)


# ---- running the user's commands ---------------------------------------------------------------------------
# A process per command, forked from one server that imported the libraries once (tests/test_readme.py's
# `Server`): a fresh `python -m bench` spends ~5 s importing them, 8 times here. The server starts with the
# machine's environment in its working directory; each child runs the `bench` package as __main__ (runpy,
# as `python -m` does) with the command's words as argv.


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """A user's machine: HF_HOME with its hub cache, the build cache, a working directory, and the
    command server started there with that environment."""
    root = tmp_path_factory.mktemp("machine")
    home = root / "huggingface"
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1",
           "PARETOBENCH_CACHE": str(root / "paretobench")}
    for k in ("HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HF_HUB_DISABLE_SYMLINKS", "PARETOBENCH_PLUGINS"):
        env.pop(k, None)
    (root / "work").mkdir()
    (root / "logs").mkdir()
    (home / "hub").mkdir(parents=True)
    t = time.perf_counter()
    server = Server(root / "work", env, pin=False)
    TIMINGS["(server: imports, once)"] = time.perf_counter() - t
    try:
        yield {"root": root, "hub": home / "hub", "env": env, "work": root / "work", "built": set(), "server": server, "n": 0}
    finally:
        server.close()
        print("\n[rehearsal] wall seconds:")
        for k, v in TIMINGS.items():
            print(f"{v:7.1f}  {k}")
        print(f"{sum(TIMINGS.values()):7.1f}  in all")


def hub_with(machine, suite: str) -> Path:
    """The hub cache holding `suite`'s repositories (built once per module)."""
    if suite not in machine["built"]:
        t = time.perf_counter()
        (build_clip if suite == "clip-vit-b32" else build_gpt2)(machine["hub"], machine["root"] / f"staging-{suite}")
        TIMINGS[f"build {suite}"] = time.perf_counter() - t
        print(f"\n[rehearsal] wrote {suite}'s hub repositories in {TIMINGS[f'build {suite}']:.1f} s")
        machine["built"].add(suite)
    return machine["hub"]


def bench(machine, *args: str) -> tuple[list[str], float]:
    """`python -m bench ARGS` in the user's working directory; (stdout lines, wall seconds)."""
    machine["n"] += 1
    out, err = (machine["root"] / "logs" / f"{machine['n']:02d}.{k}" for k in ("out", "err"))
    rc, (dt, _) = machine["server"].send({"module": "bench", "args": list(args), "log": str(out), "err": str(err),
                                          "timeout": CMD_TIMEOUT_S})
    cmd = "python -m bench " + " ".join(args)
    TIMINGS[cmd] = dt
    print(f"\n[rehearsal] {dt:6.1f} s  {cmd}")
    stdout, stderr = out.read_text(), err.read_text()
    assert rc == 0, f"{cmd} exited {rc}\n--- stderr ---\n{stderr[-4000:]}\n--- stdout ---\n{stdout[-2000:]}"
    assert "Traceback" not in stderr, stderr[-4000:]
    lines = stdout.strip().splitlines()
    if lines:                                # the last line: the record (run) or the export folder, maybe relative
        lines[-1] = str(machine["work"] / lines[-1])
    return lines, dt


SUITES = {
    "clip-vit-b32": {"tasks": CLIP_TASKS, "n_test": N_ROWS, "train": ["method.batch_size=4"],
                     "ids": ["openai/clip-vit-base-patch32", *[f"tanganke/clip-vit-base-patch32_{t}" for t in CLIP_TASKS]],
                     "data": {"eurosat": ("tanganke/eurosat", "tanganke/eurosat"), "mnist": ("ylecun/mnist", "ylecun/mnist")}},
    "gpt2-glue": {"tasks": GLUE_TASKS, "n_test": N_ROWS, "train": [],
                  "ids": ["gpt2", *[f"tanganke/gpt2_{t}" for t in GLUE_TASKS]],
                  "data": {t: (f"nyu-mll/glue:{t}", "nyu-mll/glue") for t in GLUE_TASKS}},
}


def base_args(suite: str) -> list[str]:
    """The README's command for `suite` on two tasks; `threads=1`: `make test` runs two test files at
    once on 2 cores, where torch's default two threads per process ran ViT-B/32 3× slower (measured)."""
    return [f"tasks={suite}", f"tasks.names=[{','.join(SUITES[suite]['tasks'])}]", "threads=1"]


def check_record(path: str, suite: str, method: str, n_points: int) -> dict:
    """A record of a real run on the fake hub: points, references, indicators, and revisions naming the commits."""
    spec = SUITES[suite]
    rec = json.loads(Path(path).read_text())
    assert Path(path).name == "record.json" and (Path(path).parent / "front.csv").is_file()
    assert (rec["suite"], rec["method"], rec["weights"], rec["tasks"]) == (suite, method, "real", spec["tasks"])
    want = {i: f"models--{i.replace('/', '--')}@{commit_of('model', i)}" for i in spec["ids"]}
    want.update({s: f"datasets--{r.replace('/', '--')}@{commit_of('dataset', r)}" for s, r in spec["data"].values()})
    assert rec["suite_config"]["revisions"] == want        # every id came from the hub cache, at the fake commit
    assert rec["suite_config"]["datasets"] == {t: s for t, (s, _) in spec["data"].items()}
    assert len(rec["points"]) == n_points
    n = spec["n_test"]
    for metrics in [p["metrics"] for p in rec["points"]] + list(rec["references"].values()):
        assert set(metrics) == set(spec["tasks"])
        for m in metrics.values():
            assert math.isfinite(m["loss"]) and m["loss"] >= 0
            assert 0 <= m["accuracy"] <= 1 and abs(m["accuracy"] * n - round(m["accuracy"] * n)) < 1e-9   # k/8
    ind = rec["indicators"]
    assert ind["n_points"] == n_points and 1 <= ind["n_nondominated"] <= n_points
    assert math.isfinite(ind["hv"]) and ind["hv"] >= 0
    assert ind["hv_normalized"] is None or (math.isfinite(ind["hv_normalized"]) and ind["hv_normalized"] >= 0)
    assert rec["cost"]["evaluations"] >= n_points and rec["cost"]["wall_s"] > 0
    return rec


# ---- the scaffolding (fast, unmarked) ---------------------------------------------------------------------
def test_hub_layout_is_what_huggingface_hub_reads(tmp_path, monkeypatch):
    """The cache writer's layout is huggingface_hub's own: its cache scan sees the repository at the
    commit, an offline snapshot_download resolves it (through the blob symlinks)."""
    from huggingface_hub import scan_cache_dir, snapshot_download

    stage = tmp_path / "stage"
    (stage / "sub").mkdir(parents=True)
    (stage / "config.json").write_text('{"a": 1}')
    (stage / "sub" / "w.safetensors").write_bytes(b"\0" * 100)
    snap = publish(tmp_path / "hub", "model", "org/name", stage)
    assert (snap / "sub" / "w.safetensors").is_symlink() and not stage.exists()
    assert (snap / "config.json").resolve().name == hashlib.sha1(b'blob 8\0{"a": 1}').hexdigest()   # git's blob id
    assert (snap / "sub" / "w.safetensors").resolve().name == hashlib.sha256(b"\0" * 100).hexdigest()
    info = scan_cache_dir(tmp_path / "hub")
    assert not info.warnings and [(r.repo_id, r.repo_type) for r in info.repos] == [("org/name", "model")]
    (rev,) = next(iter(info.repos)).revisions
    assert rev.commit_hash == commit_of("model", "org/name") and rev.refs == {"main"} and rev.nb_files == 2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = snapshot_download("org/name", local_files_only=True, cache_dir=str(tmp_path / "hub"))
    assert Path(got) == snap


# ---- the published path (real sizes) ---------------------------------------------------------------------
@pytest.mark.realsize
@pytest.mark.parametrize("suite", list(SUITES))
def test_ta_grid(machine, suite):
    """`bench run method=ta_grid` on the shared λ line {0, 0.5, 1}."""
    hub_with(machine, suite)
    out, _ = bench(machine, "run", "method=ta_grid", *base_args(suite), "method.points=3")
    rec = check_record(out[-1], suite, "ta_grid", 3)
    tasks = SUITES[suite]["tasks"]
    assert [p["x"] for p in rec["points"]] == [{f"lambda[{t}]": lam for t in tasks} for lam in (0.0, 0.5, 1.0)]
    assert rec["points"][0]["metrics"] == rec["references"]["pretrained"]       # λ = 0 is θ0
    if suite == "clip-vit-b32":
        check_zeroshot(machine, rec)
    else:
        assert rec["suite_config"]["test"] == {t: "validation" for t in tasks}


@pytest.mark.realsize
@pytest.mark.parametrize("suite", list(SUITES))
def test_pwe_moe_ls_and_export(machine, suite):
    """`bench run method=pwe_moe_ls` (2 router steps, 3 rays), then `bench export` at PREFERENCE: the
    export reloads with transformers and equals θ0 + Σ w_i τ_i computed from the hub files and the routers."""
    hub_with(machine, suite)
    run_pwe_moe_and_export(machine, suite, base_args(suite))


@pytest.mark.realsize
@pytest.mark.parametrize("suite", list(SUITES))
def test_epo(machine, suite):
    """`bench run method=epo`: full-space EPO (every weight of the body trained), one ray, 2 steps."""
    hub_with(machine, suite)
    out, _ = bench(machine, "run", "method=epo", *base_args(suite), "method.steps=2", "method.rays=[[0.5,0.5]]",
                   *SUITES[suite]["train"])
    rec = check_record(out[-1], suite, "epo", 1)
    assert rec["cost"]["train_steps"] == 2 and rec["points"][0]["ray"] == [0.5, 0.5]


def check_zeroshot(machine, rec: dict) -> None:
    """The recorded pre-trained accuracy and loss on each CLIP task = transformers' CLIPModel on the
    hub files (tokenizer, text tower with the legacy eos id, visual projection) with open_clip's
    preprocessing, computed here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # 3× faster than two threads on 2 shared cores (measured)
    try:
        _check_zeroshot(machine, rec)
    finally:
        torch.set_num_threads(threads)


def _check_zeroshot(machine, rec: dict) -> None:
    import datasets
    import open_clip
    import torch.nn.functional as F
    from transformers import AutoTokenizer, CLIPModel

    from bench.tasks.clip import zeroshot_metadata

    snap = machine["hub"] / cache_name("model", "openai/clip-vit-base-patch32") / "snapshots" / commit_of(
        "model", "openai/clip-vit-base-patch32")
    clip, tok = CLIPModel.from_pretrained(str(snap)).eval(), AutoTokenizer.from_pretrained(str(snap))
    tf = open_clip.image_transform(224, is_train=False, mean=CLIP_PREPROCESSOR["image_mean"],
                                   std=CLIP_PREPROCESSOR["image_std"])
    for task, (spec, repo) in SUITES["clip-vit-b32"]["data"].items():
        folder = REPO_LAYOUT[repo][1]
        test = datasets.Dataset.from_parquet(str(machine["hub"] / cache_name("dataset", repo) / "snapshots"
                                                 / commit_of("dataset", repo) / folder / "test-00000-of-00001.parquet"))
        meta = zeroshot_metadata(task)
        with torch.no_grad():
            enc = tok([t.replace("{}", c) for c in meta["classnames"] for t in meta["templates"]], padding=True,
                      return_tensors="pt")
            pooled = clip.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
            emb = F.normalize(clip.text_projection(pooled), dim=-1).view(len(meta["classnames"]), len(meta["templates"]), -1)
            head = F.normalize(emb.mean(1), dim=-1) * clip.logit_scale.exp()
            pixels = torch.stack([tf(im) for im in test["image"]])
            img = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
            logits = F.normalize(img, dim=-1) @ head.T
        labels = torch.tensor(test["label"])
        got = rec["references"]["pretrained"][task]
        assert got["accuracy"] == pytest.approx(float((logits.argmax(-1) == labels).float().mean()), abs=1e-9), task
        assert got["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), abs=1e-4), task


def run_pwe_moe_and_export(machine, suite: str, args: list[str]) -> None:
    """pwe_moe_ls for 2 router steps, 3 rays; `bench export` at PREFERENCE; the export reloads with
    transformers and equals θ0 + Σ w_i τ_i computed from the hub files and the saved routers."""
    import transformers
    from safetensors.torch import load_file

    method = ["method=pwe_moe_ls", *args, "method.steps=2", "method.partitions=2", *SUITES[suite]["train"]]
    out, _ = bench(machine, "run", *method)
    rec = check_record(out[-1], suite, "pwe_moe_ls", 3)
    assert rec["cost"]["train_steps"] == 2
    run_dir = Path(out[-1]).parent
    dest = machine["work"] / "exported" / suite
    pref = f"preference=[{','.join(str(x) for x in PREFERENCE)}]"
    bench(machine, "export", *method, pref, f"out={dest.relative_to(machine['work'])}")
    names = {p.name for p in dest.iterdir()}
    assert {"config.json", "model.safetensors", "heads.safetensors", "export.json"} <= names, names
    info = json.loads((dest / "export.json").read_text())
    assert info["preference"] == PREFERENCE and (machine["work"] / info["run"]).resolve() == run_dir.resolve()
    assert info["tasks"] == SUITES[suite]["tasks"]
    # reload with transformers, as the README says, by the class the config names
    config = transformers.AutoConfig.from_pretrained(str(dest))
    model = getattr(transformers, config.architectures[0]).from_pretrained(str(dest)).eval()
    got = {strip(k): p.detach() for k, p in model.state_dict().items()}
    # θ0 and τ_i from the hub files as written, routing weights from the run's routers
    hub, spec = machine["hub"], SUITES[suite]
    files = [hub / cache_name("model", i) / "snapshots" / commit_of("model", i) / "model.safetensors" for i in spec["ids"]]
    theta0 = {strip(k): v for k, v in load_file(str(files[0])).items()}
    fts = [{strip(k): v for k, v in load_file(str(f)).items()} for f in files[1:]]
    state = torch.load(run_dir / "routers.pt", map_location="cpu", weights_only=True)
    w = routing(state["net"], torch.tensor(PREFERENCE))                  # [modules, T]
    blocks = [f"{'encoder.layers' if suite == 'clip-vit-b32' else 'h'}.{i}.mlp" for i in range(12)]
    assert w.shape == (len(blocks), len(fts))                            # one router per MLP block (upscale=mlp)
    # after 2 Adam steps (lr 0.01) the routing is off 0.3 by more than the comparison resolves (~1e-4 at |τ| ≤ 1e-2)
    assert float((w - 0.3).abs().max()) > 1e-3
    for m, shown in info.get("routing", {}).items():                      # the export's own account agrees
        assert torch.allclose(w[blocks.index(strip(m))], torch.tensor(shown), atol=1e-6), m
    compared, worst, done = 0, 0.0, set()
    for name, t0 in theta0.items():
        if name not in fts[0]:                                           # the text tower, gpt2's attn.bias buffers
            continue
        block = next((b for b in blocks if name.startswith(b + ".")), None)
        coef = w[blocks.index(block)] if block is not None else torch.full((len(fts),), 0.3)
        want = t0 + sum(float(c) * (ft[name] - t0) for c, ft in zip(coef, fts))
        assert name in got, f"export has no {name!r}"
        diff = float((got[name].float() - want).abs().max())
        worst = max(worst, diff)
        assert diff <= EXPORT_ATOL, f"{name}: max |export - (θ0 + Σ w_i τ_i)| = {diff:.2e}"
        compared += 1
        done.add(name)
    assert compared == len(fts[0]) - (1 if suite == "gpt2-glue" else 0)   # every merged weight (gpt2: not score)
    for name, p in got.items():                                          # anything else exported is frozen θ0
        if name not in done:                                             # (e.g. a visual projection)
            assert name in theta0 and torch.equal(p, theta0[name]), f"export's {name!r} is not the pre-trained one"
    heads = load_file(str(dest / "heads.safetensors"))
    assert {k.split(".")[0] for k in heads} == set(spec["tasks"])
    if suite == "gpt2-glue":                                              # the fine-tuned score layers, unchanged
        for task, ft in zip(spec["tasks"], fts):
            assert torch.equal(heads[f"{task}.weight"], ft["score.weight"]), task
    print(f"[rehearsal] {suite} export: {compared} tensors, max |Δ| {worst:.1e}, "
          f"routing {[round(float(x), 4) for x in w.mean(0)]} (mean over blocks)")


def strip(name: str) -> str:
    """Parameter names across checkpoint formats: without `vision_model.` / `transformer.` prefixes."""
    for prefix in ("vision_model.", "transformer."):
        name = name.removeprefix(prefix)
    return name


def routing(net: dict, ray: torch.Tensor) -> torch.Tensor:
    """PWE-MoE's routers, as the paper defines them, one per module: Linear(T, 2T) → ReLU → Linear(2T, T)."""
    w1, b1, w2, b2 = (net[f"routers.{k}"].double() for k in ("w1", "b1", "w2", "b2"))
    r = ray.double()
    return torch.stack([w2[m] @ torch.relu(w1[m] @ r + b1[m]) + b2[m] for m in range(w1.shape[0])]).float()
