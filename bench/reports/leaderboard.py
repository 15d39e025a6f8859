"""The leaderboard: one spec file → every run, in parallel → tables, the web page and figures.

    python -m bench.reports.leaderboard results/leaderboard/spec.yaml               # what `make leaderboard` runs
    python -m bench.reports.leaderboard results/leaderboard/spec.yaml --plan        # the jobs, one line each
    python -m bench.reports.leaderboard results/leaderboard/spec.yaml --render      # tables and page from the runs there
    python -m bench.reports.leaderboard results/leaderboard/spec.yaml scale=0.02 seeds=[0] runs=/tmp/lb/runs out=/tmp/lb

The spec (results/leaderboard/spec.yaml; any top-level key can be overridden as key=value) names
the suites with their task subsets (or numbers of tasks), the methods, the seeds, the budget scale
and the matched budget. A method is one line (`name: {}`, or its options); this module knows no
method or suite by name: each declares what a leaderboard needs. A method's class declares its
budget unit (`Method.budget`: `evaluations` for a search, `steps_per_ray` for one model trained per
preference ray, `steps` for one run for every preference; the spec's `kind:` search | per_ray |
trained overrides it), how many rays it trains (`n_rays`) and its options at a matched number of
evaluations (`matched`). A suite's class may declare its own scale (`Suite.leaderboard_scale`,
e.g. 1.0 for the analytic toy-quadratic); a spec's `suites.NAME.scale` overrides both. Every method
runs at two budgets, each a row of the table (one job when they coincide):

* default: the method's registered defaults (the published hyperparameters), training steps × the scale.
* matched: equal cost within a unit. Search methods get the evaluations of MAP's default design at
  that T, (T+1)(T+2) + its 10 test re-evaluations, through their class's `matched` (ta_grid: a
  per-task grid capped at that many points, past T = 6 the densest simplex grid that fits; MAP as
  is). Trained methods get `matched_steps` × the scale training steps in all: a method trained once
  for every preference (PWE-MoE, PHN, Pareto Merging) takes them in its one run; a method trained
  per ray (ls, epo) divides them over its rays.

Missing suite builds happen first, in the driver (their quality bars printed). Then jobs run `jobs`
at a time in worker processes (one torch thread each), the longest first; every job's wall time
goes to <runs>/timings.csv. Then the records are read once (`bench.reports.tables.load_leaderboard`) and
<out> gets leaderboard.md/.tex/.csv (`bench table`, with the budget note first), timings.csv and
html/ (`bench table format=html`: the page, its figures in html/figures as PNG and PDF, and a copy
of every record), and the README its block. `--render` redoes only this last step.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bench.core.record import atomic_write_text
from bench.core.registry import BenchError, load_plugins, unknown_choice

if TYPE_CHECKING:
    from bench.reports.tables import Leaderboard

UNITS = {"search": "evaluations", "per_ray": "steps_per_ray", "trained": "steps"}   # a spec's kind: → budget unit
KINDS = tuple(UNITS)
KEYS = ("scale", "seeds", "jobs", "resamples", "runs", "out", "suites", "methods", "matched_steps", "per_t", "readme",
        "plugins")


@dataclass(frozen=True)
class Job:
    suite: str
    tasks: tuple[str, ...] | int          # a task subset, or the number of tasks (toy-quadratic)
    method: str
    budget: str                           # default | matched | default+matched
    seed: int
    overrides: tuple[str, ...]            # method.KEY=V and tasks.KEY=V
    steps: int = 0                        # training steps in all (per-ray methods: over every ray)

    @property
    def T(self) -> int:
        return self.tasks if isinstance(self.tasks, int) else len(self.tasks)

    def argv(self, runs: str, plugins: list[str] = ()) -> list[str]:
        return [f"method={self.method}", f"tasks={self.suite}", *self.overrides, f"seed={self.seed}",
                f"out={runs}", "device=cpu", "threads=1", *([f"plugins=[{','.join(plugins)}]"] if plugins else [])]

    def line(self) -> str:
        return f"{self.suite} T={self.T} {self.method} [{self.budget}] seed={self.seed}: {' '.join(self.overrides)}"


@dataclass
class Spec:
    suites: dict
    methods: dict
    scale: float = 1.0
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    jobs: int = 2
    resamples: int = 1000
    runs: str = "results/runs/leaderboard"
    out: str = "results/leaderboard"
    matched_steps: int = 300
    per_t: dict = field(default_factory=dict)      # {T: {method: {KEY: V}}}: method options at that T
    readme: str | None = None                      # a README whose leaderboard block gets the main tables
    plugins: list = field(default_factory=list)    # plugins= modules (methods, suites of other packages), every job

    def note(self) -> str:
        """The budget paragraph printed above the tables."""
        own = {s: v for s in self.suites if (v := self.own_scale(s)) is not None}
        return (f"Budgets: every method at its default (published) settings with training steps × {self.scale:g}"
                + "".join(f" (× {v:g} on {s})" for s, v in own.items()) + ", "
                f"and at matched cost: search methods at MAP's default number of evaluations, (T+1)(T+2) + 10; "
                f"trained methods at {self.matched_steps} × scale training steps in all (per-ray methods "
                f"divide them over their rays). Seeds {list(self.seeds)}"
                + "".join(f", {m}: {o['seeds']}" for m, o in self.methods.items() if "seeds" in o) + "."
                + "".join(f" At T = {T}: " + "; ".join(f"{m} " + ", ".join(f"{k}={v}" for k, v in o.items())
                                                      for m, o in ms.items()) + "." for T, ms in self.per_t.items()))

    def own_scale(self, suite: str) -> float | None:
        """`suite`'s own scale: the spec's `suites.NAME.scale`, else its class's `leaderboard_scale`; or None."""
        if "scale" in self.suites[suite]:
            return self.suites[suite]["scale"]
        return suite_class(suite).leaderboard_scale

    def steps(self, n: int, suite: str) -> int:
        """n training steps scaled for `suite` (its own scale, else the spec's)."""
        own = self.own_scale(suite)
        return max(1, round(n * (self.scale if own is None else own)))

    def unit(self, method: str) -> str:
        """The budget unit of `method`: the spec's `kind:` where it gives one, else its class's `budget`."""
        kind = self.methods[method].get("kind")
        if kind is not None:
            return UNITS[kind]
        cls = method_class(method)
        if cls.budget not in UNITS.values():
            raise BenchError(f"methods.{method}: {cls.__name__} declares no leaderboard budget "
                             f"(budget = {' | '.join(UNITS.values())}); give it a kind: {' | '.join(KINDS)}")
        return cls.budget


