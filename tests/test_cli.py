"""The command line as a user meets it: runs, records, sweeps, and one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from bench.cli import main
from bench.runtime.config import compose, compose_config, defaults, schema
from bench.core.registry import METHODS, SUITES

ROOT = Path(__file__).resolve().parent.parent


def bench(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def last_record(capsys) -> dict:
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert path.name == "record.json" and path.is_file()
    return json.loads(path.read_text())


def test_run_writes_a_complete_record(out, capsys):
    assert main(["run", "method=ta_grid", "tasks=toy-quadratic", f"out={out}"]) == 0
    rec = last_record(capsys)
    for key in ("schema", "suite", "tasks", "method", "seed", "config", "objective", "ref_point", "references",
                "points", "indicators", "cost", "env"):
        assert key in rec
    assert rec["schema"] == 2 and rec["objective"] == "loss" and rec["tasks"] == ["task0", "task1"]
    assert set(rec["indicators"]) >= {"hv", "gd", "igd", "igd_plus", "n_points", "n_nondominated"}
    assert set(rec["cost"]) >= {"wall_s", "evaluations", "train_steps", "trainable_params", "peak_mem_mb"}
    assert set(rec["env"]) >= {"git", "python", "torch", "device"}
    assert rec["cost"]["evaluations"] == rec["indicators"]["n_points"] == 11
    p = rec["points"][0]
    assert set(p) >= {"x", "metrics", "split", "nondominated"} and p["split"] == "test"
    assert set(rec["references"]) == {"pretrained", "finetuned"}
    d = next(out.glob("toy-quadratic/ta_grid/*"))
    assert sorted(f.name for f in d.iterdir()) == ["config.yaml", "front.csv", "record.json"]
    assert len((d / "front.csv").read_text().splitlines()) == 12
    assert yaml.safe_load((d / "config.yaml").read_text())["method"]["name"] == "ta_grid"


def test_record_indicators_are_right(out, capsys):
    """Recompute HV and IGD+ of the written record by brute force from its own points."""
    from bench.core.registry import SUITES
    from tests.test_indicators import brute_hv

    assert main(["run", "method=ta_grid", "tasks=toy-quadratic", "tasks.num_tasks=3", "method.mode=grid", "method.points=4", f"out={out}"]) == 0
    rec = last_record(capsys)
    F = np.array([[p["metrics"][t]["loss"] for t in rec["tasks"]] for p in rec["points"]])
    ref = np.array(rec["ref_point"])
    assert rec["indicators"]["hv"] == pytest.approx(brute_hv(F, ref), rel=1e-9)
    pf = SUITES.build("toy-quadratic", num_tasks=3).true_front()
    plus = np.linalg.norm(np.maximum(F[:, None] - pf[None], 0), axis=-1).min(axis=0).mean()
    assert rec["indicators"]["igd_plus"] == pytest.approx(plus, rel=1e-9)
    nd = [p["nondominated"] for p in rec["points"]]
    assert sum(nd) == rec["indicators"]["n_nondominated"] < len(nd)


def test_same_seed_same_record(out, capsys):
    recs = []
    for _ in range(2):
        assert main(["run", "method=ta_grid", "tasks=toy-quadratic", "method.mode=simplex", "tasks.num_tasks=3", "seed=7", f"out={out}"]) == 0
        recs.append(last_record(capsys))
    for r in recs:
        for k in ("run_id", "created", "env"):
            r.pop(k)
        for k in ("wall_s", "cpu_s", "peak_mem_mb"):
            r["cost"].pop(k)
        r["config"].pop("run_id", None)
        r["indicators"].pop("igd", None)
    assert recs[0] == recs[1]


def test_multirun_writes_one_record_per_method(out):
    r = bench("run", "-m", "method=ta_grid,map", "tasks=toy-quadratic", f"out={out}")
    assert r.returncode == 0, r.stderr
    assert sorted(p.parent.parent.name for p in out.glob("*/*/*/record.json")) == ["map", "ta_grid"]


@pytest.mark.parametrize("args,needle", [
    (["method=ta_gird"], "unknown method 'ta_gird' (did you mean 'ta_grid'?); valid choices:"),
    (["tasks=toy-quadratc"], "unknown suite 'toy-quadratc' (did you mean 'toy-quadratic'?)"),
    (["method.pointz=3"], "'method.pointz' (did you mean 'method.points'?)"),
    (["tasks.num_tasks=9"], "tasks.num_tasks=9 is out of range; valid: 2..8"),
    (["method.mode=diagonal"], "unknown value for method.mode: 'diagonal'; valid choices: shared, grid, simplex"),
    (["method.points=many"], "method.points='many' must be of type int"),
    (["sed=1"], "unknown setting 'sed' (did you mean 'seed'?)"),
    (["device=tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line_exit_2(args, needle, out, capsys):
    base = [a for a in ("method=ta_grid", "tasks=toy-quadratic") if a.split("=")[0] not in {x.split("=")[0] for x in args}]
    assert main(["run", *base, *args, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not list(out.glob("**/record.json"))


def test_errors_have_no_traceback_and_write_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = bench("run", f"out={blocker}/runs")
    assert r.returncode == 2 and "is not writable" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = bench("frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr


def test_ls_lists_every_method_and_suite(capsys):
    assert main(["ls"]) == 0
    text = capsys.readouterr().out
    for name in METHODS.names() + SUITES.names():
        assert f"  {name} " in text


@pytest.mark.parametrize("group,registry", [("method", METHODS), ("tasks", SUITES)])
def test_every_default_comes_from_the_constructor(group, registry, capsys):
    """The composed config of every registry entry holds exactly its constructor's options and
    defaults (a variant's own defaults over them); `bench ls name=X` lists each of them."""
    for name in registry.names():
        entry = registry.entry(name)
        cfg = compose_config([f"{group}={name}"])[group]
        node = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "name"}
        assert cfg.name == name and node == defaults(entry.obj, entry.defaults)
        assert set(node) == set(schema(entry.obj)) and all(node[k] == v for k, v in entry.defaults.items())
        assert main(["ls", f"name={name}"]) == 0
        listed = capsys.readouterr().out
        assert all(f"  {k}=" in listed for k in node), name


def test_the_default_experiment_is_a_preset_of_tiny_clip():
    spec = compose([])
    assert spec.suite_name == "tiny-clip" and spec.suite_kwargs["names"] == ["digits", "dots"]
    assert compose(["tasks.names=[letters,colour]"]).suite_kwargs["names"] == ["letters", "colour"]
    assert compose(["tasks=tiny-clip"]).suite_kwargs["names"] is None                # all seven tasks


def test_records_keep_per_example_correctness_that_matches_the_accuracy(out, capsys):
    """examples.npz beside record.json: each test point's per-example correctness, whose mean is
    the recorded accuracy (what the leaderboard's bootstrap over test examples resamples)."""
    from bench.core.record import RunRecord, load_examples

    assert main(["run", "method=ta_grid", "tasks=tiny-clip", "tasks.names=[digits,dots]", "method.points=3",
                 f"out={out}"]) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    rec = RunRecord.from_json(path.read_text(), path=path)
    points, ex = load_examples(rec)
    assert points.tolist() == [0, 1, 2] and "examples.npz" in rec.artifacts
    for t in rec.tasks:
        assert ex[t].shape == (3, 500)
        np.testing.assert_allclose(ex[t].mean(axis=1), [rec.metrics[i][t]["accuracy"] for i in points], atol=1e-12)
