"""Leaderboard tables, figures and the regression check, against records these tests write."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.core import indicators
from bench.cli import main
from bench.runtime.config import compose
from bench.core.record import RunRecord, load_records, write_run
from bench.runtime.rundir import run_directory
from bench.reports.report import render
from bench.runtime.run import run
from bench.reports.tables import load_leaderboard

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "results" / "baselines" / "ta_grid-toy-quadratic-2t-grid.json"


def run_quiet(out: Path, *overrides: str) -> dict:
    if not any(o.startswith("tasks=") for o in overrides):   # these tests are about toy-quadratic
        overrides = ("tasks=toy-quadratic", *overrides)
    spec = compose([*overrides, f"out={out}", "device=cpu"])
    with contextlib.redirect_stdout(io.StringIO()):
        path = run(spec)
    return json.loads(Path(path).read_text())


def cmd_check(argv: list[str]) -> int:
    return main(["check", *argv])


def table(out: Path, fmt: str = "md", tasks: str | None = None, resamples: int = 1000) -> str:
    return render(load_leaderboard(str(out), tasks, resamples), fmt)


# ---- independent reference computations (numpy only) ------------------------------------------
def nd_brute(F: np.ndarray) -> np.ndarray:
    """Non-dominated rows by pairwise comparison (minimization)."""
    dom = (F[None, :, :] <= F[:, None, :]).all(-1) & (F[None, :, :] < F[:, None, :]).any(-1)   # [i, j]: j dominates i
    return F[~dom.any(axis=1)]


def hv2d_brute(F: np.ndarray, ref: np.ndarray) -> float:
    P = nd_brute(F[(F < ref).all(axis=1)])
    P = P[np.argsort(P[:, 0])]
    xs = np.append(P[1:, 0], ref[0])
    return float(np.sum((xs - P[:, 0]) * (ref[1] - P[:, 1])))


def igd_plus_brute(F: np.ndarray, pf: np.ndarray) -> float:
    d = np.sqrt((np.maximum(F[None, :, :] - pf[:, None, :], 0.0) ** 2).sum(-1))   # [ref, point]
    return float(d.min(axis=1).mean())


# ---- synthetic accuracy records: a suite with two seeds ------------------------------------------
SYN_TASKS = ["a", "b"]


def synthetic_record(method: str, seed: int, acc: np.ndarray, *, paper: str, weights: str = "real",
                     mode: str = "x", evaluations: int = 10, wall: float = 1.0) -> dict:
    F = 1.0 - acc
    pts = [{"x": {"i": float(i)}, "metrics": {t: {"loss": None, "accuracy": float(acc[i, j])} for j, t in enumerate(SYN_TASKS)},
            "split": "test", "nondominated": False, "include": True} for i in range(len(acc))]
    ind = indicators.compute(indicators.Context(F, ref_point=np.ones(2)), ["hv", "n_points", "n_nondominated"])
    ft = {"a": 0.9, "b": 0.8}
    ind["hv_normalized"] = indicators.hypervolume(1.0 - acc / np.array([ft["a"], ft["b"]]), np.ones(2))[0]
    return {"schema": 1, "suite": "synthetic", "suite_key": "synthetic@1:0123456789", "suite_version": "1",
            "suite_config": {"size": 3}, "tasks": SYN_TASKS, "weights": weights, "method": method,
            "method_paper": paper, "seed": seed, "run_id": f"{method}-{mode}-s{seed}-{weights}",
            "config": {"method": {"name": method, "mode": mode}, "tasks": {"name": "synthetic"}, "seed": seed,
                       "out": "x", "device": "cpu", "run_id": None},
            "objective": "accuracy", "ref_point": [1.0, 1.0],
            "references": {"pretrained": {"a": {"loss": 1.0, "accuracy": 0.5}, "b": {"loss": 1.0, "accuracy": 0.4}},
                           "finetuned": {t: {"loss": 0.1, "accuracy": v} for t, v in ft.items()}},
            "points": pts, "meta": {},
            "cost": {"wall_s": wall, "evaluations": evaluations, "train_steps": 100 * seed, "trainable_params": 7,
                     "peak_mem_mb": 50.0 + seed, "peak_mem_kind": "process_max_rss"},
            "indicators": ind, "igd_ref": {"kind": "pooled", "n_records": 1}}


@pytest.fixture
def synthetic(out):
    rng = np.random.default_rng(0)
    accs = {("ta_grid", s): np.clip(rng.uniform(0.3, 0.9, size=(9, 2)), 0, 1) for s in (0, 1)}
    accs[("other", 0)] = np.array([[0.95, 0.2], [0.6, 0.6], [0.2, 0.85]])
    recs = [synthetic_record(m, s, a, paper="Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023"
                             if m == "ta_grid" else "Doe & Roe, A Method, 2099", evaluations=10 if m == "ta_grid" else 3)
            for (m, s), a in accs.items()]
    recs.append(synthetic_record("randm", 0, np.full((2, 2), 0.99), paper="", weights="random"))
    for r in recs:          # schema-1 records (as an earlier version wrote them), read as RunRecords
        rec = RunRecord.from_json(json.dumps(r))
        directory = run_directory(out, rec.suite, rec.method, rec.run_id)
        directory.mkdir(parents=True)
        write_run(directory, rec, "x: 1\n")
    return accs


def test_two_seeds_mean_std_and_pooled_igd_plus(out, synthetic):
    csv = pd.read_csv(io.StringIO(table(out, "csv")))
    assert sorted(csv["method"]) == ["other", "ta_grid"]            # the random-weight record never enters
    ta = csv[csv["method"] == "ta_grid"].iloc[0]
    assert ta["n"] == 2 and ta["seeds"] == "0,1"
    F = {k: 1.0 - a for k, a in synthetic.items()}
    hv = np.array([hv2d_brute(F[("ta_grid", s)], np.ones(2)) for s in (0, 1)])
    assert ta["hv_mean"] == pytest.approx(hv.mean(), rel=1e-9)
    assert ta["hv_std"] == pytest.approx(hv.std(ddof=1), rel=1e-9)
    ft = np.array([0.9, 0.8])
    hvn = [hv2d_brute(1.0 - synthetic[("ta_grid", s)] / ft, np.ones(2)) for s in (0, 1)]
    assert ta["hv_normalized_mean"] == pytest.approx(np.mean(hvn), rel=1e-9)
    pf = nd_brute(np.vstack(list(F.values())))                         # pooled union of the suite key's records
    igd = np.array([igd_plus_brute(F[("ta_grid", s)], pf) for s in (0, 1)])
    assert ta["igd_plus_mean"] == pytest.approx(igd.mean(), rel=1e-9)
    assert ta["igd_plus_std"] == pytest.approx(igd.std(ddof=1), rel=1e-9)
    nd = [len(nd_brute(F[("ta_grid", s)])) for s in (0, 1)]
    assert ta["n_nondominated_mean"] == pytest.approx(np.mean(nd))
    assert ta["train_steps_mean"] == 50 and ta["train_steps_std"] == pytest.approx(np.std([0, 100], ddof=1))
    other = csv[csv["method"] == "other"].iloc[0]
    assert other["n"] == 1 and np.isnan(other["hv_std"])
    assert other["igd_plus_mean"] == pytest.approx(igd_plus_brute(F[("other", 0)], pf), rel=1e-9)
    assert (csv["igd_ref_kind"] == "pooled").all() and (csv["igd_ref_points"] == len(pf)).all()
    # best per column: HV and IGD+ by value, cost columns lower-is-better, ties unmarked
    best_hv = csv["hv_mean"].idxmax()
    assert csv["hv_best"].tolist() == [i == best_hv for i in range(len(csv))]
    assert csv["igd_plus_best"].tolist() == [i == csv["igd_plus_mean"].idxmin() for i in range(len(csv))]
    assert csv.loc[csv["method"] == "other", "evaluations_best"].item()
    assert not csv["trainable_params_best"].any()                      # all 7: a tie marks nothing


# ---- bootstrap over test examples ------------------------------------------------------------------
def write_with_examples(out: Path, method: str, seed: int, correct: dict[str, np.ndarray]) -> None:
    """A synthetic record whose points' accuracies are the means of `correct` ({task: bool [points, n]}),
    with examples.npz beside it as a run writes it."""
    from types import SimpleNamespace

    from bench.core.record import EXAMPLES, examples_file

    acc = np.stack([correct[t].mean(axis=1) for t in SYN_TASKS], axis=1)
    rec = RunRecord.from_json(json.dumps(synthetic_record(method, seed, acc, paper="")))
    points = [SimpleNamespace(examples={t: correct[t][i] for t in SYN_TASKS}) for i in range(len(acc))]
    directory = run_directory(out, rec.suite, rec.method, rec.run_id)
    directory.mkdir(parents=True)
    write_run(directory, rec, "x: 1\n", {EXAMPLES: examples_file(points)})


def test_bootstrap_interval_and_paired_significance(out):
    from bench.reports import bootstrap

    rng = np.random.default_rng(1)
    n, B = 300, 200
    p = np.array([[0.9, 0.3], [0.7, 0.6], [0.35, 0.85]])
    best = {t: rng.random((3, n)) < p[:, [j]] for j, t in enumerate(SYN_TASKS)}
    twin = {t: c.copy() for t, c in best.items()}
    twin["a"][1, :3] = ~twin["a"][1, :3]                                # 3 examples differ: paired, not significant
    weak = {t: rng.random((3, n)) < (p[:, [j]] - 0.15) for j, t in enumerate(SYN_TASKS)}
    for s in (0, 1):                                                   # two seeds of the same models
        write_with_examples(out, "best", s, best)
    write_with_examples(out, "twin", 0, twin)
    write_with_examples(out, "weak", 0, weak)
    lb = load_leaderboard(str(out), resamples=B)                       # read once, rendered three ways
    csv = pd.read_csv(io.StringIO(render(lb, "csv"))).set_index("method")
    # independent recomputation: the same draws, accuracies by weighted counts, HV by brute force
    W = bootstrap.resample_weights({t: n for t in SYN_TASKS}, B, 0)
    def hv_samples(c):
        return np.array([hv2d_brute(1.0 - np.stack([c[t] @ W[t][b] for t in SYN_TASKS], axis=1), np.ones(2))
                         for b in range(B)])
    hb, hw = hv_samples(best), hv_samples(weak)
    assert csv.loc["best", "hv_lo"] == pytest.approx(np.percentile(hb, 2.5), rel=1e-5)
    assert csv.loc["best", "hv_hi"] == pytest.approx(np.percentile(hb, 97.5), rel=1e-5)
    assert csv.loc["best", "hv_lo"] < csv.loc["best", "hv_mean"] < csv.loc["best", "hv_hi"]
    assert csv.loc["weak", "hv_lo"] == pytest.approx(np.percentile(hw, 2.5), rel=1e-5)
    assert not csv.loc["best", "hv_ns"]                                # the best row is the reference
    assert csv.loc["twin", "hv_ns"] and csv.loc["twin", "hv_normalized_ns"]
    assert not csv.loc["weak", "hv_ns"] and np.percentile(hb - hw, 2.5) > 0
    md = render(lb, "md")
    assert re.search(r"\| twin \| 1 \| [0-9.]+ \[[0-9.]+, [0-9.]+\] ≈ \|", md)
    assert f"95 % percentile bootstrap interval of the cell's mean over {B} resamples" in md
    assert "$\\approx$" in render(lb, "latex")


def test_no_interval_without_examples(out, synthetic):
    csv = pd.read_csv(io.StringIO(table(out, "csv")))
    assert csv["hv_lo"].isna().all() and not csv["hv_ns"].any()
    assert "bootstrap" not in table(out, "md")


def test_markdown_rendering(out, synthetic):
    md = table(out, "md")
    csv = pd.read_csv(io.StringIO(table(out, "csv")))
    ta = csv[csv["method"] == "ta_grid"].iloc[0]
    assert "### synthetic v1: a, b" in md and "`synthetic@1:0123456789`" in md
    header = next(l for l in md.splitlines() if l.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")][:5] == ["Method", "n", "HV ↑", "HV norm. ↑", "IGD+ ↓"]
    row = next(l for l in md.splitlines() if l.startswith("| ta_grid"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "ta_grid¹" and cells[1] == "2"
    hv_cell = f"{ta['hv_mean']:.4g} ± {ta['hv_std']:.2g}"
    assert cells[2] in (hv_cell, f"**{hv_cell}**")
    assert (cells[2].startswith("**")) == bool(ta["hv_best"])
    assert f"hash {ta['igd_ref_hash']}" in md and f"{int(ta['igd_ref_points'])} points" in md
    assert "¹ ta_grid: Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023 (https://arxiv.org/abs/2212.04089)" in md
    assert "² other: Doe & Roe, A Method, 2099" in md
    assert "randm" not in md
    n_cols = len(header.strip("|").split("|"))
    assert all(len(l.strip("|").split("|")) == n_cols for l in md.splitlines() if l.startswith("|"))


def test_latex_is_a_booktabs_body(out, synthetic):
    tex = table(out, "latex")
    body = tex[tex.index("\\begin{tabular}"):tex.index("\\end{tabular}")]
    spec = re.match(r"\\begin\{tabular\}\{([lrc]+)\}", body).group(1)
    lines = body.splitlines()
    assert [l for l in lines if l in ("\\toprule", "\\midrule", "\\bottomrule")] == ["\\toprule", "\\midrule", "\\midrule", "\\bottomrule"]
    header = lines[lines.index("\\midrule") + 1]
    rows = lines[lines.index(header) + 2:lines.index("\\bottomrule")]
    for l in [header, *rows]:
        assert l.endswith("\\\\") and len(re.findall(r"(?<!\\)&", l)) == len(spec) - 1, l
    assert len(rows) == 2
    assert re.search(r"\\textbf\{[^}]*\}", "\n".join(rows))                 # a best value is bold
    assert "$\\pm$" in "\n".join(rows) and "ta\\_grid\\textsuperscript{1}" in "\n".join(rows)
    # compiles: ASCII only, no unescaped specials, balanced braces and math shifts, environments paired
    assert all(ord(c) < 128 for c in tex)
    stripped = re.sub(r"\\.", "", "\n".join(l for l in tex.splitlines() if not l.startswith("%")))
    assert not re.search(r"[_#^~]", stripped.replace("\\", ""))
    assert stripped.count("{") == stripped.count("}") and stripped.count("$") % 2 == 0
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    assert "\\multicolumn{%d}{l}{\\textbf{synthetic} v1: a, b}" % len(spec) in tex


def test_analytic_igd_plus_and_config_rows(out):
    from bench.core.registry import SUITES

    a = run_quiet(out, "method=ta_grid", "method.mode=shared")
    b = run_quiet(out, "method=ta_grid", "method.mode=grid", "method.points=5")
    c = run_quiet(out, "method=ta_grid", "method.mode=grid", "method.points=5", "seed=1")
    csv = pd.read_csv(io.StringIO(table(out, "csv", tasks="toy-quadratic")))
    assert set(csv["label"]) == {"ta_grid (mode=shared)", "ta_grid (mode=grid)"}
    pf = SUITES.build("toy-quadratic").true_front()
    for rec, label in ((a, "ta_grid (mode=shared)"), (b, "ta_grid (mode=grid)")):
        row = csv[csv["label"] == label].iloc[0]
        F = np.array([[p["metrics"][t]["loss"] for t in rec["tasks"]] for p in rec["points"]])
        assert row["igd_plus_mean"] == pytest.approx(igd_plus_brute(F, pf), rel=1e-9)
        assert row["igd_plus_mean"] == pytest.approx(rec["indicators"]["igd_plus"], rel=1e-12)
        assert row["hv_mean"] == pytest.approx(hv2d_brute(F, np.asarray(rec["ref_point"])), rel=1e-9)
    grid = csv[csv["label"] == "ta_grid (mode=grid)"].iloc[0]
    assert grid["n"] == 2 and grid["hv_std"] == 0.0 and grid["seeds"] == "0,1"
    assert (csv["igd_ref_kind"] == "analytic").all() and (csv["igd_ref_hash"] == c["igd_ref"]["hash"]).all()
    md = table(out, "md")
    assert "analytic Pareto front of toy-quadratic" in md and f"{len(pf)} points, hash {c['igd_ref']['hash']}" in md


def test_reference_front_falls_back_only_on_harness_errors(out, monkeypatch):
    """An analytic suite that cannot be rebuilt (a BenchError: unknown name, bad options) keeps its
    records' IGD+; any other error is a bug and is raised."""
    import bench.reports.reference
    from bench.reports.reference import reference_front
    from bench.core.registry import BenchError

    run_quiet(out, "method=ta_grid")
    (rec,) = load_records(out)
    assert reference_front([rec]).kind == "analytic"
    gone = rec.replace(suite="no-such-suite")
    ref = reference_front([gone])
    assert ref.kind == "record" and ref.pf is None and ref.hash == rec.igd_ref["hash"]
    assert "could not be rebuilt: unknown suite 'no-such-suite'" in ref.how

    def broken(name, config):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(bench.reports.reference, "analytic_front", broken)
    with pytest.raises(ZeroDivisionError):
        reference_front([rec])
    monkeypatch.setattr(bench.reports.reference, "analytic_front", lambda name, config: (_ for _ in ()).throw(BenchError("x")))
    assert reference_front([rec]).kind == "record"


