"""`make gpu-check`: every figure of the README's "Performance" section from one command, in one JSON file.

    python benchmarks/gpu_check.py --device cuda --size full --out results/gpu-check.json   # what make gpu-check runs
    python benchmarks/gpu_check.py --device cpu --size tiny --out /tmp/gpu-check.json      # CI: tests/test_gpu_check.py

Two parts, one after the other on one device:

1. benchmarks/speed.py (a subprocess of its own, so that its device memory and peaks are its own) at
   `--size full` (`--size small` for tiny): Evaluator images/s on ViT-B/32 against a plain bf16 loop, with
   `compile=true` on CUDA, and against the dense bf16 peak; GPT-2 tokens/s; the PWE-MoE router step
   against a plain step (time and peak memory above a common base, pwe_moe_epo and `ls` full beside);
   the wall time of the 2-task PWE-MoE front and of the 8-task MAP front. Its whole JSON is kept under
   "speed"; the headline numbers are copied flat into "figures", with issue 13's targets under "targets".
2. The matrix: every registered built-in method (`bench ls`) on every published suite with
   `tasks.weights=random` (the real architectures, random weights, synthetic data, no download) at two
   task counts, clip-vit-b32, -b16, -l14 at T = 2 and 8 and gpt2-glue at T = 2 and 7, each a `bench run`
   with a few steps, rays and points (method_options) on `tasks.synthetic_size` examples per split and
   task: the code paths and the memory of every method at every scale of the suites, not their quality.
   Each run writes its record under --runs; "runs" gets, per run, its record's path, `cost.wall_s`,
   `cost.peak_mem_mb` (CUDA max-allocated), evaluations, training steps and the examples it scored per
   second of wall time (`examples_per_s`: pure evaluation throughput for ta_grid and map). Runs on one
   suite and T share one built suite (drawing ViT-L/14 and 8 random task vectors takes the CPU ~10 s).
   With `--size tiny` the matrix runs the offline tiny suites instead (tiny-clip at T = 2, tiny-gpt2 at
   T = 3), so that the whole script runs on a CPU in about a minute.

The JSON (schema paretobench.gpu-check/1): created, date, size, device, env (gpu or cpu name, torch,
CUDA, python, git), budget_s, estimate (seconds per part from the H100 figures below), elapsed_s (per
part), figures, targets, speed, suite_builds_s, runs, complete (every planned run has its record).

Budget: `--size full` must finish within 8 minutes on one H100. `estimate()` computes it from the README's
H100 figures for these shapes (ViT-B/32 bf16 evaluation ~25,000 images/s at batch 256; a task-arithmetic
merge of all ViT-B/32 weights ~10 ms), scaled by FLOPs per example (ViT-B/32 8.7, B/16 34.9, L/14 161.7
GFLOP per image; GPT-2 0.18 GFLOP per token, 68 tokens a synthetic sequence) and by bytes merged, a
training step as 3 forward passes of its batch, plus stated allowances (inductor compiling ViT-B/32 90 s,
0.5 s of bookkeeping a run, random weights drawn on the CPU at 3e8 values/s): speed.py ~341 s (of which
its 8-task MAP front ~134 s: 90 validation passes over 23,215 images and 10 test passes over 87,433; the
2000-step PWE-MoE front ~40 s), the matrix ~102 s (ViT-L/14 at 8 tasks 35 s of it), 15 s to start:
~459 s, 7.7 min. The JSON keeps the estimate beside the elapsed times. A deadline (--budget-s, 480 s at
full) guards the rest: matrix runs not started by then are listed as skipped ("complete": false). Not
yet run on a GPU (none was lent to this project's sessions).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEED = ROOT / "benchmarks" / "speed.py"
SCHEMA = "paretobench.gpu-check/1"
CLIP_TASKS = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
GLUE_TASKS = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2"]
SYNTHETIC_SIZE = 16          # full: examples per split and task of the matrix's suites (a train batch is 16 images)

# (suite, tasks, suite overrides) of the matrix, in the order they run: every suite at 2 tasks first, then
# the many-task runs, cheapest first (the deadline, if ever reached, cuts the most expensive)
_RANDOM = ["tasks.weights=random", f"tasks.synthetic_size={SYNTHETIC_SIZE}"]
PLANS = {
    "full": [*[(s, CLIP_TASKS[:2], _RANDOM) for s in ("clip-vit-b32", "clip-vit-b16", "clip-vit-l14")],
             ("gpt2-glue", GLUE_TASKS[:2], _RANDOM), ("clip-vit-b32", CLIP_TASKS, _RANDOM),
             ("gpt2-glue", GLUE_TASKS, _RANDOM), ("clip-vit-b16", CLIP_TASKS, _RANDOM),
             ("clip-vit-l14", CLIP_TASKS, _RANDOM)],
    "tiny": [("tiny-clip", ["digits", "dots"], []), ("tiny-gpt2", ["topic", "object", "sentiment"], [])],
}
SPEED_SIZE = {"full": "full", "tiny": "small"}
BUDGET_S = {"full": 480.0, "tiny": None}


def method_options(method: str, T: int, options: dict) -> list[str]:
    """A few steps, rays and points: the built-in methods by name, any other method by its options. A
    method trained once per ray trains one, the equal ray; one trained for every preference scores the
    coarsest grid (the T one-hots, and the equal ray past 2 tasks)."""
    p = (T + 1) * (T + 2) // 2                  # MAP: a full quadratic's parameters, its smallest design
    table = {"ta_grid": ["method.points=3"],
             "map": [f"method.points={p}", "method.reevaluate=2", "method.pop_size=16", "method.generations=3"]}
    if method in table:
        return table[method]
    equal = "[[" + ",".join([repr(1 / T)] * T) + "]]"
    opts = (("steps", "method.steps=3"), ("rays", f"method.rays={equal}"), ("partitions", "method.partitions=1"))
    return [o for k, o in opts if k in options and not (k == "partitions" and "rays" in options)]


# ---- estimate ---------------------------------------------------------------------------------------
H100_VIT_B32_IMAGES_S = 25_000               # README: ViT-B/32 bf16 evaluation at batch 256, H100
H100_MERGE_B32_S = 0.010                     # README: task-arithmetic merge of all ViT-B/32 weights
GFLOP = {"clip-vit-b32": 8.7, "clip-vit-b16": 34.9, "clip-vit-l14": 161.7, "gpt2-glue": 0.18 * 68}   # per example
PARAMS_M = {"clip-vit-b32": 88, "clip-vit-b16": 86, "clip-vit-l14": 304, "gpt2-glue": 124}
TRAIN_BATCH = {"clip-vit-b32": 16, "clip-vit-b16": 16, "clip-vit-l14": 16, "gpt2-glue": 8}
# allowances: bookkeeping of a run (record, indicators), setting up a ray's model, MAP's CPU side per design
# point (surrogate fit, a short NSGA), inductor compiling the ViT-B/32 forward, drawing random weights on the CPU
RUN_OVERHEAD_S, RAY_S, MAP_POINT_S, COMPILE_S, INIT_VALUES_S = 0.5, 0.3, 0.05, 90.0, 3e8


def estimate(size: str, methods: list[str]) -> dict[str, float]:
    """Seconds on one H100 for `size` full, from the README's figures and the allowances above ({}: tiny)."""
    from bench.api import ray_grid

    if size != "full":
        return {}
    rate = H100_VIT_B32_IMAGES_S * GFLOP["clip-vit-b32"]      # GFLOP/s the figures imply
    test_2 = 19_850 + 8_041                                    # sun397 + stanford-cars test images
    speed = (21 * test_2 / H100_VIT_B32_IMAGES_S + COMPILE_S  # plain, Evaluator, compiled: 7 passes each
             + 7 * (1_043 + 9_815) * GFLOP["gpt2-glue"] / rate  # GPT-2: cola + mnli test, 7 passes
             + 2 * 4 * 7 * 3 * 16 * 2 * GFLOP["clip-vit-b32"] / rate + 20   # training steps + their set-up
             + 2000 * (3 * 32 * GFLOP["clip-vit-b32"] / rate + 0.010) + 11 * test_2 / H100_VIT_B32_IMAGES_S  # PWE-MoE
             + (90 * 23_215 + 10 * 87_433) / H100_VIT_B32_IMAGES_S + 100 * 0.15   # MAP: val, test passes, NSGA-III
             + 30)                                             # builds: random ViT-B/32, GPT-2, data on the device
    matrix = 0.0
    for suite, names, _ in PLANS["full"]:
        T = len(names)
        per_eval = T * SYNTHETIC_SIZE * GFLOP[suite] / rate + H100_MERGE_B32_S * PARAMS_M[suite] / 88 * (T + 2) / 10
        step = 3 * T * TRAIN_BATCH[suite] * GFLOP[suite] / rate
        matrix += PARAMS_M[suite] * 1e6 * (T + 1) / INIT_VALUES_S        # the suite's random weights, once
        grid = len(ray_grid(T, partitions=1, max_rays=66))               # a conditioned method's rays
        for m in methods:
            evals, steps, rays = {"ta_grid": (3, 0, 0), "map": ((T + 1) * (T + 2) // 2 + 2, 0, 0),
                                  "ls": (1, 3, 1), "epo": (1, 3 * 2, 1)}.get(m, (grid, 3, 0))   # epo: 2 passes a step
            matrix += (RUN_OVERHEAD_S + (2 + evals) * per_eval + steps * step + rays * RAY_S   # 2: the references
                       + (evals * MAP_POINT_S if m == "map" else 0))
    return {"speed_s": round(speed), "matrix_s": round(matrix), "total_s": round(speed + matrix + 15)}


# ---- part 1: speed.py -------------------------------------------------------------------------------
def run_speed(device: str, size: str, log) -> dict:
    """benchmarks/speed.py in a subprocess; its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speed.json"
        cmd = [sys.executable, str(SPEED), "--device", device, "--size", SPEED_SIZE[size], "--json", str(out)]
        if device == "cpu":
            cmd += ["--threads", "1"]
        log(f"part 1: {' '.join(cmd[1:])}")
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"error: benchmarks/speed.py failed (exit {res.returncode}): {res.stderr.strip()[-2000:]}")
        log(res.stdout.rstrip())
        return json.loads(out.read_text())


def figures_of(speed: dict) -> tuple[dict, list[dict]]:
    """The README's Performance figures, flat, and issue 13's targets with their values, from speed.py's JSON."""
    rows = {r["loop"]: r for r in speed["evaluator"]["rows"]}
    plain, ev, comp = rows["plain loop"], rows["Evaluator"], rows.get("Evaluator + compile")
    f = {"vit_b32_test_images": speed["evaluator"]["images"],
         "vit_b32_gflop_per_image": speed["evaluator"]["gflop_per_image"],
         "peak_bf16_tflops": speed["evaluator"]["peak_bf16_tflops"],
         "plain_loop_images_per_s": plain["images_per_s"],
         "evaluator_images_per_s": ev["images_per_s"],
         "evaluator_vs_plain": ev["vs_plain"],
         "evaluator_roofline": ev["roofline"],
         "compiled_images_per_s": comp["images_per_s"] if comp else None,
         "compiled_vs_plain": comp["vs_plain"] if comp else None,
         "compile_s": comp["compile_s"] if comp else None,
         "max_accuracy_difference": speed["evaluator"]["max_accuracy_difference"],
         "gpt2_tokens_per_s": speed["gpt2"]["tokens_per_s"],
         "gpt2_test_tokens": speed["gpt2"]["tokens"]}
    for model, s in speed["steps"].items():
        m = model.replace("-", "_")
        for v, x in s["variants"].items():
            f[f"{m}_{v}_step_ms"] = 1e3 * x["step_s"]
            f[f"{m}_{v}_vs_plain"] = x["vs_plain"]
            f[f"{m}_{v}_peak_mb_above_base"] = x["peak_mb_above_base"]
    for name, fr in speed["fronts"].items():
        for k in ("wall_s", "evaluations", "train_steps", "peak_mem_mb"):
            f[f"{name}_front_{k}"] = fr[k]
    targets = []
    for key, what, bound, op, *_ in speed_targets():
        v = speed["summary"].get(key)
        met = None if v is None or not speed["targets_judged"] else bool(v >= bound if op == ">=" else v <= bound)
        targets.append({"key": key, "what": what, "value": v, "op": op, "bound": bound, "met": met})
    return f, targets


def speed_targets() -> tuple:
    """Issue 13's targets as benchmarks/speed.py states them: (key, what, bound, op, format, unit)."""
    sys.path.insert(0, str(SPEED.parent))
    import speed  # noqa: PLC0415  (beside this file)

    return speed.TARGETS


# ---- part 2: the matrix -----------------------------------------------------------------------------
class SharedSuite:
    """Runs with the same suite and options share one built suite (the last one only: memory), handed to
    `bench.runtime.run.run`; build times go to `builds`."""

    def __init__(self, builds: dict[str, float]):
        self.builds, self.key, self.suite = builds, None, None

    def get(self, spec):
        key = json.dumps([spec.suite_name, spec.suite_kwargs], sort_keys=True, default=str)
        if key != self.key:
            self.release()
            t0 = time.perf_counter()
            self.key, self.suite = key, spec.build_suite()
            self.builds[f"{spec.suite_name} T={len(self.suite.tasks)}"] = time.perf_counter() - t0
        return self.suite

    def release(self) -> None:
        self.key = self.suite = None
        gc.collect()
        _empty_device_cache()


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def builtin_methods() -> dict[str, dict]:
    """{name: its options with defaults} of every registered method that is not a plugin's."""
    from bench.core.registry import METHODS
    from bench.runtime.config import defaults

    out = {}
    for name in METHODS.names():
        e = METHODS.entry(name)
        if not e.plugin:
            out[name] = defaults(e.obj, e.defaults)
    return out


def planned_runs(size: str, device: str, runs_root: Path) -> list[tuple[dict, list[str]]]:
    """(what the JSON says of a run, its `bench run` arguments) of every run of the matrix, in order."""
    methods, out = builtin_methods(), []
    for suite, names, suite_ov in PLANS[size]:
        T = len(names)
        for m in sorted(methods):
            run_id = f"{suite}-T{T}-{m}"
            argv = ["run", f"method={m}", f"tasks={suite}", f"tasks.names=[{','.join(names)}]", *suite_ov,
                    *method_options(m, T, methods[m]), f"device={device}", f"out={runs_root}", f"run_id={run_id}"]
            out.append(({"suite": suite, "T": T, "tasks": names, "method": m,
                         "command": "python -m bench " + " ".join(argv)}, argv))
    return out


def run_matrix(size: str, device: str, runs_root: Path, deadline: float | None, log) -> tuple[list[dict], dict]:
    """Every planned run: one `bench run` each (in this process, sharing the suite it builds), its record read back."""
    from bench.core.registry import BenchError
    from bench.runtime.config import compose
    from bench.runtime.run import run

    jobs, rows, builds = planned_runs(size, device, runs_root), [], {}
    shared = SharedSuite(builds)
    runs_root.mkdir(parents=True, exist_ok=True)
    log_path = runs_root / "runs.log"
    with open(log_path, "a") as out:
        for i, (row, argv) in enumerate(jobs, 1):
            what = f"[{i}/{len(jobs)}] {row['suite']} T={row['T']} {row['method']}"
            if deadline is not None and time.time() > deadline:
                rows.append({**row, "skipped": "budget (--budget-s) spent"})
                log(f"{what}: skipped, budget spent")
                continue
            t0 = time.perf_counter()
            out.write(f"\n$ {row['command']}\n")
            out.flush()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    spec = compose(argv[1:])
                    run(spec, suite=shared.get(spec))
                    rc = 0
                except BenchError as e:
                    rc, row["error"] = 2, f"error: {e}"
                except Exception as e:  # noqa: BLE001  (reported; the other runs go on)
                    rc, row["error"] = 1, f"{type(e).__name__}: {e}"
            record = (Path(argv[-2].removeprefix("out=")) / row["suite"] / row["method"]
                      / argv[-1].removeprefix("run_id=") / "record.json")
            if rc != 0 or not record.is_file():
                row.setdefault("error", f"exit {rc}; see {_rel(log_path)}")
                rows.append(row)
                log(f"{what}: FAILED ({row['error']})")
                continue
            rows.append({**row, **summary(json.loads(record.read_text()), record),
                         "command_s": time.perf_counter() - t0})
            r = rows[-1]
            log(f"{what}: wall {r['wall_s']:.2f} s, peak {r['peak_mem_mb']:.0f} MiB, {r['evaluations']} evaluations, "
                f"{r['train_steps']} steps, {r['examples_per_s']:.0f} examples/s")
    shared.release()
    return rows, builds


def summary(rec: dict, path: Path) -> dict:
    """What the JSON keeps of a record: its path and costs, and the examples it scored per second."""
    c, sizes = rec["cost"], _split_sizes(rec)
    by_split = c.get("evaluations_by_split") or {"test": c["evaluations"]}
    scored = sum(n * sum(sizes[t].get(split, 0) for t in rec["tasks"]) for split, n in by_split.items())
    return {"record": _rel(path), "wall_s": c["wall_s"], "cpu_s": c.get("cpu_s"), "peak_mem_mb": c["peak_mem_mb"],
            "peak_mem_kind": c.get("peak_mem_kind"), "evaluations": c["evaluations"],
            "evaluations_by_split": by_split, "train_steps": c.get("train_steps", 0),
            "trainable_params": c.get("trainable_params", 0), "examples_scored": scored,
            "examples_per_s": scored / c["wall_s"] if c["wall_s"] > 0 else None, "hv": rec["indicators"]["hv"]}


def _split_sizes(rec: dict) -> dict[str, dict[str, int]]:
    """{task: {split: examples}} from the record's suite config (published suites list them per task, the
    offline suites give one size per split); else from the suite, built again."""
    cfg = rec["suite_config"]
    if cfg.get("split_sizes"):
        return cfg["split_sizes"]
    if all(f"{s}_size" in cfg for s in ("train", "val", "test")):
        return {t: {s: cfg[f"{s}_size"] for s in ("train", "val", "test")} for t in rec["tasks"]}
    from bench.core.registry import SUITES

    suite = SUITES.build(rec["suite"], names=rec["tasks"])
    return {t: suite.split_sizes(t) for t in suite.tasks}


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)


