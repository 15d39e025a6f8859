"""Command line: `python -m bench <command> [key=value ...]`.

    python -m bench run method=ta_grid tasks=toy-quadratic            # one run → record.json
    python -m bench ls                                                # methods and suites

Each command is described once, in `COMMANDS` (its handler here, what it does, its options with defaults
and help, runnable examples); its `--help` text and its argument parsing are generated from that
description. A handler parses what the command line gives and calls plain functions of the modules that
do the work, imported only when it runs, so `bench ls` and `--help` answer without loading torch. Errors in what was asked (unknown names, bad values, unwritable paths) print
one line on stderr and exit 2, without a traceback.
"""
from __future__ import annotations

import functools
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn

from bench.core.registry import BenchError, unknown_choice


@dataclass(frozen=True)
class Option:
    default: Any
    help: str


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[Any], int]  # gets the parsed options (or argv, when raw)
    summary: str
    examples: tuple[str, ...]
    options: dict[str, Option] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)     # --flag → help
    raw: bool = False              # the handler parses argv itself (Hydra overrides)
    positional: str = ""           # the option a bare word sets (`bench ls ta_grid` = `bench ls name=ta_grid`)
    usage: str = ""                # raw commands: their argument summary

    def help(self) -> str:
        args = self.usage or " ".join([*(f"[{f}]" for f in self.flags), *(f"[{k}=...]" for k in self.options)])
        lines = [f"usage: python -m bench {self.name} {args}".rstrip(), "", self.summary]
        if self.options or self.flags:
            lines += ["", "options:"]
            lines += [f"  {f:<22} {h}" for f, h in self.flags.items()]
            lines += [f"  {k + '=' + _show(o.default):<22} {o.help}" for k, o in self.options.items()]
        if self.name == "run":
            lines += ["", _run_settings()]
        lines += ["", "examples:", *(f"  {e}" for e in self.examples)]
        return "\n".join(lines)

    def parse(self, argv: list[str]) -> dict[str, Any]:
        """key=value arguments (OmegaConf values: lists, numbers, null) and flags → options."""
        from omegaconf import OmegaConf

        out = {k: o.default for k, o in self.options.items()}
        out.update({f.lstrip("-"): False for f in self.flags})
        for a in argv:
            if a in self.flags:
                out[a.lstrip("-")] = True
                continue
            key, eq, _ = a.partition("=")
            if not eq and self.positional and out.get(self.positional) is None and "-" != a[:1]:
                out[self.positional] = a
                continue
            if not eq:
                raise BenchError(f"bad argument {a!r}: expected key=value; valid keys: {', '.join(self.options)}")
            if key not in self.options:
                raise BenchError(unknown_choice(f"option of `bench {self.name}`", key, list(self.options)))
            try:
                out.update(OmegaConf.to_container(OmegaConf.from_dotlist([a])))
            except Exception:
                raise BenchError(f"cannot read {a!r}; write key=value, e.g. {key}=[0,1]") from None
        return out


def _show(v: Any) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def main(argv: list[str] | None = None) -> int:
    """The command line; `argv=None` (the program: `python -m bench`, `paretobench`) reads sys.argv."""
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    from bench.runtime.interrupt import Terminated, on_sigterm

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return _dispatch(argv[0], argv[1:])
    except (KeyboardInterrupt, Terminated) as e:
        what = "interrupted (SIGINT)" if isinstance(e, KeyboardInterrupt) else "terminated (SIGTERM)"
        hint = getattr(e, "resume_hint", None)
        print(f"{what}; " + (f"the work paid for is kept: {hint}" if hint else "the unfinished run kept nothing"),
              file=sys.stderr)
        if program and isinstance(e, KeyboardInterrupt):
            _leave_by_sigint()
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    except BrokenPipeError:                      # `bench ls | head`: the reader left; nothing more to say
        sys.stderr.close()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _leave_by_sigint() -> NoReturn:
    """End the program as Python ends on an uncaught Ctrl-C, after its own clean-up: killed by SIGINT, which
    a shell reports as 130. A plain `exit 130` tells a calling shell loop that the child handled the signal
    and the loop goes on; a death by SIGINT stops it. It also makes the status one thing: CPython 3.11 ends
    a process by SIGINT anyway when the KeyboardInterrupt passed through code run by exec() (a dataclass
    being built, one of torch's lazy imports), even though it was caught here."""
    hook = sys.excepthook
    sys.excepthook = lambda kind, value, tb: None if kind is KeyboardInterrupt else hook(kind, value, tb)
    raise KeyboardInterrupt   # the line above was its message; Python finalizes, then re-raises SIGINT on itself


