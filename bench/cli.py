"""Command line: `python -m bench <command> [key=value ...]`.

    python -m bench run method=ta_grid tasks=toy-quadratic            # one run → record.json
    python -m bench run -m method=ta_grid,ls tasks=toy-quadratic       # Hydra multirun sweep
    python -m bench ls                                                # methods and suites
    python -m bench table [tasks=SUITE] [format=md|latex|csv]          # leaderboard
    python -m bench plot [tasks=SUITE] [figures=DIR]                  # fronts, HV vs cost
    python -m bench check [--update]                                  # regression vs results/baselines
    python -m bench export method=pwe_moe_ls tasks=tiny-clip preference=[0.3,0.7] out=DIR

Errors in what was asked (unknown names, bad values, unwritable paths) print one line on stderr
and exit 2, without a traceback.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Callable

from bench.registry import BenchError, unknown_choice

CONF = Path(__file__).parent / "conf"

# name → (module:function, one-line help). Each function takes the remaining argv, returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("bench.cli:cmd_run", "run one method on one suite and write a record (Hydra overrides, -m sweeps)"),
    "ls": ("bench.cli:cmd_ls", "list registered methods and suites"),
    "table": ("bench.report:cmd_table", "paper-style leaderboard from the records under out="),
    "plot": ("bench.plots:cmd_plot", "fronts of every method on a suite, and HV against cost (PNG, PDF)"),
    "check": ("bench.check:cmd_check", "re-run results/baselines and exit 1 on drift (--update rewrites them)"),
    "export": ("bench.export:cmd_export", "write the merged model of a run for one preference (save_pretrained)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd not in COMMANDS:
            raise BenchError(unknown_choice("command", cmd, sorted(COMMANDS)))
        return int(_resolve(COMMANDS[cmd][0])(rest) or 0)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def usage() -> str:
    lines = [__doc__.strip().splitlines()[0], "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "examples:"] + [l for l in __doc__.splitlines() if l.startswith("    python")]
    return "\n".join(lines)


def _resolve(target: str) -> Callable:
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


# ---------------------------------------------------------------------------------------------
def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def group_keys(group: str, name: str) -> list[str]:
    from omegaconf import OmegaConf

    return sorted(OmegaConf.load(CONF / group / f"{name}.yaml").keys())


def prevalidate(overrides: list[str]) -> None:
    """Check group names and option keys before Hydra sees them, so that a mistake gives one line
    naming the bad value and the valid choices rather than Hydra's multi-line report."""
    from omegaconf import OmegaConf

    top = OmegaConf.load(CONF / "run.yaml")
    defaults = {k: v for d in top.defaults if isinstance(d, dict) or hasattr(d, "items")
                for k, v in dict(d).items() if k in ("method", "tasks")}
    selected = {g: [defaults[g]] for g in ("method", "tasks")}
    pairs = []
    for o in overrides:
        if o.startswith("-") or "=" not in o:
            if o.startswith("-"):
                continue
            raise BenchError(f"bad argument {o!r}: expected key=value, e.g. method=ta_grid")
        key, value = o.split("=", 1)
        pairs.append((key.lstrip("+~"), value))
    for key, value in pairs:
        if key in ("method", "tasks"):
            names = [v.strip() for v in value.split(",")]
            for v in names:
                if v not in group_choices(key):
                    raise BenchError(unknown_choice("method" if key == "method" else "suite", v, group_choices(key)))
            selected[key] = names
    valid_top = [k for k in top.keys() if k not in ("defaults", "hydra")] + ["method", "tasks"]
    for key, _ in pairs:
        head, _, sub = key.partition(".")
        if head == "hydra":
            continue
        if head not in valid_top:
            raise BenchError(unknown_choice("override", key, sorted(valid_top)))
        if head in ("method", "tasks") and sub:
            opt = sub.split(".")[0]
            for name in selected[head]:
                keys = [k for k in group_keys(head, name) if k != "name"]
                if opt not in keys:
                    raise BenchError(unknown_choice(f"option for {head} {name!r}:", f"{head}.{opt}",
                                                    [f"{head}.{k}" for k in keys]))


# `python -m bench run` with no tasks override: the default suite (run.yaml) on two of its tasks
DEFAULT_TASK_NAMES = "tasks.names=[digits,dots]"


def with_default_tasks(argv: list[str]) -> list[str]:
    if any(a.lstrip("+~").split("=")[0].split(".")[0] == "tasks" for a in argv if "=" in a):
        return argv
    return [DEFAULT_TASK_NAMES, *argv]


def cmd_run(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print("usage: python -m bench run [-m] [method=NAME] [tasks=SUITE] [method.KEY=V] [tasks.KEY=V] "
              "[seed=N] [out=DIR] [device=auto|cpu|cuda]\n\nmethods: " + ", ".join(group_choices("method"))
              + "\nsuites:  " + ", ".join(group_choices("tasks"))
              + "\n\ndefault: method=pwe_moe_ls tasks=tiny-clip tasks.names=[digits,dots]"
              + "\n\nexamples:\n  python -m bench run method=ta_grid tasks=toy-quadratic method.points=21\n"
              "  python -m bench run -m method=ta_grid,ls tasks=toy-quadratic seed=0,1")
        return 0
    argv = with_default_tasks(argv)
    prevalidate(argv)
    import hydra

    errors: list[BenchError] = []

    @hydra.main(config_path=str(CONF), config_name="run", version_base="1.3")
    def _task(cfg) -> None:
        from bench.run import run

        try:
            run(cfg)
        except BenchError as e:     # reported by main() as one line; a sweep goes on to its next job
            errors.append(e)

    saved = sys.argv
    sys.argv = ["bench run", *argv]
    try:
        _task()
    finally:
        sys.argv = saved
    if errors:
        raise errors[0] if len(errors) == 1 else BenchError(f"{len(errors)} runs failed; first: {errors[0]}")
    return 0


def compose(overrides: list[str]):
    """The resolved run config for `overrides` (Hydra's compose API), validated like `bench run`."""
    from hydra import compose as _compose, initialize_config_dir

    overrides = with_default_tasks(list(overrides))
    prevalidate(overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return _compose(config_name="run", overrides=overrides)


def cmd_ls(argv: list[str]) -> int:
    import methods  # noqa: F401  (registration)
    import tasks  # noqa: F401
    from bench.registry import METHODS, SUITES

    print("methods:")
    for e in METHODS:
        print(f"  {e.name:<14} {e.description}")
    print("suites:")
    for e in SUITES:
        print(f"  {e.name:<14} {e.description}")
    return 0


def parse_kv(argv: list[str], defaults: dict) -> dict:
    """`key=value` arguments of the non-run commands, checked against `defaults`' keys."""
    from omegaconf import OmegaConf

    out = dict(defaults)
    for a in argv:
        if "=" not in a:
            raise BenchError(f"bad argument {a!r}: expected key=value; valid keys: {', '.join(sorted(defaults))}")
        key = a.split("=", 1)[0]
        if key not in defaults:
            raise BenchError(unknown_choice("option", key, sorted(defaults)))
        out.update(OmegaConf.to_container(OmegaConf.from_dotlist([a])))
    return out