# ---- the check ----------------------------------------------------------------------------------------
def environment(device: str) -> dict:
    import torch

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    env = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "git": git.stdout.strip() or None, "cpu": cpu_name(),
           "cpu_cores": len(os.sched_getaffinity(0))}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_count=torch.cuda.device_count())
    else:
        env["gpu"] = None
    return env


def cpu_name() -> str:
    """The processor's model name without importing torch (benchmarks/memory.py's parent imports none; the
    harness's bench.runtime.hardware.cpu_model does the same inside a run)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def check(args, log=print) -> dict:
    t_start = time.time()
    now = dt.datetime.now(dt.timezone.utc)
    runs_root = Path(args.runs) / now.strftime("%Y%m%d-%H%M%S")
    methods = sorted(builtin_methods())
    est = estimate(args.size, methods)
    budget = args.budget_s if args.budget_s is not None else BUDGET_S[args.size]
    if est:
        log(f"estimated on one H100: speed.py {est['speed_s']} s, matrix {est['matrix_s']} s, "
            f"{est['total_s'] / 60:.1f} min in all (budget {budget:.0f} s)")
    result = {"schema": SCHEMA, "created": now.isoformat(timespec="seconds"), "date": now.date().isoformat(),
              "size": args.size, "device": args.device, "env": environment(args.device), "budget_s": budget,
              "estimate": est, "methods": methods, "runs_root": _rel(runs_root)}
    t0 = time.time()
    result["speed"] = run_speed(args.device, args.size, log)
    result["figures"], result["targets"] = figures_of(result["speed"])
    result["targets_judged"] = result["speed"]["targets_judged"]
    t1 = time.time()
    deadline = t_start + budget if budget else None
    log(f"part 2: {len(methods)} methods × {len(PLANS[args.size])} suites and task counts, "
        f"records under {_rel(runs_root)}")
    result["runs"], result["suite_builds_s"] = run_matrix(args.size, args.device, runs_root, deadline, log)
    t2 = time.time()
    result["elapsed_s"] = {"speed": t1 - t0, "matrix": t2 - t1, "total": t2 - t_start}
    result["complete"] = all("record" in r for r in result["runs"])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n" + "\n".join(__doc__.splitlines()[2:4]) + "\n")
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (as bench run's device=)")
    ap.add_argument("--size", choices=["full", "tiny"], default="full",
                    help="full: published sizes (an H100, ≤ 8 min); tiny: the offline tiny suites (a CPU, ~1 min)")
    ap.add_argument("--out", default="results/gpu-check.json", help="the JSON file to write")
    ap.add_argument("--runs", default="results/runs/gpu-check", help="results root of the matrix's records "
                    "(a timestamped folder in it)")
    ap.add_argument("--budget-s", type=float, help="start no matrix run after this many seconds (default: 480 at "
                    "full, none at tiny)")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: no CUDA device here (torch {torch.__version__}, CUDA "
              f"{torch.version.cuda}); --device cpu --size tiny runs the check on a CPU", file=sys.stderr)
        return 2
    result = check(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=json_default) + "\n")
    os.replace(tmp, out)
    failed = [r for r in result["runs"] if "error" in r]
    print(f"gpu-check ({args.size}, {result['env']['gpu'] or result['env']['cpu']}): "
          f"{len(result['runs']) - len(failed)} of {len(result['runs'])} runs, "
          f"{result['elapsed_s']['total']:.0f} s; {out}")
    return 1 if failed else 0


def json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


if __name__ == "__main__":
    sys.exit(main())
