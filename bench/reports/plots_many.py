"""Figures for many tasks, drawn by `bench plot` (`bench.reports.plots.write_figures`) where T ≥ 4.

    >>> from bench.reports.plots_many import panels
    >>> panels(4)       # panel (row, column) of the pairwise matrix → (task on x, task on y)
    {(0, 0): (0, 1), (1, 0): (0, 2), (1, 1): (1, 2), (2, 0): (0, 3), (2, 1): (1, 3), (2, 2): (2, 3)}

* pairs: the T(T−1)/2 pairwise 2-task projections as a lower-triangular matrix (task i on the x
  axis of column i, task j on the y axis of row j − 1; shared axes per row and column). In each
  panel, every leaderboard row's included points projected on the two tasks (faint) and those
  non-dominated on that pair alone, as the 2-task figure's staircase; the pre-trained model (×),
  the two fine-tuned models on their own tasks (dotted) and, for analytic suites, the true front
  projected the same way (grey). One paper column wide up to T = 5, legend below; the full text
  width past it, where the empty upper triangle holds the title and legend.
* parallel: one vertical axis per task, one line per non-dominated point (non-dominated on all T
  tasks), one colour per row; the more lines a row has, the fainter each. Values are normalised so
  every axis reads alike: accuracy / the task's fine-tuned accuracy (1 = the fine-tuned model),
  loss / the pre-trained model's loss (1 = the pre-trained model, 0 = a perfect one); a task
  without that reference is drawn unscaled. The pre-trained model (dashed) and each fine-tuned
  model on its own axis (★).
* hv-tasks: for a suite whose records cover several T with otherwise equal settings, each row's HV
  against T, mean ± std over seeds: the normalised HV where records have one (accuracy suites),
  else HV / the HV of the ideal point (each task at its fine-tuned value); both are 1 at the
  ideal point and equal at the default reference point. Log scale (HV shrinks about geometrically
  with T) unless a value is 0. Task subsets of one size are a marker each; the line joins their mean.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, StrMethodFormatter

from bench.reports.figstyle import (WIDE, WIDTH, arrow, draw_front, draw_references, focus_range, legend,
                            plt, points, reference_handles, representatives, style, true_front)
from bench.core.front import to_minimization
from bench.core.indicators import nondominated_mask
from bench.core.record import RunRecord
from bench.reports.tables import Table, group_labels

SELECTION = ("names", "num_tasks")      # suite options that choose the tasks; the others must agree across T


def panels(T: int) -> dict[tuple[int, int], tuple[int, int]]:
    return {(j - 1, i): (i, j) for j in range(1, T) for i in range(j)}


def pair_front(V: np.ndarray, i: int, j: int, objective: str) -> np.ndarray:
    """[m, 2] the points of V (natural direction) non-dominated on tasks i and j alone, sorted by task i."""
    P = V[:, [i, j]]
    P = P[nondominated_mask(to_minimization(P, objective))]
    return P[np.argsort(P[:, 0], kind="stable")]


# ---- pairwise matrix -----------------------------------------------------------------------------
def pairs_figure(table: Table, colours: dict[str, int]):
    reps = representatives(table)
    T, obj, tasks = len(table.tasks), table.objective, table.tasks
    pre, ft = reps[0].reference_values("pretrained"), reps[0].reference_values("finetuned")
    true_pf = true_front(table)
    width = WIDTH if T <= 5 else WIDE
    fig = plt.figure(figsize=(width, width * 0.95))
    top = 0.99 if width == WIDE else 0.9                # one column: the title goes above the panels
    grid = fig.add_gridspec(T - 1, T - 1, left=0.08, right=0.99, bottom=0.07, top=top, wspace=0.15, hspace=0.12)
    axes = {}                   # only the lower triangle: x shared down a column, y along a row
    for r, c in panels(T):
        axes[r, c] = fig.add_subplot(grid[r, c], sharex=axes.get((c, c)), sharey=axes.get((r, 0)))
        axes[r, c].tick_params(labelbottom=r == T - 2, labelleft=c == 0, labelsize=5, length=2, pad=1)
    series = [(style(colours[cfg]), points(rec)[0]) for rec, cfg in zip(reps, table.rows["config"])]
    # what each column's x axis and each row's y axis must show: that task's pairwise fronts, references
    seen_x, seen_y = ([[pre[k], ft[k]] for k in range(T)] for _ in range(2))
    for (r, c), (i, j) in panels(T).items():
        ax = axes[r, c]
        if true_pf is not None:
            pf = pair_front(true_pf, i, j, obj)
            ax.plot(pf[:, 0], pf[:, 1], color="0.6", lw=1.5, alpha=0.5, zorder=1)
        for st, F in series:
            nd = pair_front(F, i, j, obj)
            draw_front(ax, F[:, [i, j]], nd, st, obj, small=True)
            seen_x[i] += list(nd[:, 0])
            seen_y[j] += list(nd[:, 1])
        draw_references(ax, pre[[i, j]], ft[[i, j]], size=10)
        ax.grid(alpha=0.25, lw=0.4)
        for axis in (ax.xaxis, ax.yaxis):               # at most 4 short labels: none collide at T = 8
            axis.set_major_locator(MaxNLocator(3, steps=[1, 2, 5, 10]))
    for k in range(T - 1):                              # dominated outliers far away would squash the fronts
        if (lim := focus_range(np.asarray(seen_x[k], dtype=float))) is not None:
            axes[T - 2, k].set_xlim(*lim)
        if (lim := focus_range(np.asarray(seen_y[k + 1], dtype=float))) is not None:
            axes[k, 0].set_ylim(*lim)
    for k in range(T - 1):
        axes[T - 2, k].set_xlabel(tasks[k])
        axes[k, 0].set_ylabel(tasks[k + 1])
    handles = [Line2D([], [], label=label, **style(colours[cfg]), markersize=3.5)
               for label, cfg in zip(table.rows["label"], table.rows["config"])]
    if true_pf is not None:
        handles.append(Line2D([], [], color="0.6", lw=1.5, alpha=0.5, label="true front"))
    handles += reference_handles()
    title = f"{table.suite} v{table.suite_version}, {T} tasks:\nnon-dominated on each pair ({obj} {arrow(obj)})"
    if width == WIDTH:                                  # the empty triangle is too small at one column
        fig.suptitle(title, y=top + 0.01, va="bottom")
        legend(fig, handles)
    else:                                               # the empty upper triangle holds title and legend
        corner = grid[0, T - 2].get_position(fig)
        legend(fig, handles, 1, loc="upper right", bbox_to_anchor=(corner.x1, corner.y1), alignment="left",
               title=title)
    return fig


# ---- parallel coordinates --------------------------------------------------------------------------
def parallel_figure(table: Table, colours: dict[str, int]):
    reps = representatives(table)
    T, obj = len(table.tasks), table.objective
    pre, ft = reps[0].reference_values("pretrained"), reps[0].reference_values("finetuned")
    scale = ft if obj == "accuracy" else pre
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    x = np.arange(T)
    fig, ax = plt.subplots(figsize=(WIDTH, 2.3))
    rows = []
    for rec, label, cfg in zip(reps, table.rows["label"], table.rows["config"]):
        nd = points(rec)[1] / scale
        rows.append((nd, style(colours[cfg]), f"{label} ({len(nd)} pts)"))
    for nd, st, _ in sorted(rows, key=lambda row: -len(row[0])):      # the densest row underneath
        alpha = float(np.clip(2 / np.sqrt(max(len(nd), 1)), 0.08, 0.8))    # lines overlap more than marks
        segments = np.stack([np.broadcast_to(x, nd.shape), nd], axis=-1)
        ax.add_collection(LineCollection(segments, colors=[st["color"]], lw=0.6, alpha=alpha))
    ax.plot(x, pre / scale, color="k", ls="--", lw=0.9, marker="X", markersize=3.5, zorder=4)
    ax.scatter(x, ft / scale, marker="*", s=30, color="k", zorder=5)
    ax.autoscale_view()
    handles = [Line2D([], [], color=st["color"], lw=1.0, label=label) for _, st, label in rows]
    handles += [Line2D([], [], color="k", ls="--", marker="X", markersize=3.5, label="pre-trained"),
                Line2D([], [], marker="*", color="k", ls="", markersize=5, label="fine-tuned (own task)")]
    ax.set_xticks(x, table.tasks, rotation=45 if T > 5 else 0, ha="right" if T > 5 else "center",
                  rotation_mode="anchor")
    ax.set_xlim(-0.2, T - 0.8)
    ax.set_ylabel("accuracy / fine-tuned accuracy ↑" if obj == "accuracy" else "loss / pre-trained loss ↓")
    ax.grid(axis="x", alpha=0.5, lw=0.5)
    fig.suptitle(f"{table.suite} v{table.suite_version}, {T} tasks: non-dominated points", y=0.99)
    fig.tight_layout(pad=0.3)               # before the legend, which goes below the task names
    legend(fig, handles)
    return fig


# ---- HV against the number of tasks ---------------------------------------------------------------
def family(table: Table) -> str:
    """What tables must share to sit on one HV-against-T figure: suite, version, objective, settings."""
    cfg = {k: v for k, v in table.suite_config.items() if k not in SELECTION}
    return json.dumps([table.suite, table.suite_version, table.objective, cfg], sort_keys=True, default=str)


def ideal_hv(record: RunRecord) -> float:
    """HV of the ideal point (each task at its fine-tuned value) at the record's reference point."""
    ideal = to_minimization(record.reference_values("finetuned"), record.objective)
    return float(np.prod(record.ref_point - ideal))


