"""Figures (`bench plot`): which are written for 2 to 8 tasks, their size, the pairwise matrix's
panels and fronts, and HV against the number of tasks."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import matplotlib.image
import numpy as np
from matplotlib.colors import same_color
import pytest

from bench.core import indicators
from bench.runtime.config import compose
from bench.core.front import Front
from bench.reports.figstyle import STYLE, WIDE, WIDTH, palette, plt, style
from bench.reports.plots import write_figures
from bench.reports.plots_many import family, hv_tasks_figures, pair_front, pairs_figure, panels, parallel_figure
from bench.core.record import RunRecord, write_run
from bench.runtime.rundir import run_directory
from bench.runtime.run import run
from bench.reports.tables import config_key, load_leaderboard

DPI = STYLE["savefig.dpi"]


def run_quiet(out: Path, *overrides: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        run(compose(["tasks=toy-quadratic", *overrides, f"out={out}", "device=cpu"]))


def toy_runs(out: Path, num_tasks: int) -> None:
    """The shared-λ line and a per-task grid (a few hundred points at T = 8: 66+ non-dominated)."""
    run_quiet(out, "method=ta_grid", f"tasks.num_tasks={num_tasks}")
    run_quiet(out, "method=ta_grid", f"tasks.num_tasks={num_tasks}", "method.mode=grid", "method.max_points=300")


def tables_of(out: Path) -> tuple[list, list[RunRecord]]:
    lb = load_leaderboard(str(out), resamples=0)
    return lb.tables, lb.records


def make_figures(out: Path, figures: Path) -> list[Path]:
    """What `bench plot` does: the records read once (no bootstrap), every figure written."""
    return write_figures(load_leaderboard(str(out), resamples=0), figures)


KINDS = ("front", "eaf", "pairs", "parallel", "hv-cost", "hv-tasks")


def kinds(paths: list[Path]) -> dict[str, set[str]]:
    """figure kind → the file extensions written for it."""
    out: dict[str, set[str]] = {}
    for p in paths:
        out.setdefault(next(k for k in KINDS if p.stem.endswith(f"-{k}")), set()).add(p.suffix)
    return out


@pytest.mark.parametrize("num_tasks", [2, 3, 5, 8])
def test_figures_for_2_3_5_8_tasks(tmp_path, num_tasks):
    out = tmp_path / "runs"
    toy_runs(out, num_tasks)
    paths = make_figures(out, tmp_path / "fig")
    stem = f"toy-quadratic-v1-{num_tasks}t-"
    assert all(p.name.startswith(stem) for p in paths)
    expected = ("front", "hv-cost") if num_tasks <= 3 else ("pairs", "parallel", "hv-cost")
    assert kinds(paths) == {k: {".png", ".pdf"} for k in expected}        # one T: no HV-against-T figure
    for p in paths:
        assert p.stat().st_size > 5000, p
        if p.suffix == ".pdf":
            assert p.read_bytes()[:5] == b"%PDF-"
            continue
        h, w = matplotlib.image.imread(p).shape[:2]
        wide = p.stem.endswith("pairs") and num_tasks > 5
        # one paper column (3.3 in), or the full text width (6.9 in), at 300 dpi; tick labels may stick out
        assert (WIDE - 0.7) * DPI < w <= (WIDE + 0.4) * DPI if wide else 0.6 * WIDTH * DPI < w <= (WIDTH + 0.4) * DPI, \
            (p.name, w)
        assert h < 1.5 * w, (p.name, h, w)


def test_pairwise_matrix_has_one_panel_per_pair_and_the_pairwise_fronts(tmp_path):
    out = tmp_path / "runs"
    toy_runs(out, 5)
    tables, recs = tables_of(out)
    (table,) = tables
    with plt.rc_context(STYLE):
        fig = pairs_figure(table, palette(tables))
    assert len(fig.axes) == 5 * 4 // 2 == len(panels(5))
    labels = {(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes}
    assert ("task0", "task4") in labels and ("task3", "") in labels and ("", "task1") in labels
    # the staircase of a panel is the grid's points non-dominated on that pair alone (loss: lower is better)
    grid = next(r for r in recs if r.config["method"]["mode"] == "grid")
    V = grid.values[grid.include]
    dom = (V[None, :, [1, 4]] <= V[:, None, [1, 4]]).all(-1) & (V[None, :, [1, 4]] < V[:, None, [1, 4]]).any(-1)
    brute = V[~dom.any(axis=1)][:, [1, 4]]
    brute = brute[np.argsort(brute[:, 0], kind="stable")]
    np.testing.assert_array_equal(pair_front(V, 1, 4, "loss"), brute)
    ax = fig.axes[list(panels(5)).index((3, 1))]              # task1 (x) against task4 (y)
    colour = style(palette(tables)[config_key(grid)])["color"]
    (stairs,) = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"
                 and same_color(line.get_color(), colour)]
    np.testing.assert_array_equal(stairs.get_xydata(), brute)
    plt.close(fig)
    with plt.rc_context(STYLE):
        fig = parallel_figure(table, palette(tables))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table.tasks)
    n_lines = sum(len(c.get_segments()) for c in ax.collections if hasattr(c, "get_segments"))
    assert n_lines == sum(int((r.nondominated & r.include).sum()) for r in recs)
    plt.close(fig)


def test_pair_front_accuracy_keeps_the_best_of_each_pair():
    V = np.array([[0.9, 0.1, 0.5], [0.5, 0.5, 0.9], [0.1, 0.9, 0.1], [0.4, 0.4, 0.95], [0.9, 0.1, 0.0]])
    np.testing.assert_array_equal(pair_front(V, 0, 1, "accuracy"),
                                  [[0.1, 0.9], [0.5, 0.5], [0.9, 0.1], [0.9, 0.1]])   # a duplicate is kept
    np.testing.assert_array_equal(pair_front(V, 0, 2, "accuracy"), [[0.4, 0.95], [0.5, 0.9], [0.9, 0.5]])


def test_hv_against_tasks_only_with_several_t(tmp_path):
    out = tmp_path / "runs"
    run_quiet(out, "method=ta_grid", "tasks.num_tasks=2")
    run_quiet(out, "method=ta_grid", "tasks.num_tasks=2", "seed=1")
    run_quiet(out, "method=ta_grid", "tasks.num_tasks=2", "tasks.dim=5")     # other settings: never on one figure
    tables, recs = tables_of(out)
    assert hv_tasks_figures(tables, palette(tables)) == []
    run_quiet(out, "method=ta_grid", "tasks.num_tasks=4", "tasks.dim=5")
    assert kinds(make_figures(out, tmp_path / "fig"))["hv-tasks"] == {".png", ".pdf"}
    tables, recs = tables_of(out)
    assert len({family(t) for t in tables}) == 2
    ((name, fig),) = hv_tasks_figures(tables, palette(tables))                # only dim=5 has two T
    assert name.startswith("toy-quadratic-v1-") and name.endswith("-hv-tasks")
    # a loss suite: HV / HV of the ideal point (every fine-tuned loss is 0 on toy-quadratic)
    ours = sorted((r for r in recs if r.suite_config["dim"] == 5), key=lambda r: len(r.tasks))
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_lines()[-1].get_ydata(), [r.indicators["hv"] / np.prod(r.ref_point) for r in ours],
                               rtol=1e-12)
    assert ax.get_ylabel() == "HV / HV of the ideal point ↑"
    assert [int(t) for t in ax.get_xticks()] == [2, 4]
    plt.close(fig)


# ---- an accuracy suite with several numbers of tasks: normalised HV, mean ± std over seeds ----------
def accuracy_record(tasks: list[str], seed: int, acc: np.ndarray) -> RunRecord:
    ft = np.full(len(tasks), 0.9)
    front = Front(tasks=tasks, objective="accuracy", X=np.arange(len(acc))[:, None], x_names=["i"],
                  metrics=[{t: {"loss": None, "accuracy": float(a[k])} for k, t in enumerate(tasks)} for a in acc])
    ctx = indicators.Context(front.to_minimization(), np.ones(len(tasks)), objective="accuracy", finetuned=ft)
    return RunRecord.from_front(
        front, suite="synthetic", method="m", ref_point=np.ones(len(tasks)), seed=seed, run_id=f"{len(tasks)}t-s{seed}",
        suite_key=f"synthetic@1:{len(tasks)}", suite_version="1", suite_config={"names": tasks, "size": 3},
        config={"method": {"name": "m"}, "seed": seed, "tasks": {"names": tasks}},
        references={"pretrained": {t: {"accuracy": 0.3} for t in tasks}, "finetuned": {t: {"accuracy": 0.9} for t in tasks}},
        indicators=indicators.compute(ctx, ["hv", "hv_normalized"]), cost={"evaluations": len(acc), "wall_s": 1.0})


def test_accuracy_suite_normalised_hv_against_tasks(tmp_path):
    out, rng = tmp_path / "runs", np.random.default_rng(0)
    hvn: dict[int, list[float]] = {}
    for T in (2, 4):
        tasks = [f"t{k}" for k in range(T)]
        for seed in (0, 1):
            rec = accuracy_record(tasks, seed, rng.uniform(0.3, 0.95, size=(70, T)))
            hvn.setdefault(T, []).append(rec.indicators["hv_normalized"])
            directory = run_directory(out, rec.suite, rec.method, rec.run_id)
            directory.mkdir(parents=True)
            write_run(directory, rec, "x: 1\n")
    paths = make_figures(out, tmp_path / "fig")
    assert set(kinds(paths)) == set(KINDS)
    tables, recs = tables_of(out)
    ((_, fig),) = hv_tasks_figures(tables, palette(tables))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "normalised HV ↑"
    np.testing.assert_allclose(ax.get_lines()[-1].get_ydata(), [np.mean(hvn[2]), np.mean(hvn[4])], rtol=1e-12)
    _, _, (bars,) = ax.containers[0].lines                    # the error bars: ± the std over seeds (ddof = 1)
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in bars.get_segments()],
                               [2 * np.std(hvn[T], ddof=1) for T in (2, 4)], rtol=1e-9)
    plt.close(fig)


# ---- empirical attainment across seeds ----------------------------------------------------------
def test_attainment_surfaces_against_brute_force():
    from bench.reports.eaf import surfaces

    rng = np.random.default_rng(3)
    n = 5
    sets = np.repeat(np.arange(n), 12)
    F = rng.dirichlet([1.0, 1.0], size=len(sets)) + rng.uniform(0, 0.3, size=(len(sets), 1))
    count = lambda z: sum(bool((F[sets == s] <= z + 1e-12).all(axis=1).any()) for s in range(n))
    for k, S in surfaces(F, sets, [1, 3, 5]).items():
        assert len(S)
        for c in S:                       # attained by ≥ k seeds, and minimal: a step down-left is not
            assert count(c) >= k
            assert count(c - [1e-9, 0]) < k or count(c - [0, 1e-9]) < k


def test_eaf_figure_only_with_several_seeds(tmp_path):
    out = tmp_path / "runs"
    for seed in (0, 1, 2):
        run_quiet(out, "method=ls", "method.steps=5", "method.partitions=3", f"seed={seed}")
    run_quiet(out, "method=ta_grid")
    names = [p.name for p in make_figures(out, tmp_path / "fig")]
    assert sum(n.endswith("-eaf.png") for n in names) == 1
    solo = tmp_path / "solo"
    run_quiet(solo, "method=ta_grid")
    assert not any(n.endswith("-eaf.png") for n in map(lambda p: p.name, make_figures(solo, tmp_path / "f2")))
