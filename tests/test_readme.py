"""Every `python -m bench ...` command printed in README.md runs, so the README cannot rot: as printed
where it needs no GPU, no cluster and little time; else in its cheap form from CHEAP (each with its
reason); or, cluster-only or the 47-minute leaderboard, it is listed in EXCLUDED with its reason. A
README command in none of these tables is run as printed, so a new command is tested the day it is
written; an entry no longer in the README fails, and so does a command that asks for a GPU, a cluster
or a placeholder (`<name>`, `=DIR`) without an entry.

What counts as a command: in fenced and indented code blocks, every simple command (lines joined at
a trailing backslash, split at `;` and `&&`, `# comments` dropped, `for V in A B; do ...; done`
expanded per value) whose words start `python -m bench` or `python -m bench.<module>`; in the prose,
every inline code span that starts so. Words are split as a shell splits them (shlex, posix: quotes
removed); a command is named by its words joined with single spaces; one printed twice runs once.

How each runs (the `server` fixture):

* The rule for where results go: every command runs in a scratch working directory, the workspace,
  so its relative paths (the default `out=results/runs`, `out=results/runs/many`,
  `out=exported/digits-dots`, `runs=`) land there and nothing is added to or changed in a command for
  it. The workspace links the repository's inputs (results/leaderboard/spec.yaml, examples/) and holds
  a copy of results/baselines (`bench check --update` rewrites the copy); `my_pool.yaml`, the README's
  placeholder pool file, is examples/pools/clip-vit-b32.yaml copied there. A last test checks that
  README.md, results/baselines and the leaderboard's tables are unchanged.
* Published suites run offline (HF_HUB_OFFLINE=1) on tiny checkpoints and datasets written into the
  workspace's hub cache (HF_HOME) in the hub's layout under the published ids (openai/clip-vit-base-
  patch32 and tanganke/clip-vit-base-patch32_<task>, the eight tanganke/ylecun/ufldl-stanford datasets,
  gpt2, tanganke/gpt2_<task>, nyu-mll/glue), built with tests/test_published.py's helpers: the suites'
  own code resolves and loads them as it would the real ones. Absolute local paths in a command are
  rewritten by prefix (PATHS) to local copies of the same fakes.
* PARETOBENCH_CACHE is a workspace folder whose tiny-clip and tiny-gpt2 entries link to the test
  suites' cache (tests/conftest.py: .cache/test-suites, built once), so nothing is rebuilt and the
  fakes' preprocessed images stay out of the shared cache.
* Each command runs in its own process, on one core: a child forked from a server process that
  imported torch, transformers and the harness once (a fresh interpreter spends ~7 s on those imports,
  ~50 times over). The child runs the command's module with runpy as `python -m` does, sys.argv its
  words, and exits with its status, which must be 0 or the one EXIT gives (what the README says the
  command returns there), with no traceback and within CPU_LIMIT_S CPU-seconds. Commands run in README
  order in one workspace (`bench table` reads the records of the runs above it, `bench export` the
  run above it), so run the whole file, not one of its commands.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


# ---- what the README prints ------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    key: str            # its words joined by single spaces: how the tables below name it
    words: tuple[str, ...]
    line: int           # where the README prints it (1-based)


def _simple_commands(text: str) -> list[list[str]]:
    """A line of shell as words, split into simple commands at `;` and `&&` (comments dropped; `|` is
    kept in words: the README's usage notation `[format=md|latex|csv]` uses it, no command pipes)."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&")
    lex.whitespace_split = True
    out, cur = [], []
    for tok in lex:
        if tok in (";", "&&", "&"):
            out.append(cur)
            cur = []
        else:
            cur.append(tok)
    return [c for c in [*out, cur] if c]


def _script_commands(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Simple commands of a code block (its `for` loops expanded), with the line each starts on."""
    logical, buf, start = [], "", None
    for no, line in lines:
        start = no if start is None else start
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append((start, buf + line))
        buf, start = "", None
    if buf:
        logical.append((start, buf))
    # only lines that run the harness, and the shell around them (loops): a block may hold other text
    # (the record schema, the layout), which need not parse as shell
    shell = [(no, text) for no, text in logical
             if "python -m bench" in text or re.match(r"\s*(for\s|do\b|done\b)", text)]
    flat = [(no, words) for no, text in shell for words in _simple_commands(text)]
    out, i = [], 0
    while i < len(flat):
        no, words = flat[i]
        if words[0] == "for" and len(words) >= 3 and words[2] == "in":
            var, values, body, i = words[1], words[3:], [], i + 1
            while i < len(flat) and flat[i][1] != ["done"]:
                b_no, b = flat[i]
                body.append((b_no, b[1:] if b[0] == "do" else b))
                i += 1
            for value in values:
                out += [(b_no, [w.replace(f"${var}", value).replace("${" + var + "}", value) for w in b])
                        for b_no, b in body if b]
        else:
            out.append((no, words))
        i += 1
    return out


def readme_commands(text: str) -> list[Command]:
    """Every `python -m bench` / `python -m bench.<module>` command of a README, first printing first, each once."""
    lines = text.splitlines()
    found: list[tuple[int, list[str]]] = []
    prose: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):                       # fenced block
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            found += _script_commands([(k + 1, lines[k]) for k in range(i + 1, j)])
            i = j + 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):   # indented block
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            found += _script_commands([(k + 1, lines[k]) for k in range(i, j)])
            i = j
            continue
        prose.append((i + 1, line))
        i += 1
    # inline code spans of the prose (a span may run over a line break; a blank line ends it)
    joined, starts = "", []
    for no, line in prose:
        starts.append((len(joined), no))
        joined += line + "\n"
    for m in re.finditer(r"`([^`]+)`", joined):
        span = " ".join(m.group(1).split())
        if span.startswith("python -m bench") and "\n\n" not in m.group(1):
            no = max(n for pos, n in starts if pos <= m.start())
            found += [(no, words) for words in _simple_commands(span)]
    cmds: dict[str, Command] = {}
    for no, words in sorted(found, key=lambda f: f[0]):
        if words[:2] == ["python", "-m"] and len(words) > 2 and (words[2] == "bench" or words[2].startswith("bench.")):
            key = " ".join(words)
            cmds.setdefault(key, Command(key, tuple(words), no))
    return list(cmds.values())


# ---- how the README's commands run here -------------------------------------------------------------
# Local checkpoint paths printed in commands → where the tiny stand-ins are ({fakes}: the workspace's
# folder of them). /m/gpt2 is a GPT-2 LM checkpoint with its tokenizer, /m/gpt2_<task> a fine-tuned
# GPT2ForSequenceClassification per GLUE task, as the hub's gpt2 and tanganke/gpt2_<task>.
PATHS = {"/m/": "{fakes}/m/"}

# Subsets that keep a tiny-clip run to a few evaluations: each point is scored on the test split of
# every task (~0.07 s per task on one core), so all seven tasks cost 3.5× two of them.
PAIR = "tasks.names=[digits,dots]"
MAP_SMALL = "method.pop_size=8 method.generations=2"        # MAP's surrogate search: 100 × 100 by default
FEW_STEPS = "method.steps=3 method.partitions=1"          # 3 steps, the 2 one-hot rays

# README command → (the command run instead, why). Every substitution of this test is here.
CHEAP: dict[str, tuple[str, str]] = {
    # -- Quick start
    "python -m bench check": (
        "python -m bench check only=ta_grid-toy-quadratic-2t-grid",
        "all 20 baselines take ~40 s: one runs the same code (tests/test_baselines.py checks every baseline)"),
    "python -m bench run": (
        f"python -m bench run {FEW_STEPS}",
        "the default run trains 300 router steps and scores 11 rays (~8 s)"),
    "python -m bench run method=ta_grid tasks=toy-quadratic tasks.num_tasks=3 method.mode=grid": (
        "python -m bench run method=ta_grid tasks=toy-quadratic tasks.num_tasks=3 method.mode=grid method.points=5",
        "the 11³ grid is 1331 points (~5 s, with its HV): 5³ runs the same code"),
    "python -m bench run method=ta_grid method.mode=grid": (
        "python -m bench run method=ta_grid method.mode=grid method.points=3",
        "the 11 × 11 grid is 121 evaluations on tiny-clip (~18 s); 3 × 3 is the same code"),
    "python -m bench run method=M tasks=S": (
        "python -m bench run method=ta_grid tasks=toy-quadratic",
        "M and S are placeholders: a method and a suite"),
    # -- ls and epo, PWE-MoE
    "python -m bench run method=epo tasks=tiny-clip tasks.names=[digits,shapes] method.space=layerwise": (
        "python -m bench run method=epo tasks=tiny-clip tasks.names=[digits,shapes] method.space=layerwise "
        f"{FEW_STEPS}",
        "11 rays × 300 steps of EPO on tiny-clip take minutes"),
    "python -m bench run method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots]": (
        f"python -m bench run method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots] {FEW_STEPS}",
        "the default run again (300 steps, 11 rays, ~8 s); `bench export` below exports this run"),
    "python -m bench run method=pwe_moe_epo tasks=tiny-gpt2 tasks.names=[sentiment,negation] method.upscale=all": (
        "python -m bench run method=pwe_moe_epo tasks=tiny-gpt2 tasks.names=[sentiment,negation] method.upscale=all "
        f"{FEW_STEPS}", "300 EPO router steps and 11 rays (~6 s)"),
    # -- published suites: the tiny hub fakes, on the CPU
    "python -m bench run -m method=ta_grid,map,pwe_moe_ls tasks=clip-vit-b32 tasks.names=[sun397,stanford-cars] "
    "device=cuda": (
        "python -m bench run -m method=ta_grid,map,pwe_moe_ls tasks=clip-vit-b32 tasks.names=[sun397,stanford-cars] "
        "device=cpu", "no GPU here"),
    "python -m bench run -m method=ta_grid,map,pwe_moe_ls tasks=clip-vit-b32 device=cuda": (
        "python -m bench run -m method=ta_grid,map tasks=clip-vit-b32 device=cpu && "
        "python -m bench run method=pwe_moe_ls tasks=clip-vit-b32 device=cpu method.steps=3 method.max_rays=9",
        "no GPU here; PWE-MoE's 300 steps on 8 tasks take ~10 s even on the tiny fakes, and a sweep cannot give "
        "one of its methods options of its own: pwe_moe_ls runs apart, 3 steps, 9 rays (the 2-task sweep above "
        "runs all three methods as printed)"),
    "python -m bench run -m method=ta_grid,map,pwe_moe_ls tasks=gpt2-glue device=cuda": (
        "python -m bench run method=ta_grid tasks=gpt2-glue device=cpu && "
        f"python -m bench run method=map tasks=gpt2-glue device=cpu {MAP_SMALL} && "
        "python -m bench run method=pwe_moe_ls tasks=gpt2-glue device=cpu method.steps=3 method.max_rays=8",
        "no GPU here; as above, and MAP's NSGA-III search at 7 tasks (pop 100 × 100 generations, ~6 s): "
        "each method apart, a few steps and generations"),
    "python -m bench run method=ta_grid tasks=clip-vit-b32 tasks.weights=random device=cuda": (
        "python -m bench run method=ta_grid tasks=clip-vit-b32 tasks.weights=random device=cpu "
        "tasks.names=[sun397,stanford-cars] tasks.synthetic_size=2 method.points=2",
        "no GPU here; the real ViT-B/32 (88M parameters) on 8 × its published split sizes runs at a few "
        "images/s on a CPU: 2 tasks, 2 images per split, 2 points"),
    "python -m bench check published=fusionbench-clip-vit-b32-ta device=cuda": (
        "python -m bench check published=fusionbench-clip-vit-b32-ta device=cpu", "no GPU here"),
    "python -m bench run method=ta_grid tasks=clip-vit-b32 tasks.eval_size=1000 device=cuda": (
        "python -m bench run method=ta_grid tasks=clip-vit-b32 tasks.eval_size=3 device=cpu",
        "no GPU here; the tiny fakes hold a few test images per task: 3 of them"),
    # -- leaderboard, figures and baselines
    "python -m bench table out=results/runs/leaderboard [tasks=SUITE] [format=md|latex|csv] [resamples=1000]": (
        "python -m bench table out=results/runs tasks=tiny-clip format=latex resamples=1000",
        "results/runs/leaderboard holds make leaderboard's runs (47 min): the records of the commands above "
        "stand in; [...] are optional arguments, one value each"),
    "python -m bench table out=results/runs/leaderboard format=html out_dir=DIR": (
        "python -m bench table out=results/runs tasks=toy-quadratic format=html out_dir=html",
        "as above; DIR is a placeholder; one suite's page keeps its figures few"),
    "python -m bench plot out=results/runs/leaderboard [tasks=SUITE] [figures=DIR]": (
        "python -m bench plot out=results/runs tasks=tiny-clip figures=figures",
        "as above; SUITE and DIR are placeholders"),
    "python -m bench check --update only=<name>": (
        "python -m bench check --update only=ta_grid-toy-quadratic-2t-grid baselines=results/baselines",
        "<name> is a placeholder; baselines= names the workspace's copy, so the repository's baselines are "
        "never rewritten"),
    # -- many tasks: the loop over the eight methods, at two tasks and a few steps
    **{f"python -m bench run method={m} tasks=tiny-clip out=results/runs/many": (
        f"python -m bench run method={m} tasks=tiny-clip out=results/runs/many {PAIR} {opts}",
        "all 7 tasks at default budgets take 18–149 CPU-s a method: 2 tasks, a few points or steps")
       for m, opts in [("ta_grid", "method.points=3"), ("map", f"method.points=6 method.reevaluate=2 {MAP_SMALL}"),
                       ("ls", FEW_STEPS), ("epo", FEW_STEPS), ("phn", FEW_STEPS), ("pareto_merging", FEW_STEPS),
                       ("pwe_moe_ls", FEW_STEPS), ("pwe_moe_epo", FEW_STEPS)]},
    # -- long runs: each resume finds the interrupted run that SETUP leaves (same config)
    "python -m bench run method=pwe_moe_ls tasks=tiny-clip resume=true": (
        f"python -m bench run method=pwe_moe_ls tasks=tiny-clip resume=true {PAIR} {FEW_STEPS}",
        "all 7 tasks, 300 steps and 29 rays take ~70 s: 2 tasks and 3 steps"),
    "python -m bench run method=map tasks=tiny-clip resume=<run-id>": (
        f"python -m bench run method=map tasks=tiny-clip resume=interrupted {PAIR} method.points=6 method.reevaluate=2 "
        f"{MAP_SMALL}",
        "<run-id> is a placeholder: the run SETUP interrupted; 2 tasks and 6 design points"),
    "python -m bench run -m hydra/launcher=joblib hydra.launcher.n_jobs=4 method=ta_grid,map,ls,epo tasks=tiny-clip "
    "seed=0,1,2": (
        "python -m bench run -m hydra/launcher=joblib hydra.launcher.n_jobs=1 method=ta_grid,map tasks=toy-quadratic "
        "seed=0,1 && python -m bench run -m hydra/launcher=joblib hydra.launcher.n_jobs=1 method=ls,epo "
        "tasks=toy-quadratic method.steps=30 seed=0,1",
        "one core for this test (n_jobs=1: joblib runs the jobs in the sweep's process); ls and epo train 11 rays × "
        "300 steps each (minutes on tiny-clip, epo ~7 CPU-s even on toy-quadratic) and a sweep cannot give ls "
        "options that ta_grid lacks: two sweeps on the analytic suite, ls and epo at 30 steps, 2 seeds"),
}

# README command → why it is not run. Clusters and the leaderboard only.
EXCLUDED: dict[str, str] = {
    "python -m bench run -m hydra/launcher=submitit_slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 "
    "hydra.launcher.timeout_min=240 hydra.launcher.max_num_timeout=3 method=pwe_moe_ls,pwe_moe_epo,map "
    "tasks=clip-vit-b32 seed=0,1,2 device=cuda resume=true out=/shared/runs":
        "needs a Slurm cluster (tests/test_launchers.py runs Slurm's code path on submitit_local)",
    "python -m bench run -m hydra/launcher=ray +hydra.launcher.ray.init.address=auto method=ls,epo tasks=gpt2-glue "
    "seed=0,1,2":
        "needs a running Ray cluster (address=auto joins the one RAY_ADDRESS names; tests/test_launchers.py runs the "
        "Ray launcher on a local instance)",
    "python -m bench.reports.leaderboard results/leaderboard/spec.yaml --render":
        "renders the 377 runs of `make leaderboard` (47 min on 2 cores) and rewrites README.md's block; "
        "tests/test_leaderboard.py renders a small spec",
}

# README command → the exit status the README gives for it here (every other command: 0).
EXIT: dict[str, int] = {
    # "exits 0 within tolerance, 1 outside": tiny random checkpoints are far from the published accuracies
    "python -m bench check published=fusionbench-clip-vit-b32-ta device=cuda": 1,
    "python -m bench check published=fusionbench-gpt2-glue-finetuned tasks.pretrained=/m/gpt2 "
    "tasks.finetuned=/m/gpt2_{task}": 1,
}

# README command → a run of the same config (its cheap form without resume=) that is started first and
# interrupted by SIGTERM after its first evaluation (exit 143), for the resume commands to find. run_id=
# names it where the command names the run.
SETUP: dict[str, str] = {
    "python -m bench run method=pwe_moe_ls tasks=tiny-clip resume=true":
        f"python -m bench run method=pwe_moe_ls tasks=tiny-clip {PAIR} {FEW_STEPS}",
    "python -m bench run method=map tasks=tiny-clip resume=<run-id>":
        f"python -m bench run method=map tasks=tiny-clip run_id=interrupted {PAIR} method.points=6 method.reevaluate=2 "
        f"{MAP_SMALL}",
}

# A command that asks for these needs an entry in CHEAP or EXCLUDED (no GPU or cluster here).
# (device=cuda; Slurm or Ray launchers; placeholders such as <name>, method=M, out_dir=DIR)
NEEDS_ENTRY = re.compile(r"device=cuda|hydra/launcher=(submitit_slurm|ray)|<[^>]+>|=[A-Z]+\b")
TIMEOUT_S = 600          # per command, a safety net against hangs (SIGALRM in the child)
CPU_LIMIT_S = 20         # CPU-seconds a command may take here; more: give it a (cheaper) cheap form


# ---- tiny stand-ins for the published checkpoints and datasets ----------------------------------------
COMMIT = "0" * 40
FAKE_TRAIN, FAKE_TEST = 10, 4          # examples per task (val: 1 of train, carved by the suites)


def hub_folder(hub: Path, repo_type: str, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in a hub cache (the layout `hf download` leaves), created."""
    root = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    (root / "snapshots" / COMMIT).mkdir(parents=True, exist_ok=True)
    return root / "snapshots" / COMMIT


def write_fakes(hub: str, fakes: str) -> None:
    """Tiny checkpoints and datasets under the published suites' hub ids (CLIP ViT-B/32 and its eight
    fine-tunes and datasets; GPT-2, its seven GLUE fine-tunes and GLUE), and PATHS' local folders."""
    import numpy as np
    import torch
    from transformers import (CLIPConfig, CLIPModel, CLIPTokenizer, CLIPVisionModel, GPT2Config,
                              GPT2ForSequenceClassification, GPT2LMHeadModel)

    from bench.tasks import clip, gpt2_glue
    from bench.tasks.hub import split_config
    from tests.test_published import bpe_tokenizer_parts, glue_dataset, gpt2_tokenizer, image_dataset, perturbed

    hub, fakes = Path(hub), Path(fakes)
    torch.manual_seed(0)
    g, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    # CLIP: a CLIPModel with its tokenizer and preprocessor, a perturbed vision tower per task
    vocab, merges = bpe_tokenizer_parts()
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    model = CLIPModel(cfg).eval()
    pre = hub_folder(hub, "model", "openai/clip-vit-base-patch32")
    model.save_pretrained(pre)
    tok.save_pretrained(pre)
    (pre / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32},
         "crop_size": {"height": 32, "width": 32}, "image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28],
         "resample": 3}))
    for t in clip.TASKS:
        ft = CLIPVisionModel(cfg.vision_config)
        ft.load_state_dict(model.vision_model.state_dict())
        perturbed(ft, 0.05, g)
        ft.save_pretrained(hub_folder(hub, "model", f"tanganke/clip-vit-base-patch32_{t}"))
        repo, config = split_config(clip.DATASETS[t])
        folder = hub_folder(hub, "dataset", repo) / (config or "data")
        folder.mkdir()
        dd = image_dataset(clip.zeroshot_metadata(t)["classnames"], rng, n_train=FAKE_TRAIN, n_test=FAKE_TEST)
        for split, ds in dd.items():
            ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    # GPT-2: an LM checkpoint with a byte-level tokenizer, a GPT2ForSequenceClassification per task, GLUE
    tok = gpt2_tokenizer([("Ġ", "t"), ("h", "e"), ("Ġt", "he")])
    eos = tok.eos_token_id
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=32, n_layer=2, n_head=2, bos_token_id=eos,
                     eos_token_id=eos)
    lm = GPT2LMHeadModel(cfg).eval()
    pre = hub_folder(hub, "model", "gpt2")
    lm.save_pretrained(pre)
    tok.save_pretrained(pre)
    (fakes / "m").mkdir(parents=True)
    (fakes / "m" / "gpt2").symlink_to(pre)
    glue = hub_folder(hub, "dataset", "nyu-mll/glue")
    base = {k: v for k, v in cfg.to_dict().items() if k not in ("id2label", "label2id")}
    for t in gpt2_glue.TASKS:
        ft = GPT2ForSequenceClassification(GPT2Config(**{**base, "num_labels": gpt2_glue.NUM_CLASSES[t],
                                                         "pad_token_id": eos})).eval()
        ft.transformer.load_state_dict(lm.transformer.state_dict())
        perturbed(ft.transformer, 0.05, g)
        folder = hub_folder(hub, "model", f"tanganke/gpt2_{t}")
        ft.save_pretrained(folder)
        (fakes / "m" / f"gpt2_{t}").symlink_to(folder)
        dd = glue_dataset(list(gpt2_glue.TEXT_COLUMNS[t]), gpt2_glue.NUM_CLASSES[t], rng,
                          gpt2_glue.TEST_SPLIT.get(t, "validation"), n=(FAKE_TRAIN, FAKE_TEST))
        (glue / t).mkdir()
        for split, ds in dd.items():
            ds.to_parquet(str(glue / t / f"{split}-00000-of-00001.parquet"))