def load_spec(path: str | Path, overrides: list[str] = ()) -> Spec:
    """The spec file merged with key=value overrides; unknown keys and kinds are one-line errors."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
    except FileNotFoundError:
        raise BenchError(f"spec={str(path)!r} does not exist; the leaderboard's is results/leaderboard/spec.yaml") from None
    d = OmegaConf.to_container(cfg, resolve=True)
    for k in d:
        if k not in KEYS:
            raise BenchError(unknown_choice("spec key", k, list(KEYS)))
    d["methods"] = {m: dict(opts or {}) for m, opts in (d.get("methods") or {}).items()}     # `name:` alone is a method
    d["suites"] = {s: dict(opts or {}) for s, opts in (d.get("suites") or {}).items()}
    for m, opts in d["methods"].items():
        if "kind" in opts and opts["kind"] not in KINDS:
            raise BenchError(f"methods.{m}.kind={opts['kind']!r}; valid: {', '.join(KINDS)}")
    return Spec(**d)


def method_class(name: str):
    """A registered method's class (imported on first use)."""
    from bench.core.registry import METHODS

    return METHODS.entry(name).obj


def suite_class(name: str):
    """A registered suite's class (imported on first use; nothing is built)."""
    from bench.core.registry import SUITES

    return SUITES.entry(name).obj


