"""benchmarks/speed.py runs, so it cannot rot: its small CPU run and its default-run mode, checked for
structure and for positive, finite figures (never against a time: the machine may be busy)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEED = ROOT / "benchmarks" / "speed.py"
sys.path.insert(0, str(SPEED.parent))

import speed  # noqa: E402


def run_speed(*args, env=None) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(SPEED), *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def test_small_cpu_run_reports_every_section(tmp_path):
    # --compile on with dynamo disabled runs the compiled row's code eagerly: inductor needs minutes on a CPU
    res = run_speed("--size", "small", "--device", "cpu", "--threads", "1", "--compile", "on",
                    "--json", str(tmp_path / "speed.json"), env={"TORCH_COMPILE_DISABLE": "1"})
    r = json.loads((tmp_path / "speed.json").read_text())
    assert r["schema"] == "paretobench.speed/1" and r["size"] == "small" and r["targets_judged"] is False
    assert r["env"]["threads"] == "1" and r["env"]["deterministic"] is True
    e = r["evaluator"]
    assert [row["loop"] for row in e["rows"]] == ["plain loop", "Evaluator", "Evaluator + compile"]
    assert e["images"] == 2 and 8.0 < e["gflop_per_image"] < 9.5       # ViT-B/32: about 8.8 GFLOP
    assert e["peak_bf16_tflops"] is None and all(row["roofline"] is None for row in e["rows"])
    assert all(positive(row["images_per_s"], row["vs_plain"], row["batch"]) for row in e["rows"])
    assert e["rows"][0]["vs_plain"] == 1.0 and e["rows"][2]["compile_s"] >= 0.0
    assert 0.0 <= e["max_accuracy_difference"] <= 1.0
    assert positive(r["gpt2"]["tokens"], r["gpt2"]["tokens_per_s"])
    for model in ("vit-b32", "gpt2"):
        variants = r["steps"][model]["variants"]
        assert list(variants) == ["plain", "pwe_moe_ls", "pwe_moe_epo", "ls_full"]
        assert all(positive(v["step_s"], v["vs_plain"], v["trainable"], v["base_mb"]) for v in variants.values())
        assert variants["pwe_moe_ls"]["trainable"] == 264              # 12 MLP blocks × (4T² + 3T) at T = 2
    for name, f in r["fronts"].items():
        assert f["method"] == name and f["tasks"] == 2
        assert positive(f["wall_s"], f["cpu_s"], f["evaluations"], f["points"], f["peak_mem_mb"])
    assert r["fronts"]["pwe_moe_ls"]["train_steps"] == 1
    assert set(r["summary"]) == {key for key, *_ in speed.TARGETS}
    assert all(v is None or positive(v) for v in r["summary"].values())
    for heading in ("1. ViT-B/32", "2. GPT-2 124M", "3. training step, vit-b32", "3. training step, gpt2",
                    "4. fronts", "issue 13's GPU targets"):
        assert heading in res.stdout


def test_default_run_mode_times_bench_run_idle_and_loaded(tmp_path):
    run_speed("--cpu-default-run", "--json", str(tmp_path / "run.json"), "method=ta_grid", "tasks=toy-quadratic",
              "method.points=3")
    r = json.loads((tmp_path / "run.json").read_text())
    assert r["command"] == "python -m bench run method=ta_grid tasks=toy-quadratic method.points=3"
    assert r["beside_yes"]["yes_processes"] == r["cores"] >= 1
    for x in (r["idle"], r["beside_yes"]):
        assert positive(x["wall_s"], x["record_wall_s"], x["threads"]) and x["wall_s"] > x["record_wall_s"]


def test_device_peak_table_matches_the_most_specific_name():
    assert speed.peak_for("NVIDIA H100 PCIe") == 756 and speed.peak_for("NVIDIA H100 80GB HBM3") == 989
    assert speed.peak_for("NVIDIA H200") == 989 and speed.peak_for("NVIDIA L40S") == 362
    assert speed.peak_for("NVIDIA L4") == 121 and speed.peak_for("Intel Arc") is None


def test_bench_run_overrides_need_the_default_run_mode(capsys):
    with pytest.raises(SystemExit) as exc:
        speed.main(["method=ta_grid"])
    assert exc.value.code == 2 and "--cpu-default-run" in capsys.readouterr().err


def test_bad_device_is_one_line_naming_the_choices(capsys):
    assert speed.main(["--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'gpu'" in err and "cuda" in err


# ---- benchmarks/memory.py (issue 24): one real measurement, small; the extrapolation and the table offline ----
MEMORY = ROOT / "benchmarks" / "memory.py"
import memory  # noqa: E402  (beside speed.py)


def test_memory_measures_vit_b32_build_and_one_step(tmp_path):
    """One fresh subprocess: clip-vit-b32 (weights=random) at T = 2, one pwe_moe_ls step at 1 image per task.
    The build holds θ0 + 2 task vectors (fp32) and the tower itself: its peak is at least those bytes,
    counted from the parameters (ViT-B/32's vision tower: 87,456,000); the step holds the suite and more."""
    out = tmp_path / "mem.json"
    res = subprocess.run([sys.executable, str(MEMORY), "--archs", "b32", "--tasks", "2", "--methods", "pwe_moe_ls",
                          "--batch", "1", "--probes", "1", "--json", str(out)], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    r = json.loads(out.read_text())
    assert r["schema"] == "paretobench.memory/1" and r["env"]["threads"] == 2 and not r["skipped"]
    (m,) = r["measurements"]
    assert m["params"] == 87_456_000 and m["T"] == 2 and m["batch"] == 1 and m["images_in_flight"] == 2
    tensors = 3 * m["params"] * 4 / 2**30                       # θ0 + 2 task vectors, fp32, GiB
    assert m["theta_tv_gib"] == pytest.approx(tensors)
    assert m["build_peak_gib"] >= tensors + m["params"] * 4 / 2**30     # + the tower's own weights
    assert m["build_peak_gib"] < 4 * tensors                            # and not wildly more
    assert m["step_peak_gib"] >= m["rss_reset_gib"] >= tensors and positive(m["live_peak_gib"], m["step_s"])
    (c,) = r["cells"]
    assert (c["step_kind"], c["build_kind"], c["batch"]) == ("measured", "measured", 1)
    assert c["step_gib"] == m["step_peak_gib"] and "pwe_moe_ls (1 step)" in r["table_markdown"]


def test_memory_extrapolation_and_table_labels():
    lo = {"step_peak_gib": 3.0, "live_peak_gib": 1.0, "images_in_flight": 2}
    hi = {"step_peak_gib": 3.5, "live_peak_gib": 1.2, "images_in_flight": 4}
    assert memory.slope_of(lo, hi) == pytest.approx(0.1) and memory.slope_of(lo, hi, "step_peak_gib") == 0.25
    # a training step holds T·b images (T = 2, b = 16: 32), an evaluation one batch
    assert memory.extrapolate(lo, 0.1, "conditioned", 2, 16) == pytest.approx(3.0 + 30 * 0.1)
    assert memory.extrapolate(lo, 0.1, "eval", 2, 64) == pytest.approx(3.0 + 62 * 0.1)
    cells = [{"arch": "b32", "T": 2, "method": "ls", "build_gib": 2.0, "build_kind": "measured", "step_gib": 4.0,
              "step_kind": "measured"},
             {"arch": "l14", "T": 2, "method": "ls", "build_gib": 5.5, "build_kind": "measured", "step_gib": 30.0,
              "step_kind": "extrapolated"},
             {"arch": "l14", "T": 8, "method": "ls", "build_gib": 12.8, "build_kind": "predicted", "step_gib": 40.0,
              "step_kind": "predicted"}]
    md = memory.table(cells, ["b32", "l14"], [2, 8], ["ls"])
    assert "| ls (1 step) | 4.0 | – | 30.0 e | 40.0 p |" in md and "| 2.0 | – | 5.5 | – |" in md
    # the predictor: L/14 at T = 8 holds 10 copies of 303M fp32 parameters before any step
    assert memory.predict_build("l14", 8) > 10 * 303e6 * 4 / 2**30
    assert memory.predict_step("l14", 8, "epo", 16) > memory.predict_step("l14", 8, "ls", 16)