def build_offline_suites() -> None:
    """tiny-clip and tiny-gpt2 at their defaults, built into PARETOBENCH_CACHE where missing (minutes)."""
    from bench.core.registry import SUITES

    for name in ("tiny-clip", "tiny-gpt2"):
        SUITES.build(name)


# ---- the command server: imports once, one forked process per command --------------------------------
# imported by the server before any command, with every module of the harness (but those the README runs
# with -m: runpy runs them afresh) and every registered method and suite: what the commands import anyway
PRELOAD = ("torch", "numpy", "pandas", "scipy.optimize", "hydra", "omegaconf", "datasets", "huggingface_hub",
           "transformers", "transformers.models.clip.modeling_clip", "transformers.models.gpt2.modeling_gpt2",
           "transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto",
           "transformers.generation", "accelerate", "torchvision.transforms.v2", "open_clip", "safetensors.torch",
           "matplotlib.pyplot", "matplotlib.backends.backend_pdf", "fontTools.ttLib", "pymoo.algorithms.moo.nsga2",
           "pymoo.algorithms.moo.nsga3", "tests.test_published")


def serve(pin: bool = True) -> None:
    """`python tests/test_readme.py --serve [--no-pin]` (started by `Server`): pinned to one core unless
    --no-pin, imports PRELOAD and every registered method and suite once, then for each JSON line on stdin forks
    a child that runs it and answers one JSON line {"rc", "wall_s", "cpu_s"}. No torch work happens in this
    process, so forking it is safe (its one other thread is pyarrow's, whose allocator forks cleanly)."""
    import importlib
    import pkgutil
    import resource
    import warnings

    if pin:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    sys.path.append(str(ROOT))
    os.environ.setdefault("MPLBACKEND", "Agg")
    reply = os.fdopen(os.dup(1), "w")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bench

        run_with_m = {"bench.__main__", *(c.words[2] for c in COMMANDS)}
        harness = [m.name for m in pkgutil.walk_packages(bench.__path__, "bench.") if m.name not in run_with_m]
        for name in [*PRELOAD, *harness]:
            try:
                importlib.import_module(name)
            except Exception:            # noqa: BLE001  (an optional dependency: imported on use, if ever)
                pass
        from bench.core.registry import METHODS, SUITES

        for registry in (METHODS, SUITES):
            for name in registry.names():
                registry.entry(name).obj
    ru = resource.getrusage(resource.RUSAGE_SELF)
    reply.write(json.dumps({"ready": True, "cpu_s": ru.ru_utime + ru.ru_stime, "threads": threading.active_count(),
                            "os_threads": len(os.listdir("/proc/self/task"))}) + "\n")
    reply.flush()
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(job)
        _, status, usage = os.wait4(pid, 0)
        reply.write(json.dumps({"rc": os.waitstatus_to_exitcode(status), "wall_s": time.perf_counter() - t0,
                                "cpu_s": usage.ru_utime + usage.ru_stime}) + "\n")
        reply.flush()
    os._exit(0)                  # stdin closed: done (no interpreter teardown of everything imported)


