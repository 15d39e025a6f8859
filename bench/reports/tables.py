"""The leaderboard's data: the records under a results root, read once, in one table per suite key.

    >>> lb = load_leaderboard("results/runs", resamples=200)    # doctest: +SKIP
    >>> [(t.title, len(t.rows)) for t in lb.tables]             # doctest: +SKIP

`load_leaderboard` reads the records once into a `Leaderboard`; every renderer takes that object
and reads nothing else: `bench.reports.report.render` (md, latex, csv), `bench.reports.html.write_html` (the web
page), `bench.reports.plots.write_figures` (the figures), `bench.reports.leaderboard.main_tables` (the README block).

One table per suite key (records whose `suite_key` is equal are comparable: same suite, tasks,
settings and version). One row per method and notable config: records are grouped by method +
their resolved config minus `seed`, `out`, `run_id` and `tasks` (the suite is already fixed by the
key); a row label names the fewest config values that tell one method's rows apart (the csv
format carries the full config). Where a row has several records (seeds) the cells read
mean ± sample standard deviation (ddof = 1); the best mean per column is marked (bold in md and
LaTeX) when the column's values are not all tied. HV and normalised HV also carry a 95 % bootstrap
interval over test examples, [lo, hi], and ≈ where a row's difference from the column's best is
not significant (paired bootstrap on the same examples; bench/reports/bootstrap.py), computed once here.
Columns: HV ↑, normalised HV ↑, IGD+ ↓, points on the front (non-dominated) ↑, evaluations ↓,
training steps ↓, trainable parameters ↓, wall seconds ↓, peak memory MB ↓.
Records with `weights == "random"` (speed/memory benchmarks) never enter a leaderboard.

Indicators: HV and normalised HV are the record's own (the suite's reference point; normalised HV
exists for accuracy suites only). IGD+ is recomputed here for every record against the table's
reference front (`bench.reports.reference`), stated (kind, size, hash) under the table: for analytic suites
the closed-form front, rebuilt from the suite registry with the record's `suite_config` (its hash
is checked against the record's `igd_ref`); otherwise the non-dominated union of the included
points of every record of the suite key, so every row is measured against the same front.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bench.reports import bootstrap

from bench.core import indicators
from bench.core.record import RunRecord, load_records
from bench.reports.reference import RefFront, reference_front
from bench.core.registry import INDICATORS, SUITES, BenchError, unknown_choice

IGNORED_CONFIG = ("seed", "out", "run_id", "tasks")


@dataclass(frozen=True)
class Column:
    key: str
    header: str                 # markdown / csv-friendly
    latex: str
    higher_is_better: bool
    kind: str = "float"         # float | int | seconds | mb


def indicator_column(name: str) -> Column:
    """A table column from the indicator's registered metadata (label, direction, kind)."""
    i = INDICATORS.get(name)
    return Column(name, i.label, i.latex, bool(i.higher_is_better), i.kind)


COLUMNS = (
    *(indicator_column(n) for n in ("hv", "hv_normalized", "igd_plus", "n_nondominated")),
    Column("evaluations", "evals", "evals", False, "int"),
    Column("train_steps", "train steps", "steps", False, "int"),
    Column("trainable_params", "params", "params", False, "int"),
    Column("wall_s", "wall s", "wall (s)", False, "seconds"),
    Column("peak_mem_mb", "peak MB", "mem (MB)", False, "mb"),
)
METRICS = [c.key for c in COLUMNS]


