"""The leaderboard as a static web page: one folder, no server, no network.

    python -m bench table format=html out_dir=results/leaderboard/html
    python -m bench table format=html out=results/runs/leaderboard out_dir=/tmp/lb resamples=200

    >>> from bench.reports.tables import load_leaderboard
    >>> write_html(load_leaderboard("results/runs"), "/tmp/lb")          # doctest: +SKIP

`out_dir` gets index.html, figures/ (`bench.reports.plots.write_figures`: fronts, attainment, HV against
cost) and records/ (a copy of every record.json in the tables, so the folder stands alone), all
from one `bench.reports.tables.Leaderboard` (records read once). The page has one section per suite key,
as `bench table` (bench/reports/report.py): the table, its notes and paper footnotes, and the suite's
figures inline. Clicking a column header sorts its rows (numbers by their mean; again: reversed);
checkboxes filter sections by number of tasks T and rows by method. Every row links the records
behind it (one per seed). Plain HTML, CSS and a few lines of script: it opens from disk in any browser.
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np

from bench.reports.plots import write_figures
from bench.core.record import RunRecord, atomic_write_text
from bench.core.registry import BenchError
from bench.reports.tables import COLUMNS, Leaderboard, Table, footnote_marks, row_cell, table_notes

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1280px;padding:1em 1.5em;color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.6em 0 .2em;border-top:1px solid #ddd;padding-top:.8em}
.key{color:#666;font-size:.85em;word-break:break-all}
#filters{position:sticky;top:0;background:#fafafa;border:1px solid #ddd;border-radius:4px;padding:.4em .8em;z-index:2}
#filters fieldset{display:inline-block;border:0;margin:0 1.2em 0 0;padding:0}#filters legend{font-weight:600;float:left;margin-right:.5em}
#filters label{margin-right:.7em;white-space:nowrap}
section.suite{scroll-margin-top:4.5em}nav.toc{font-size:.85em;margin:.4em 0 .8em;columns:2 28em}nav.toc a{display:block}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.6em 0;font-variant-numeric:tabular-nums;font-size:.9em}
th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal;min-width:12em}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:relative}
th[aria-sort=ascending]::after{content:" ▲";font-size:.7em}th[aria-sort=descending]::after{content:" ▼";font-size:.7em}
tbody tr:nth-child(even){background:#fafafa}tbody tr:hover{background:#eef4ff}
td.best{font-weight:700}.ns{color:#666}.runs a{margin-right:.3em}
.notes{font-size:.82em;color:#444;max-width:75em}
figure{display:inline-block;margin:.4em 1em .4em 0;vertical-align:top}figure img{max-width:480px;width:100%;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}
"""

SCRIPT = """
document.querySelectorAll('table.lb').forEach(t => {
  t.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
    const desc = th.getAttribute('aria-sort') === 'ascending';
    t.querySelectorAll('th').forEach(h => h.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
    const key = tr => { const v = tr.children[col].dataset.sort; const x = parseFloat(v);
                        return Number.isNaN(x) ? v : x; };
    const rows = [...t.tBodies[0].rows];
    rows.sort((a, b) => { const x = key(a), y = key(b);
      if (typeof x !== typeof y) return typeof x === 'number' ? -1 : 1;   // numbers before blanks
      return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1); });
    rows.forEach(r => t.tBodies[0].appendChild(r));
  }));
});
function applyFilters() {
  const on = name => new Set([...document.querySelectorAll(`input[name=${name}]:checked`)].map(i => i.value));
  const ts = on('T'), ms = on('method');
  document.querySelectorAll('section.suite').forEach(s => {
    s.hidden = !ts.has(s.dataset.t);
    s.querySelectorAll('tbody tr').forEach(r => { r.hidden = !ms.has(r.dataset.method); });
  });
}
document.querySelectorAll('#filters input').forEach(i => i.addEventListener('change', applyFilters));
"""

FIGURE_KINDS = {"front": "fronts (lowest seed of each row)", "eaf": "empirical attainment across seeds",
                "pairs": "pairwise fronts", "parallel": "parallel coordinates", "hv-cost": "HV against cost"}


def e(s) -> str:
    return html.escape(str(s), quote=True)


def sort_value(row, key: str) -> str:
    v = row[key]
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else str(v)


def copy_records(records: list[RunRecord], out_dir: Path) -> dict[str, str]:
    """Copy every record.json into out_dir/records/<suite>/<method>/<run id>.json; {run id: href}."""
    links = {}
    for r in records:
        href = f"records/{r.suite}/{r.method}/{r.run_id}.json"
        target = out_dir / href
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r.path, target)
        links[r.run_id] = href
    return links