def test_table_cli_errors(out, synthetic, capsys):
    assert main(["table", f"out={out}", "tasks=no-such-suite"]) == 2
    assert "unknown suite 'no-such-suite'" in capsys.readouterr().err
    assert main(["table", f"out={out}", "format=pdf"]) == 2
    assert "valid choices: md, latex, csv, html" in capsys.readouterr().err
    assert main(["table", f"out={out}", "format=html"]) == 2                # a folder: out_dir= is needed
    assert "format=html writes a folder: give out_dir=DIR" in capsys.readouterr().err
    assert main(["table", f"out={out}", "resamples=-1"]) == 2
    assert "resamples=-1 must be ≥ 0" in capsys.readouterr().err
    assert main(["table", f"out={out / 'empty'}"]) == 2
    assert main(["table", f"out={out}", "format=csv"]) == 0
    assert capsys.readouterr().out.startswith("suite,suite_key,tasks,")
    from bench.core.registry import BenchError

    with pytest.raises(BenchError, match="format=html is a folder, not a text"):
        render(load_leaderboard(str(out)), "html")


# ---- figures ------------------------------------------------------------------------------------
def test_plot_accuracy_suite_and_cli(out, synthetic, tmp_path, capsys):
    assert main(["plot", f"out={out}"]) == 0
    printed = capsys.readouterr().out.split()
    # front, attainment across ta_grid's two seeds, HV against cost: PNG and PDF each
    assert sorted(Path(p).stem.rsplit("-", 1)[-1] for p in printed) == ["cost"] * 2 + ["eaf"] * 2 + ["front"] * 2
    assert all(Path(p).parent == out / "figures" and Path(p).stat().st_size > 5000 for p in printed)