@dataclass
class Table:
    suite: str
    suite_key: str
    suite_version: str
    tasks: list[str]
    objective: str
    suite_config: dict
    rows: pd.DataFrame              # one row per group: config, label, method, n, seeds, <m>_mean/_std/_best,
                                    # hv[_normalized]_lo/_hi/_ns (bootstrap interval, not significantly worse)
    ref: RefFront
    papers: dict[str, str]          # method → "paper (url)", in footnote order
    mem_kinds: list[str] = field(default_factory=list)
    resamples: int = 0              # bootstrap resamples behind the intervals (0: none)
    analytic: bool = False          # the suite has a closed-form front
    records: list[RunRecord] = field(default_factory=list)           # the suite key's, by method, seed, run id
    runs: dict[str, list[RunRecord]] = field(default_factory=dict)   # row config → its records, by seed, run id

    @property
    def eval_size(self) -> int | None:
        """Val/test examples per task where the records were scored on a subset (`tasks.eval_size`), else None."""
        return self.suite_config.get("eval_size")

    @property
    def title(self) -> str:
        subset = f" [eval subset ≤ {self.eval_size}/task]" if self.eval_size is not None else ""
        return f"{self.suite} v{self.suite_version}: {', '.join(self.tasks)}{subset}"

    @property
    def stem(self) -> str:
        """File-name stem of the table's figures and id of its page section: suite, version, T, key hash."""
        return f"{self.suite}-v{self.suite_version}-{len(self.tasks)}t-{self.suite_key.rsplit(':', 1)[-1]}"


@dataclass(frozen=True)
class Leaderboard:
    """The records under one results root, read once, and what every renderer reads from them."""
    out: str
    suite: str | None               # tasks=: one suite, or None for all
    resamples: int                  # bootstrap resamples behind the tables' intervals (0: none)
    records: list[RunRecord]        # every leaderboard record, as read (random-weight runs dropped)
    tables: list[Table]             # one per suite key: rows, intervals, reference front, records


# ---- loading and grouping ------------------------------------------------------------------
def load_leaderboard(out: str, suite: str | None = None, resamples: int = bootstrap.RESAMPLES) -> Leaderboard:
    """Every readable record under `out` (one suite's with `suite`), read once, in tables with
    `resamples` bootstrap resamples behind their intervals (0: none, e.g. for figures). A suite
    that is neither registered nor under `out`, or no records at all, is a one-line BenchError."""
    out, suite, resamples = str(out), None if suite is None else str(suite), int(resamples)
    if resamples < 0:
        raise BenchError(f"resamples={resamples} must be ≥ 0 (0: no bootstrap interval)")
    loaded = load_records(out)
    if suite is not None:
        known = sorted(set(SUITES.names()) | {r.suite for r in loaded})
        if suite not in known:
            raise BenchError(unknown_choice("suite", suite, known))
    records = [r for r in loaded if r.weights != "random" and suite in (None, r.suite)]
    if not records:
        where = f" for tasks={suite}" if suite else ""
        raise BenchError(f"no records{where} under out={out!r}; write some with `python -m bench run out={out}`")
    return Leaderboard(out, suite, resamples, records, build_tables(records, resamples))