def method_defaults(name: str) -> dict:
    """A registered method's options as `bench run` sees them (bench.runtime.config: the constructor's
    defaults under the entry's own, e.g. pwe_moe_epo's scalarizer)."""
    from bench.runtime.config import defaults
    from bench.core.registry import METHODS           # imports the method's module on first use

    entry = METHODS.entry(name)
    return defaults(entry.obj, entry.defaults)


def n_rays(method: str, T: int, opts: dict) -> int:
    """Rays (one trained model each) of a `steps_per_ray` method at T with `opts` over its defaults."""
    return method_class(method).n_rays(T, {**method_defaults(method), **opts})


def matched_evaluations(T: int) -> int:
    """Search methods' matched budget: MAP's default design, (T+1)(T+2) points, + its 10 test re-evaluations."""
    return (T + 1) * (T + 2) + 10


def budgets(spec: Spec, suite: str, method: str, T: int) -> dict[str, dict]:
    """{budget: method options} of one method at T on `suite` (the spec's per-T options included)."""
    base = {**{k: v for k, v in spec.methods[method].items() if k not in ("kind", "seeds")},
            **spec.suites[suite].get("options", {}).get(method, {}), **spec.per_t.get(T, {}).get(method, {})}
    unit = spec.unit(method)
    if unit == "evaluations":
        return {"default": dict(base), "matched": method_class(method).matched(base, T, matched_evaluations(T))}
    d = {**method_defaults(method), **base}
    default = {**base, "steps": spec.steps(d["steps"], suite)}
    total = spec.steps(spec.matched_steps, suite)
    matched = {**base, "steps": max(1, total // n_rays(method, T, base)) if unit == "steps_per_ray" else total}
    return {"default": default, "matched": matched}


def plan(spec: Spec) -> list[Job]:
    """Every job of the spec, the most expensive first (so the pool's tail is short); analytic
    suites (milliseconds a step) last."""
    jobs = []
    for suite, sopts in spec.suites.items():
        subsets = sopts.get("num_tasks") or sopts.get("subsets") or []
        for tasks in subsets:
            if isinstance(tasks, int):
                T, task_over = tasks, [f"tasks.num_tasks={tasks}"]
            else:
                T = len(tasks) if tasks else len(suite_tasks(suite))
                task_over = [f"tasks.names=[{','.join(tasks)}]"] if tasks else []
            for method, mopts in spec.methods.items():
                b = budgets(spec, suite, method, T)
                rows = {"default+matched": b["default"]} if b["default"] == b["matched"] else b
                for budget, opts in rows.items():
                    over = tuple(task_over + [f"method.{k}={v}" for k, v in sorted(opts.items())])
                    steps = opts.get("steps", 0) * (n_rays(method, T, opts) if spec.unit(method) == "steps_per_ray" else 1)
                    for seed in mopts.get("seeds", spec.seeds):
                        jobs.append(Job(suite, tuple(tasks) if tasks and not isinstance(tasks, int) else T,
                                        method, budget, int(seed), over, int(steps)))
    # expected cost ~ (training steps + evaluations) × T
    analytic = {s: suite_class(s).modality == "analytic" for s in spec.suites}
    return sorted(jobs, key=lambda j: (analytic[j.suite], -(j.steps + 10) * j.T))


def build_suite(suite: str):
    """`suite` with its default settings (built into the cache if it is not there yet)."""
    from bench.runtime.config import build_from_config
    from bench.core.registry import SUITES

    return build_from_config(SUITES, {"name": suite}, "tasks")


def suite_tasks(suite: str) -> list[str]:
    """Every task of `suite`: an offline suite's class lists them (no build needed, so `--plan`
    starts nothing); any other suite is built with its defaults and asked."""
    names = getattr(suite_class(suite), "TASK_NAMES", None)
    return list(names) if names else list(build_suite(suite).tasks)


def _work(argv: list[str]) -> float:
    """One job in a worker process: `bench run` in-process (imports paid once per worker)."""
    import contextlib
    import io

    from bench.runtime.config import compose
    from bench.runtime.run import run

    t0 = time.perf_counter()
    # 400 runs' progress bars and summaries would bury the driver's one line per run
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run(compose(argv))
    return time.perf_counter() - t0


def run_jobs(jobs: list[Job], spec: Spec, log=print) -> tuple[pd.DataFrame, list[str]]:
    """Run every job, `spec.jobs` at a time; returns their wall times (also written to
    <runs>/timings.csv) and the failures (one line each: a failed run never stops the others)."""
    rows, failed, t0 = [], [], time.perf_counter()
    Path(spec.runs).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(spec.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_work, j.argv(spec.runs, spec.plugins)): j for j in jobs}
        for i, fut in enumerate(as_completed(futures), 1):
            j = futures[fut]
            try:
                wall = fut.result()
            except Exception as err:          # noqa: BLE001  (reported below; the other runs go on)
                failed.append(f"{j.line()}: {type(err).__name__}: {err}")
                log(f"[{i}/{len(jobs)}] FAILED {failed[-1]}")
                continue
            rows.append({"suite": j.suite, "T": j.T, "tasks": ",".join(j.tasks) if isinstance(j.tasks, tuple) else "",
                         "method": j.method, "budget": j.budget, "seed": j.seed, "steps": j.steps, "wall_s": round(wall, 2),
                         "overrides": " ".join(j.overrides)})
            log(f"[{i}/{len(jobs)} {time.perf_counter() - t0:6.0f}s] {wall:6.1f}s {j.line()}")
    df = pd.DataFrame(rows)
    atomic_write_text(Path(spec.runs) / "timings.csv", df.to_csv(index=False))
    return df, failed


def budget_of(spec: Spec, suite: str, T: int, flat: dict) -> str:
    """Which budget row of the spec a table row's flattened config is (default, matched or both)."""
    method = flat["method.name"]
    if method not in spec.methods:
        return "other"
    opts = {k.removeprefix("method."): v for k, v in flat.items() if k.startswith("method.")}
    rows, defaults = budgets(spec, suite, method, T), method_defaults(method)
    keys = set().union(*rows.values())          # a default row differs from a matched one on these
    hits = [b for b, want in rows.items() if all(str(opts.get(k)) == str({**defaults, **want}.get(k)) for k in keys)]
    return "+".join(hits) or "other"


def main_tables(spec: Spec, lb: Leaderboard, figures: str) -> str:
    """The README's main results from the leaderboard `lb`: per suite, one
    row per (method, budget) and one column per task subset, normalised HV (HV where there is none)
    with its bootstrap interval; mean evaluations and wall time over the subsets; then the 2-task
    fronts of the first subset of each suite with real models (not analytic)."""
    import json

    out = [f"_{spec.note()}_", ""]
    for suite in spec.suites:
        ts = [t for t in lb.tables if t.suite == suite]
        if not ts:
            continue
        metric = "hv_normalized" if ts[0].rows["hv_normalized_mean"].notna().any() else "hv"
        cols, cells, cost = [], {}, {}
        for t in ts:
            col = "+".join(t.tasks) if len(t.tasks) <= 3 else f"all {len(t.tasks)}"
            cols.append(col)
            for _, r in t.rows.iterrows():
                key = (r["method"], budget_of(spec, suite, len(t.tasks), json.loads(r["config"])))
                ci = f" [{r[metric + '_lo']:.3f}, {r[metric + '_hi']:.3f}]" if r[metric + "_lo"] == r[metric + "_lo"] else ""
                cells[key, col] = f"{r[metric + '_mean']:.3f}{ci}" + (" ≈" if r[metric + "_ns"] else "")
                cost.setdefault(key, []).append((r["evaluations_mean"], r["wall_s_mean"]))
        ci = any(t.resamples for t in ts)
        out += [f"**{suite}** ({'normalised HV' if metric == 'hv_normalized' else 'HV'} ↑, mean over seeds"
                + (" [95 % bootstrap interval over test examples]; ≈ not significantly below the subset's best)"
                   if ci else ")"), "",
                "| method | budget | " + " | ".join(cols) + " | evals | wall s |",
                "|:---|:---|" + "---:|" * (len(cols) + 2)]
        for key in sorted(cost):
            ev, wall = (sum(c[i] for c in cost[key]) / len(cost[key]) for i in (0, 1))
            out.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells.get((key, c), "–") for c in cols)
                       + f" | {ev:,.0f} | {wall:,.1f} |")
        out.append("")
    fronts = [t for t in lb.tables if len(t.tasks) == 2 and not t.analytic]
    for t in [next((t for t in fronts if t.suite == s), None) for s in spec.suites]:
        if t is not None:
            out.append(f"![{t.title}]({figures}/{t.stem}-front.png)")
    return "\n".join(out).rstrip() + "\n"