# ---- regression check ---------------------------------------------------------------------------
def test_check_passes_on_the_real_baseline_and_fails_on_a_perturbed_copy(tmp_path, capsys):
    real, bad = tmp_path / "real", tmp_path / "bad"
    real.mkdir(), bad.mkdir()
    shutil.copy(BASELINE, real / BASELINE.name)
    assert cmd_check([f"baselines={real}"]) == 0
    assert "ok    ta_grid-toy-quadratic-2t-grid" in capsys.readouterr().out

    b = json.loads(BASELINE.read_text())
    hv = b["entries"]["indicators.hv"]["expected"]
    b["entries"]["indicators.hv"]["expected"] = hv * 1.001
    b["entries"]["indicators.n_points"]["expected"] += 1
    (bad / BASELINE.name).write_text(json.dumps(b))
    assert cmd_check([f"baselines={bad}"]) == 1
    text = capsys.readouterr().out
    assert f"DRIFT ta_grid-toy-quadratic-2t-grid: 2 of {len(b['entries'])} entries" in text
    hv_line = next(l for l in text.splitlines() if l.strip().startswith("indicators.hv "))
    assert f"{hv * 1.001:.10g}" in hv_line and f"{hv:.10g}" in hv_line and "abs 1e-09 + rel 1e-06" in hv_line
    assert re.search(r"indicators\.n_points\s+37\s+36\s+1\s+exact", text)
    assert "--update only=ta_grid-toy-quadratic-2t-grid" in text

    assert cmd_check([f"baselines={bad}", "--update"]) == 0                   # deliberate rewrite, tolerances kept
    assert json.loads((bad / BASELINE.name).read_text())["entries"] == json.loads(BASELINE.read_text())["entries"]
    assert cmd_check([f"baselines={bad}"]) == 0


