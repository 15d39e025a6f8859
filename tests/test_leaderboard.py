"""The leaderboard's machinery on a tiny spec: budgets, the plan, parallel runs, the outputs."""
from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from bench.reports.leaderboard import BEGIN, END, budgets, load_spec, main, n_rays, plan
from bench.core.registry import METHODS, BenchError

TINY = """
scale: 0.02
seeds: [0, 1]
jobs: 2
resamples: 0
suites:
  toy-quadratic: {num_tasks: [2], scale: 0.02, options: {pwe_moe_ls: {upscale: all}}}
methods:
  ta_grid: {}
  ls:
  pwe_moe_ls: {kind: trained}
"""


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text(TINY + f"runs: {tmp_path / 'runs'}\nout: {tmp_path / 'board'}\nreadme: {tmp_path / 'README.md'}\n")
    (tmp_path / "README.md").write_text(f"# x\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    return p


def test_matched_budgets(spec_file):
    spec = load_spec(spec_file, ["suites.toy-quadratic.scale=0.5", "per_t={3: {ls: {partitions: 4}}}"])
    # search: MAP's default evaluations at T, (T+1)(T+2) + 10; ta_grid as a capped per-task grid
    assert budgets(spec, "toy-quadratic", "ta_grid", 2) == {
        "default": {}, "matched": {"mode": "grid", "max_points": 22}}
    # trained: 300 × 0.5 steps in all; per ray: divided over the 11 (T = 2) or 15 (T = 3, partitions 4) rays
    assert budgets(spec, "toy-quadratic", "pwe_moe_ls", 2) == {        # the suite's options kept
        "default": {"upscale": "all", "steps": 150}, "matched": {"upscale": "all", "steps": 150}}
    assert budgets(spec, "toy-quadratic", "ls", 2)["matched"] == {"steps": 150 // 11}
    # past T = 6 no per-task grid fits: the densest simplex grid λ = s·d (4 scales) within 82 evaluations
    assert budgets(spec, "toy-quadratic", "ta_grid", 7)["matched"] == {
        "mode": "simplex", "partitions": 1, "max_points": 82}
    assert n_rays("ls", 3, {"partitions": 4}) == 15 and n_rays("epo", 5, {}) == 6 and n_rays("ls", 2, {}) == 11
    assert budgets(spec, "toy-quadratic", "ls", 3) == {
        "default": {"partitions": 4, "steps": 150}, "matched": {"partitions": 4, "steps": 10}}


def test_budgets_come_from_the_classes(spec_file):
    """The spec names no budget unit, ray count or scale: the method's and suite's classes declare them."""
    assert {n: METHODS.get(n).budget for n in METHODS.names()} == {
        "ta_grid": "evaluations", "map": "evaluations", "ls": "steps_per_ray", "epo": "steps_per_ray",
        "pwe_moe_ls": "steps", "pwe_moe_epo": "steps", "phn": "steps", "pareto_merging": "steps"}
    # toy-quadratic declares its own scale (1.0): the spec's 0.5 does not apply to it; a spec's suite scale does
    own = spec_file.with_name("own.yaml")
    own.write_text(spec_file.read_text().replace("scale: 0.02, ", ""))
    spec = load_spec(own, ["scale=0.5", "methods.map={}"])
    assert budgets(spec, "toy-quadratic", "pwe_moe_ls", 2)["default"] == {"upscale": "all", "steps": 300}
    assert budgets(spec, "toy-quadratic", "ls", 2)["matched"] == {"steps": 300 // 11}
    assert budgets(spec, "toy-quadratic", "map", 2) == {"default": {}, "matched": {}}     # MAP's default is the budget
    assert spec.note().startswith("Budgets: every method at its default (published) settings with training "
                                  "steps × 0.5 (× 1 on toy-quadratic), ")
    # a spec's kind: still overrides the class
    spec = load_spec(spec_file, ["methods.ls={kind: trained}"])
    assert budgets(spec, "toy-quadratic", "ls", 2)["matched"] == {"steps": 6}             # not divided over rays


def test_plan_one_job_where_budgets_coincide(spec_file):
    jobs = plan(load_spec(spec_file))
    rows = {(j.method, j.budget) for j in jobs}
    assert rows == {("ta_grid", "default"), ("ta_grid", "matched"), ("ls", "default"), ("ls", "matched"),
                    ("pwe_moe_ls", "default+matched")}
    assert len(jobs) == 2 * len(rows)                      # × seeds


def test_committed_spec_plans_without_building(tmp_path, monkeypatch, capsys):
    """`--plan` on the committed spec lists every (suite, subset, method, budget, seed) and builds no suite."""
    monkeypatch.setenv("PARETOBENCH_CACHE", str(tmp_path / "cache"))
    spec = load_spec("results/leaderboard/spec.yaml")
    assert main(["results/leaderboard/spec.yaml", "--plan"]) == 0
    assert not (tmp_path / "cache").exists()
    jobs = plan(spec)
    assert capsys.readouterr().out.strip().endswith(f"{len(jobs)} jobs, {spec.jobs} at a time")
    # every method on every subset of every suite: at least one job per (suite, T-or-subset, method, seed)
    subsets = sum(len(o.get("subsets") or o.get("num_tasks")) for o in spec.suites.values())
    cells = {(j.suite, j.tasks, j.method, j.seed) for j in jobs}
    assert len(cells) == subsets * sum(len(o.get("seeds", spec.seeds)) for o in spec.methods.values())
    assert {j.T for j in jobs if j.suite == "tiny-clip"} == {2, 3, 7}


def test_spec_errors_are_one_line(spec_file, tmp_path, monkeypatch):
    with pytest.raises(BenchError, match="unknown spec key 'sedes'.*seeds"):
        load_spec(spec_file, ["sedes=[0]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(TINY).replace("ta_grid: {}", "ta_grid: {kind: grid}"))
    with pytest.raises(BenchError, match=r"methods.ta_grid.kind='grid'; valid: search, per_ray, trained"):
        load_spec(bad)
    with pytest.raises(BenchError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    import bench.reports.leaderboard

    class Plugin:                         # a method whose class declares no budget and the spec no kind
        budget = ""
    monkeypatch.setattr(bench.reports.leaderboard, "method_class", lambda name: Plugin)
    with pytest.raises(BenchError, match=r"methods.ta_grid: Plugin declares no leaderboard budget .*give it a kind"):
        budgets(load_spec(spec_file), "toy-quadratic", "ta_grid", 2)


def counting(monkeypatch, *targets: str) -> dict[str, int]:
    """Count the calls of module attributes ("bench.reports.tables:build_tables", …) from now on."""
    import importlib

    calls = {t: 0 for t in targets}
    for t in targets:
        module, name = t.split(":")
        original = getattr(importlib.import_module(module), name)

        def counted(*args, _t=t, _f=original, **kwargs):
            calls[_t] += 1
            return _f(*args, **kwargs)
        monkeypatch.setattr(importlib.import_module(module), name, counted)
    return calls


def test_regenerates_everything_in_parallel(spec_file, tmp_path, capsys, monkeypatch):
    assert main([str(spec_file)]) == 0
    timings = pd.read_csv(tmp_path / "runs" / "timings.csv")
    assert len(timings) == 10 and (timings["wall_s"] > 0).all()
    board = tmp_path / "board"
    md = (board / "leaderboard.md").read_text()
    assert md.startswith("Budgets: every method at its default (published) settings with training steps × 0.02")
    assert md.count("\n| ") == 1 + 5                       # header + one row per (method, budget)
    assert "ls (steps=6)" in md and "ls (steps=1)" in md
    assert (board / "html" / "index.html").is_file() and list((board / "html" / "figures").glob("*-eaf.png"))
    csv = pd.read_csv(board / "leaderboard.csv")
    assert (csv["n"] == 2).all()
    assert (board / "timings.csv").read_text() == (tmp_path / "runs" / "timings.csv").read_text()
    readme = (tmp_path / "README.md").read_text()                # the main-results block, rewritten in place
    assert "old" not in readme and readme.endswith(f"{END}\n\nafter\n")
    for row in ("| ta_grid | default |", "| ta_grid | matched |", "| ls | matched |", "| pwe_moe_ls | default+matched |"):
        assert row in readme
    # --render: the same tables again from the runs already there, no new run
    records = sorted((tmp_path / "runs").rglob("record.json"))
    (board / "leaderboard.md").unlink()
    calls = counting(monkeypatch, "bench.reports.tables:load_records", "bench.reports.tables:build_tables",
                     "bench.reports.bootstrap:group_samples", "bench.reports.tables:reference_front")
    assert main([str(spec_file), "--render"]) == 0
    assert (board / "leaderboard.md").read_text() == md
    # tables, page, figures and README block from one reading of the records: one bootstrap, one front per table
    assert calls == {"bench.reports.tables:load_records": 1, "bench.reports.tables:build_tables": 1,
                     "bench.reports.bootstrap:group_samples": 1, "bench.reports.tables:reference_front": 1}
    assert sorted((tmp_path / "runs").rglob("record.json")) == records


def test_render_needs_finished_runs(spec_file, tmp_path):
    with pytest.raises(BenchError, match="no finished leaderboard"):
        main([str(spec_file), "--render", f"runs={tmp_path / 'empty'}"])
    assert main([str(spec_file), "--fast"]) == 2
