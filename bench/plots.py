"""Figures from the run records under a results root: fronts, and HV against cost and against T.

    python -m bench plot                                      # every suite → results/runs/figures
    python -m bench plot tasks=toy-quadratic figures=paper/figures out=results/runs

For each suite key (see `bench.report`), as PNG and PDF named `<suite>-v<version>-<T>t-<key hash>-<kind>`:

* front (2 or 3 tasks; one paper column, 3.3 in, 7 pt text): 2 tasks — every leaderboard row's
  points (faint) and its non-dominated staircase, the pre-trained model (×), each fine-tuned model
  on its own task (dotted lines; their crossing is the ideal point) and, for analytic suites, the
  true front (grey); 3 tasks — a 3-D scatter of the non-dominated points with the same references.
* pairs and parallel (4 tasks or more, `bench.plots_many`): the matrix of pairwise 2-task
  projections, and parallel coordinates of the normalised metrics.
* eaf (2 tasks, some row with several seeds; `bench.eaf`): per row, the spread of its fronts
  across seeds as empirical attainment surfaces (best, median, worst seed).
* hv-cost: HV against evaluations and against wall time (log scale), mean ± std over seeds.

and per suite whose records cover several numbers of tasks, `<suite>-v<version>-<hash>-hv-tasks`:
HV (normalised) against T (`bench.plots_many`).

Objectives are drawn in their natural direction (accuracy: higher is better; loss: lower). A row
with several seeds draws its lowest seed in the front figures; the HV figures use all of them. A
row keeps its colour and marker in every figure. Marks shrink and fade as a series grows (66+
points stay legible); legends sit outside the axes. Records with `weights == "random"` are never
drawn. Matplotlib with the Agg backend (no display); every file is written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from bench.front import to_minimization  # noqa: E402
from bench.record import RunRecord, atomic_write_bytes  # noqa: E402
from bench.registry import BenchError  # noqa: E402
from bench.report import Table, build_tables, by_suite_key, check_suite_name, config_key, leaderboard_records  # noqa: E402

WIDTH, WIDE = 3.3, 6.9          # inches: one column, and the full text width, of a two-column paper
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6,
         "xtick.labelsize": 6, "ytick.labelsize": 6, "lines.linewidth": 1.0, "axes.linewidth": 0.6,
         "pdf.fonttype": 42, "savefig.dpi": 300}
MARKERS = "osD^v<>pPhX*"


def palette(records: list[RunRecord]) -> dict[str, int]:
    """config key → style index, fixed over every figure of one `bench plot` (method order)."""
    return {k: i for i, (_, k) in enumerate(sorted({(r.method, config_key(r)) for r in records}))}


def style(i: int) -> dict:
    """Colour and marker of style index i: tab10 first, then tab20b and Dark2, so that a leaderboard's
    many configs (dozens in one `bench plot`) never share a colour below 38."""
    colours = [*plt.get_cmap("tab10").colors, *plt.get_cmap("tab20b").colors, *plt.get_cmap("Dark2").colors]
    return {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]}


def density(n: int) -> tuple[float, float]:
    """(marker area in pt², alpha) for a series of n points: dense series get smaller, fainter marks."""
    n = max(n, 1)
    return float(np.clip(12 * np.sqrt(15 / n), 3, 12)), float(np.clip(np.sqrt(20 / n), 0.35, 0.9))


def representatives(table: Table, records: list[RunRecord]) -> list[RunRecord]:
    """One record per leaderboard row (the lowest seed), in the table's row order."""
    out = []
    for cfg in table.rows["config"]:
        recs = [r for r in records if config_key(r) == cfg]
        out.append(min(recs, key=lambda r: (r.seed, r.run_id)))
    return out


def points(record: RunRecord) -> tuple[np.ndarray, np.ndarray]:
    """(every included finite point, its non-dominated ones), in the objective's natural direction."""
    V, nd = record.values[record.include], record.nondominated[record.include]
    ok = np.isfinite(V).all(axis=1)
    return V[ok], V[ok & nd]


def true_front(table: Table) -> np.ndarray | None:
    """The analytic front in the natural direction, or None (it is stored in minimization form;
    to_minimization is an involution)."""
    if table.ref.kind != "analytic" or table.ref.pf is None:
        return None
    return to_minimization(table.ref.pf, table.objective)


def arrow(objective: str) -> str:
    return "↑" if objective == "accuracy" else "↓"