BEGIN, END = "<!-- leaderboard:begin (make leaderboard writes this block) -->", "<!-- leaderboard:end -->"


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between the README's leaderboard markers with `block`."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise BenchError(f"{readme} has no leaderboard block; add the lines {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    atomic_write_text(readme, head + BEGIN + "\n" + block + rest[rest.index(END):])


def write_outputs(spec: Spec) -> list[Path]:
    """leaderboard.md/.tex/.csv, html/ (the page and its figures) and the README block, from the
    records under spec.runs, read once."""
    from bench.reports.html import write_html
    from bench.reports.report import render
    from bench.reports.tables import load_leaderboard

    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    lb = load_leaderboard(spec.runs, resamples=spec.resamples)
    note = spec.note()
    files = {"leaderboard.md": f"{note}\n\n{render(lb, 'md')}", "leaderboard.tex": f"% {note}\n{render(lb, 'latex')}",
             "leaderboard.csv": render(lb, "csv")}
    timings = Path(spec.runs) / "timings.csv"          # every run's wall time, committed with the tables
    if timings.is_file():
        files["timings.csv"] = timings.read_text()
    for name, text in files.items():
        atomic_write_text(out / name, text)
    # the figures live once, in the page's folder (html/figures, PNG and PDF)
    paths = [out / n for n in files] + [write_html(lb, out / "html", note=note)]
    if spec.readme:
        update_readme(Path(spec.readme), main_tables(spec, lb, f"{out}/html/figures"))
        paths.append(Path(spec.readme))
    return paths