def by_suite_key(records: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """suite_key → its records, ordered by suite name, number of tasks, key."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.suite_key, []).append(r)
    order = sorted(groups, key=lambda k: (groups[k][0].suite, len(groups[k][0].tasks), k))
    return {k: sorted(groups[k], key=lambda r: (r.method, r.seed, r.run_id)) for k in order}


def flat_config(record: RunRecord) -> dict[str, Any]:
    """The record's resolved config minus seed/out/run_id/tasks, flattened to dotted keys."""
    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    cfg = {k: v for k, v in record.config.items() if k not in IGNORED_CONFIG}
    cfg.setdefault("method", {}).setdefault("name", record.method)
    return dict(walk(cfg))


def config_key(record: RunRecord) -> str:
    return json.dumps(flat_config(record), sort_keys=True, default=str)


def group_labels(records: list[RunRecord]) -> dict[str, str]:
    """config_key → row label: the method, plus the fewest config values that tell that method's
    rows apart (e.g. `ta_grid (mode=grid)`); a method with one config is its name. The csv output
    carries each row's full config."""
    by_method: dict[str, dict[str, dict]] = {}
    for r in records:
        by_method.setdefault(r.method, {})[config_key(r)] = flat_config(r)
    labels = {}
    for method, cfgs in by_method.items():
        keys = list(dict.fromkeys(k for c in cfgs.values() for k in c))        # config order (mode first …)
        distinct = {k: len({_fmt_value(c.get(k)) for c in cfgs.values()}) for k in keys}
        # the fewest keys that tell the rows apart: most discriminating first, ties in config order
        varying: list[str] = []
        for k in sorted((k for k in keys if distinct[k] > 1), key=lambda k: -distinct[k]):
            if len({tuple(_fmt_value(c.get(v)) for v in varying) for c in cfgs.values()}) == len(cfgs):
                break
            varying.append(k)
        varying.sort(key=keys.index)
        for ck, c in cfgs.items():
            parts = [f"{k.removeprefix('method.')}={_fmt_value(c.get(k))}" for k in varying]
            labels[ck] = f"{method} ({', '.join(parts)})" if parts else method
    return labels


def _fmt_value(v) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else str(v)


# ---- the numbers of one record -----------------------------------------------------------------
def record_metrics(record: RunRecord, ref: RefFront) -> dict[str, float]:
    """The table's numbers for one record; IGD+ against `ref`."""
    ind, cost = record.indicators, record.cost
    ctx = indicators.Context(record.F_included, record.ref_point, pf=ref.pf)
    igd_plus = ind.get("igd_plus") if ref.kind == "record" else INDICATORS.get("igd_plus")(ctx)
    vals = {"hv": ind.get("hv"), "hv_normalized": ind.get("hv_normalized"), "igd_plus": igd_plus,
            "n_nondominated": INDICATORS.get("n_nondominated")(ctx),
            **{k: cost.get(k) for k in ("evaluations", "train_steps", "trainable_params", "wall_s", "peak_mem_mb")}}
    return {k: (np.nan if v is None else float(v)) for k, v in vals.items()}


def method_paper(record: RunRecord) -> str:
    """The footnote of a record's method: its paper and link (older records: the class's link)."""
    from bench.core.registry import METHODS

    url = record.method_url or (getattr(METHODS.get(record.method), "url", "") if record.method in METHODS else "")
    return f"{record.method_paper} ({url})" if record.method_paper and url else record.method_paper


# ---- the tables --------------------------------------------------------------------------------
def build_tables(records: list[RunRecord], resamples: int = bootstrap.RESAMPLES) -> list[Table]:
    """One Table per suite key (`load_leaderboard` is the way in: records read once)."""
    tables = []
    for key, recs in by_suite_key(records).items():
        ref = reference_front(recs)
        labels = group_labels(recs)
        configs = [config_key(r) for r in recs]
        df = pd.DataFrame([{"config": c, "label": labels[c], "method": r.method,
                            "seed": r.seed, **record_metrics(r, ref)} for r, c in zip(recs, configs)])
        runs = df.groupby("config", sort=False).size()
        # repeated runs of one (config, seed) are averaged first: they are repeats, not more seeds
        df = df.groupby(["config", "seed"], sort=False).agg(
            {"label": "first", "method": "first", **{m: "mean" for m in METRICS}}).reset_index()
        g = df.groupby("config", sort=False)
        rows = g[["label", "method"]].first()
        rows["n"] = g.size()
        rows["runs"] = runs
        rows["seeds"] = g["seed"].apply(lambda s: ",".join(str(x) for x in sorted(s.dropna().astype(int))))
        agg = g[METRICS].agg(["mean", "std"])                 # pandas std: ddof = 1, NaN for one seed
        for m in METRICS:
            rows[f"{m}_mean"] = agg[(m, "mean")]
            rows[f"{m}_std"] = agg[(m, "std")]
        for c in COLUMNS:
            rows[f"{c.key}_best"] = best_mask(rows[f"{c.key}_mean"].to_numpy(dtype=float), c.higher_is_better)
        rows = rows.sort_values(["hv_mean", "label"], ascending=[False, True], na_position="last").reset_index()
        config_of = dict(zip(map(id, recs), configs))
        rows = bootstrap.annotate(rows, bootstrap.group_samples(recs, lambda r: config_of[id(r)], resamples))
        papers: dict[str, str] = {}
        for m in rows["method"]:
            p = method_paper(next(r for r in recs if r.method == m))
            if p and m not in papers:
                papers[m] = p
        runs: dict[str, list[RunRecord]] = {}
        for r, c in zip(recs, configs):            # recs are by method, seed, run id: a row's by seed, run id
            runs.setdefault(c, []).append(r)
        first = recs[0]
        tables.append(Table(first.suite, key, first.suite_version or "?", list(first.tasks), first.objective,
                            dict(first.suite_config), rows, ref, papers,
                            sorted({r.cost.get("peak_mem_kind", "?") for r in recs}),
                            resamples if rows["hv_lo"].notna().any() else 0, bool(first.analytic), recs, runs))
    return tables


def best_mask(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Rows holding the best finite value; nothing is marked when all finite values tie."""
    ok = np.isfinite(values)
    mask = np.zeros(len(values), dtype=bool)
    if ok.sum() < 2:
        return mask
    best = values[ok].max() if higher_is_better else values[ok].min()
    is_best = ok & np.isclose(values, best, rtol=1e-12, atol=0.0)
    return mask if is_best[ok].all() else is_best


# ---- formatting -------------------------------------------------------------------------------
def fmt_number(v: float, kind: str) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    if kind == "int" and float(v).is_integer():
        return f"{int(v):,}"
    if kind == "seconds":
        return f"{v:.3g}" if v < 100 else f"{v:,.0f}"
    if kind == "mb":
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    return f"{v:.4g}"


def fmt_cell(mean: float, std: float, n: int, kind: str) -> str:
    s = fmt_number(mean, kind)
    if n > 1 and np.isfinite(mean) and np.isfinite(std):
        s += f" ± {std:.2g}"
    return s


def row_cell(row, c: Column) -> str:
    """A row's cell of column c: mean ± std, then the bootstrap interval and ≈ where it has them."""
    s = fmt_cell(row[f"{c.key}_mean"], row[f"{c.key}_std"], int(row["n"]), c.kind)
    if np.isfinite(row.get(f"{c.key}_lo", np.nan)):
        s += f" [{row[f'{c.key}_lo']:.3g}, {row[f'{c.key}_hi']:.3g}]"
    return s + (" ≈" if row.get(f"{c.key}_ns", False) else "")


def footnote_marks(table: Table) -> dict[str, int]:
    return {m: i + 1 for i, m in enumerate(table.papers)}


def table_notes(table: Table) -> list[str]:
    r = table.ref
    notes = [f"IGD+ reference front: {r.how}; {r.n_points} points, hash {r.hash}."]
    if table.eval_size is not None:
        notes.insert(0, f"Evaluated on a subset: at most {table.eval_size} examples per task of val and of test, "
                        f"stratified by label (tasks.eval_size={table.eval_size}, "
                        f"eval_seed={table.suite_config.get('eval_seed', 0)}); not comparable with full-set tables.")
    if (table.rows["n"] > 1).any():
        notes.append("Cells with several seeds: mean ± sample std (ddof=1) over seeds; n = seeds.")
    if table.resamples:
        notes.append(f"[lo, hi]: 95 % percentile bootstrap interval of the cell's mean over {table.resamples} "
                     "resamples of the test examples (the same draws for every row; fine-tuned accuracies held "
                     "fixed): test-set sampling only, the seeds' spread is the ± std. ≈: not significantly "
                     "different from the column's best row (the 95 % interval of the paired difference contains 0).")
    repeats = table.rows[table.rows["runs"] > table.rows["n"]]
    if len(repeats):
        notes.append(f"Repeated runs of the same config and seed are averaged as one seed ({', '.join(repeats['label'])}).")
    kinds = {"run_max_rss": "the run's max RSS (CPU)", "process_max_rss": "process max RSS (CPU, since the process started)",
             "cuda_max_allocated": "CUDA max allocated"}
    notes.append("Peak memory: " + ", ".join(kinds.get(k, k) for k in table.mem_kinds) + ".")
    if table.objective == "loss":
        notes.append("Objective: loss (lower is better); normalised HV is defined for accuracy suites only.")
    return notes
