"""`python -m bench export`: the dense merged model of a trained run at one preference, as a model that classifies.

    python -m bench run    method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots]
    python -m bench export method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots] \\
        preference=[0.3,0.7] out=exported/digits-dots [runs=results/runs]

`out=` is the export destination (created; it must not exist or be empty); `runs=` is the results
root that `bench run` wrote to (default: run.yaml's `out`, results/runs). Every other argument is
a `bench run` override (method=, tasks=, tasks.*, method.*, seed=, device=) and selects the run:
the latest record under `runs=` with the same method and suite key; each `method.*` or `seed=`
given must match the record's value too. Nothing is retrained: the method's saved state (for
PWE-MoE the run's routers.pt) is unloaded at the preference.

What is written (atomically: assembled in a temporary sibling, then renamed) is the suite's
`save_model(params, directory)` (bench/tasks/exporting.py) and export.json:
    CLIP suites (clip-vit-*, backbone=hf; the pool's clip_zeroshot)
        config.json + model.safetensors   CLIPVisionModelWithProjection: the merged vision tower + the frozen
                                          visual projection (`image_embeds`, D = 512 for ViT-B)
        preprocessor_config.json          CLIPImageProcessor: bicubic resize of the short side, centre crop,
                                          the suite's mean and std
        heads.safetensors                 `<task>.weight` [C, D], zero-shot heads already × the logit scale:
                                          logits = normalize(image_embeds) @ weightᵀ
      backbone=open_clip: open_clip_visual.safetensors (the merged visual tower in open_clip's keys,
      projection included) + heads; no transformers model.
    other model suites (tiny-clip, tiny-gpt2, gpt2-glue, pool classifiers)
        config.json + model.safetensors   the backbone, `save_pretrained` (CLIPVisionModel, GPT2Model, …),
                                          in names transformers 4 reads too
        heads.safetensors                 the frozen per-task heads, keys `<task>.<weight|bias>`
        tokenizer files                   where the suite has a tokenizer
    Suites without a backbone module (the analytic toy): params.safetensors.
    export.json                           method, run, suite key, tasks, preference; `classify`: how inputs
                                          are prepared, which output is the feature, the logits' formula and
                                          a few lines of code; the method's facts: PWE-MoE every routed
                                          block's routing weights (`routing`, `routed_parameters`), phn the
                                          whole λ table, pareto_merging its corrected matrices; `rebuild`:
                                          `rebuild(state_file, preference)` gives these parameters again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.core.registry import BenchError

OWN_KEYS = ("preference", "out", "runs")


def export(spec, preference: list[float], dest: Path, runs: Path | None = None) -> Path:
    """The merged model of the latest matching run of `spec` (under `runs`, default its out=) at `preference`,
    written to `dest` with save_pretrained (+ heads, tokenizer, export.json)."""
    from bench.runtime.hardware import resolve_device
    from bench.core.rays import validate_preference
    from bench.core.registry import METHODS

    validate_preference(preference, len(preference))           # sign / sum errors before any loading
    entry = METHODS.entry(spec.method_name)
    if not hasattr(entry.obj, "export_params"):
        able = [e.name for e in METHODS if hasattr(e.obj, "export_params")]
        raise BenchError(f"method {spec.method_name!r} saves no model to export; valid choices: {', '.join(able)}")
    dest = check_destination(dest)
    runs = Path(runs if runs is not None else spec.settings.out)
    suite = spec.build_suite().to(resolve_device(spec.settings.device))
    ray = validate_preference(preference, suite.num_tasks)
    record = find_run(runs, spec, suite)
    run_dir = Path(record.directory).resolve()          # export.json names it wherever it is read from
    params, facts = entry.obj.export_params(suite, run_dir, ray)
    info = {"method": spec.method_name, "run": str(run_dir), "run_id": record.run_id, "seed": record.seed,
            "suite": suite.name, "suite_key": suite.key, "tasks": list(suite.tasks),
            "preference": [float(x) for x in ray], **facts}
    state = run_dir / str(getattr(entry.obj, "state_file", ""))
    if state.is_file():
        info["rebuild"] = {
            "state_file": str(state), "state_sha256": hashlib.sha256(state.read_bytes()).hexdigest(),
            "python": f"from bench.runtime.export import rebuild; params = rebuild({str(state)!r}, "
                      f"{[float(x) for x in ray]})",
            "what": "the merged parameters written here (the backbone's state dict, as the suite names them), "
                    "from the run's saved state; the suite is built from the run's config.yaml unless passed "
                    "(suite=)"}
    write_export(dest, suite, params, info)
    print(f"exported {spec.method_name} at preference {[float(x) for x in ray]} from run {record.run_id}")
    print(dest)
    return dest


def rebuild(state_file, preference, suite=None):
    """The dense merged parameters (the suite's names) that a run's saved state (routers.pt, hypernet.pt,
    lowrank.pt) gives at `preference`: exactly what `bench export` writes, in one call. `suite`: the run's
    suite, built from the run directory's config.yaml when None (that loads its models)."""
    import torch

    from bench.core.rays import validate_preference
    from bench.core.registry import METHODS

    path = Path(state_file)
    if not path.is_file():
        raise BenchError(f"no saved state {str(path)!r}")
    kind = str(torch.load(path, map_location="cpu", weights_only=True).get("format", ""))
    cls = next((e.obj for e in METHODS if hasattr(e.obj, "export_params") and getattr(e.obj, "state_file", None)
                == path.name and kind == f"paretobench.{getattr(e.obj, '__name__', '')}/1"), None)
    if cls is None:
        raise BenchError(f"{str(path)!r} (format {kind!r}) is not the saved state of a method that exports")
    if suite is None:
        from omegaconf import OmegaConf

        from bench.runtime.config import spec_of

        suite = spec_of(OmegaConf.load(path.parent / "config.yaml")).build_suite()
    ray = validate_preference(list(preference), suite.num_tasks)
    return cls.export_params(suite, path.parent, ray)[0]


def parse_preference(text: str) -> list[float]:
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"p={text}"]))["p"]
        if not isinstance(value, list):
            raise ValueError
        return [float(x) for x in value]
    except Exception:
        raise BenchError(f"preference={text} must be a list of numbers, e.g. preference=[0.3,0.7]") from None


