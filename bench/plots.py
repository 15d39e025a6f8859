"""Figures from the run records under a results root: fronts, and HV against cost.

    python -m bench plot                                      # every suite → results/runs/figures
    python -m bench plot tasks=toy-quadratic figures=paper/figures out=results/runs

For each suite key (see `bench.report`) two figures, each as PNG and PDF, sized for one paper
column (3.3 in wide, 7 pt text), named `<suite>-v<version>-<T>t-<key hash>-{front,hv-cost}`:

* front: 2 tasks — every leaderboard row's points (faint) and its non-dominated staircase, the
  pre-trained model (×), each fine-tuned model on its own task (dotted lines; their crossing is the
  ideal point) and, for analytic suites, the true front (grey); 3 tasks — a 3-D scatter of the
  non-dominated points with the same references; more tasks — parallel coordinates of the
  non-dominated points, one axis per task, fine-tuned models as stars on their own axis.
* hv-cost: HV against evaluations and against wall time (log scale), mean ± std over seeds.

Objectives are drawn in their natural direction (accuracy: higher is better; loss: lower). A row
with several seeds draws its lowest seed in the front figure; the hv-cost figure uses all of them.
Records with `weights == "random"` are never drawn. Matplotlib with the Agg backend (no display).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from bench.front import to_minimization  # noqa: E402
from bench.record import RunRecord  # noqa: E402
from bench.registry import BenchError  # noqa: E402
from bench.report import Table, build_tables, by_suite_key, check_suite_name, config_key, leaderboard_records  # noqa: E402

WIDTH = 3.3                     # inches: one column of a two-column paper
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6,
         "xtick.labelsize": 6, "ytick.labelsize": 6, "lines.linewidth": 1.0, "axes.linewidth": 0.6,
         "pdf.fonttype": 42, "savefig.dpi": 300}
MARKERS = "osD^v<>pPhX*"
MAX_PARALLEL_LINES = 60         # per row, evenly thinned, so dense fronts stay readable


def stem(table: Table) -> str:
    return f"{table.suite}-v{table.suite_version}-{len(table.tasks)}t-{table.suite_key.rsplit(':', 1)[-1]}"


def style(i: int) -> dict:
    return {"color": plt.get_cmap("tab10")(i % 10), "marker": MARKERS[i % len(MARKERS)]}


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


def _axis_label(table: Table, i: int) -> str:
    arrow = "↑" if table.objective == "accuracy" else "↓"
    return f"{table.tasks[i]} {table.objective} {arrow}"


def _focus(ax, P: np.ndarray, margin: float = 0.06) -> None:
    """Axis limits around the non-dominated points and the references."""
    P = P[np.isfinite(P).all(axis=1)]
    if len(P) == 0:
        return
    lo, hi = P.min(axis=0), P.max(axis=0)
    pad = np.maximum((hi - lo) * margin, 1e-3)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])


def _legend(fig, handles, n_cols_hint: int = 2) -> None:
    labels = [h.get_label() for h in handles]
    ncol = n_cols_hint if max(map(len, labels), default=0) <= 30 else 1
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False,
               handlelength=1.6, columnspacing=1.0)


def _save(fig, figures: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        p = figures / f"{name}.{ext}"
        fig.savefig(p, bbox_inches="tight", pad_inches=0.02)
        paths.append(p)
    plt.close(fig)
    return paths


# ---- fronts -------------------------------------------------------------------------------------
def front_figure(table: Table, records: list[RunRecord]):
    reps = representatives(table, records)
    T, obj = len(table.tasks), table.objective
    pre, ft = reps[0].reference_values("pretrained"), reps[0].reference_values("finetuned")
    # the analytic front is stored in minimization form; to_minimization is an involution
    true_pf = to_minimization(table.ref.pf, obj) if table.ref.kind == "analytic" and table.ref.pf is not None else None
    handles = []
    if T == 2:
        fig, ax = plt.subplots(figsize=(WIDTH, 2.5))
        if true_pf is not None:
            o = np.argsort(true_pf[:, 0])
            ax.plot(true_pf[o, 0], true_pf[o, 1], color="0.6", lw=2.5, alpha=0.5, zorder=1)
            handles.append(Line2D([], [], color="0.6", lw=2.5, alpha=0.5, label="true front"))
        focus = [pre[None], ft[None]] + ([true_pf] if true_pf is not None else [])
        for i, (rec, label) in enumerate(zip(reps, table.rows["label"])):
            st = style(i)
            F, nd = points(rec)
            nd = nd[np.argsort(nd[:, 0])]
            focus.append(nd)
            ax.scatter(F[:, 0], F[:, 1], s=5, color=st["color"], marker=st["marker"], alpha=0.3, lw=0, zorder=2)
            ax.step(nd[:, 0], nd[:, 1], where="pre" if obj == "accuracy" else "post", color=st["color"], zorder=3)
            ax.scatter(nd[:, 0], nd[:, 1], s=12, color=st["color"], marker=st["marker"], lw=0, zorder=4)
            handles.append(Line2D([], [], label=label, **st, markersize=3.5))
        ax.scatter(*pre, marker="X", s=30, color="k", zorder=5)
        if np.isfinite(ft[0]):
            ax.axvline(ft[0], color="k", ls=":", lw=0.8)
        if np.isfinite(ft[1]):
            ax.axhline(ft[1], color="k", ls=":", lw=0.8)
        handles += [Line2D([], [], marker="X", color="k", ls="", markersize=4, label="pre-trained"),
                    Line2D([], [], color="k", ls=":", lw=0.8, label="fine-tuned (own task)")]
        _focus(ax, np.vstack(focus))     # dominated outliers far away would squash the fronts
        ax.set_xlabel(_axis_label(table, 0))
        ax.set_ylabel(_axis_label(table, 1))
        ax.grid(alpha=0.25, lw=0.4)
    elif T == 3:
        fig = plt.figure(figsize=(WIDTH, 2.8))
        ax = fig.add_subplot(projection="3d")
        if true_pf is not None:
            sub = true_pf[np.linspace(0, len(true_pf) - 1, min(len(true_pf), 600)).astype(int)]
            ax.scatter(*sub.T, s=1, color="0.6", alpha=0.35, depthshade=False)
            handles.append(Line2D([], [], color="0.6", marker=".", ls="", label="true front"))
        for i, (rec, label) in enumerate(zip(reps, table.rows["label"])):
            st = style(i)
            _, nd = points(rec)
            ax.scatter(*nd.T, s=8, color=st["color"], marker=st["marker"], depthshade=False, alpha=0.9)
            handles.append(Line2D([], [], label=label, ls="", **st, markersize=3.5))
        ax.scatter(*pre, marker="X", s=30, color="k", depthshade=False)
        ax.scatter(*ft, marker="*", s=40, color="k", depthshade=False)
        handles += [Line2D([], [], marker="X", color="k", ls="", markersize=4, label="pre-trained"),
                    Line2D([], [], marker="*", color="k", ls="", markersize=5, label="fine-tuned (ideal point)")]
        for i, setter in enumerate((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
            setter(_axis_label(table, i), labelpad=-6)
        ax.tick_params(pad=-3)
        ax.view_init(elev=22, azim=(-135 if obj == "loss" else 45))   # look at the front from the ideal side
    else:
        fig, ax = plt.subplots(figsize=(WIDTH, 2.3))
        x = np.arange(T)
        for i, (rec, label) in enumerate(zip(reps, table.rows["label"])):
            st = style(i)
            _, nd = points(rec)
            if len(nd) > MAX_PARALLEL_LINES:
                nd = nd[np.linspace(0, len(nd) - 1, MAX_PARALLEL_LINES).astype(int)]
            ax.plot(x, nd.T, color=st["color"], lw=0.6, alpha=max(0.15, min(0.8, 8 / max(len(nd), 1))))
            handles.append(Line2D([], [], color=st["color"], lw=1.0, label=f"{label} ({len(nd)} pts)"))
        ax.plot(x, pre, color="k", ls="--", lw=0.9, marker="X", markersize=3.5)
        ax.scatter(x, ft, marker="*", s=30, color="k", zorder=5)
        handles += [Line2D([], [], color="k", ls="--", marker="X", markersize=3.5, label="pre-trained"),
                    Line2D([], [], marker="*", color="k", ls="", markersize=5, label="fine-tuned (own task)")]
        ax.set_xticks(x, table.tasks, rotation=30 if T > 5 else 0)
        ax.set_xlim(-0.2, T - 0.8)
        ax.set_ylabel(f"{obj} {'↑' if obj == 'accuracy' else '↓'} (non-dominated points)")
        ax.grid(axis="x", alpha=0.5, lw=0.5)
    fig.suptitle(f"{table.suite} v{table.suite_version}, {T} tasks", y=0.99)
    _legend(fig, handles)
    return fig


# ---- HV against cost ----------------------------------------------------------------------------
def hv_cost_figure(table: Table):
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 1.7), sharey=True)
    rows = table.rows
    handles = []
    for i, (_, row) in enumerate(rows.iterrows()):
        st = style(i)
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
    _legend(fig, handles)
    fig.tight_layout(pad=0.3)
    return fig


def make_figures(out: str, figures: str | Path, suite: str | None = None) -> list[Path]:
    """Write every figure for the records under `out` into `figures`; returns the paths."""
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
    groups = by_suite_key(recs)
    paths = []
    with plt.rc_context(STYLE):
        for table in build_tables(recs):
            records = groups[table.suite_key]
            paths += _save(front_figure(table, records), figures, f"{stem(table)}-front")
            paths += _save(hv_cost_figure(table), figures, f"{stem(table)}-hv-cost")
    return paths


def cmd_plot(opts: dict) -> int:
    out = str(opts["out"])
    figures = Path(str(opts["figures"])) if opts["figures"] is not None else Path(out) / "figures"
    for p in make_figures(out, figures, None if opts["tasks"] is None else str(opts["tasks"])):
        print(p)
    return 0