def hv_tasks_figures(tables: list[Table], colours: dict[str, int]) -> list[tuple[str, object]]:
    """(file name, figure) per family of tables (see `family`) covering several numbers of tasks."""
    families: dict[str, list[Table]] = {}
    for t in tables:
        families.setdefault(family(t), []).append(t)
    figures = []
    for fam, ts in families.items():
        if len({len(t.tasks) for t in ts}) < 2:
            continue
        labels = group_labels([r for t in ts for r in t.records])
        series: dict[str, list[tuple[int, float, float]]] = {}      # config → (T, mean, std) per table
        by_ideal = False
        for t in ts:
            box = ideal_hv(t.records[0])
            for _, row in t.rows.iterrows():
                m, s = row["hv_normalized_mean"], row["hv_normalized_std"]
                if not np.isfinite(m):
                    m, s, by_ideal = row["hv_mean"] / box, row["hv_std"] / box, True
                if np.isfinite(m):
                    series.setdefault(row["config"], []).append((len(t.tasks), m, s))
        if not series:                      # no HV to scale: no fine-tuned references
            continue
        name = f"{ts[0].suite}-v{ts[0].suite_version}-{hashlib.sha256(fam.encode()).hexdigest()[:10]}-hv-tasks"
        figures.append((name, hv_tasks_figure(ts[0], series, labels, colours, by_ideal)))
    return figures


