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