def _child(job: dict) -> None:
    """Run one job in a forked child and exit with its status: never returns."""
    import runpy
    import signal
    import traceback

    code = 1
    try:
        for fds, path in (((1, 2), job["log"]), ((2,), job.get("err"))):    # stderr apart where asked
            if path is not None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                for target in fds:
                    os.dup2(fd, target)
                os.close(fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdin = open(os.devnull)
        os.chdir(job["cwd"])
        signal.alarm(job.get("timeout", TIMEOUT_S))
        if "call" in job:
            globals()[job["call"]](*job["args"])
            code = 0
        else:
            if job.get("interrupt"):
                _sigterm_after_first_evaluation()
            sys.argv = [job["module"], *job["args"]]
            try:
                runpy.run_module(job["module"], run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (reported in the log; the status says it failed)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _sigterm_after_first_evaluation() -> None:
    """SIGTERM to this process once its first evaluation has been paid for, as Slurm's pre-emption
    would send it: the run stops at its next step and keeps its work (exit 143)."""
    import signal

    from bench.core.evaluator import Evaluator

    evaluate = Evaluator.evaluate

    def once(self, *args, **kwargs):
        out = evaluate(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    Evaluator.evaluate = once


class Server:
    """The pytest side of `serve` (also tests/test_rehearsal.py's: `pin=False` leaves the test's other
    worker's core alone)."""

    def __init__(self, cwd: Path, env: dict[str, str], pin: bool = True):
        self.cwd, self.log = cwd, open(cwd / "server.log", "w")
        args = [sys.executable, str(Path(__file__).resolve()), "--serve", *([] if pin else ["--no-pin"])]
        self.proc = subprocess.Popen(args, cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        t0 = time.perf_counter()
        ready = self.proc.stdout.readline()
        assert ready.startswith('{"ready"'), (ready, (cwd / "server.log").read_text()[-3000:])
        self.ready = json.loads(ready)
        self.times = {"(the server: imports)": (time.perf_counter() - t0, self.ready["cpu_s"])}

    def send(self, job: dict) -> tuple[int, tuple[float, float]]:
        self.proc.stdin.write(json.dumps({"cwd": str(self.cwd), **job}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return answer["rc"], (answer["wall_s"], answer["cpu_s"])

    def run(self, words: list[str], log: str, name: str, interrupt: bool = False) -> tuple[int, str, float]:
        """`python -m MODULE ARGS` (words) in a child: its status, its output (stdout and stderr), CPU-s."""
        path = self.cwd / "logs" / f"{log}.log"
        rc, (wall, cpu) = self.send({"module": words[2], "args": words[3:], "log": str(path), "interrupt": interrupt})
        self.times[name] = (wall, cpu)
        return rc, path.read_text(), cpu

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


# ---- the workspace and its server ----------------------------------------------------------------------
COMMANDS = readme_commands(README.read_text())
RUN = [c for c in COMMANDS if c.key not in EXCLUDED]


def to_run(c: Command, fakes: Path) -> list[list[str]]:
    """The commands this test runs for a README command (its cheap form where CHEAP has one: one command,
    or several joined by &&), as words, local paths rewritten by PATHS."""
    cmds = _simple_commands(CHEAP[c.key][0]) if c.key in CHEAP else [list(c.words)]
    return [[_rewrite(w, fakes) for w in words] for words in cmds]


def _rewrite(word: str, fakes: Path) -> str:
    for old, new in PATHS.items():
        word = re.sub(r"(^|=)" + re.escape(old), lambda m: m.group(1) + new.format(fakes=fakes), word)
    return word


def _digest(paths) -> dict[str, str]:
    import hashlib

    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def repo_files() -> list[Path]:
    """What a README command could rewrite in the repository: README.md (its leaderboard block), the
    baselines (`bench check --update`), the leaderboard's tables."""
    return [README, *sorted((ROOT / "results" / "baselines").glob("*.json")),
            *sorted((ROOT / "results" / "leaderboard").glob("leaderboard.*"))]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The workspace (see the module's docstring) with its fakes written, and the command server."""
    ws = tmp_path_factory.mktemp("readme")
    (ws / "results" / "leaderboard").mkdir(parents=True)
    (ws / "results" / "leaderboard" / "spec.yaml").symlink_to(ROOT / "results" / "leaderboard" / "spec.yaml")
    shutil.copytree(ROOT / "results" / "baselines", ws / "results" / "baselines")
    (ws / "examples").symlink_to(ROOT / "examples")
    shutil.copy(ROOT / "examples" / "pools" / "clip-vit-b32.yaml", ws / "my_pool.yaml")
    suites = Path(os.environ["PARETOBENCH_CACHE"])              # tests/conftest.py's, built once
    (ws / "cache").mkdir()
    for name in ("tiny-clip", "tiny-gpt2"):
        (suites / name).mkdir(parents=True, exist_ok=True)
        (ws / "cache" / name).symlink_to(suites / name)
    (ws / "logs").mkdir()
    env = {**os.environ, "HF_HOME": str(ws / "hf"), "HF_HUB_CACHE": str(ws / "hf" / "hub"),
           "HF_DATASETS_CACHE": str(ws / "hf" / "datasets"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PARETOBENCH_CACHE": str(ws / "cache"), "MPLBACKEND": "Agg",
           "PYTHONUNBUFFERED": "1"}
    before = _digest(repo_files())
    srv = Server(ws, env)
    try:
        if not all(any((suites / name).glob("*/MANIFEST.json")) for name in ("tiny-clip", "tiny-gpt2")):
            rc, _ = srv.send({"call": "build_offline_suites", "args": [], "timeout": 3600,
                              "log": str(ws / "logs" / "build.log")})      # not timed: a fresh checkout only
            assert rc == 0, (ws / "logs" / "build.log").read_text()[-3000:]
        rc, sec = srv.send({"call": "write_fakes", "args": [str(ws / "hf" / "hub"), str(ws / "fakes")],
                            "log": str(ws / "logs" / "fakes.log")})
        assert rc == 0, (ws / "logs" / "fakes.log").read_text()[-3000:]
        srv.times["(the tiny hub checkpoints and datasets)"] = sec
        srv.ws, srv.fakes, srv.before = ws, ws / "fakes", before
        yield srv
    finally:
        srv.close()
        print("\nREADME commands on one core: wall s, CPU s (# marks the 2nd, 3rd command of a cheap form)")
        for key, (wall, cpu) in srv.times.items():
            print(f"{wall:7.1f} {cpu:7.1f}  {key}")
        print(f"{sum(w for w, _ in srv.times.values()):7.1f} {sum(c for _, c in srv.times.values()):7.1f}  in all")


# ---- tests ------------------------------------------------------------------------------------------
def test_every_readme_command_is_run_or_excluded():
    keys = {c.key for c in COMMANDS}
    for table, name in ((CHEAP, "CHEAP"), (EXCLUDED, "EXCLUDED"), (EXIT, "EXIT"), (SETUP, "SETUP")):
        stale = [k for k in table if k not in keys]
        assert not stale, f"{name} names commands that README.md no longer prints: {stale}"
    assert not set(CHEAP) & set(EXCLUDED)
    assert set(SETUP) <= set(CHEAP)
    for c in COMMANDS:
        if c.key not in CHEAP and c.key not in EXCLUDED:
            assert not NEEDS_ENTRY.search(c.key), (
                f"README.md:{c.line} `{c.key}` asks for a GPU, a cluster or a placeholder: give it a cheap form in "
                f"CHEAP or, cluster-only, a reason in EXCLUDED")
    for key, (cheap, why) in CHEAP.items():
        words = shlex.split(cheap)
        assert words[:2] == ["python", "-m"] and words[2].split(".")[0] == "bench" and why, key
        assert not NEEDS_ENTRY.search(cheap), f"the cheap form of `{key}` still needs a GPU, cluster or value"
    assert all(why for why in EXCLUDED.values())


def test_commands_are_found_as_a_shell_reads_them():
    text = "\n".join([
        "Run `python -m bench ls` or `python -m bench run", "seed=1` (a span over a line break).",
        "```bash", "python -m bench run 'tasks.names=[a,b]' \\", "    x=1   # a comment",
        "for m in p q; do", "  python -m bench run method=$m out=o; done",
        "python -m bench table out=o && python -m bench plot out=o", "hf download gpt2", "```", "",
        "    python -m bench.reports.leaderboard spec.yaml --plan        # indented block", "",
        "`python -m bench ls` again, and `make test`, `python benchmarks/speed.py`"])
    assert [(c.line, c.key) for c in readme_commands(text)] == [
        (1, "python -m bench ls"), (1, "python -m bench run seed=1"), (4, "python -m bench run tasks.names=[a,b] x=1"),
        (7, "python -m bench run method=p out=o"), (7, "python -m bench run method=q out=o"),
        (8, "python -m bench table out=o"), (8, "python -m bench plot out=o"),
        (12, "python -m bench.reports.leaderboard spec.yaml --plan")]
    assert len(COMMANDS) >= 40 and len(RUN) == len(COMMANDS) - len(EXCLUDED)


@pytest.mark.parametrize("cmd", RUN, ids=[f"L{c.line}:{c.key[len('python -m '):][:70]}" for c in RUN])
def test_readme_command(cmd, server):
    """The README command (its cheap form, see CHEAP) exits 0 or as EXIT says, without a traceback, within
    CPU_LIMIT_S; a run prints its record's path (in the workspace) last. Commands run in README order in one
    workspace: a command may use what an earlier one wrote (`bench table` the records, `bench export` the run)."""
    ws = server.ws
    if cmd.key in SETUP:
        words = [_rewrite(w, server.fakes) for w in shlex.split(SETUP[cmd.key])]
        rc, out, _ = server.run(words, f"L{cmd.line}-setup", f"(interrupted run for) {cmd.key}", interrupt=True)
        assert rc == 143 and "resume=" in out, \
            f"{' '.join(words)} exited {rc}, not 143 (SIGTERM):\n{out[-3000:]}"
    want = EXIT.get(cmd.key, 0)
    for i, words in enumerate(to_run(cmd, server.fakes)):
        rc, out, cpu = server.run(words, f"L{cmd.line}-{len(server.times)}", cmd.key + " #" * i)
        what = f"README.md:{cmd.line} `{cmd.key}`" + (f", run as `{' '.join(words)}`,"
                                                      if words != list(cmd.words) else "")
        assert rc == want, f"{what} exited {rc}, not {want}:\n{out[-4000:]}"
        assert "Traceback (most recent call last)" not in out, f"{what} printed a traceback:\n{out[-4000:]}"
        assert cpu <= CPU_LIMIT_S, f"{what} took {cpu:.0f} CPU-s (> {CPU_LIMIT_S}): give it a cheaper form in CHEAP"
        lines = out.strip().splitlines()
        if words[3:4] == ["run"] and "-m" not in words and "--help" not in words:    # one run: its record's path, last
            record = Path(lines[-1])
            assert record.name == "record.json" and record.is_file() and ws in record.parents, lines[-1]
        if want == 1 and words[3:5] == ["check", words[4]] and words[4].startswith("published="):
            assert lines[-1].startswith("FAIL: "), lines[-1]          # outside tolerance, as the README says


def test_readme_commands_leave_the_repository_alone(server):
    """README.md, results/baselines and the leaderboard's tables are as they were (the commands ran in the
    workspace; `bench check --update` rewrote the workspace's copy of the baselines)."""
    assert _digest(repo_files()) == server.before


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    serve(pin=sys.argv[2:] != ["--no-pin"])
