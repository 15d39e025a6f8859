"""Paper-style leaderboards from the run records under a results root.

    python -m bench table                                    # every suite under results/runs, markdown
    python -m bench table tasks=toy-quadratic format=latex   # booktabs table bodies
    python -m bench table format=csv out=results/runs > leaderboard.csv

One table per suite key (records whose `suite_key` is equal are comparable: same suite, tasks,
settings and version). One row per method and notable config: records are grouped by method +
their resolved config minus `seed`, `out`, `run_id` and `tasks` (the suite is already fixed by the
key); a row label names the fewest config values that tell one method's rows apart (the csv
format carries the full config). Where a row has several records (seeds) the cells read
mean ± sample standard deviation (ddof = 1); the best mean per column is marked (bold in md and
LaTeX) when the column's values are not all tied. HV and normalised HV also carry a 95 % bootstrap
interval over test examples, [lo, hi], and ≈ where a row's difference from the column's best is
not significant (paired bootstrap on the same examples; bench/bootstrap.py). Columns: HV ↑, normalised HV ↑, IGD+ ↓, points
on the front (non-dominated) ↑, evaluations ↓, training steps ↓, trainable parameters ↓,
wall seconds ↓, peak memory MB ↓.
Records with `weights == "random"` (speed/memory benchmarks) never enter a leaderboard.

Indicators: HV and normalised HV are the record's own (the suite's reference point; normalised HV
exists for accuracy suites only). IGD+ is recomputed here for every record against the table's
reference front, stated (kind, size, hash) under the table: for analytic suites the closed-form
front, rebuilt from the suite registry with the record's `suite_config` (its hash is checked
against the record's `igd_ref`); otherwise the non-dominated union of the included points of every
record of the suite key, so every row is measured against the same front.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bench import bootstrap, indicators
from bench.record import RunRecord, load_records
from bench.registry import INDICATORS, BenchError, unknown_choice

FORMATS = ("md", "latex", "csv", "html")
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
    ref: indicators.RefFront
    papers: dict[str, str]          # method → "paper (url)", in footnote order
    mem_kinds: list[str] = field(default_factory=list)
    resamples: int = 0              # bootstrap resamples behind the intervals (0: none)

    @property
    def title(self) -> str:
        return f"{self.suite} v{self.suite_version}: {', '.join(self.tasks)}"

    @property
    def stem(self) -> str:
        """File-name stem of the table's figures and id of its page section: suite, version, T, key hash."""
        return f"{self.suite}-v{self.suite_version}-{len(self.tasks)}t-{self.suite_key.rsplit(':', 1)[-1]}"


# ---- loading and grouping ------------------------------------------------------------------
def leaderboard_records(out: str, suite: str | None = None) -> list[RunRecord]:
    """Every readable record under `out` (optionally of one suite), random-weight runs dropped."""
    return [r for r in load_records(out, suite) if r.weights != "random"]


def check_suite_name(suite: str | None, out: str) -> None:
    """tasks=NAME must be a registered suite or one that has records under `out`."""
    if suite is None:
        return
    from bench.registry import SUITES

    known = sorted(set(SUITES.names()) | {r.suite for r in load_records(out)})
    if suite not in known:
        raise BenchError(unknown_choice("suite", suite, known))


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


# ---- the reference front ---------------------------------------------------------------------
def reference_front(records: list[RunRecord]) -> indicators.RefFront:
    """The IGD+ reference front of one suite key (`indicators.reference_front`); an analytic suite
    that can no longer be rebuilt falls back to the values its records stored."""
    try:
        ref = indicators.reference_front(records)
    except Exception as e:
        first = records[0]
        return indicators.RefFront("record", None, first.igd_ref.get("hash"), int(first.igd_ref.get("n_points", 0)),
                                   f"analytic front (IGD+ values reused from the records: the suite could not be "
                                   f"rebuilt: {e})")
    stale = sorted({r.igd_ref.get("hash") for r in records if r.igd_ref} - {ref.hash}) if ref.kind == "analytic" else []
    if stale:
        print(f"warning: {records[0].suite_key}: analytic front hash {ref.hash} differs from the records' {stale}",
              file=sys.stderr)
    return ref


def record_metrics(record: RunRecord, ref: indicators.RefFront) -> dict[str, float]:
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
    from bench.registry import METHODS

    url = record.method_url or (getattr(METHODS.get(record.method), "url", "") if record.method in METHODS else "")
    return f"{record.method_paper} ({url})" if record.method_paper and url else record.method_paper


# ---- the tables --------------------------------------------------------------------------------
def build_tables(records: list[RunRecord], resamples: int = bootstrap.RESAMPLES) -> list[Table]:
    tables = []
    for key, recs in by_suite_key(records).items():
        ref = reference_front(recs)
        labels = group_labels(recs)
        df = pd.DataFrame([{"config": config_key(r), "label": labels[config_key(r)], "method": r.method,
                            "seed": r.seed, **record_metrics(r, ref)} for r in recs])
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
        rows = bootstrap.annotate(rows, bootstrap.group_samples(recs, config_key, resamples))
        papers: dict[str, str] = {}
        for m in rows["method"]:
            p = method_paper(next(r for r in recs if r.method == m))
            if p and m not in papers:
                papers[m] = p
        first = recs[0]
        tables.append(Table(first.suite, key, first.suite_version or "?", list(first.tasks), first.objective,
                            dict(first.suite_config), rows, ref, papers,
                            sorted({r.cost.get("peak_mem_kind", "?") for r in recs}),
                            resamples if rows["hv_lo"].notna().any() else 0))
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