def section(t: Table, links: dict[str, str], figures: list[tuple[str, str]]) -> str:
    """One suite key: its sortable table, notes, paper footnotes and `figures` ((href, kind) pairs)."""
    marks = footnote_marks(t)
    head = ["Method", "n"] + [f"{c.header} {'↑' if c.higher_is_better else '↓'}" for c in COLUMNS] + ["records"]
    body = []
    for _, row in t.rows.iterrows():
        mark = f"<sup>{marks[row['method']]}</sup>" if row["method"] in marks else ""
        cells = [f'<td data-sort="{e(row["label"])}">{e(row["label"])}{mark}</td>',
                 f'<td data-sort="{int(row["n"])}">{int(row["n"])}</td>']
        for c in COLUMNS:
            cls = " ".join(k for k, on in (("best", row[f"{c.key}_best"]), ("ns", row.get(f"{c.key}_ns", False))) if on)
            cells.append(f'<td data-sort="{sort_value(row, c.key + "_mean")}"' + (f' class="{cls}"' if cls else "")
                         + f">{e(row_cell(row, c))}</td>")
        runs = t.runs[row["config"]]                     # by seed, run id
        cells.append('<td class="runs" data-sort="">'
                     + "".join(f'<a href="{e(links[r.run_id])}">s{r.seed}</a>' for r in runs) + "</td>")
        body.append(f'<tr data-method="{e(row["method"])}">' + "".join(cells) + "</tr>")
    cfg = ", ".join(f"{k}={v}" for k, v in t.suite_config.items())
    bold = " <b>Bold</b>: best per column." if t.rows[[f"{c.key}_best" for c in COLUMNS]].to_numpy().any() else ""
    papers = "".join(f"<br><sup>{i}</sup> {e(m)}: {e(t.papers[m])}" for m, i in marks.items())
    figs = "".join(f'<figure><img src="{e(href)}" alt="{e(FIGURE_KINDS.get(kind, kind))}">'
                   f"<figcaption>{e(FIGURE_KINDS.get(kind, kind))}</figcaption></figure>" for href, kind in figures)
    # the id is the figures' stem (suite, T, key hash); scroll-margin keeps the heading below the sticky filters
    return (f'<section class="suite" id="{e(t.stem)}" data-t="{len(t.tasks)}"><h2>{e(t.title)}</h2>'
            f'<div class="key">suite key <code>{e(t.suite_key)}</code>{" · " + e(cfg) if cfg else ""}</div>'
            f'<div class="scroll"><table class="lb"><thead><tr>{"".join(f"<th>{e(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>'
            f'<p class="notes">{e(" ".join(table_notes(t)))}{bold}{papers}</p>{figs}</section>')


def page(tables: list[Table], sections: list[str], title: str, note: str = "") -> str:
    Ts = sorted({len(t.tasks) for t in tables})
    methods = sorted({m for t in tables for m in t.rows["method"]})
    boxes = lambda name, vals: "".join(f'<label><input type="checkbox" name="{name}" value="{e(v)}" checked> {e(v)}</label>'
                                       for v in vals)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>" + (f'<p class="notes">{e(note)}</p>' if note else "") +
            f'<div id="filters"><fieldset><legend>T</legend>{boxes("T", Ts)}</fieldset>'
            f'<fieldset><legend>method</legend>{boxes("method", methods)}</fieldset></div>'
            '<nav class="toc">' + "".join(f'<a href="#{e(t.stem)}">{e(t.title)}</a>' for t in tables) + "</nav>"
            f'{"".join(sections)}<script>{SCRIPT}</script></body></html>\n')


def write_html(lb: Leaderboard, out_dir: str | Path, title: str = "paretobench leaderboard", note: str = "") -> Path:
    """Write the page of the leaderboard `lb` into `out_dir` (index.html, figures/, records/);
    returns index.html's path."""
    if out_dir is None:
        raise BenchError("format=html writes a folder: give out_dir=DIR (e.g. out_dir=results/leaderboard/html)")
    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BenchError(f"out_dir={str(out_dir)!r} is not writable ({err.strerror or err})") from None
    figures = [p for p in write_figures(lb, root / "figures") if p.suffix == ".png"]
    links = copy_records(lb.records, root)
    sections = [section(t, links, [(f"figures/{p.name}", p.stem[len(t.stem) + 1:]) for p in figures
                                   if p.name.startswith(t.stem + "-")]) for t in lb.tables]
    index = root / "index.html"
    atomic_write_text(index, page(lb.tables, sections, title, note))
    return index
