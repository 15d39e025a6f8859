"""Sweeps that leave one process, on the real Hydra launchers (no mocks): joblib with 2 workers,
submitit_local (Slurm's code path without a cluster, pre-emption and requeue included) and Ray on a local
instance; and records written and read by several processes at once under one results root.

Two processes building one offline suite at once are tested in test_offline_build.py."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.core.record import iter_record_paths
from tests.test_resume import comparable

ROOT = Path(__file__).resolve().parent.parent
TOY = ["tasks=toy-quadratic"]


def plugin(name: str):
    return pytest.importorskip(f"hydra_plugins.hydra_{name}_launcher", reason="the scale extra: pip install -e '.[scale]'")


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def jobs_recorded(out: Path) -> list[tuple[str, int]]:
    """(method, seed) of every record under `out`, each read whole."""
    return sorted((r["method"], r["seed"]) for r in (json.loads(p.read_text()) for p in iter_record_paths(out)))


def table(out: Path, capsys) -> pd.DataFrame:
    capsys.readouterr()
    assert main(["table", f"out={out}", "format=csv"]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out))


def test_joblib_sweep_with_two_workers(tmp_path, capsys):
    plugin("joblib")
    out = tmp_path / "runs"
    r = bench("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=ta_grid,map", *TOY,
              f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert jobs_recorded(out) == [("map", 0), ("ta_grid", 0)]
    assert f"sweep: 2 of 2 runs have their record under {out}" in r.stdout
    rows = table(out, capsys).set_index("label")
    assert rows.loc["map", "runs"] == rows.loc["ta_grid", "runs"] == 1


def submitit_tasks(folder: Path) -> list[int]:
    """Live submitit job processes whose folder is under `folder` (Linux /proc)."""
    pids = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmd.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in argv and any(a.startswith(str(folder).encode()) for a in argv):
            pids.append(int(cmd.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_submitit_sweep_survives_preemption_and_requeue(tmp_path, capsys):
    """Slurm's code path on submitit_local: a sweep of two ls jobs with resume=true, both pre-empted mid-training
    (SIGUSR2, submitit's pre-emption signal); submitit requeues them and each requeued job continues its own run
    from its checkpoint. Each job ends with one record, the same as an uninterrupted run's, and `bench table`
    shows both; launching the sweep again skips the finished jobs."""
    plugin("submitit")
    out = tmp_path / "runs"
    # 5000 steps a ray (~2.5 s a job here): the pre-emption must land while both jobs still train (at 500 a job
    # took 0.26 s, and a job could finish between its first checkpoint and the signal)
    sweep = ["method=ls", *TOY, "method.steps=5000", "method.partitions=2", "seed=0,1", "checkpoint_every=10",
             "resume=true", f"out={out}"]
    p = subprocess.Popen([sys.executable, "-m", "bench", "run", "-m", "hydra/launcher=submitit_local", *sweep],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(list(out.glob("toy-quadratic/ls/*/checkpoints/ray-*.pt"))) < 2 and time.time() < deadline:
        assert p.poll() is None, p.communicate()[1][-3000:]
        time.sleep(0.02)
    tasks = submitit_tasks(out / ".sweeps")
    assert len(tasks) == 2
    for pid in tasks:
        os.kill(pid, signal.SIGUSR2)
    _, stderr = p.communicate(timeout=240)
    assert p.returncode == 0, stderr[-3000:]
    logs = ["".join(f.read_text() for f in job.glob("*_log.*")) for job in out.glob(".sweeps/*/.submitit/[0-9]*")]
    assert len(logs) == 2 and all("this job is preempted" in log and "Requeued job" in log for log in logs)
    assert jobs_recorded(out) == [("ls", 0), ("ls", 1)]
    for path in iter_record_paths(out):
        rec = json.loads(path.read_text())
        assert rec["cost"]["resumed_from"] == rec["run_id"] == path.parent.name
        assert main(["run", "method=ls", *TOY, "method.steps=5000", "method.partitions=2", f"seed={rec['seed']}",
                     f"out={tmp_path / 'plain'}"]) == 0
        assert comparable(path) == comparable(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    rows = table(out, capsys)
    assert rows.loc[rows["method"] == "ls", "runs"].sum() == 2
    # the same command again (here on the basic launcher): both jobs have finished, nothing is redone
    assert main(["run", "-m", *sweep]) == 0
    assert capsys.readouterr().out.count("finished in an earlier attempt") == 2
    assert len(list(iter_record_paths(out))) == 2


def test_ray_launcher_sweep_on_a_local_instance(tmp_path, capsys):
    plugin("ray")
    out = tmp_path / "runs"
    r = bench("run", "-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
              "+hydra.launcher.ray.init.include_dashboard=false", "method=ta_grid,map", *TOY,
              f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert jobs_recorded(out) == [("map", 0), ("ta_grid", 0)]
    rows = table(out, capsys).set_index("label")
    assert rows.loc["map", "runs"] == rows.loc["ta_grid", "runs"] == 1


def test_a_failing_job_is_one_line_and_the_sweep_goes_on(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["run", "-m", "method=ls", *TOY, "method.steps=20", "method.partitions=1", "method.lr=0.1,1e12",
                 f"out={out}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]       # the rest: progress bars
    assert len(lines) == 2 and lines[0].startswith("error: ls: training diverged on every ray")
    assert lines[1].startswith("error: 1 of 2 runs failed; first (method=ls ") and "lower method.lr" in lines[1]
    assert jobs_recorded(out) == [("ls", 0)]


@pytest.mark.parametrize("args,needle", [
    (["hydra/launcher=jobib"], "unknown hydra/launcher option 'jobib' (did you mean 'joblib'?); valid choices: basic"),
    (["hydra.launcher.n_jobs=2"], "unknown option 'hydra.launcher.n_jobs': hydra.launcher has no options (the basic "
                                  "launcher: choose another with hydra/launcher=NAME)"),
])
def test_a_bad_launcher_is_one_line(args, needle, tmp_path, capsys):
    assert main(["run", "-m", *args, "method=ta_grid", *TOY, f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_two_writers_and_a_pooled_table_at_once(tmp_path, capsys):
    """Two sweeps write tiny-clip records under one results root at the same time while `bench table` pools
    every record it finds into the IGD+ reference front, again and again: each table reads only complete
    records (as many as were there before it started, at least), and the last one has them all."""
    out = tmp_path / "runs"
    base = ["run", "-m", "method=ta_grid", "tasks=tiny-clip", "tasks.names=[digits,dots]", f"out={out}"]
    writers = [subprocess.Popen([sys.executable, "-m", "bench", *base, f"method.points={points}"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for points in ("2,3", "4,5")]
    tables = 0
    while any(w.poll() is None for w in writers):
        before = list(iter_record_paths(out))
        for p in before:
            json.loads(p.read_text())                 # never a torn record.json
        if before:
            rows = table(out, capsys)
            assert rows["runs"].sum() >= len(before)
            tables += 1
        time.sleep(0.1)
    for w in writers:
        _, err = w.communicate()
        assert w.returncode == 0, err[-3000:]
    capsys.readouterr()
    assert main(["table", f"out={out}"]) == 0
    text = capsys.readouterr().out
    assert "non-dominated union of the 4 records" in text and tables >= 1
    assert len(list(iter_record_paths(out))) == 4


@pytest.mark.parametrize("method", [["method=ls", "method.steps=200", "method.partitions=3"], ["method=map"]],
                         ids=["ls-rays", "map-design"])
def test_workers_give_the_serial_record(method, tmp_path, capsys):
    """`workers=2`: ls's rays (trained on two Ray worker processes) and MAP's design points (scored there) give
    the record of the serial run, evaluation counts included."""
    pytest.importorskip("ray", reason="the scale extra: pip install -e '.[scale]'")
    assert main(["run", *method, *TOY, f"out={tmp_path / 'serial'}"]) == 0
    serial = comparable(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    r = bench("run", *method, *TOY, "workers=2", f"out={tmp_path / 'workers'}")     # Ray in its own process
    assert r.returncode == 0, r.stderr[-3000:]
    assert comparable(Path(r.stdout.strip().splitlines()[-1])) == serial
