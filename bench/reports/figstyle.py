"""What every figure shares: paper sizes, each row's colour and marker, fronts and references drawn
alike, one tight box saved as PNG and PDF. Used by `bench.reports.plots`, `bench.reports.plots_many` and `bench.reports.eaf`.

    >>> len({style(i)["color"] for i in range(38)}), style(38)["color"] == style(0)["color"]
    (38, True)
    >>> density(15), density(240)                    # (marker area pt², alpha): dense series fade
    ((12.0, 0.9), (3.0, 0.35))

Matplotlib with the Agg backend (no display), chosen here before pyplot is imported; every file is
written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bench.core.front import to_minimization  # noqa: E402
from bench.core.record import RunRecord, atomic_write_bytes  # noqa: E402
from bench.reports.tables import Table  # noqa: E402

WIDTH, WIDE = 3.3, 6.9          # inches: one column, and the full text width, of a two-column paper
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6,
         "xtick.labelsize": 6, "ytick.labelsize": 6, "lines.linewidth": 1.0, "axes.linewidth": 0.6,
         "pdf.fonttype": 42, "savefig.dpi": 300}
MARKERS = "osD^v<>pPhX*"


def palette(tables: list[Table]) -> dict[str, int]:
    """Row config → style index, fixed over every figure of one leaderboard (method, then config order)."""
    rows = {(m, c) for t in tables for m, c in zip(t.rows["method"], t.rows["config"])}
    return {c: i for i, (_, c) in enumerate(sorted(rows))}


def style(i: int) -> dict:
    """Colour and marker of style index i: tab10 first, then tab20b and Dark2, so that a leaderboard's
    many configs (dozens in one `bench plot`) never share a colour below 38."""
    colours = [*plt.get_cmap("tab10").colors, *plt.get_cmap("tab20b").colors, *plt.get_cmap("Dark2").colors]
    return {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]}


def density(n: int) -> tuple[float, float]:
    """(marker area in pt², alpha) for a series of n points: dense series get smaller, fainter marks."""
    n = max(n, 1)
    return float(np.clip(12 * np.sqrt(15 / n), 3, 12)), float(np.clip(np.sqrt(20 / n), 0.35, 0.9))


def representatives(table: Table) -> list[RunRecord]:
    """One record per leaderboard row (the lowest seed), in the table's row order."""
    return [table.runs[cfg][0] for cfg in table.rows["config"]]       # a row's runs are by seed, run id


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
