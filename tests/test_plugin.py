"""The example plugin (examples/plugin, distribution paretobench-example-plugin): a method, a suite and an indicator
declared only through entry points, installed into a child environment and driven through the real CLI.

Its maths is tested here in this process (pb_example_plugin.ties and .anisotropic register nothing when imported).
Everything else runs in real processes of a child venv that layers this one (its site-packages are added by a
.pth file, so torch and the editable harness come from here) and has the plugin installed with `pip install -e`:
this venv never sees the plugin, so the other tests' registries stay as they are. The commands run from working
directories that hold a user's own folders named tasks/, methods/ and bench/.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.record import iter_record_paths
from bench.core.registry import METHODS, SUITES
from tests.test_resume import comparable

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "plugin"
BASELINES = PLUGIN / "baselines"
DIST, VERSION = "paretobench-example-plugin", "0.1.0"
PLUGIN_ENTRIES = {"method": ["ties_grid"], "suite": ["toy-anisotropic"]}
TWO = ["tasks=toy-anisotropic", "tasks.names=[task0,task1]"]
TIES = ["method=ties_grid", *TWO, "method.partitions=4"]


@pytest.fixture
def plugin_module(monkeypatch):
    """A module of the plugin imported from its folder (not installed here)."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    return lambda name: importlib.import_module(f"pb_example_plugin.{name}")


# ---- the maths, on its own ----------------------------------------------------------------------------
def test_ties_merge_matches_a_hand_computation(plugin_module):
    ties = plugin_module("ties")
    tv = {"w": torch.tensor([[3.0, -1.0, 0.5, 2.0, -4.0],
                             [-2.0, 5.0, 1.0, -1.0, 1.0],
                             [4.0, 2.0, -3.0, 0.5, 2.5]], dtype=torch.float64)}
    # density 0.4 of 5 entries: the 2 largest magnitudes of each task survive the trim
    #   r·trimmed: task0 [1.5, 0, 0, 0, -2], task1 [-0.5, 1.25, 0, 0, 0], task2 [1, 0, -0.75, 0, 0]
    #   sums [2, 1.25, -0.75, 0, -2] → signs [+, +, −, 0, −]; entry 0: mean of 1.5 and 1 (task1 disagrees)
    got = ties.ties_merge(tv, [0.5, 0.25, 0.25], density=0.4)["w"]
    assert got.tolist() == [1.25, 1.25, -0.75, 0.0, -2.0]
    # without trimming entry 3 is 0.5·2 − 0.25·1 + 0.25·0.5 = 0.875 > 0: mean of 1.0 and 0.125
    assert ties.ties_merge(tv, [0.5, 0.25, 0.25], density=1.0)["w"][3].item() == pytest.approx(0.5625, abs=1e-15)


def ties_by_loops(vectors: np.ndarray, weights, density: float) -> np.ndarray:
    """TIES of [T, D] vectors, one entry at a time, as the module docstring states it."""
    T, D = vectors.shape
    m = max(1, int(np.ceil(density * D - 1e-9)))
    trimmed = np.zeros_like(vectors)
    for i in range(T):
        v = weights[i] * vectors[i]
        threshold = sorted(abs(x) for x in v)[D - m]          # the m-th largest magnitude
        trimmed[i] = [x if abs(x) >= threshold else 0.0 for x in v]
    out = np.zeros(D)
    for p in range(D):
        gamma = np.sign(sum(trimmed[i, p] for i in range(T)))
        agree = [trimmed[i, p] for i in range(T) if gamma != 0 and np.sign(trimmed[i, p]) == gamma]
        out[p] = sum(agree) / len(agree) if agree else 0.0
    return out


@pytest.mark.parametrize("density", [0.1, 0.3, 0.7, 1.0])
def test_ties_merge_matches_a_loop_over_entries(plugin_module, density):
    """Several parameters trimmed jointly (the whole model, as the paper), tied magnitudes, a zero weight."""
    ties = plugin_module("ties")
    rng = np.random.default_rng(int(density * 10))
    shapes = {"a.weight": (3, 4), "a.bias": (3,), "b": (2, 2, 2)}
    tv = {n: torch.tensor(rng.integers(-4, 5, size=(3, *s)).astype(float)) for n, s in shapes.items()}
    for weights in ([1 / 3] * 3, [0.6, 0.4, 0.0], [0.1, 0.2, 0.7]):
        got = ties.ties_merge(tv, weights, density)
        flat = np.concatenate([tv[n].reshape(3, -1).numpy() for n in shapes], axis=1)
        want = ties_by_loops(flat, weights, density)
        np.testing.assert_allclose(np.concatenate([got[n].reshape(-1).numpy() for n in shapes]), want, atol=1e-12)
        assert {n: tuple(t.shape) for n, t in got.items()} == shapes