def check_destination(dest: Path) -> Path:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BenchError(f"out={str(dest)!r} already exists and is not an empty directory; choose a new one")
    return dest


def find_run(runs: Path, spec, suite):
    """The latest record under `runs` of this method on this suite key (and any method.*/seed given)."""
    from bench.core.record import load_records

    method, wanted = spec.method_name, spec.config["method"]
    keys = {o.split("=", 1)[0].lstrip("+~") for o in spec.overrides if "=" in o}
    method_keys = [k.split(".", 1)[1].split(".")[0] for k in keys if k.startswith("method.")]
    found = []
    for rec in load_records(runs, suite.name):
        if rec.method != method or rec.suite_key != suite.key:
            continue
        have = rec.config.get("method", {})
        if any(have.get(k) != wanted.get(k) for k in method_keys):
            continue
        if "seed" in keys and rec.seed != spec.settings.seed:
            continue
        found.append(rec)
    if not found:
        cmd = " ".join(["python -m bench run", *spec.overrides, f"out={runs}"])
        raise BenchError(f"no {method} run on {suite.describe()} (suite key {suite.key}) under runs={str(runs)!r}; "
                         f"run it first: {cmd}")
    return max(found, key=lambda r: (r.created, r.run_id))


def write_export(dest: Path, suite, params: dict, info: dict) -> None:
    """The suite's model files (`Suite.save_model`) + export.json into `dest`, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.export-"))
    try:
        info = {**info, **suite.save_model(params, tmp)}
        info["files"] = sorted(p.name for p in tmp.iterdir())
        (tmp / "export.json").write_text(json.dumps(info, indent=1) + "\n")
        if dest.exists():
            dest.rmdir()                                   # empty (checked before loading anything)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
