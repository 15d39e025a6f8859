"""Figures of a leaderboard: fronts, and HV against cost and against T.

    python -m bench plot                                      # every suite → results/runs/figures
    python -m bench plot tasks=toy-quadratic figures=paper/figures out=results/runs

    >>> from bench.reports.tables import load_leaderboard
    >>> write_figures(load_leaderboard("results/runs", resamples=0), "paper/figures")   # doctest: +SKIP

`write_figures` draws from a `bench.reports.tables.Leaderboard` (records read once, rows, the records
behind each row, the reference front) and reads nothing else. For each suite key (see
`bench.reports.tables`), as PNG and PDF named `<suite>-v<version>-<T>t-<key hash>-<kind>`:

* front (2 or 3 tasks; one paper column, 3.3 in, 7 pt text): 2 tasks — every leaderboard row's
  points (faint) and its non-dominated staircase, the pre-trained model (×), each fine-tuned model
  on its own task (dotted lines; their crossing is the ideal point) and, for analytic suites, the
  true front (grey); 3 tasks — a 3-D scatter of the non-dominated points with the same references.
* pairs and parallel (4 tasks or more, `bench.reports.plots_many`): the matrix of pairwise 2-task
  projections, and parallel coordinates of the normalised metrics.
* eaf (2 tasks, some row with several seeds; `bench.reports.eaf`): per row, the spread of its fronts
  across seeds as empirical attainment surfaces (best, median, worst seed).
* hv-cost: HV against evaluations and against wall time (log scale), mean ± std over seeds.

and per suite whose records cover several numbers of tasks, `<suite>-v<version>-<hash>-hv-tasks`:
HV (normalised) against T (`bench.reports.plots_many`).

Objectives are drawn in their natural direction (accuracy: higher is better; loss: lower). A row
with several seeds draws its lowest seed in the front figures; the HV figures use all of them. A
row keeps its colour and marker in every figure. Marks shrink and fade as a series grows (66+
points stay legible); legends sit outside the axes. Records with `weights == "random"` are never
drawn. Matplotlib with the Agg backend (no display, `bench.reports.figstyle`); every file is written atomically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from bench.reports import eaf, plots_many
from bench.reports.figstyle import (STYLE, WIDTH, arrow, density, draw_front, draw_references, focus_range, legend,
                            palette, plt, points, reference_handles, representatives, save, style, true_front)
from bench.core.registry import BenchError
from bench.reports.tables import Leaderboard, Table


# ---- fronts (2 or 3 tasks) -------------------------------------------------------------------
def front_figure(table: Table, colours: dict[str, int]):
    reps = representatives(table)
    T, obj = len(table.tasks), table.objective
    pre, ft = reps[0].reference_values("pretrained"), reps[0].reference_values("finetuned")
    true_pf = true_front(table)
    rows = list(zip(reps, table.rows["label"], table.rows["config"]))
    handles = []
    if T == 2:
        fig, ax = plt.subplots(figsize=(WIDTH, 2.5))
        if true_pf is not None:
            o = np.argsort(true_pf[:, 0])
            ax.plot(true_pf[o, 0], true_pf[o, 1], color="0.6", lw=2.5, alpha=0.5, zorder=1)
            handles.append(Line2D([], [], color="0.6", lw=2.5, alpha=0.5, label="true front"))
        focus = [pre[None], ft[None]] + ([true_pf] if true_pf is not None else [])
        for rec, label, cfg in rows:
            st = style(colours[cfg])
            F, nd = points(rec)
            nd = nd[np.argsort(nd[:, 0])]
            focus.append(nd)
            draw_front(ax, F, nd, st, obj)
            handles.append(Line2D([], [], label=label, **st, markersize=3.5))
        draw_references(ax, pre, ft)
        handles += reference_handles()
        P = np.vstack(focus)            # dominated outliers far away would squash the fronts
        for axis, setter in enumerate((ax.set_xlim, ax.set_ylim)):
            if (lim := focus_range(P[:, axis])) is not None:
                setter(*lim)
        ax.set_xlabel(f"{table.tasks[0]} {obj} {arrow(obj)}")
        ax.set_ylabel(f"{table.tasks[1]} {obj} {arrow(obj)}")
        ax.grid(alpha=0.25, lw=0.4)
    else:                               # 3 tasks; bench.reports.plots_many draws more
        fig = plt.figure(figsize=(WIDTH, 2.8))
        ax = fig.add_subplot(projection="3d")
        if true_pf is not None:
            sub = true_pf[np.linspace(0, len(true_pf) - 1, min(len(true_pf), 600)).astype(int)]
            ax.scatter(*sub.T, s=1, color="0.6", alpha=0.35, depthshade=False)
            handles.append(Line2D([], [], color="0.6", marker=".", ls="", label="true front"))
        for rec, label, cfg in rows:
            st = style(colours[cfg])
            _, nd = points(rec)
            size, alpha = density(len(nd))
            ax.scatter(*nd.T, s=size * 0.7, color=st["color"], marker=st["marker"], depthshade=False, alpha=alpha)
            handles.append(Line2D([], [], label=label, ls="", **st, markersize=3.5))
        ax.scatter(*pre, marker="X", s=30, color="k", depthshade=False)
        ax.scatter(*ft, marker="*", s=40, color="k", depthshade=False)
        handles += [Line2D([], [], marker="X", color="k", ls="", markersize=4, label="pre-trained"),
                    Line2D([], [], marker="*", color="k", ls="", markersize=5, label="fine-tuned (ideal point)")]
        for i, setter in enumerate((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
            setter(f"{table.tasks[i]} {obj} {arrow(obj)}", labelpad=-6)
        ax.tick_params(pad=-3)
        ax.view_init(elev=22, azim=(-135 if obj == "loss" else 45))   # look at the front from the ideal side
    fig.suptitle(f"{table.suite} v{table.suite_version}, {T} tasks", y=0.99)
    legend(fig, handles)
    return fig


# ---- HV against cost ----------------------------------------------------------------------------
def hv_cost_figure(table: Table, colours: dict[str, int]):
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 1.7), sharey=True)
    handles = []
    for _, row in table.rows.iterrows():
        st = style(colours[row["config"]])
        for ax, key in zip(axes, ("evaluations", "wall_s")):
            x, xs = row[f"{key}_mean"], row[f"{key}_std"]
            y, ys = row["hv_mean"], row["hv_std"]
            if not (np.isfinite(x) and np.isfinite(y)) or x <= 0:
                continue
            ax.errorbar(x, y, xerr=xs if np.isfinite(xs) else None, yerr=ys if np.isfinite(ys) else None,
                        color=st["color"], marker=st["marker"], markersize=3.5, lw=0.8, capsize=1.5)
        handles.append(Line2D([], [], ls="", label=row["label"], **st, markersize=3.5))
    axes[0].set_xlabel("evaluations (full passes)")
    axes[1].set_xlabel("wall time (s)")
    axes[0].set_ylabel("HV ↑")
    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())   # minor labels collide at column width
        ax.grid(alpha=0.25, lw=0.4, which="both")
        ax.margins(x=0.25, y=0.15)
    fig.suptitle(f"{table.suite} v{table.suite_version}, {len(table.tasks)} tasks: HV against cost", y=1.0)
    legend(fig, handles)
    fig.tight_layout(pad=0.3)
    return fig


def write_figures(lb: Leaderboard, directory: str | Path) -> list[Path]:
    """Write every figure of the leaderboard `lb` into `directory`; returns the paths."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"figures={str(directory)!r} is not writable ({e.strerror or e})") from None
    colours = palette(lb.tables)
    paths = []
    with plt.rc_context(STYLE):
        for table in lb.tables:
            name = table.stem
            if len(table.tasks) <= 3:
                paths += save(front_figure(table, colours), directory, f"{name}-front")
            else:
                paths += save(plots_many.pairs_figure(table, colours), directory, f"{name}-pairs")
                paths += save(plots_many.parallel_figure(table, colours), directory, f"{name}-parallel")
            if len(table.tasks) == 2 and (table.rows["n"] > 1).any():
                paths += save(eaf.eaf_figure(table, colours), directory, f"{name}-eaf")
            paths += save(hv_cost_figure(table, colours), directory, f"{name}-hv-cost")
        for name, fig in plots_many.hv_tasks_figures(lb.tables, colours):
            paths += save(fig, directory, name)
    return paths