def test_ties_invariants(plugin_module):
    ties, aniso = plugin_module("ties"), plugin_module("anisotropic")
    suite = aniso.ToyAnisotropic(names=["task0", "task1", "task2"])
    theta0, tau = suite.theta0()["theta"], suite.task_vectors()["theta"]
    assert torch.equal(ties.candidate(suite, ray=(0.2, 0.3, 0.5), lam=0.0, density=0.2)["theta"], theta0)
    for j in range(3):        # a one-hot ray without trimming: task j's fine-tuned model at λ = 1
        ray = tuple(float(i == j) for i in range(3))
        torch.testing.assert_close(ties.candidate(suite, ray=ray, lam=1.0, density=1.0)["theta"], theta0 + tau[j])
    plain = ties.ties_merge(suite.task_vectors(), [1.0] * 3, 0.2)["theta"]      # the paper's TIES vector
    torch.testing.assert_close(ties.ties_merge(suite.task_vectors(), [1 / 3] * 3, 0.2)["theta"] * 3, plain)


def test_anisotropic_front_is_the_weighted_sum_minimiser(plugin_module):
    aniso = plugin_module("anisotropic")
    suite = aniso.ToyAnisotropic(names=["task1", "task3"], dim=6, seed=2)
    assert type(suite)(**suite.config()).key == suite.key          # the record's suite_config rebuilds it
    every = aniso.ToyAnisotropic(dim=6, seed=2)                     # a task is the same in every subset
    np.testing.assert_array_equal(suite.theta_star, every.theta_star[[1, 3]])
    w = np.random.default_rng(0).dirichlet(np.ones(2), size=5)
    for wi, th in zip(w, suite.pareto_set(w)):                      # Σ w_i ∇L_i = 0, by autograd
        p = {"theta": torch.tensor(th, requires_grad=True)}
        sum(float(a) * suite.loss(p, t) for a, t in zip(wi, suite.tasks)).backward()
        assert p["theta"].grad.abs().max() < 1e-10
    np.testing.assert_allclose(suite.losses(suite.theta0()["theta"].numpy()), 1.0, rtol=1e-12)
    # brute force: no parameter vector of a dense random sample beats a point of the front on both tasks
    lo, hi = suite.theta_star.min(0) - 0.5, suite.theta_star.max(0) + 0.5
    L = suite.losses(np.random.default_rng(1).uniform(lo, hi, size=(200_000, 6)))
    L = L[np.argsort(L[:, 0])]
    best1 = np.minimum.accumulate(L[:, 1])                          # min L1 among samples with L0 ≤ each L0
    pf = suite.true_front()
    k = np.searchsorted(L[:, 0], pf[:, 0] - 1e-9) - 1               # samples strictly better on task 0
    assert not (best1[k[k >= 0]] < pf[k >= 0, 1] - 1e-9).any()


