"""benchmarks/gpu_check.py (`make gpu-check`) runs, so it cannot rot: its tiny form on the CPU end to end
(the JSON has every key, finite positive figures, a record behind every run), and every command line
of its full form on a GPU checked by the harness's own validation without running it. Never against a
time: the machine may be busy."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))

import gpu_check  # noqa: E402

TOP = {"schema", "created", "date", "size", "device", "env", "budget_s", "estimate", "methods", "runs_root", "speed",
       "figures", "targets", "targets_judged", "runs", "suite_builds_s", "elapsed_s", "complete"}
FIGURES = {"vit_b32_test_images", "vit_b32_gflop_per_image", "plain_loop_images_per_s", "evaluator_images_per_s",
           "evaluator_vs_plain", "gpt2_tokens_per_s", "gpt2_test_tokens", "pwe_moe_ls_front_wall_s",
           "pwe_moe_ls_front_peak_mem_mb", "map_front_wall_s", "map_front_peak_mem_mb",
           *(f"{m}_{v}_{k}" for m in ("vit_b32", "gpt2") for v in ("plain", "pwe_moe_ls", "pwe_moe_epo", "ls_full")
             for k in ("step_ms", "vs_plain", "peak_mb_above_base"))}
GPU_ONLY = {"peak_bf16_tflops", "evaluator_roofline", "compiled_images_per_s", "compiled_vs_plain", "compile_s"}
RUN = {"suite", "T", "tasks", "method", "command", "record", "wall_s", "peak_mem_mb", "evaluations", "train_steps",
       "examples_scored", "examples_per_s"}


def positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--size", "tiny",
                          "--out", str(tmp / "check.json"), "--runs", str(tmp / "runs")],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads((tmp / "check.json").read_text()), res.stdout, tmp


def test_tiny_check_writes_every_figure(tiny):
    r, stdout, _ = tiny
    assert set(r) == TOP and r["schema"] == "paretobench.gpu-check/1" and r["size"] == "tiny" and r["device"] == "cpu"
    assert r["env"]["gpu"] is None and r["env"]["torch"] and r["env"]["cpu"] and r["date"] == r["created"][:10]
    f = r["figures"]
    assert FIGURES <= set(f) <= FIGURES | GPU_ONLY | {"max_accuracy_difference", "pwe_moe_ls_front_evaluations",
                                                    "pwe_moe_ls_front_train_steps", "map_front_evaluations",
                                                    "map_front_train_steps"}
    assert all(positive(f[k]) for k in FIGURES), {k: f[k] for k in FIGURES if not positive(f[k])}
    assert all(f[k] is None for k in GPU_ONLY)                         # no bf16 peak or compile on the CPU
    assert 8.0 < f["vit_b32_gflop_per_image"] < 9.5 and 0.0 <= f["max_accuracy_difference"] <= 1.0
    assert [t["key"] for t in r["targets"]] == [k for k, *_ in gpu_check.speed_targets()]
    assert r["targets_judged"] is False and all(t["met"] is None for t in r["targets"])
    assert r["speed"]["schema"] == "paretobench.speed/1" and r["speed"]["size"] == "small"
    assert r["estimate"] == {} and r["budget_s"] is None and all(positive(v) for v in r["elapsed_s"].values())
    assert "1. ViT-B/32" in stdout and "part 2:" in stdout


def test_tiny_check_runs_every_method_and_keeps_its_record(tiny):
    r, _, tmp = tiny
    methods = sorted(gpu_check.builtin_methods())
    assert r["methods"] == methods and len(methods) >= 8
    assert r["complete"] is True
    assert [(x["suite"], x["T"], x["method"]) for x in r["runs"]] == [
        (s, len(names), m) for s, names, _ in gpu_check.PLANS["tiny"] for m in methods]
    for x in r["runs"]:
        assert RUN <= set(x) and "error" not in x and "skipped" not in x, x
        record = Path(x["record"])
        assert record.is_file() and tmp / "runs" in record.parents, x["record"]
        rec = json.loads(record.read_text())
        assert (rec["suite"], rec["method"], rec["tasks"]) == (x["suite"], x["method"], x["tasks"])
        assert rec["cost"]["wall_s"] == x["wall_s"] and rec["cost"]["peak_mem_mb"] == x["peak_mem_mb"]
        assert all(positive(x[k]) for k in ("wall_s", "peak_mem_mb", "evaluations", "examples_scored",
                                             "examples_per_s"))
        assert (x["train_steps"] == 0) == (x["method"] in ("ta_grid", "map")), x
    assert set(r["suite_builds_s"]) == {f"{s} T={len(n)}" for s, n, _ in gpu_check.PLANS["tiny"]}


def test_full_plan_is_valid_and_budgeted():
    """Every `bench run` of --size full passes the harness's validation (names, option keys, types and
    values: MAP's design size at T = 8, the explicit rays, ...), and the estimate fits the 8 minutes."""
    from bench.runtime.config import validate

    plan = gpu_check.planned_runs("full", "cuda", Path("/nonexistent/runs"))
    methods = sorted(gpu_check.builtin_methods())
    clip = {(s, T) for s in ("clip-vit-b32", "clip-vit-b16", "clip-vit-l14") for T in (2, 8)}
    assert {(row["suite"], row["T"]) for row, _ in plan} == clip | {("gpt2-glue", 2), ("gpt2-glue", 7)}
    assert len(plan) == 8 * len(methods)
    for _, argv in plan:
        assert "tasks.weights=random" in argv and "device=cuda" in argv
        validate(argv[1:])
    est = gpu_check.estimate("full", methods)
    assert 0 < est["speed_s"] and 0 < est["matrix_s"] and est["total_s"] <= gpu_check.BUDGET_S["full"] == 480


def test_cuda_without_a_gpu_is_one_line(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda", "--out", "/nonexistent/x.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA device" in err and "--device cpu --size tiny" in err
