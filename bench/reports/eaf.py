"""Empirical attainment across seeds: the spread of 2-task fronts, not only a mean HV.

    >>> import numpy as np
    >>> F = np.array([[0.1, 0.9], [0.5, 0.5], [0.2, 0.8], [0.6, 0.3]])    # seed 0: rows 0-1, seed 1: rows 2-3
    >>> surfaces(F, np.array([0, 0, 1, 1]), levels=[1, 2])[2]          # attained by both seeds
    array([[0.2, 0.9],
           [0.5, 0.8],
           [0.6, 0.5]])

The empirical attainment function (EAF; Fonseca, Guerreiro, López-Ibáñez & Paquete 2011, moocore's
`eaf`) of n fronts gives, for every objective vector z, the share of the fronts that weakly
dominate z. Its k/n-level set (the k-attainment surface) bounds what at least k of the n seeds
reached. `bench plot` draws, for a 2-task suite key where some row has several seeds, one panel
per leaderboard row (`<stem>-eaf`): the band between the best (1/n) and the worst (n/n)
attainment surfaces, the median surface (⌈n/2⌉/n) as a line, and the other rows' medians in grey
for comparison; the fine-tuned models (dotted) as in the front figure. Objectives are drawn in their
natural direction (accuracy ↑); rows with one seed show that seed's front alone.
"""
from __future__ import annotations

import math

import moocore
import numpy as np

from bench.reports.figstyle import WIDE, WIDTH, arrow, focus_range, legend, plt, style
from bench.core.front import to_minimization
from bench.core.record import RunRecord
from bench.reports.tables import Table

from matplotlib.lines import Line2D  # noqa: E402  (after bench.reports.figstyle: the Agg backend is chosen there)
from matplotlib.patches import Patch  # noqa: E402


def surfaces(F: np.ndarray, sets: np.ndarray, levels: list[int]) -> dict[int, np.ndarray]:
    """{k: [m, 2] the k-attainment surface's corner points (minimization, sorted by the first
    objective)} of the fronts F (rows labelled by `sets`), for each k in `levels`."""
    n = len(np.unique(sets))
    out = {}
    for k in levels:
        E = moocore.eaf(F, sets, percentiles=[100.0 * k / n])
        S = E[:, :2]
        out[k] = S[np.lexsort((S[:, 1], S[:, 0]))]
    return out


def staircase(S: np.ndarray, x: np.ndarray, bound: float) -> np.ndarray:
    """The attainment surface S (minimization) as a function of the first objective on the grid
    x: the best second objective among corners with first objective ≤ x; `bound` left of them all."""
    idx = np.searchsorted(S[:, 0], x, side="right") - 1
    y = np.minimum.accumulate(S[:, 1])[np.maximum(idx, 0)] if len(S) else np.full(len(x), bound)
    return np.where(idx >= 0, y, bound)


def row_fronts(records: list[RunRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(included finite points of every seed stacked, their seed labels), minimization form."""
    Fs = [(r.F_included[np.isfinite(r.F_included).all(axis=1)], r.seed) for r in records]
    return np.vstack([F for F, _ in Fs]), np.concatenate([np.full(len(F), s) for F, s in Fs])


def eaf_figure(table: Table, colours: dict[str, int]):
    """One panel per leaderboard row: best–worst attainment band, median surface, other rows' medians."""
    obj = table.objective
    natural = lambda F: to_minimization(F, obj)              # an involution: back to the natural direction
    rows = list(zip(table.rows["config"], table.rows["label"]))
    per_row = {}
    for cfg, _ in rows:
        F, sets = row_fronts(table.runs[cfg])
        n = len(np.unique(sets))
        per_row[cfg] = (n, surfaces(F, sets, sorted({1, math.ceil(n / 2), n})))
    allS = np.vstack([S for _, ss in per_row.values() for S in ss.values()])
    lo, hi = allS.min(axis=0), allS.max(axis=0)
    pad = np.maximum((hi - lo) * 0.05, 1e-3)
    x = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 600)
    bound = hi[1] + pad[1]
    ncol = min(4, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(WIDE if ncol > 2 else WIDTH, 1.55 * nrow + 0.3),
                             sharex=True, sharey=True, squeeze=False)
    ft = table.records[0].reference_values("finetuned")     # natural direction already
    medians = {cfg: natural(np.c_[x, staircase(ss[math.ceil(n / 2)], x, bound)]) for cfg, (n, ss) in per_row.items()}
    for ax, (cfg, label) in zip(axes.flat, rows):
        n, ss = per_row[cfg]
        st = style(colours[cfg])
        for other, M in medians.items():
            if other != cfg:
                ax.plot(M[:, 0], M[:, 1], color="0.75", lw=0.6, zorder=1)
        best, worst = (natural(np.c_[x, staircase(ss[k], x, bound)]) for k in (1, n))
        ax.fill_between(best[:, 0], best[:, 1], worst[:, 1], color=st["color"], alpha=0.25, lw=0, zorder=2)
        ax.plot(medians[cfg][:, 0], medians[cfg][:, 1], color=st["color"], lw=1.0, zorder=3)
        for i, line in enumerate((ax.axvline, ax.axhline)):
            if np.isfinite(ft[i]):
                line(ft[i], color="k", ls=":", lw=0.7)
        ax.set_title(f"{label} (n={n})", fontsize=6)
        ax.grid(alpha=0.25, lw=0.4)
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    P = natural(allS)                           # the fine-tuned lines only where they fall inside
    for axis, setter in enumerate((axes[0, 0].set_xlim, axes[0, 0].set_ylim)):
        if (lim := focus_range(P[:, axis])) is not None:
            setter(*lim)
    for ax in axes[-1]:
        ax.set_xlabel(f"{table.tasks[0]} {obj} {arrow(obj)}")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{table.tasks[1]} {obj} {arrow(obj)}")
    fig.suptitle(f"{table.suite} v{table.suite_version}: attainment across seeds", y=1.0)
    legend(fig, [Patch(color="0.5", alpha=0.3, label="best–worst seed (1/n … n/n attainment)"),
                 Line2D([], [], color="0.3", lw=1.0, label="median attainment surface"),
                 Line2D([], [], color="0.75", lw=0.6, label="other rows' medians"),
                 Line2D([], [], color="k", ls=":", lw=0.7, label="fine-tuned (own task)")])
    fig.tight_layout(pad=0.3)
    return fig