def _dispatch(name: str, rest: list[str]) -> int:
    try:
        if name not in COMMANDS:
            raise BenchError(unknown_choice("command", name, list(COMMANDS)))
        cmd = COMMANDS[name]
        if any(a in ("-h", "--help") for a in rest):
            print(cmd.help())
            return 0
        from bench.runtime.config import plugin_overrides, quote_templates
        from bench.core.registry import load_plugins

        rest = quote_templates(rest)              # tasks.finetuned=/m/ft_{task} as printed, no quotes needed
        load_plugins(plugin_overrides(rest))      # any command: plugins=[pkg, ...] before a name is resolved
        if not cmd.raw:                           # (run and export keep it: a setting of the run, recorded)
            rest = [a for a in rest if a.split("=", 1)[0] != "plugins"]
        if name == "check" and any(a.split("=", 1)[0] == "published" for a in rest):
            from bench.runtime.published import cmd_published      # its other arguments are `bench run` overrides
            return int(cmd_published(rest))
        return int(cmd.handler(rest if cmd.raw else cmd.parse(rest)) or 0)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def usage() -> str:
    lines = ["usage: python -m bench <command> [key=value ...]   (python -m bench <command> --help)", "", "commands:"]
    lines += [f"  {c.name:<8} {c.summary}" for c in COMMANDS.values()]
    lines += ["", "examples:"] + [f"  {c.examples[0]}" for c in COMMANDS.values()]
    lines += ["", "plugins: installed packages' entry points (paretobench.methods, .suites, .indicators) load by "
              "themselves;", "  every command also takes plugins=[module,...] (or PARETOBENCH_PLUGINS=module,...)"]
    return "\n".join(lines)


def _run_settings() -> str:
    from bench.runtime.config import Settings, comments, defaults

    docs = comments(Settings)
    return "settings:\n" + "\n".join(f"  {k + '=' + _show(v):<22} {docs.get(k, '')}" for k, v in defaults(Settings).items())


# ---- run and ls -----------------------------------------------------------------------------------
def cmd_run(argv: list[str]) -> int:
    from hydra.errors import HydraException

    from bench.runtime import config

    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    bad = next((a for a in overrides if a.startswith("-")), None)
    if bad is not None:
        raise BenchError(f"unknown flag {bad!r}; valid: -m (sweep), --help")
    try:
        jobs = config.validate(overrides)      # every job checked before any runs: one line on the first mistake
    except HydraException as e:                # what Hydra refused in a hydra/... override (launcher, its options)
        raise BenchError(hydra_error(e)) from None
    from bench.runtime.run import run

    if not multirun:
        if len(jobs) != 1:
            raise BenchError(f"{len(jobs)} runs asked for without -m; add -m to sweep")
        run(jobs[0])
        return 0
    return hydra_multirun(overrides, run)


SCALE_LAUNCHERS = "joblib, submitit_local, submitit_slurm and ray come with pip install -e '.[scale]'"


