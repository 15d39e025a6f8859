"""Bad input as a new user types it: every mistake is one line naming the bad value, exit ≠ 0, no
traceback, and nothing is written; numerical failures never become a record that looks valid."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.runtime.config import schema
from bench.core.front import Front
from bench.core.record import RunRecord
from bench.core.registry import METHODS

ROOT = Path(__file__).resolve().parent.parent
TOY = ["tasks=toy-quadratic"]

# (arguments of `bench run` or another command, what the one line must say)
CASES = [
    # names, keys, values
    (["run", "method=ta_gird", *TOY], "unknown method 'ta_gird' (did you mean 'ta_grid'?); valid choices:"),
    (["run", "tasks=toy-quadratc"], "unknown suite 'toy-quadratc' (did you mean 'toy-quadratic'?)"),
    (["run", "method=ta_grid", *TOY, "method.pointz=3"], "'method.pointz' (did you mean 'method.points'?)"),
    (["run", "method=ta_grid", *TOY, "method.mode=diagonal"], "unknown value for method.mode: 'diagonal'"),
    (["run", "method=ta_grid", *TOY, "method.points=many"], "method.points='many' must be of type int"),
    (["run", "method=ta_grid", *TOY, "method.points=1"], "method.points=1 must be ≥ 2"),
    (["run", "method=ta_grid", *TOY, "method.mode=simplex", "method.partitions=0"], "method.partitions=0 must be ≥ 1"),
    (["run", "method=ta_grid", *TOY, "method.scales=[]"], "method.scales=[] must be positive numbers"),
    (["run", "method=ta_grid", *TOY, "method.lo=2", "method.hi=1"], "method.lo=2.0 must be below method.hi=1.0"),
    (["run", "method=ls", *TOY, "method.lr=-1"], "method.lr=-1.0 must be a positive number"),
    (["run", "method=ls", *TOY, "method.rays=[[0.5,0.5,0.0]]"], "method.rays[0]=[0.5, 0.5, 0.0] has 3 entries"),
    (["run", "method=map", *TOY, "method.bounds=[1,0]"], "method.bounds=[1.0, 0.0] must be [lo, hi]"),
    (["run", "method=ta_grid", "tasks=toy-quadratic", "tasks.num_tasks=9"], "tasks.num_tasks=9 is out of range; valid: 2..8"),
    (["run", "method=ta_grid", "tasks.names=[digits]"], "tasks.names=['digits'] has 1 task; a Pareto front needs at least 2"),
    (["run", "method=ta_grid", "tasks=tiny-clip", "tasks.train_size=0"], "tasks.train_size=0 must be ≥ 1"),
    # top-level settings
    (["run", "method=ta_grid", *TOY, "sed=1"], "unknown setting 'sed' (did you mean 'seed'?)"),
    (["run", "method=ta_grid", *TOY, "seed=abc"], "seed='abc' must be of type int"),
    (["run", "method=ta_grid", *TOY, "seed=-1"], "seed=-1 must be ≥ 0"),
    (["run", "method=ta_grid", *TOY, "eval_batch_size=0"], "eval_batch_size=0 must be ≥ 1"),
    (["run", "method=ta_grid", *TOY, "threads=0"], "threads=0 must be ≥ 1"),
    (["run", "method=ta_grid", *TOY, "device=tpu"], "unknown device 'tpu'"),
    (["run", "method=ta_grid", *TOY, "run_id=../escape"], "run_id='../escape' must be letters, digits"),
    (["run", "method=ta_grid", *TOY, "out="], "out= is empty"),
    # the command line itself
    (["run", "method=ta_grid", *TOY, "tasks.names=[digits"], "cannot read the override 'tasks.names=[digits'"),
    (["run", "method=ta_grid", *TOY, "method.points"], "cannot read the override 'method.points'"),
    (["run", "method=ta_grid,map", *TOY], "2 runs asked for without -m; add -m to sweep"),
    (["run", "method=ta_grid", *TOY, "--fast"], "unknown flag '--fast'"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["table", "format=pdf"], "unknown format 'pdf'"),
    (["table", "colour=red"], "unknown option of `bench table` 'colour'"),
    (["ls", "name=nope"], "unknown method or suite 'nope'"),
    (["check", "only=nope"], "unknown baseline 'nope'"),
    # numbers that go wrong: every trainer, and merges whose models compute NaN
    (["run", "method=ls", *TOY, "method.lr=1e300"], "ls: training diverged on every ray"),
    (["run", "method=ls", *TOY, "method.lr=1e12"], "ls: training diverged on every ray (training loss grew"),
    (["run", "method=epo", *TOY, "method.lr=1e300"], "epo: training diverged on every ray"),
    (["run", "method=ls", "tasks=tiny-clip", "tasks.names=[digits,dots]", "method.lr=1e4", "method.steps=20",
      "method.rays=[[0.5,0.5]]"], "ls: training diverged on every ray"),
    (["run", "method=ta_grid", "tasks=tiny-clip", "tasks.names=[digits,dots]", "method.lo=1e30", "method.hi=1e38",
      "method.points=2"], "ta_grid: no point has finite metrics (0 diverged in training, 2 non-finite)"),
]


def error_lines(err: str) -> list[str]:
    """stderr's error lines (progress bars of work done before a numerical failure are not errors)."""
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("args,needle", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(args, needle, tmp_path, capsys):
    out = tmp_path / "runs"
    extra = [f"out={out}"] if args[0] == "run" and not any(a.startswith("out=") for a in args) else []
    code = main([*args, *extra])
    cap = capsys.readouterr()
    assert code == 2, cap
    assert "Traceback" not in cap.err + cap.out
    lines = error_lines(cap.err)
    assert len(lines) == 1 and needle in lines[0], cap.err
    if not any(a.startswith(("method.lr", "method.lo")) for a in args):    # validation: nothing but that line
        assert cap.err.strip() == lines[0]
    assert not out.exists() and not any(tmp_path.glob("**/record.json"))


@pytest.mark.parametrize("method", [m for m in METHODS.names() if "lr" in schema(METHODS.get(m))])
def test_every_trainer_ends_a_divergence_with_one_line(method, tmp_path, capsys):
    """Each registered trainer (a method with a learning rate), trained with an absurd one."""
    extra = {"pwe_moe_ls": ["method.upscale=all"], "pwe_moe_epo": ["method.upscale=all"],
             "pareto_merging": ["method.targets=all"], "phn": []}.get(method, ["method.rays=[[0.5,0.5]]"])
    code = main(["run", f"method={method}", *TOY, "method.lr=1e300", "method.steps=20", *extra,
                 f"out={tmp_path / 'runs'}"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1 and "lower method.lr" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_a_partly_non_finite_front_is_flagged_counted_and_strict_json(tmp_path, capsys):
    """ta_grid at λ up to 1e160 on the quadratic toy: two of three losses overflow to inf."""
    assert main(["run", "method=ta_grid", *TOY, "method.hi=1e160", "method.points=3", f"out={tmp_path}"]) == 0
    cap = capsys.readouterr()
    assert "2 have non-finite metrics" in cap.err
    text = Path(cap.out.strip().splitlines()[-1]).read_text()
    rec = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert rec["indicators"]["n_nonfinite"] == 2 and rec["indicators"]["n_points"] == 1
    assert [p["include"] for p in rec["points"]] == [True, False, False]
    assert rec["points"][1]["metrics"]["task0"]["loss"] is None


def test_diverged_points_are_kept_flagged_and_left_out():
    f = Front(tasks=["a", "b"], objective="accuracy", X=[[0.0], [0.5], [1.0]], x_names=["lam"],
              metrics=[{"a": {"loss": 1.0, "accuracy": 0.9}, "b": {"loss": 2.0, "accuracy": 0.5}},
                       {"a": {"loss": 9.0, "accuracy": 0.95}, "b": {"loss": 9.0, "accuracy": 0.95}},
                       {"a": {"loss": float("nan"), "accuracy": float("nan")}, "b": {"loss": 1.0, "accuracy": 0.7}}],
              extras=[{}, {"diverged": "training loss grew from 1 to 900"}, {}])
    rec = RunRecord.from_front(f, suite="s", method="m", ref_point=[1.0, 1.0])
    assert rec.include.tolist() == [True, False, False]                     # the diverged point would dominate
    assert rec.excluded() == {"n_diverged": 1, "n_nonfinite": 1}
    back = RunRecord.from_json(rec.to_json())
    assert np.array_equal(back.F_included, rec.F_included) and back.extras[1]["diverged"]
    assert json.loads(rec.to_json())["points"][2]["metrics"]["a"] == {"loss": None, "accuracy": None}


def test_same_run_id_fails_at_once_and_repeats_are_not_seeds(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["run", "method=ta_grid", *TOY, f"out={out}", "run_id=fixed"]
    assert main(args) == 0
    assert main(args) == 2
    assert "holds a finished run; choose another run_id" in capsys.readouterr().err
    for _ in range(2):                                        # the same sweep run twice: seeds 0, 0, 1, 1
        for seed in (0, 1):
            assert main(["run", "method=ta_grid", *TOY, "method.points=5", f"seed={seed}", f"out={out}"]) == 0
    capsys.readouterr()
    assert main(["table", f"out={out}", "format=csv"]) == 0
    import io

    import pandas as pd

    row = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("label").loc["ta_grid (points=5)"]
    assert row["n"] == 2 and row["runs"] == 4 and row["seeds"] == "0,1"


def sigint_default():
    """A child of a non-interactive shell's background job inherits SIGINT ignored (CI runs tests so),
    and Python then never raises KeyboardInterrupt: give the child the default, as a terminal does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def started(run: Path, timeout: float = 120) -> None:
    """Until the run's directory `run` exists (it has started working), and half a second more."""
    deadline = time.time() + timeout
    while not run.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)


def stopped(p: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """(stdout, stderr) of a process told to stop; one that goes on is killed (its group too: a shell loop),
    so that a failing test leaves no run of a million steps behind."""
    try:
        return p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL) if os.getpgid(p.pid) == p.pid else p.kill()
            p.communicate()


# How the program ends on each signal, as Popen reports it: SIGINT kills it (after its line and clean-up), which a
# shell reports as 130 and which stops a calling shell loop; SIGTERM is an exit with 143 (a Slurm pre-emption).
STOPPED = [(signal.SIGINT, -signal.SIGINT, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.mark.parametrize("sig,code,word", STOPPED)
def test_a_signal_is_one_line_and_leaves_nothing(sig, code, word, tmp_path):
    out = tmp_path / "runs"
    p = subprocess.Popen([sys.executable, "-m", "bench", "run", "method=ls", *TOY, "method.steps=1000000",
                          f"out={out}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=sigint_default)
    started(out / "toy-quadratic" / "ls")
    p.send_signal(sig)
    _, err = stopped(p)
    assert p.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(word)
    assert not out.exists()


def test_one_ctrl_c_stops_a_shell_loop_of_runs(tmp_path):
    """A terminal's Ctrl-C reaches the whole foreground group. bash, waiting on a child, goes on with its loop
    when the child exits (even with 130) and stops only when the child died of SIGINT."""
    loop = (f"for i in 1 2; do {sys.executable} -m bench run method=ls tasks=toy-quadratic method.steps=1000000 "
            f"out={tmp_path}/$i; done; echo the loop went on")

    def own_group():
        sigint_default()
        os.setpgrp()

    p = subprocess.Popen(["bash", "-c", loop], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=own_group)
    started(tmp_path / "1" / "toy-quadratic" / "ls")
    os.killpg(p.pid, signal.SIGINT)
    out, err = stopped(p)
    assert p.returncode == -signal.SIGINT, err
    assert "the loop went on" not in out and not (tmp_path / "2").exists()
    assert err.strip().splitlines()[-1].startswith("interrupted (SIGINT)")


def test_a_ctrl_c_during_torchs_lazy_compiler_import_is_raised_after_it(tmp_path):
    """torch imports torch._dynamo (with triton's pybind11 extension) lazily, ~1 s into a run; a Ctrl-C landing
    in an extension's init came back as an ImportError that torch takes for "no triton", and was lost. The run
    loads it first with signals held: the interrupt is raised once the import is whole."""
    code = """
import os, signal, sys
import torch
from bench.runtime.hardware import seed_everything

class SignalOnImport:                  # a Ctrl-C in the middle of the import
    def find_spec(self, name, path=None, target=None):
        if name == "torch._dynamo.convert_frame":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SignalOnImport())
try:
    seed_everything(0)
except KeyboardInterrupt:
    print("raised", "torch._dynamo" in sys.modules, torch.are_deterministic_algorithms_enabled())
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       preexec_fn=sigint_default)
    assert r.stdout.split() == ["raised", "True", "False"], r.stderr[-2000:]
