"""How close the harness is to its speed targets (issue 13): one command, one process, every ratio
measured side by side in the same run, plus the absolute figures.

    python benchmarks/speed.py --device cpu --threads 1          # CPU, tiny sizes: what the test runs (< 1 min)
    python benchmarks/speed.py --device cuda --json speed.json   # real sizes on a GPU: the README's figures
    python benchmarks/speed.py --cpu-default-run                 # `python -m bench run`, idle and beside `yes`

Everything runs through the harness's own code with the settings `bench run` chooses (threads,
determinism, Evaluator batch size and precision): the published suites with `weights=random`
(real ViT-B/32 and GPT-2 124M shapes, random weights, synthetic data of the published split sizes,
generated on the device), the Evaluator, the PWE-MoE router step and the method classes.

1. ViT-B/32, test split of 2 tasks: images/s of a plain Hugging Face loop (the code a user writes:
   the module called on batches of 256 sliced from the same device-resident uint8 split, fp32
   normalisation, bf16 autocast on CUDA and fp32 on the CPU as the Evaluator, `.item()` per batch),
   of the Evaluator, and of the Evaluator with `compile` (its compile time apart; `--compile auto`
   compiles on CUDA only: inductor took ~200 s for ViT-B/32 on 2 busy cores). Ratios to the plain
   loop, the share of the device's dense bf16 peak (FLOPs per image counted by torch's
   FlopCounterMode), and the largest accuracy difference between the loops (a cross-check).
2. GPT-2 124M sequence classification (gpt2-glue, 2 tasks) through the Evaluator: non-pad tokens/s.
3. Training steps on ViT-B/32 and GPT-2 shapes (benchmarks/speedkit.py): the PWE-MoE router
   step (routers → one merge → forward + backward → Adam on the routers) against a plain forward +
   backward of the same model and batches, with pwe_moe_epo and an `ls space=full` step beside
   them; median step time and peak memory above a common base. Batch per task: 16 images / 8
   sentences (the authors'); 2 warm-up and 5 timed passes or steps everywhere.
4. Wall time of a 2-task PWE-MoE front (2000 steps, 11 rays, published test sizes) and of an
   8-task MAP front (the method's defaults), timed as `bench run` times `cost.wall_s`.

`--size small` runs the same code at tiny sizes: one synthetic example per split, sequences of at
most 16 tokens, one pass or step per measurement, a 1-step PWE-MoE front at the 2 one-hot rays
and a MAP front on the ViT-B/32 pair (6 design points, 1 re-evaluated). Its figures only show that
the benchmark runs; the targets are judged at `--size full` on a GPU. `--cpu-default-run` times
the default run (`python -m bench run` with a built suite; a first, untimed run builds it when
missing) as a subprocess, idle and beside one `yes > /dev/null` per usable core (the issue's CPU
target: ≤ 20 s both ways).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.runtime.config import Settings, compose  # noqa: E402
from bench.core.evaluator import Evaluator  # noqa: E402
from bench.core.merge import task_arithmetic  # noqa: E402
from bench.core.record import atomic_write_text  # noqa: E402
from bench.core.registry import BenchError  # noqa: E402
from bench.runtime.hardware import (available_cores, choose_threads, environment, peak_memory_mb, reset_peak_memory,  # noqa: E402
                            resolve_device, seed_everything)
from speedkit import step_section, timed  # noqa: E402  (beside this file)

VIT = ["tasks=clip-vit-b32", "tasks.weights=random", "tasks.names=[sun397,stanford-cars]"]
GPT2 = ["tasks=gpt2-glue", "tasks.weights=random", "tasks.names=[cola,mnli]"]
PLAIN_BATCH = 256
# dense bf16 tensor-core peak in TFLOP/s (vendor data sheets), by device name; the first match wins
PEAK_BF16_TFLOPS = (("H100 PCIe", 756), ("H100 NVL", 835), ("H200", 989), ("H100", 989), ("B200", 2250),
                    ("A100", 312), ("L40S", 362), ("L4", 121))
# issue 13's targets, all for a GPU: (summary key, what, bound, direction, format, unit)
TARGETS = (("evaluator_vs_plain", "Evaluator / plain bf16 loop, ViT-B/32", 1.5, ">=", ".2f", "×"),
           ("evaluator_roofline", "Evaluator, share of the bf16 peak", 0.45, ">=", ".0%", ""),
           ("router_step_vit-b32", "router step / plain fwd+bwd, ViT-B/32", 1.3, "<=", ".2f", "×"),
           ("router_step_gpt2", "router step / plain fwd+bwd, GPT-2", 1.3, "<=", ".2f", "×"),
           ("pwe_moe_front_s", "2-task PWE-MoE front", 60.0, "<=", ".1f", " s"),
           ("map_front_s", "8-task MAP front", 300.0, "<=", ".1f", " s"))


@dataclass(frozen=True)
class Size:
    vit: list[str]               # ViT-B/32 suite overrides (none: the published split sizes)
    gpt2: list[str]              # GPT-2 suite overrides
    repeats: int                 # timed passes / steps (median)
    warmup: int                  # untimed passes / steps first
    step_batch: dict[str, int]   # examples per task per training step
    pwe: list[str]               # PWE-MoE front overrides (its suite: the ViT-B/32 pair)
    map: list[str]               # MAP front overrides (default: all eight tasks)


SIZES = {
    "small": Size(["tasks.synthetic_size=1"], ["tasks.synthetic_size=1", "tasks.synthetic_seq_len=16"], 1, 0,
                  {"vit-b32": 1, "gpt2": 1}, ["method.steps=1", "method.partitions=1", "method.batch_size=1"],
                  [VIT[2], "method.points=6", "method.reevaluate=1", "method.pop_size=8", "method.generations=2"]),
    "full": Size([], [], 5, 2, {"vit-b32": 16, "gpt2": 8}, ["method.steps=2000", "method.partitions=10"], []),
}


class Suites:
    """Suites built once per tasks config (ViT-B/32 and GPT-2 take seconds to build), on the device."""

    def __init__(self, device: torch.device):
        self.device, self._built = device, {}

    def get(self, spec):
        key = json.dumps([spec.suite_name, spec.suite_kwargs], sort_keys=True, default=str)
        if key not in self._built:
            self._built[key] = spec.build_suite().to(self.device)
        return self._built[key]


# ---- 1. the Evaluator against a plain loop ------------------------------------------------------
def plain_loop(suite, params, device: torch.device):
    """The loop a user writes around the Hugging Face module: merged weights loaded into a copy,
    batches of 256 sliced from the split, fp32 normalisation, a host sync per batch."""
    model = copy.deepcopy(suite.backbone)
    model.load_state_dict(params, strict=False)
    mean = torch.tensor(suite.preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(suite.preprocess.std, device=device).view(1, 3, 1, 1)

    def run() -> dict[str, dict[str, float]]:
        metrics = {}
        for task in suite.tasks:
            data, loss, correct = suite.eval_data(task, "test"), 0.0, 0
            n = len(data["labels"])
            for i in range(0, n, PLAIN_BATCH):
                x = (data["pixel_values"][i:i + PLAIN_BATCH].to(device).float() / 255.0 - mean) / std
                y = data["labels"][i:i + PLAIN_BATCH].to(device)
                with torch.no_grad(), autocast(device):
                    logits = suite.heads[task](suite.projection(model(pixel_values=x).pooler_output)).float()
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(-1) == y).sum().item()
            metrics[task] = {"loss": loss / n, "accuracy": correct / n}
        return metrics
    return run


def autocast(device: torch.device):
    """bf16 autocast on CUDA, as the Evaluator; fp32 on the CPU (the Evaluator's choice there too)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def flops_per_example(suite, task: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    batch = suite.prepare({k: v[:1] for k, v in suite.eval_data(task, "test").items()}, suite.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        suite.batch_metrics(suite.theta0(), task, batch)
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None or device.type != "cuda":
        return override
    return peak_for(torch.cuda.get_device_name(device))


def peak_for(name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of a device by its name (e.g. "NVIDIA H200"); None if unknown."""
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in name), None)


def evaluator_section(suite, device, size: Size, compile_on: bool, peak: float | None) -> dict:
    params = task_arithmetic(suite.theta0(), suite.task_vectors(), [0.3] * suite.num_tasks)
    images = sum(len(suite.eval_data(t, "test")["labels"]) for t in suite.tasks)
    flops = flops_per_example(suite, suite.tasks[0])
    keys = itertools.count()                      # a new merge key per pass: never a cache hit

    def evaluator(ev):
        return lambda: ev.evaluate(params, "test", key=("speed", next(keys)))

    loops = [("plain loop", plain_loop(suite, params, device), PLAIN_BATCH, None)]
    ev = Evaluator(suite, device)
    loops.append(("Evaluator", evaluator(ev), ev.batch_size, None))
    if compile_on:
        ev_c = Evaluator(suite, device, compile=True)
        loops.append(("Evaluator + compile", evaluator(ev_c), ev_c.batch_size, ev_c.warm_up("test")))
    rows, results = [], []
    for name, fn, batch, compile_s in loops:
        sec, metrics = timed(fn, device, size.repeats, size.warmup)
        results.append(metrics)
        rate = images / sec
        rows.append({"loop": name, "batch": batch, "images_per_s": rate, "compile_s": compile_s,
                     "roofline": rate * flops / (peak * 1e12) if peak else None})
    for r in rows:
        r["vs_plain"] = r["images_per_s"] / rows[0]["images_per_s"]
    diff = max(abs(m[t]["accuracy"] - results[0][t]["accuracy"]) for m in results for t in suite.tasks)
    return {"tasks": suite.tasks, "images": images, "gflop_per_image": flops / 1e9, "peak_bf16_tflops": peak,
            "precision": "bf16 autocast" if device.type == "cuda" else "fp32", "rows": rows,
            "max_accuracy_difference": diff}


# ---- 2. GPT-2 through the Evaluator -------------------------------------------------------------
def gpt2_section(suite, device, size: Size) -> dict:
    params = task_arithmetic(suite.theta0(), suite.task_vectors(), [0.3] * suite.num_tasks)
    tokens = sum(int(suite.eval_data(t, "test")["attention_mask"].sum()) for t in suite.tasks)
    ev, keys = Evaluator(suite, device), itertools.count()
    sec, _ = timed(lambda: ev.evaluate(params, "test", key=("speed", next(keys))), device, size.repeats, size.warmup)
    return {"tasks": suite.tasks, "sequences": sum(suite.split_sizes(t)["test"] for t in suite.tasks),
            "tokens": tokens, "batch": ev.batch_size, "tokens_per_s": tokens / sec}


# ---- 4. fronts ----------------------------------------------------------------------------------
def front_section(spec, suite, device) -> dict:
    """One method's front, timed as `bench run` times cost.wall_s (the method only; BLAS on one thread)."""
    from threadpoolctl import threadpool_limits

    s, method = spec.settings, spec.method
    ev = Evaluator(suite, device, batch_size=s.eval_batch_size, compile=s.compile)
    reset_peak_memory(device)
    t0, c0 = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=1, user_api="blas"):
        front = method.approximate_front(suite, evaluator=ev, seed=s.seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"method": spec.method_name, "tasks": suite.num_tasks, "wall_s": wall, "cpu_s": cpu,
            "evaluations": ev.evaluations, "train_steps": int(front.cost.get("train_steps", 0)),
            "points": len(front.X), "test_examples": sum(suite.split_sizes(t)["test"] for t in suite.tasks),
            "peak_mem_mb": peak_memory_mb(device)}


# ---- the run ------------------------------------------------------------------------------------
def measure(args) -> dict:
    device = resolve_device(Settings(device=args.device).device)     # bench run's check of device=
    name = args.size if args.size != "auto" else "full" if device.type == "cuda" else "small"
    size = SIZES[name]
    deterministic = device.type == "cpu"          # bench run's default: on for the CPU, off on CUDA
    seed_everything(0, deterministic)
    suites = Suites(device)
    vit = suites.get(compose([*VIT, *size.vit]))
    torch.set_num_threads(args.threads or choose_threads(None, vit, device))
    out = {"schema": "paretobench.speed/1", "size": name,
           "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "env": {**environment(device), "deterministic": deterministic}, "load_avg": list(os.getloadavg())}
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    out["evaluator"] = evaluator_section(vit, device, size, compile_on, peak_tflops(device, args.peak_tflops))
    gpt2 = suites.get(compose([*GPT2, *size.gpt2]))
    out["gpt2"] = gpt2_section(gpt2, device, size)
    out["steps"] = {model: step_section(suite, size.step_batch[model], size.repeats, size.warmup)
                    for model, suite in (("vit-b32", vit), ("gpt2", gpt2))}
    fronts = {"pwe_moe_ls": compose([*VIT, *size.vit, "method=pwe_moe_ls", *size.pwe]),
              "map": compose(["tasks=clip-vit-b32", "tasks.weights=random", *size.vit, "method=map", *size.map])}
    out["fronts"] = {name: front_section(spec, suites.get(spec), device) for name, spec in fronts.items()}
    rows = out["evaluator"]["rows"]
    out["summary"] = {"evaluator_vs_plain": rows[1]["vs_plain"], "evaluator_roofline": rows[1]["roofline"],
                      **{f"router_step_{m}": s["variants"]["pwe_moe_ls"]["vs_plain"] for m, s in out["steps"].items()},
                      "pwe_moe_front_s": out["fronts"]["pwe_moe_ls"]["wall_s"],
                      "map_front_s": out["fronts"]["map"]["wall_s"]}
    out["targets_judged"] = name == "full" and device.type == "cuda"
    return out


def default_run(overrides: list[str]) -> dict:
    """`python -m bench run [overrides]` as a subprocess: once to build what is missing, then timed
    idle and beside one `yes > /dev/null` per usable core."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "bench", "run", f"out={tmp}", *overrides]
        once(cmd)
        idle = once(cmd)
        hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(available_cores())]
        try:
            loaded = once(cmd)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    return {"schema": "paretobench.speed/1", "command": " ".join(["python -m bench run", *overrides]),
            "cores": available_cores(), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "idle": idle, "beside_yes": {**loaded, "yes_processes": len(hogs)}, "target_s": 20.0}


def once(cmd: list[str]) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {res.returncode}): {res.stderr.strip()[-2000:]}")
    record = json.loads(Path(res.stdout.strip().splitlines()[-1]).read_text())
    return {"wall_s": wall, "load_1m_before": load, "record_wall_s": record["cost"]["wall_s"],
            "record_cpu_s": record["cost"].get("cpu_s"), "threads": int(record["env"]["threads"])}


# ---- printing -----------------------------------------------------------------------------------
def fmt(v, spec: str = ".3g", unit: str = "") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:{spec}}{unit}"


def report(r: dict) -> None:
    env, e, g = r["env"], r["evaluator"], r["gpt2"]
    print(f"paretobench speed, size {r['size']}: {env['device']}, {env['threads']} threads, deterministic "
          f"{env['deterministic']}, torch {env['torch']}, git {env['git']}, load {fmt(r['load_avg'][0], '.2f')}")
    print(f"\n1. ViT-B/32, test split of {', '.join(e['tasks'])}: {e['images']} images, "
          f"{e['gflop_per_image']:.2f} GFLOP/image, {e['precision']}, peak bf16 {fmt(e['peak_bf16_tflops'])} TFLOP/s")
    print(f"   {'loop':22s} {'batch':>6s} {'images/s':>10s} {'vs plain':>9s} {'of peak':>8s} {'compile':>9s}")
    for row in e["rows"]:
        print(f"   {row['loop']:22s} {row['batch']:6d} {row['images_per_s']:10.1f} {row['vs_plain']:8.2f}× "
              f"{fmt(row['roofline'], '.1%'):>8s} {fmt(row['compile_s'], '.1f', ' s'):>9s}")
    print(f"   largest accuracy difference between the loops: {e['max_accuracy_difference']:.4f}")
    print(f"\n2. GPT-2 124M, Evaluator on the test split of {', '.join(g['tasks'])}: {g['sequences']} sequences, "
          f"{g['tokens']} tokens, batch {g['batch']}: {g['tokens_per_s']:.0f} tokens/s")
    for model, s in r["steps"].items():
        print(f"\n3. training step, {model}: {s['tasks']} tasks, batch per task {s['batch_per_task']} "
              f"{s['batch_shapes']}")
        for v, x in s["variants"].items():
            print(f"   {v:12s} {x['step_s'] * 1e3:10.1f} ms {x['vs_plain']:6.2f}× plain   peak +{x['peak_mb_above_base']:7.0f} "
                  f"MiB (base {x['base_mb']:.0f})   trainable {x['trainable']:,}")
    print("\n4. fronts (timed as bench run's cost.wall_s)")
    for f in r["fronts"].values():
        print(f"   {f['method']:11s} {f['tasks']} tasks: wall {f['wall_s']:.1f} s, cpu {f['cpu_s']:.1f} s, "
              f"{f['evaluations']} evaluations, {f['train_steps']} steps, {f['points']} points, "
              f"{f['test_examples']} test examples, peak {f['peak_mem_mb']:.0f} MiB")
    judged = r["targets_judged"]
    print(f"\nissue 13's GPU targets{'' if judged else ' (not judged: they hold for --size full on a GPU)'}")
    for key, what, bound, op, spec, unit in TARGETS:
        v = r["summary"][key]
        ok = "n/a" if v is None or not judged else ("met" if (v >= bound if op == ">=" else v <= bound) else "NOT met")
        print(f"   {what:40s} {fmt(v, spec, unit):>9s}   target {op} {fmt(bound, spec, unit):7s} {ok}")


def report_default_run(r: dict) -> None:
    print(f"default run: `{r['command']}` (suite built), {r['cores']} usable cores; target ≤ {r['target_s']:.0f} s "
          f"both ways")
    for name, x in (("idle", r["idle"]), (f"beside {r['beside_yes']['yes_processes']} × yes", r["beside_yes"])):
        print(f"   {name:14s} wall {x['wall_s']:6.1f} s   method {x['record_wall_s']:6.1f} s (cpu "
              f"{fmt(x['record_cpu_s'], '.1f', ' s')})   {x['threads']} threads   load before {x['load_1m_before']:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n" + "\n".join(__doc__.splitlines()[3:6]) + "\n")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (as bench run's device=)")
    ap.add_argument("--size", choices=["auto", *SIZES], default="auto",
                    help="full: the published sizes; small: tiny, for the CPU; auto: full on CUDA, else small")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: bench run's choice)")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="the compiled Evaluator row (auto: on CUDA)")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of a device not in the built-in table")
    ap.add_argument("--cpu-default-run", action="store_true", help="time `python -m bench run` idle and beside `yes`")
    ap.add_argument("overrides", nargs="*", help="with --cpu-default-run: bench run overrides (default: none)")
    args = ap.parse_args(argv)
    if args.overrides and not args.cpu_default_run:
        ap.error(f"unexpected arguments {' '.join(args.overrides)}; bench run overrides go with --cpu-default-run")
    for name in ("threads", "peak_tflops"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be > 0")
    try:
        if args.cpu_default_run:
            result = default_run(args.overrides)
            report_default_run(result)
        else:
            result = measure(args)
            report(result)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
