"""Bootstrap over test examples: how much of a leaderboard's HV is test-set sampling.

    >>> import numpy as np
    >>> W = resample_weights({"a": 4}, B=3, seed=0)          # [B, n] weights of each test example
    >>> W["a"].shape, np.allclose(W["a"].sum(axis=1), 1.0)
    ((3, 4), True)

Every record of an accuracy suite keeps each test point's per-example correctness (examples.npz,
`bench.core.record.load_examples`). A resample b draws each task's test examples with replacement; a
point's accuracy under b is its correctness weighted by the draw's counts, its HV and normalised
HV are recomputed from those accuracies (`bench.core.indicators.Context`, the suite's reference point).
The draws are made once per table and shared by every record in it: every method is scored on the
same test examples, so differences between rows are paired. A row's value under b is the mean over
its seeds (repeats of one seed averaged first), as its table cell. Fine-tuned accuracies (the
normalised HV's scale) are held fixed: only the methods' points are resampled.

`annotate` adds to a table's rows the 95 % percentile interval of each bootstrapped column and
whether the row differs from the column's best row: not significantly where the 95 % interval of
the paired difference (best − row) contains 0.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from bench.core import indicators
from bench.core.record import RunRecord, load_examples

METRICS = ("hv", "hv_normalized")
LEVEL = 0.95
RESAMPLES = 1000            # enough for stable 2.5/97.5 % percentiles (± ~0.1 of the interval's width)


def resample_weights(n_examples: dict[str, int], B: int = RESAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """{task: [B, n] example weights (draw counts / n)}; the same `seed` gives the same draws, so
    every record of a table is resampled alike (a task's stream depends on its name, not its order)."""
    out = {}
    for t, n in n_examples.items():
        rng = np.random.default_rng([seed, int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)])
        out[t] = rng.multinomial(n, np.full(n, 1.0 / n), size=B).astype(np.float32) / n
    return out


def record_samples(record: RunRecord, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """{metric: [B] values under each resample} of one record; None where it cannot be resampled
    (no examples.npz, not an accuracy suite, a test set of another size than the table's draws)."""
    loaded = load_examples(record) if record.objective == "accuracy" else None
    if loaded is None or any(t not in loaded[1] or loaded[1][t].shape[1] != weights[t].shape[1]
                             for t in record.tasks):
        return None
    idx, correct = loaded
    B = next(iter(weights.values())).shape[0]
    # [B, n, T]: points without examples (none measured on test) keep their measured values
    F = np.repeat(record.F[None], B, axis=0)
    for k, t in enumerate(record.tasks):
        F[:, idx, k] = 1.0 - weights[t] @ correct[t].T.astype(np.float32)
    finetuned = record.reference_values("finetuned")
    out = {m: np.empty(B) for m in METRICS}
    for b in range(B):
        ctx = indicators.Context(F[b][record.include], record.ref_point, objective="accuracy",
                                 finetuned=finetuned if np.isfinite(finetuned).all() else None)
        out["hv"][b] = ctx.hv.value
        out["hv_normalized"][b] = np.nan if ctx.hv_normalized is None else ctx.hv_normalized.value
    return out


def table_n_examples(records: list[RunRecord]) -> dict[str, int] | None:
    """{task: test examples} of the first record that has examples.npz, or None."""
    for r in records:
        loaded = load_examples(r) if r.objective == "accuracy" else None
        if loaded is not None:
            return {t: int(c.shape[1]) for t, c in loaded[1].items()}
    return None


def group_samples(records: list[RunRecord], config_of, B: int = RESAMPLES, seed: int = 0) -> dict[str, dict]:
    """{config: {metric: [B]}}: each group's mean over seeds under every resample (repeats of one
    seed averaged first); groups with a record that cannot be resampled are left out."""
    n = table_n_examples(records)
    if n is None or B <= 0:
        return {}
    weights = resample_weights(n, B, seed)
    per_seed: dict[str, dict[int, list]] = {}
    broken: set[str] = set()
    for r in records:
        s = record_samples(r, weights)
        if s is None:
            broken.add(config_of(r))
        else:
            per_seed.setdefault(config_of(r), {}).setdefault(r.seed, []).append(s)
    return {c: {m: np.mean([np.mean([s[m] for s in reps], axis=0) for reps in seeds.values()], axis=0)
                for m in METRICS}
            for c, seeds in per_seed.items() if c not in broken}


def annotate(rows: pd.DataFrame, samples: dict[str, dict]) -> pd.DataFrame:
    """Add `<m>_lo`, `<m>_hi` (the 95 % interval) and `<m>_ns` (not significantly different from
    the column's best row; False for the best row itself and rows without samples) for each metric."""
    lo_q, hi_q = 50 * (1 - LEVEL), 50 * (1 + LEVEL)
    rows = rows.copy()
    for m in METRICS:
        S = [samples.get(c, {}).get(m) for c in rows["config"]]
        ok = [s is not None and np.isfinite(s).all() for s in S]
        rows[f"{m}_lo"] = [np.percentile(s, lo_q) if k else np.nan for s, k in zip(S, ok)]
        rows[f"{m}_hi"] = [np.percentile(s, hi_q) if k else np.nan for s, k in zip(S, ok)]
        means = np.where(ok, rows[f"{m}_mean"].to_numpy(dtype=float), -np.inf)
        ns = np.zeros(len(rows), dtype=bool)
        if sum(ok) > 1:
            best = int(np.argmax(means))
            for i, k in enumerate(ok):
                if k and i != best:
                    d = S[best] - S[i]
                    ns[i] = np.percentile(d, lo_q) <= 0.0 <= np.percentile(d, hi_q)
        rows[f"{m}_ns"] = ns
    return rows
