"""Paper-style leaderboards as text: markdown, booktabs LaTeX and csv, from a `bench.reports.tables.Leaderboard`.

    python -m bench table                                    # every suite under results/runs, markdown
    python -m bench table tasks=toy-quadratic format=latex   # booktabs table bodies
    python -m bench table format=csv out=results/runs > leaderboard.csv

    >>> from bench.reports.tables import load_leaderboard
    >>> print(render(load_leaderboard("results/runs"), "latex"))      # doctest: +SKIP

The records are read and the tables built once, by `bench.reports.tables.load_leaderboard` (what a table
holds, how rows are grouped and labelled, the intervals and the reference front are described
there); this module only lays them out. md and LaTeX: one table per suite key with its notes and
paper footnotes, the best value per column in bold; csv: every number of every row and its full
config. The web page is `bench.reports.html.write_html`, the figures `bench.reports.plots.write_figures`.
"""
from __future__ import annotations


import pandas as pd

from bench.core.registry import BenchError, unknown_choice
from bench.reports.tables import COLUMNS, Leaderboard, Table, footnote_marks, row_cell, table_notes

FORMATS = ("md", "latex", "csv", "html")


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
                f"{tex_escape(', '.join(t.tasks))}"
                + (f" [eval subset $\\le$ {t.eval_size}/task]" if t.eval_size is not None else "") + "} \\\\", "\\midrule",
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
        f.insert(3, "eval_size", t.eval_size if t.eval_size is not None else "")
        f["paper"] = f["method"].map(lambda m: t.papers.get(m, ""))
        f["igd_ref_kind"], f["igd_ref_points"], f["igd_ref_hash"] = t.ref.kind, t.ref.n_points, t.ref.hash
        frames.append(f)
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


RENDER = {"md": render_md, "latex": render_latex, "csv": render_csv}      # html: a folder (bench.reports.html.write_html)


def check_format(fmt: str, out_dir: str | None = None) -> str:
    """`fmt` if `bench table` can write it (html: into `out_dir`), else a one-line BenchError;
    checked before any record is read."""
    fmt = str(fmt)
    if fmt not in FORMATS:
        raise BenchError(unknown_choice("format", fmt, list(FORMATS)))
    if fmt == "html" and out_dir is None:
        raise BenchError("format=html writes a folder: give out_dir=DIR (e.g. out_dir=results/leaderboard/html)")
    return fmt


def render(lb: Leaderboard, fmt: str = "md") -> str:
    """The leaderboard's tables as text: md, latex or csv (the web page: `bench.reports.html.write_html`)."""
    if fmt == "html":
        raise BenchError("format=html is a folder, not a text: bench.reports.html.write_html(lb, out_dir) writes it")
    return RENDER[check_format(fmt)](lb.tables)