def _any_best(table: Table) -> bool:
    return bool(table.rows[[f"{c.key}_best" for c in COLUMNS]].to_numpy().any())


_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def render_md(tables: list[Table]) -> str:
    out = []
    for t in tables:
        marks = footnote_marks(t)
        cfg = ", ".join(f"{k}={v}" for k, v in t.suite_config.items())
        out += [f"### {t.title}", "", f"suite key `{t.suite_key}`" + (f" · {cfg}" if cfg else ""), ""]
        head = ["Method", "n"] + [f"{c.header} {'↑' if c.higher_is_better else '↓'}" for c in COLUMNS]
        out += ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
        for _, row in t.rows.iterrows():
            label = row["label"].replace("|", "\\|") + (str(marks[row["method"]]).translate(_SUP) if row["method"] in marks else "")
            cells = [label, str(int(row["n"]))]
            for c in COLUMNS:
                s = row_cell(row, c)
                cells.append(f"**{s}**" if row[f"{c.key}_best"] else s)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        bold = " **Bold**: best per column." if _any_best(t) else ""
        out += [" ".join(table_notes(t)) + bold, ""]
        out += [f"{str(i).translate(_SUP)} {m}: {p}  " for m, i in marks.items() for p in [t.papers[m]]]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--",
        "↑": r"$\uparrow$", "↓": r"$\downarrow$", "·": r"$\cdot$", "—": "---", "λ": r"$\lambda$", "≈": r"$\approx$"}


def tex_escape(s: str) -> str:
    """Escape LaTeX specials; anything else outside ASCII becomes '?' so the body always compiles."""
    return "".join(_TEX.get(ch, ch if ord(ch) < 128 else "?") for ch in str(s))


def render_latex(tables: list[Table]) -> str:
    out = ["% paretobench leaderboard: booktabs table bodies (\\usepackage{booktabs}); put each in a table float"]
    ncol = 2 + len(COLUMNS)
    for t in tables:
        marks = footnote_marks(t)
        out += ["", f"% suite key {tex_escape(t.suite_key)}", f"\\begin{{tabular}}{{l{'r' * (ncol - 1)}}}", "\\toprule",
                f"\\multicolumn{{{ncol}}}{{l}}{{\\textbf{{{tex_escape(t.suite)}}} v{tex_escape(t.suite_version)}: "
                f"{tex_escape(', '.join(t.tasks))}}} \\\\", "\\midrule",
                " & ".join(["Method", "$n$"] + [c.latex + " " + _TEX["↑" if c.higher_is_better else "↓"]
                                                 for c in COLUMNS]) + " \\\\", "\\midrule"]
        for _, row in t.rows.iterrows():
            label = tex_escape(row["label"]) + (f"\\textsuperscript{{{marks[row['method']]}}}" if row["method"] in marks else "")
            cells = [label, str(int(row["n"]))]
            for c in COLUMNS:
                s = tex_escape(row_cell(row, c))
                cells.append(f"\\textbf{{{s}}}" if row[f"{c.key}_best"] else s)
            out.append(" & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "", "\\par\\smallskip{\\footnotesize",
                tex_escape(" ".join(table_notes(t))) + (" \\textbf{Bold}: best per column." if _any_best(t) else "")]
        out += [f"\\par\\textsuperscript{{{i}}}{tex_escape(m)}: {tex_escape(t.papers[m])}" for m, i in marks.items()]
        out += ["\\par}", "\\bigskip"]
    return "\n".join(out) + "\n"


def render_csv(tables: list[Table]) -> str:
    frames = []
    for t in tables:
        f = t.rows.copy()
        f.insert(0, "suite", t.suite)
        f.insert(1, "suite_key", t.suite_key)
        f.insert(2, "tasks", ";".join(t.tasks))
        f["paper"] = f["method"].map(lambda m: t.papers.get(m, ""))
        f["igd_ref_kind"], f["igd_ref_points"], f["igd_ref_hash"] = t.ref.kind, t.ref.n_points, t.ref.hash
        frames.append(f)
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


RENDER = {"md": render_md, "latex": render_latex, "csv": render_csv}      # html: a folder (cmd_table)


def table_text(out: str, suite: str | None = None, fmt: str = "md", resamples: int = bootstrap.RESAMPLES) -> str:
    if fmt not in RENDER:
        raise BenchError(unknown_choice("format", fmt, list(FORMATS)))
    check_suite_name(suite, out)
    recs = leaderboard_records(out, suite)
    if not recs:
        where = f" for tasks={suite}" if suite else ""
        raise BenchError(f"no records{where} under out={out!r}; write some with `python -m bench run out={out}`")
    return RENDER[fmt](build_tables(recs, resamples))


def cmd_table(opts: dict) -> int:
    tasks = None if opts["tasks"] is None else str(opts["tasks"])
    resamples = int(opts["resamples"])
    if resamples < 0:
        raise BenchError(f"resamples={resamples} must be ≥ 0 (0: no bootstrap interval)")
    if opts["format"] == "html":          # a folder, not a text: bench/html.py
        from bench.html import write_html

        check_suite_name(tasks, str(opts["out"]))
        print(write_html(str(opts["out"]), opts["out_dir"], tasks, resamples))
        return 0
    sys.stdout.write(table_text(str(opts["out"]), tasks, str(opts["format"]), resamples))
    return 0
