"""`python -m bench export`: the dense merged model of a trained run at one preference.

    python -m bench run    method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots]
    python -m bench export method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots] \\
        preference=[0.3,0.7] out=exported/digits-dots [runs=results/runs]

`out=` is the export destination (created; it must not exist or be empty); `runs=` is the results
root that `bench run` wrote to (default: run.yaml's `out`, results/runs). Every other argument is
a `bench run` override (method=, tasks=, tasks.*, method.*, seed=, device=) and selects the run:
the latest record under `runs=` with the same method and suite key; each `method.*` or `seed=`
given must match the record's value too. Nothing is retrained: the method's saved state (for
PWE-MoE the run's routers.pt) is unloaded at the preference.

What is written (atomically: assembled in a temporary sibling, then renamed):
    config.json + model.safetensors   the backbone, `save_pretrained` (e.g. CLIPVisionModel, GPT2Model):
                                      `type(backbone).from_pretrained(out)` reloads it
    heads.safetensors                 the suite's frozen per-task heads, keys `<task>.<weight|bias>`
    tokenizer files                   where the suite has a tokenizer
    export.json                       method, run, suite key, tasks, preference, routing weights
Suites without a backbone module (the analytic toy) get `params.safetensors` instead.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.registry import BenchError

OWN_KEYS = ("preference", "out", "runs")


def cmd_export(argv: list[str]) -> int:
    own, rest = split_args(argv)
    if "preference" not in own:
        raise BenchError("export needs preference=[r1,...,rT] (one entry per task, summing to 1), "
                         "e.g. preference=[0.3,0.7]")
    if "out" not in own:
        raise BenchError("export needs out=DIR, the directory to write the model to")
    pref = parse_preference(own["preference"])

    from bench.config import build_from_config, compose
    from bench.registry import METHODS, SUITES
    from bench.run import resolve_device
    from bench.rays import validate_preference

    validate_preference(pref, len(pref))                       # sign / sum errors before any loading
    cfg = compose(rest)
    entry = METHODS.entry(cfg.method.name)
    if not hasattr(entry.obj, "export_params"):
        able = [e.name for e in METHODS if hasattr(e.obj, "export_params")]
        raise BenchError(f"method {cfg.method.name!r} saves no model to export; valid choices: {', '.join(able)}")
    dest = check_destination(Path(own["out"]))
    runs = Path(own.get("runs", cfg.out))
    suite = build_from_config(SUITES, cfg.tasks, "tasks").to(resolve_device(cfg.device))
    ray = validate_preference(pref, suite.num_tasks)
    record = find_run(runs, cfg, suite, rest)
    run_dir = record.directory
    params, facts = entry.obj.export_params(suite, run_dir, ray)
    info = {"method": cfg.method.name, "run": str(run_dir), "run_id": record.run_id, "seed": record.seed,
            "suite": suite.name, "suite_key": suite.key, "tasks": list(suite.tasks),
            "preference": [float(x) for x in ray], **facts}
    write_export(dest, suite, params, info)
    print(f"exported {cfg.method.name} at preference {[float(x) for x in ray]} from run {record.run_id}")
    print(dest)
    return 0


def split_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(export's own key=value options, the rest: `bench run` overrides)."""
    own, rest = {}, []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and key in OWN_KEYS:
            own[key] = value
        else:
            rest.append(a)
    return own, rest


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


def find_run(runs: Path, cfg, suite, overrides: list[str]):
    """The latest record under `runs` of this method on this suite key (and any method.*/seed given)."""
    from omegaconf import OmegaConf

    from bench.record import load_records

    method = cfg.method.name
    wanted = OmegaConf.to_container(cfg.method, resolve=True)
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    method_keys = [k.split(".", 1)[1].split(".")[0] for k in keys if k.startswith("method.")]
    found = []
    for rec in load_records(runs, suite.name):
        if rec.method != method or rec.suite_key != suite.key:
            continue
        have = rec.config.get("method", {})
        if any(have.get(k) != wanted.get(k) for k in method_keys):
            continue
        if "seed" in keys and rec.seed != int(cfg.seed):
            continue
        found.append(rec)
    if not found:
        cmd = " ".join(["python -m bench run", *overrides, f"out={runs}"])
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