# ---- the plugin installed in a child environment ---------------------------------------------------------
class Env:
    def __init__(self, python: Path, tmp: Path):
        self.python, self.tmp = python, tmp
        self.env = {k: v for k, v in os.environ.items() if k != "PARETOBENCH_PLUGINS"}

    def run(self, *args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *args], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def bench(self, *args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
        r = self.run("-m", "bench", *args, cwd=cwd)
        if ok:
            assert r.returncode == 0, (args, r.stderr[-3000:])
        return r


@pytest.fixture(scope="module")
def child(tmp_path_factory) -> Env:
    """A venv without pip layering this one (`site.addsitedir` runs this venv's .pth files, the harness's editable
    finder among them), with the plugin installed editable by this venv's pip."""
    tmp = tmp_path_factory.mktemp("plugin")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    site = tmp / "venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "_main.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    env = Env(tmp / "venv" / "bin" / "python", tmp)
    r = env.run("-m", "pip", "install", "--no-deps", "--no-build-isolation", "--disable-pip-version-check", "-q",
                "-e", str(PLUGIN))
    assert r.returncode == 0, r.stderr[-3000:]
    return env


def folder(root: Path, *, bench: bool = True, tasks_package: bool = False) -> Path:
    """A working directory holding a user's own tasks/, methods/ (and bench/) folders; with `tasks_package`,
    tasks/ is a package that fails if anything imports it."""
    root.mkdir()
    for name in ("tasks", "methods", *(["bench"] if bench else [])):
        (root / name).mkdir()
        (root / name / "notes.txt").write_text("a user's folder\n")
    if tasks_package:
        (root / "tasks" / "__init__.py").write_text("raise ImportError('the user\\'s own tasks/ was imported')\n")
    return root


@pytest.fixture(scope="module")
def cwds(child) -> dict[str, Path]:
    return {"plain": folder(child.tmp / "plain"), "package": folder(child.tmp / "package", tasks_package=True),
            # workers and launcher jobs: without bench/ (see test_a_folder_named_bench_in_workers)
            "scale": folder(child.tmp / "scale", bench=False, tasks_package=True)}


def test_the_child_environment_has_the_plugin_and_this_one_does_not(child):
    """Entry points found, torch importable, `bench ls NAME` documents the options; this venv lacks the plugin."""
    from importlib.metadata import PackageNotFoundError, version

    with pytest.raises(PackageNotFoundError):
        version(DIST)
    r = child.run("-c", "import importlib.metadata as m, torch; from bench.cli import main; "
                        "print(m.version('paretobench-example-plugin'), torch.__version__, "
                        "sorted(e.name for g in ('methods', 'suites', 'indicators') "
                        "for e in m.entry_points(group='paretobench.' + g))); "
                        "main(['ls', 'ties_grid']); main(['ls', 'toy-anisotropic'])")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[:2] == [VERSION, torch.__version__]
    assert "['spacing', 'ties_grid', 'toy-anisotropic']" in r.stdout
    # `bench ls NAME`: the paper, and each option with its default and its trailing comment
    assert "paper: Yadav et al., TIES-Merging" in r.stdout and "https://arxiv.org/abs/2306.01708" in r.stdout
    assert "density=0.2" in r.stdout and "the paper's k = 20 %" in r.stdout
    assert "scales=[0.5, 1.0, 1.5, 2.0]" in r.stdout and "names=null" in r.stdout and "curvature ratio" in r.stdout
    assert not list(PLUGIN.glob("*.egg-info")) and not (PLUGIN / "build").exists()     # the install wrote nothing


@pytest.mark.parametrize("where", ["plain", "package"])
def test_ls_lists_every_builtin_and_the_plugin(child, cwds, where):
    text = child.bench("ls", cwd=cwds[where]).stdout
    for name in METHODS.names() + SUITES.names() + PLUGIN_ENTRIES["method"] + PLUGIN_ENTRIES["suite"]:
        assert f"  {name} " in text, name
    assert "TIES-merging" in text and "anisotropic" in text


def record_of(r: subprocess.CompletedProcess) -> Path:
    return Path(r.stdout.strip().splitlines()[-1])


def test_serial_workers_and_joblib_write_the_same_records(child, cwds, tmp_path):
    """ties_grid serially (from a folder with bench/, tasks/, methods/), on two Ray workers, and in a joblib sweep
    with the built-in ta_grid on the plugin's suite (whose baseline `bench check` compares): equal records but
    timings; `bench table` shows both rows."""
    pytest.importorskip("ray", reason="the scale extra: pip install -e '.[scale]'")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the scale extra")
    serial = record_of(child.bench("run", *TIES, f"out={tmp_path / 'serial'}", cwd=cwds["plain"]))
    rec = json.loads(serial.read_text())
    assert rec["plugins"] == [{"name": DIST, "version": VERSION, "kind": "entry_point"}]
    assert rec["suite"] == "toy-anisotropic" and rec["method_url"] == "https://arxiv.org/abs/2306.01708"
    assert rec["cost"]["evaluations"] == 20 and rec["indicators"]["spacing"] is not None

    workers = record_of(child.bench("run", *TIES, "workers=2", f"out={tmp_path / 'workers'}", cwd=cwds["scale"]))
    assert comparable(workers) == comparable(serial)

    out = tmp_path / "joblib"
    child.bench("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TIES[1:],
                "method=ties_grid,ta_grid", f"out={out}", cwd=cwds["scale"])
    swept = {p.parent.parent.name: p for p in iter_record_paths(out)}
    assert comparable(swept["ties_grid"]) == comparable(serial)
    ta = json.loads(swept["ta_grid"].read_text())                  # the built-in method on the plugin's suite
    assert ta["plugins"] == rec["plugins"] and ta["cost"]["evaluations"] == 11 and ta["igd_ref"] == rec["igd_ref"]

    table = child.bench("table", f"out={out}", "resamples=0", cwd=cwds["plain"]).stdout
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert any(r.startswith("| ties_grid") for r in rows) and any(r.startswith("| ta_grid") for r in rows)
    assert "analytic Pareto front of toy-anisotropic" in table and "TIES-Merging" in table


def test_check_passes_and_fails_on_drift(child, cwds, tmp_path):
    r = child.bench("check", f"baselines={BASELINES}", cwd=cwds["plain"])
    assert f"{len(list(BASELINES.glob('*.json')))} baselines: {len(list(BASELINES.glob('*.json')))} ok" in r.stdout
    tampered = tmp_path / "baselines"
    tampered.mkdir()
    b = json.loads((BASELINES / "ties_grid-toy-anisotropic-2t.json").read_text())
    b["entries"]["indicators.hv"]["expected"] *= 1.001
    (tampered / "ties_grid-toy-anisotropic-2t.json").write_text(json.dumps(b))
    r = child.bench("check", f"baselines={tampered}", cwd=cwds["plain"], ok=False)
    assert r.returncode == 1 and "DRIFT ties_grid-toy-anisotropic-2t: 1 of" in r.stdout and "indicators.hv" in r.stdout


def test_every_plugin_entry_has_a_baseline_and_none_is_orphaned():
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    eps = project["entry-points"]
    assert project["name"] == DIST and project["version"] == VERSION
    assert sorted(eps["paretobench.methods"]) == PLUGIN_ENTRIES["method"]
    assert sorted(eps["paretobench.suites"]) == PLUGIN_ENTRIES["suite"]
    targets = []
    for p in sorted(BASELINES.glob("*.json")):
        b = json.loads(p.read_text())
        kv = dict(o.split("=", 1) for o in b["overrides"])
        targets.append((kv["method"], kv["tasks"]))
        assert b.get("entries") and all(set(e) == {"expected", "abs", "rel"} for e in b["entries"].values()), p.name
        assert kv["method"] in {*METHODS.names(), *eps["paretobench.methods"]}, p.name
        assert kv["tasks"] in eps["paretobench.suites"], p.name          # the plugin's baselines: its own suite
    assert set(eps["paretobench.methods"]) <= {m for m, _ in targets}


def test_harness_conformance_tests_and_plugin_doctests_pass_with_the_plugin(child):
    """The harness's own registry-wide tests (every entry listed; every option's default from the constructor and
    documented by `bench ls`), run where the plugin is installed, and the plugin's doctests."""
    r = child.run("-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "tests/test_cli.py::test_ls_lists_every_method_and_suite",
                  "tests/test_cli.py::test_every_default_comes_from_the_constructor",
                  str(PLUGIN / "pb_example_plugin"))
    assert r.returncode == 0 and "6 passed" in r.stdout, r.stdout[-3000:]


def test_a_folder_named_bench_in_workers(child, cwds, tmp_path):
    """Launcher jobs started from a folder holding bench/ (Ray workers too: Ray puts the driver's working directory
    on their sys.path). Until the harness handles it, such a job imports `bench` as a namespace package from that
    folder: the harness reads nothing from bench/__init__.py in a worker (version from metadata, ISA from the
    environment the driver set)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the scale extra: pip install -e '.[scale]'")
    r = child.bench("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TIES[1:], "method=ties_grid",
                    "seed=0,1", f"out={tmp_path}", cwd=cwds["plain"], ok=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(iter_record_paths(tmp_path))) == 2