def hydra_error(e: Exception) -> str:
    """One line for a Hydra composition error: an unknown group option (e.g. a launcher) or key, with the choices."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options:
        group, _, name = e.missing_cfg_file.rpartition("/")
        hint = f" ({SCALE_LAUNCHERS})" if group == "hydra/launcher" and "joblib" not in e.options else ""
        return unknown_choice(f"{group} option", name, list(e.options)) + hint
    cause = e.__cause__
    parent = getattr(cause, "parent_node", None)
    if getattr(cause, "full_key", None) and hasattr(parent, "keys"):
        prefix = cause.full_key.rpartition(".")[0]
        keys = [f"{prefix}.{k}" for k in parent.keys() if not k.startswith("_")]
        if not keys:
            return (f"unknown option {cause.full_key!r}: {prefix} has no options"
                    + (" (the basic launcher: choose another with hydra/launcher=NAME)" if prefix == "hydra.launcher" else ""))
        return unknown_choice("option", cause.full_key, keys)
    return str(e).strip().splitlines()[0]


def hydra_multirun(overrides: list[str], run) -> int:
    """A Hydra multirun of `run` over `overrides` on the launcher they choose: basic (one job after another, here)
    or, with the `scale` extra, joblib (local processes), submitit_local / submitit_slurm, ray. Every job writes
    under one absolute `out` (a launcher may run a job in another directory, or machine); a job's BenchError is one
    line in that job's output and comes back as its result; when every job is done, the command fails naming how
    many failed and the first."""
    from hydra._internal.hydra import Hydra       # hydra.main drops the jobs' results: this is what it calls
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    from bench.runtime.config import CONF

    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2("bench", create_config_search_path(f"file://{CONF}"))
    try:
        batches = hydra.multirun("run", functools.partial(sweep_job, run=run),
                                 [*absolute_out(overrides), "hydra.mode=MULTIRUN"])
    finally:
        GlobalHydra.instance().clear()
    results = [r for batch in batches for r in batch]
    failed = [r for r in results if isinstance(r.return_value, BenchError)]
    outs = sorted({str(Path(r.return_value).parents[3]) for r in results if r not in failed})
    print(f"sweep: {len(results) - len(failed)} of {len(results)} runs have their record under {', '.join(outs) or '-'}"
          + "".join(f" (python -m bench table out={o})" for o in outs[:1]))
    if failed:
        first = f"{' '.join(o for o in failed[0].overrides if not o.startswith('out='))}: {failed[0].return_value}"
        raise BenchError(f"{len(failed)} of {len(results)} runs failed; first ({first})")
    return 0


def sweep_job(cfg, run):
    """One job of a sweep, wherever the launcher runs it: the path of its record, or its BenchError.

    With resume=true a job continues its own run: its run_id is derived from its config (`s<seed>-<hash>`, the
    hash of what resume compares), so one command launches a sweep, continues a job that Slurm requeued after a
    pre-emption, and relaunches an interrupted sweep: finished jobs are skipped, unfinished ones continue, the
    others start."""
    import hashlib
    import json

    from bench.runtime.config import spec_of
    from bench.runtime.rundir import NOT_COMPARED, RUN_FILE, run_directory

    try:
        spec = spec_of(cfg)                    # the launcher composed this job: validated once, here
        s = spec.settings
        if s.resume == "true":
            compared = {k: v for k, v in spec.config.items() if k not in NOT_COMPARED}
            run_id = f"s{s.seed}-" + hashlib.sha1(json.dumps(compared, sort_keys=True, default=str).encode()).hexdigest()[:12]
            directory = run_directory(s.out, spec.suite_name, spec.method_name, run_id)
            if (directory / "record.json").is_file():
                print(f"{spec.method_name} on {spec.suite_name}: finished in an earlier attempt\n{directory / 'record.json'}")
                return directory / "record.json"
            started = (directory / RUN_FILE).is_file()
            spec = spec.replace(resume=run_id if started else None, run_id=None if started else run_id)
        return run(spec)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e


def absolute_out(overrides: list[str]) -> list[str]:
    """The overrides with `out` (each value of a sweep over it, else the default) made an absolute path."""
    import os

    from bench.runtime.config import Settings, defaults, parse

    given = [o for o in parse(overrides) if o.get_key_element() == "out"]
    if not given:
        values = [defaults(Settings)["out"]]
    elif given[-1].is_sweep_override():
        values = list(given[-1].sweep_string_iterator())
    else:
        values = [given[-1].get_value_element_as_str()]
    rest = [a for a in overrides if a.split("=", 1)[0] != "out"]
    return [*rest, "out=" + ",".join(repr(os.path.abspath(os.path.expanduser(v))) for v in values)]


def cmd_ls(opts: dict) -> int:
    from bench.runtime.config import GROUPS, presets

    if opts["name"] == "runs":
        return _ls_runs(str(opts["out"]))
    if opts["name"] is not None:
        return _ls_entry(str(opts["name"]))
    for title, group in (("methods", "method"), ("suites", "tasks")):
        registry = GROUPS[group]
        print(f"{title}:")
        for n in registry.names():
            e = registry.entry(n)
            print(f"  {n:<14} {registry.description(n)}" + (f"  [plugin {e.source.describe()}]" if e.plugin else ""))
    for group in ("method", "tasks"):
        print(f"presets ({group}=NAME):")
        for name, base in presets(group).items():
            print(f"  {name:<20} {base} with options of bench/conf/{group}/{name}.yaml")
    return 0


def _ls_entry(name: str) -> int:
    from bench.runtime.config import GROUPS, comments, defaults

    group = next((g for g, r in GROUPS.items() if name in r), None)
    if group is None:
        raise BenchError(unknown_choice("method or suite", name, sorted(n for r in GROUPS.values() for n in r.names())))
    entry = GROUPS[group].entry(name)
    docs = comments(entry.obj)
    print(f"{name}: {GROUPS[group].description(name)}")
    print(f"from: {entry.source.describe()} ({entry.ref})")
    paper = getattr(entry.obj, "paper", "")
    if paper:
        print(f"paper: {paper} {getattr(entry.obj, 'url', '')}".rstrip())
    print(f"options ({group}.KEY=VALUE):")
    for k, v in defaults(entry.obj, entry.defaults).items():
        print(f"  {k + '=' + _show(v):<28} {docs.get(k, '')}".rstrip())
    return 0


def _ls_runs(out: str) -> int:
    """Unfinished runs (a directory without record.json) and how far they got."""
    import json
    import time

    from bench.runtime.rundir import JOURNAL, RUN_FILE, Checkpoints, Journal, unfinished

    runs = unfinished(out)
    print(f"unfinished runs under {out}: {len(runs)}" + ("" if runs else " (none)"))
    for d in runs:
        cfg = json.loads((d / RUN_FILE).read_text())["config"]
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime((d / RUN_FILE).stat().st_mtime))
        steps = [f"{n} at step {Checkpoints(d).load(n).get('step', '?')}" if n != "rays"
                 else f"{len(Checkpoints(d).load(n)['rays'])} rays done" for n in Checkpoints(d).progress()]
        print(f"  {d.parent.parent.name}/{d.parent.name}/{d.name}  started {started}  "
              f"{len(Journal(d / JOURNAL).entries())} evaluations" + (f"  {', '.join(steps)}" if steps else "")
              + f"  resume: python -m bench run method={cfg['method']['name']} tasks={cfg['tasks']['name']} ... "
              f"out={out} resume={d.name}")
    return 0


# ---- table, plot, check, export ----------------------------------------------------------------------
def cmd_table(opts: dict) -> int:
    from bench.reports.report import check_format, render
    from bench.reports.tables import load_leaderboard

    fmt = check_format(opts["format"], opts["out_dir"])      # before any record is read
    lb = load_leaderboard(str(opts["out"]), opts["tasks"], int(opts["resamples"]))
    if fmt == "html":
        from bench.reports.html import write_html

        print(write_html(lb, opts["out_dir"]))
    else:
        sys.stdout.write(render(lb, fmt))
    return 0


def cmd_plot(opts: dict) -> int:
    from bench.reports.plots import write_figures
    from bench.reports.tables import load_leaderboard

    out = str(opts["out"])
    lb = load_leaderboard(out, opts["tasks"], resamples=0)    # figures draw no interval
    for p in write_figures(lb, opts["figures"] if opts["figures"] is not None else Path(out) / "figures"):
        print(p)
    return 0


def cmd_check(opts: dict) -> int:
    from bench.runtime.check import check_baselines

    only, seeds = opts["only"], opts["seeds"]
    if isinstance(only, str):
        only = [s.strip() for s in only.split(",") if s.strip()]
    elif only is not None:
        only = [str(s) for s in (only if isinstance(only, list) else [only])]
    if seeds is not None:
        seeds = [int(s) for s in (seeds if isinstance(seeds, list) else [seeds])]
    return check_baselines(only, opts["baselines"], update=bool(opts["update"]),
                           into=None if opts["into"] is None else str(opts["into"]), seeds=seeds)


def cmd_export(argv: list[str]) -> int:
    """export's own options (preference=, out=, runs=); every other argument is a `bench run` override."""
    from bench.runtime.config import compose
    from bench.runtime.export import OWN_KEYS, export, parse_preference

    own, rest = {}, []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and key in OWN_KEYS:
            own[key] = value
        else:
            rest.append(a)
    if "preference" not in own:
        raise BenchError("export needs preference=[r1,...,rT] (one entry per task, summing to 1), "
                         "e.g. preference=[0.3,0.7]")
    if "out" not in own:
        raise BenchError("export needs out=DIR, the directory to write the model to")
    pref = parse_preference(own["preference"])
    from bench.core.rays import validate_preference

    validate_preference(pref, len(pref))                       # sign / sum errors before any loading
    export(compose(rest), pref, Path(own["out"]), own.get("runs"))
    return 0