def focus_range(values: np.ndarray, margin: float = 0.06) -> tuple[float, float] | None:
    """Axis limits around the finite `values` (fronts and references), or None."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return None
    pad = max((v.max() - v.min()) * margin, 1e-3)
    return v.min() - pad, v.max() + pad


def draw_front(ax, F: np.ndarray, nd: np.ndarray, st: dict, objective: str, small: bool = False) -> None:
    """2-D: every point (faint), the non-dominated ones `nd` (sorted by x) and their staircase;
    `small`: half-size marks, for the panels of a matrix."""
    size, alpha = density(len(nd))
    size *= 0.5 if small else 1.0
    ax.scatter(F[:, 0], F[:, 1], s=size * 0.4, color=st["color"], marker=st["marker"], alpha=alpha * 0.35, lw=0,
               zorder=2)
    ax.step(nd[:, 0], nd[:, 1], where="pre" if objective == "accuracy" else "post", color=st["color"],
            lw=0.8, alpha=max(alpha, 0.6), zorder=3)
    ax.scatter(nd[:, 0], nd[:, 1], s=size, color=st["color"], marker=st["marker"], alpha=alpha, lw=0, zorder=4)


def draw_references(ax, pre: np.ndarray, ft: np.ndarray, size: float = 30) -> None:
    """2-D: the pre-trained model (×) and each fine-tuned model on its own task (dotted lines)."""
    ax.scatter(*pre, marker="X", s=size, color="k", zorder=5)
    if np.isfinite(ft[0]):
        ax.axvline(ft[0], color="k", ls=":", lw=0.8)
    if np.isfinite(ft[1]):
        ax.axhline(ft[1], color="k", ls=":", lw=0.8)


def reference_handles(ideal: str = "fine-tuned (own task)") -> list[Line2D]:
    return [Line2D([], [], marker="X", color="k", ls="", markersize=4, label="pre-trained"),
            Line2D([], [], color="k", ls=":", lw=0.8, label=ideal)]


def legend(fig, handles, n_cols_hint: int = 2, **where) -> None:
    """The figure's legend, below the axes unless `where` (fig.legend's loc, bbox_to_anchor) says otherwise."""
    labels = [h.get_label() for h in handles]
    ncol = n_cols_hint if max(map(len, labels), default=0) <= 30 else 1
    where = where or {"loc": "upper center", "bbox_to_anchor": (0.5, 0.0)}
    fig.legend(handles=handles, ncol=ncol, frameon=False, handlelength=1.6, columnspacing=1.0, **where)


def save(fig, figures: Path, name: str) -> list[Path]:
    # one tight box for both formats: bbox_inches="tight" would lay the figure out again for each
    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.02)
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, bbox_inches=bbox)
        atomic_write_bytes(figures / f"{name}.{ext}", buf.getvalue())
        paths.append(figures / f"{name}.{ext}")
    plt.close(fig)
    return paths


# ---- fronts (2 or 3 tasks) -------------------------------------------------------------------
def front_figure(table: Table, records: list[RunRecord], colours: dict[str, int]):
    reps = representatives(table, records)
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
    else:                               # 3 tasks; bench.plots_many draws more
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


def make_figures(out: str, figures: str | Path, suite: str | None = None) -> list[Path]:
    """Write every figure for the records under `out` into `figures`; returns the paths."""
    from bench import eaf, plots_many  # they draw with this module's helpers

    check_suite_name(suite, out)
    recs = leaderboard_records(out, suite)
    if not recs:
        where = f" for tasks={suite}" if suite else ""
        raise BenchError(f"no records{where} under out={out!r}; write some with `python -m bench run out={out}`")
    figures = Path(figures)
    try:
        figures.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"figures={str(figures)!r} is not writable ({e.strerror or e})") from None
    groups, colours = by_suite_key(recs), palette(recs)
    tables = build_tables(recs, resamples=0)      # the figures draw no bootstrap interval
    paths = []
    with plt.rc_context(STYLE):
        for table in tables:
            records, name = groups[table.suite_key], table.stem
            if len(table.tasks) <= 3:
                paths += save(front_figure(table, records, colours), figures, f"{name}-front")
            else:
                paths += save(plots_many.pairs_figure(table, records, colours), figures, f"{name}-pairs")
                paths += save(plots_many.parallel_figure(table, records, colours), figures, f"{name}-parallel")
            if len(table.tasks) == 2 and (table.rows["n"] > 1).any():
                paths += save(eaf.eaf_figure(table, records, colours), figures, f"{name}-eaf")
            paths += save(hv_cost_figure(table, colours), figures, f"{name}-hv-cost")
        for name, fig in plots_many.hv_tasks_figures(tables, recs, colours):
            paths += save(fig, figures, name)
    return paths


def cmd_plot(opts: dict) -> int:
    out = str(opts["out"])
    figures = Path(str(opts["figures"])) if opts["figures"] is not None else Path(out) / "figures"
    for p in make_figures(out, figures, None if opts["tasks"] is None else str(opts["tasks"])):
        print(p)
    return 0