def test_check_stub_baseline_is_filled_by_update(tmp_path, capsys):
    (tmp_path / "stub.json").write_text(json.dumps({"description": "x", "overrides": [
        "method=ta_grid", "tasks=toy-quadratic", "method.points=3", "seed=0", "device=cpu"]}))
    assert cmd_check([f"baselines={tmp_path}", "only=stub"]) == 1
    assert "EMPTY stub" in capsys.readouterr().out
    assert cmd_check([f"baselines={tmp_path}", "--update"]) == 0
    e = json.loads((tmp_path / "stub.json").read_text())["entries"]
    assert e["indicators.n_points"] == {"expected": 3, "abs": 0.0, "rel": 0.0}
    assert e["indicators.hv"]["abs"] == 1e-9 and e["indicators.hv"]["rel"] == 1e-6
    assert cmd_check([f"baselines={tmp_path}"]) == 0
    assert main(["check", f"baselines={tmp_path}", "only=nope"]) == 2
    assert "unknown baseline 'nope'" in capsys.readouterr().err


def test_check_into_keeps_records_per_seed(tmp_path, capsys):
    shutil.copy(ROOT / "results" / "baselines" / "ta_grid-toy-quadratic-2t-shared.json", tmp_path / "b.json")
    assert cmd_check([f"baselines={tmp_path}", f"into={tmp_path / 'runs'}", "seeds=[3]"]) == 0   # one process per run
    (rec,) = load_records(tmp_path / "runs")
    assert rec.run_id == "b-s3" and rec.seed == 3 and rec.config["method"]["mode"] == "shared"
    assert rec.config["seed"] == 3 and rec.config["device"] == "cpu"          # the baseline's seed=0 replaced
    assert capsys.readouterr().out.strip().endswith("b-s3/record.json")