def hv_tasks_figure(table: Table, series: dict, labels: dict[str, str], colours: dict[str, int], by_ideal: bool):
    fig, ax = plt.subplots(figsize=(WIDTH, 2.0))
    order = sorted(series, key=lambda c: labels[c])
    handles = []
    for k, cfg in enumerate(order):
        st = style(colours[cfg])
        P = np.array(series[cfg], dtype=float)                         # [tables, (T, mean, std)]
        dx = (k - (len(order) - 1) / 2) * 0.05                          # side by side: error bars stay apart
        ax.errorbar(P[:, 0] + dx, P[:, 1], yerr=np.where(np.isfinite(P[:, 2]), P[:, 2], 0.0), ls="",
                    marker=st["marker"], color=st["color"], markersize=3, capsize=1.5, lw=0.8)
        Ts = np.unique(P[:, 0])
        ax.plot(Ts + dx, [P[P[:, 0] == T, 1].mean() for T in Ts], color=st["color"], lw=0.8)
        handles.append(Line2D([], [], label=labels[cfg], lw=0.8, markersize=3.5, **st))
    ax.set_xticks(sorted({T for pts in series.values() for T, _, _ in pts}))
    if all(m > 0 for pts in series.values() for _, m, _ in pts):
        ax.set_yscale("log")                # HV shrinks about geometrically with T: differences at large T stay visible
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("number of tasks T")
    ax.set_ylabel("HV / HV of the ideal point ↑" if by_ideal else "normalised HV ↑")
    ax.grid(alpha=0.25, lw=0.4)
    fig.suptitle(f"{table.suite} v{table.suite_version}: HV against the number of tasks", y=0.99)
    fig.tight_layout(pad=0.3)               # before the legend, which goes below the axis label
    legend(fig, handles)
    return fig