RESULTS = Option("results/runs", "results root that `bench run` wrote to")
COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("run", cmd_run, "Run one method on one suite and write its record (Hydra overrides; -m sweeps).",
            ("python -m bench run                                   # the default: pwe_moe_ls on tiny-clip digits+dots",
             "python -m bench run method=ta_grid tasks=toy-quadratic method.points=21",
             "python -m bench run -m method=ta_grid,ls tasks=toy-quadratic seed=0,1"),
            raw=True, usage="[-m] [method=NAME] [tasks=SUITE] [method.KEY=V] [tasks.KEY=V] [SETTING=V]"),
    Command("ls", cmd_ls, "List the registered methods and suites, one entry's options with their "
            "defaults, or the unfinished runs under out=.",
            ("python -m bench ls", "python -m bench ls ta_grid", "python -m bench ls tiny-clip",
             "python -m bench ls runs out=results/runs"),
            {"name": Option(None, "a method or suite (its options, defaults and documentation), or runs"),
             "out": RESULTS}, positional="name"),
    Command("table", cmd_table, "Paper-style leaderboard from the records under out=.",
            ("python -m bench table", "python -m bench table tasks=toy-quadratic format=latex",
             "python -m bench table format=csv out=results/runs > leaderboard.csv",
             "python -m bench table format=html out_dir=results/leaderboard/html"),
            {"tasks": Option(None, "one suite (default: every suite with records)"),
             "format": Option("md", "md | latex | csv | html"), "out": RESULTS,
             "resamples": Option(1000, "bootstrap resamples of the test examples behind HV's 95 % interval (0: none)"),
             "out_dir": Option(None, "format=html: the page's folder (index.html, figures/)")}),
    Command("plot", cmd_plot, "Fronts of every method on a suite (a pairwise matrix and parallel "
            "coordinates past 3 tasks), HV against cost and against the number of tasks (PNG, PDF).",
            ("python -m bench plot", "python -m bench plot tasks=toy-quadratic figures=paper/figures"),
            {"tasks": Option(None, "one suite (default: every suite with records)"),
             "figures": Option(None, "output directory (default: <out>/figures)"), "out": RESULTS}),
    Command("check", cmd_check, "Re-run results/baselines and exit 1 on drift (--update rewrites them).",
            ("python -m bench check", "python -m bench check only=ta_grid-toy-quadratic-2t-grid",
             "python -m bench check --update only=NAME",
             "python -m bench check into=results/runs/leaderboard seeds=[0,1,2]",
             "python -m bench check published=fusionbench-clip-vit-b32-ta device=cuda"),
            {"only": Option(None, "baseline names, comma-separated (default: all)"),
             "baselines": Option(None, "directory of baselines (default: results/baselines)"),
             "into": Option(None, "run the configs into this results root and keep the records (no comparison)"),
             "seeds": Option(None, "with into=: seeds to run, e.g. [0,1,2]"),
             "published": Option(None, "reproduce a published reference (results/published/NAME.yaml, or a .yaml path) "
                                       "on the real checkpoints; other key=value are `bench run` overrides (device=cuda, "
                                       "tasks.pretrained=DIR, out=DIR); exit 1 outside its tolerance")},
            {"--update": "rewrite the expected values (tolerances are kept)"}),
    Command("export", cmd_export, "Write the merged model of a trained run at one preference (save_pretrained).",
            ("python -m bench export method=pwe_moe_ls tasks=tiny-clip 'tasks.names=[digits,dots]' "
             "preference=[0.3,0.7] out=exported/digits-dots",),
            raw=True, usage="method=NAME tasks=SUITE [tasks.KEY=V] [method.KEY=V] [seed=N] preference=[r1,...,rT] "
                            "out=DIR [runs=RESULTS_ROOT] [device=auto|cpu|cuda]"),
)}
