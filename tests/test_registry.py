"""Plugins and the registry in real processes: distributions with entry points written as files on
PYTHONPATH (importlib.metadata finds them as it finds installed ones), plugins= modules, and a working
directory full of folders named like the harness's packages. Every mistake is one line, exit 2, nothing written.
(The example plugin package, installed with pip, is tests/test_plugin.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.core.registry import METHODS, SUITES, BenchError

ROOT = Path(__file__).resolve().parent.parent

METHOD_SRC = '''
from dataclasses import dataclass
from bench.api import Front, Method, task_arithmetic

@dataclass(frozen=True)
class Half(Method):
    """task arithmetic at λ = 0.5 and 1.0 only"""
    scale: float = 1.0        # multiplies both λ

    def approximate_front(self, suite, *, evaluator, seed, checkpoints=None):
        theta0, tv = suite.theta0(), suite.task_vectors()
        lams = [[0.5 * self.scale] * suite.num_tasks, [self.scale] * suite.num_tasks]
        metrics = [evaluator.evaluate(lambda l=l: task_arithmetic(theta0, tv, l), "test", key=("half", tuple(l)))
                   for l in lams]
        return Front(tasks=suite.tasks, objective=suite.objective, X=lams,
                     x_names=[f"lambda[{t}]" for t in suite.tasks], metrics=metrics)
'''


def dist(site: Path, name: str, version: str, entry_points: str, modules: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata sees one: <name>-<version>.dist-info + its modules."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for mod, src in modules.items():
        (site / f"{mod}.py").write_text(src)


def bench(args: list[str], cwd: Path, site: Path | None = None, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, **env}
    if site is not None:
        e["PYTHONPATH"] = str(site)
    if "PARETOBENCH_PLUGINS" not in env:
        e.pop("PARETOBENCH_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=300)


def one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    err = p.stderr.strip()
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_entry_points_extend_every_command_and_the_record_names_the_plugin(tmp_path):
    site = tmp_path / "site"
    dist(site, "halfplug", "1.2.3", "[paretobench.methods]\nhalf = halfplug_mod:Half\n", {"halfplug_mod": METHOD_SRC})
    ls = bench(["ls"], tmp_path, site)
    assert ls.returncode == 0 and "half " in ls.stdout and "ta_grid" in ls.stdout, ls.stderr
    assert "task arithmetic at λ = 0.5 and 1.0 only" in ls.stdout          # the class's docstring
    opts = bench(["ls", "half"], tmp_path, site)
    assert "method.scale=1.0" in opts.stdout.replace(" ", "") or "scale=1.0" in opts.stdout, opts.stdout
    run = bench(["run", "method=half", "tasks=toy-quadratic", "method.scale=2.0", f"out={tmp_path / 'runs'}"],
                tmp_path, site)
    assert run.returncode == 0, run.stderr
    rec = json.loads(Path(run.stdout.strip().splitlines()[-1]).read_text())
    assert rec["method"] == "half" and len(rec["points"]) == 2
    assert rec["plugins"] == [{"name": "halfplug", "version": "1.2.3", "kind": "entry_point"}]
    assert rec["points"][1]["x"]["lambda[task0]"] == 2.0


def plugin_module(directory: Path) -> None:
    """my_methods.py: the method as a plugins= module that registers itself as half_local (version 0.3)."""
    (directory / "my_methods.py").write_text(METHOD_SRC.replace(
        "from bench.api import Front, Method, task_arithmetic",
        "from bench.api import Front, Method, register_method, task_arithmetic\n__version__ = '0.3'")
        .replace("@dataclass(frozen=True)", '@register_method("half_local")\n@dataclass(frozen=True)'))


def test_plugins_setting_imports_a_module_that_registers_itself(tmp_path):
    plugin_module(tmp_path)
    out = tmp_path / "runs"
    run = bench(["run", "method=half_local", "tasks=toy-quadratic", "plugins=[my_methods]", f"out={out}"], tmp_path)
    assert run.returncode == 0, run.stderr
    rec = json.loads(Path(run.stdout.strip().splitlines()[-1]).read_text())
    assert rec["plugins"] == [{"name": "my_methods", "version": "0.3", "kind": "module"}]
    assert rec["config"]["plugins"] == ["my_methods"]
    # every command takes plugins=, or the environment variable that child processes inherit
    assert "half_local" in bench(["ls", "plugins=[my_methods]"], tmp_path).stdout
    assert "half_local" in bench(["ls"], tmp_path, PARETOBENCH_PLUGINS="my_methods").stdout
    assert "half_local" not in bench(["ls"], tmp_path).stdout


@pytest.mark.parametrize("case", ["two plugins", "a plugin and the harness", "missing object", "module fails",
                                  "plugins= module missing", "plugins= module raises"])
def test_plugin_mistakes_are_one_line_and_write_nothing(tmp_path, case):
    site, out = tmp_path / "site", tmp_path / "runs"
    args = ["run", "method=half", "tasks=toy-quadratic", f"out={out}"]
    if case == "two plugins":
        dist(site, "plug-a", "1.0", "[paretobench.methods]\nhalf = plug_a:Half\n", {"plug_a": METHOD_SRC})
        dist(site, "plug-b", "2.0", "[paretobench.methods]\nhalf = plug_b:Half\n", {"plug_b": METHOD_SRC})
        needles = ["'half' is registered twice", "plug-a 1.0 (plug_a:Half)", "plug-b 2.0 (plug_b:Half)"]
    elif case == "a plugin and the harness":
        dist(site, "plug-a", "1.0", "[paretobench.methods]\nta_grid = plug_a:Half\n", {"plug_a": METHOD_SRC})
        needles = ["'ta_grid' is registered twice", "paretobench (bench.methods.ta_grid:TAGrid)", "plug-a 1.0"]
    elif case == "missing object":
        dist(site, "plug-a", "1.0", "[paretobench.methods]\nhalf = plug_a:Halve\n", {"plug_a": METHOD_SRC})
        needles = ["'half' = 'plug_a:Halve' (plugin plug-a 1.0)", "module 'plug_a' has no object 'Halve'"]
    elif case == "module fails":
        dist(site, "plug-a", "1.0", "[paretobench.methods]\nhalf = plug_a:Half\n",
             {"plug_a": "import not_a_module_anywhere\n"})
        needles = ["module 'plug_a' does not import", "No module named 'not_a_module_anywhere'"]
    elif case == "plugins= module missing":
        args = ["run", "method=ta_grid", "tasks=toy-quadratic", f"out={out}", "plugins=[no_such_plugin]"]
        needles = ["plugin 'no_such_plugin' does not import", "ModuleNotFoundError: No module named 'no_such_plugin'"]
    else:
        site.mkdir()
        (site / "raising.py").write_text("raise RuntimeError('needs a GPU driver\\nsecond line')\n")
        args = ["run", "method=ta_grid", "tasks=toy-quadratic", f"out={out}", "plugins=[raising]"]
        needles = ["plugin 'raising' does not import: RuntimeError: needs a GPU driver"]
    err = one_line_error(bench(args, tmp_path, site if site.exists() else None), *needles)
    assert "second line" not in err
    assert not out.exists()


def test_no_shadowing_from_folders_named_like_the_packages(tmp_path):
    """A user's project with bench/ (a plain folder), methods/ and tasks/ (packages of their own): the harness
    lists and runs everything, and its package __init__ still pins the CPU instruction set."""
    (tmp_path / "bench").mkdir()
    for pkg in ("methods", "tasks"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("raise RuntimeError('the user package was imported')\n")
    ls = bench(["ls"], tmp_path)
    assert ls.returncode == 0, ls.stderr
    for name in [*METHODS.names(), *SUITES.names()]:
        assert f"  {name} " in ls.stdout, name
    here = bench(["run", "method=ta_grid", "tasks=toy-quadratic", f"out={tmp_path / 'a'}"], tmp_path)
    ref = bench(["run", "method=ta_grid", "tasks=toy-quadratic", f"out={tmp_path / 'b'}"], ROOT)
    assert here.returncode == 0 and ref.returncode == 0, here.stderr + ref.stderr
    a, b = (json.loads(Path(p.stdout.strip().splitlines()[-1]).read_text()) for p in (here, ref))
    assert a["env"]["cpu_isa"] == b["env"]["cpu_isa"] and a["indicators"]["hv"] == b["indicators"]["hv"]


def test_a_declared_entry_imports_nothing_until_used():
    code = ("import sys; from bench.core.registry import METHODS, SUITES; METHODS.names(); SUITES.names(); "
            "METHODS.description('map'); print(sorted(m for m in sys.modules if m.startswith('bench.methods.') "
            "or m.startswith('bench.tasks.') or m == 'torch'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.stdout.strip() == "[]", p.stdout + p.stderr


def test_unknown_name_lists_the_choices():
    with pytest.raises(BenchError, match=r"unknown method 'ta-grid' \(did you mean 'ta_grid'\?\); valid choices: epo,"):
        METHODS.check("ta-grid")


def test_leaderboard_workers_import_the_specs_plugins(tmp_path):
    """A leaderboard spec's plugins: the driver resolves the plugin's method, and so does every spawned worker."""
    plugin_module(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        scale: 1.0
        seeds: [0, 1]
        jobs: 2
        resamples: 0
        plugins: [my_methods]
        runs: {tmp_path / 'runs'}
        out: {tmp_path / 'board'}
        suites:
          toy-quadratic: {{num_tasks: [2]}}
        methods:
          half_local: {{kind: search}}
        """))
    p = subprocess.run([sys.executable, "-m", "bench.reports.leaderboard", str(spec)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    records = sorted((tmp_path / "runs" / "toy-quadratic" / "half_local").glob("*/record.json"))
    assert len(records) == 2
    assert all(json.loads(r.read_text())["plugins"][0]["name"] == "my_methods" for r in records)
    assert "half_local" in (tmp_path / "board" / "leaderboard.md").read_text()
