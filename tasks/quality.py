"""Quality bars of the offline suites (issue 3), shared by tiny-clip and tiny-gpt2.

    bars = quality_bars(suite)             # through the Evaluator; printed by each build
    print(format_bars("tiny-clip", bars, timings))

On the test split: every fine-tuned model ≥ 0.90 on its own task; θ0 (with the task's head) ≥ 0.10
lower; for every pair of tasks the best point of the shared-λ task-arithmetic line (max mean accuracy
over λ ∈ linspace(0, 1, 11), other tasks at 0) ≥ 0.05 below each fine-tuned model; and the per-task
11 × 11 grid has ≥ 3 non-dominated points (`pair_grid`, checked in the tests).
"""
from __future__ import annotations

import itertools

import numpy as np

from bench.api import task_arithmetic

LINE = np.linspace(0.0, 1.0, 11)
BAR_FINETUNED, BAR_GAP, BAR_LINE, BAR_GRID_ND = 0.90, 0.10, 0.05, 3


def line_coefficients(T: int, i: int, j: int, points=LINE) -> np.ndarray:
    """[len(points), T]: the shared-λ task-arithmetic line of tasks i and j (other tasks at 0)."""
    lam = np.zeros((len(points), T))
    lam[:, i] = lam[:, j] = points
    return lam


def ta_metrics(suite, evaluator, lam: np.ndarray, tasks: list[str], split: str = "test") -> dict:
    """Metrics of θ0 + Σ λ_i τ_i on `tasks`, keyed as ta_grid keys it (repeats are free)."""
    theta0, tv = suite.theta0(), suite.task_vectors()
    return evaluator.evaluate(lambda: task_arithmetic(theta0, tv, lam), split,
                              key=("ta", tuple(np.round(lam, 12))), tasks=tasks)


def pair_line(suite, evaluator, a: str, b: str, points=LINE[1:], split: str = "test") -> np.ndarray:
    """[len(points), 2] accuracies on (a, b) of θ0 + λ(τ_a + τ_b) (every other task at 0)."""
    i, j = suite.tasks.index(a), suite.tasks.index(b)
    acc = []
    for lam in line_coefficients(suite.num_tasks, i, j, points):
        m = ta_metrics(suite, evaluator, lam, [a, b], split)
        acc.append([m[a]["accuracy"], m[b]["accuracy"]])
    return np.array(acc)


def quality_bars(suite, evaluator, lines: dict | None = None) -> dict:
    """The bars above. `lines` ({"a+b": accuracies at λ = 0.1 … 1}, e.g. from build workers) are
    traced here when missing; λ = 0 is θ0 itself."""
    from bench.core.evaluator import references

    refs = references(evaluator)
    pre = {t: refs["pretrained"][t]["accuracy"] for t in suite.tasks}
    ft = {t: refs["finetuned"][t]["accuracy"] for t in suite.tasks}
    out = {"pretrained": pre, "finetuned": ft,
           "finetuned_ok": all(ft[t] >= BAR_FINETUNED for t in suite.tasks),
           "gap_ok": all(ft[t] - pre[t] >= BAR_GAP for t in suite.tasks), "pairs": {}}
    for a, b in itertools.combinations(suite.tasks, 2):
        rest = (lines or {}).get(f"{a}+{b}")
        acc = np.vstack([[pre[a], pre[b]], rest if rest is not None else pair_line(suite, evaluator, a, b)])
        best = int(np.argmax(acc.mean(1)))
        gaps = [ft[a] - acc[best, 0], ft[b] - acc[best, 1]]
        out["pairs"][f"{a}+{b}"] = {"line": acc.tolist(), "best_lambda": round(float(LINE[best]), 2),
                                    "gap": [round(float(g), 4) for g in gaps], "ok": bool(min(gaps) >= BAR_LINE)}
    out["line_ok"] = all(p["ok"] for p in out["pairs"].values())
    return out


def pair_grid(suite, evaluator, a: str, b: str, points=LINE, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The per-task grid λ_a × λ_b (others 0): coefficients [n, 2] and accuracies [n, 2]."""
    i, j = suite.tasks.index(a), suite.tasks.index(b)
    X, acc = [], []
    for la, lb in itertools.product(points, points):
        lam = np.zeros(suite.num_tasks)
        lam[i], lam[j] = la, lb
        m = ta_metrics(suite, evaluator, lam, [a, b], split)
        X.append((la, lb))
        acc.append((m[a]["accuracy"], m[b]["accuracy"]))
    return np.array(X), np.array(acc)


def format_bars(name: str, bars: dict, timings: dict) -> str:
    pre, ft = bars["pretrained"], bars["finetuned"]
    lines = [f"{name} quality bars (test accuracy)", f"{'task':<10}{'θ0':>8}{'θ_i':>8}{'gap':>8}"]
    for t in ft:
        lines.append(f"{t:<10}{pre[t]:>8.3f}{ft[t]:>8.3f}{ft[t] - pre[t]:>8.3f}")
    gaps = [min(p["gap"]) for p in bars["pairs"].values()]
    worst = min(bars["pairs"].items(), key=lambda kv: min(kv[1]["gap"]))[0] if gaps else "-"
    lines.append(f"fine-tuned ≥ {BAR_FINETUNED}: {bars['finetuned_ok']}   θ0 ≥ {BAR_GAP} lower: {bars['gap_ok']}   "
                 f"TA line best point ≥ {BAR_LINE} below on all {len(gaps)} pairs: {bars['line_ok']} "
                 f"(smallest gap {min(gaps, default=float('nan')):.3f}, {worst})")
    lines.append("build time: " + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f}s" for k, v in timings.items()))
    return "\n".join(lines)