def main(argv: list[str]) -> int:
    flags = [a for a in argv[1:] if a.startswith("-")]
    if not argv or argv[0].startswith("-") or any(f not in ("--plan", "--render") for f in flags):
        print(__doc__.split("\n\n")[1])
        return 2
    spec = load_spec(argv[0], [a for a in argv[1:] if "=" in a])
    load_plugins(spec.plugins)           # here and, through each job's plugins=, in every worker
    if "--plan" in argv:
        jobs = plan(spec)
        print("\n".join(j.line() for j in jobs))
        print(f"{len(jobs)} jobs, {spec.jobs} at a time")
        return 0
    t0, jobs, failed = time.perf_counter(), [], []
    if "--render" in argv:               # outputs only, e.g. after changing how tables or the page look
        if not Path(spec.runs, "timings.csv").is_file():
            raise BenchError(f"runs={spec.runs!r} has no finished leaderboard (no timings.csv); run without --render first")
    else:
        jobs = plan(spec)
        for suite in spec.suites:        # any missing build happens here once, its quality bars printed
            build_suite(suite)
        _, failed = run_jobs(jobs, spec)
        print(f"{len(jobs) - len(failed)} runs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    for p in write_outputs(spec):
        print(p)
    print(f"leaderboard regenerated in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {len(jobs)} runs failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
