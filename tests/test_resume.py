"""Runs that survive interruption: killed at several points (SIGKILL, SIGINT, SIGTERM), resumed, and
compared with an uninterrupted run of the same seed — the same record, minus timings."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.runtime.rundir import Journal

ROOT = Path(__file__).resolve().parent.parent
TIMINGS = ("wall_s", "cpu_s", "peak_mem_mb", "train_s", "resumed_from", "evaluations_reused")


def comparable(path: Path) -> dict:
    """A record minus what differs between attempts and runs: ids, times, resume facts, workers."""
    rec = json.loads(path.read_text())
    for k in ("run_id", "created", "env"):
        rec.pop(k)
    for k in TIMINGS:
        rec["cost"].pop(k, None)
    for k in ("run_id", "resume", "out", "checkpoint_every", "workers"):
        rec["config"].pop(k, None)
    return rec


from tests.test_bad_input import STOPPED, sigint_default, stopped  # noqa: E402


def start(args: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "run", *args, f"out={out}", "checkpoint_every=5"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=sigint_default)


def wait_for(out: Path, when: str, timeout: float = 300) -> None:
    """Until the run has paid for something: a journal line ("journal") or a checkpoint ("checkpoint")."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if when == "journal" and any(Journal(p).entries() for p in out.glob("*/*/*/journal.jsonl")):
            return
        if when == "checkpoint" and list(out.glob("*/*/*/checkpoints/*.pt")):
            return
        time.sleep(0.05)
    raise AssertionError(f"the run never reached {when}")


def finish(args: list[str], out: Path, capsys) -> Path:
    assert main(["run", *args, f"out={out}", "resume=true"]) == 0
    return Path(capsys.readouterr().out.strip().splitlines()[-1])


CASES = [  # (method and options, what the run must have paid for before the kill)
    (["method=ta_grid", "tasks=toy-quadratic", "tasks.num_tasks=3", "method.mode=grid", "method.points=8"], "journal"),
    (["method=map", "tasks=toy-quadratic", "tasks.num_tasks=4"], "journal"),
    (["method=ls", "tasks=toy-quadratic", "method.steps=1500", "method.partitions=2"], "checkpoint"),
    (["method=epo", "tasks=toy-quadratic", "method.steps=300", "method.partitions=2"], "checkpoint"),
    (["method=pwe_moe_ls", "tasks=toy-quadratic", "method.upscale=all", "method.steps=1500",
      "method.batch_size=1"], "checkpoint"),
]


@pytest.mark.parametrize("args,when", CASES, ids=[a[0].split("=")[1] for a, _ in CASES])
def test_sigkill_then_resume_gives_the_uninterrupted_record(args, when, tmp_path, capsys):
    p = start(args, tmp_path / "killed")
    wait_for(tmp_path / "killed", when)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    (run_dir,) = [d.parent for d in (tmp_path / "killed").glob("*/*/*/run.json")]
    paid = len(Journal(run_dir / "journal.jsonl").entries())
    assert main(["ls", "runs", f"out={tmp_path / 'killed'}"]) == 0
    assert run_dir.name in capsys.readouterr().out
    resumed = finish(args, tmp_path / "killed", capsys)
    assert resumed.parent == run_dir
    assert sorted(f.name for f in run_dir.iterdir()) == sorted(
        ["config.yaml", "front.csv", "record.json", *(["routers.pt"] if "pwe_moe" in args[0] else [])])
    rec = json.loads(resumed.read_text())
    assert rec["cost"]["evaluations_reused"] == paid and rec["cost"]["resumed_from"] == run_dir.name
    assert main(["run", *args, f"out={tmp_path / 'whole'}"]) == 0
    whole = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert comparable(resumed) == comparable(whole)


@pytest.mark.parametrize("sig,code", [s[:2] for s in STOPPED])
def test_a_stop_signal_checkpoints_and_says_how_to_resume(sig, code, tmp_path, capsys):
    args = ["method=ls", "tasks=toy-quadratic", "method.steps=1500", "method.partitions=2"]
    p = start(args, tmp_path)
    wait_for(tmp_path, "checkpoint")
    p.send_signal(sig)
    _, err = stopped(p)
    assert p.returncode == code and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "the work paid for is kept" in line and "resume=" in line
    assert main(["table", f"out={tmp_path}"]) == 2                  # an unfinished run is not a record
    assert "no records" in capsys.readouterr().err
    finish(args, tmp_path, capsys)
    assert main(["table", f"out={tmp_path}"]) == 0


def test_resume_refuses_another_config_and_names_the_difference(tmp_path, capsys):
    args = ["method=ls", "tasks=toy-quadratic", "method.steps=4000"]
    p = start(args, tmp_path)
    wait_for(tmp_path, "checkpoint")
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    (run_dir,) = [d.parent for d in tmp_path.glob("*/*/*/run.json")]
    assert main(["run", "method=ls", "tasks=toy-quadratic", "method.steps=3000", f"out={tmp_path}",
                 f"resume={run_dir.name}"]) == 2
    err = capsys.readouterr().err
    assert "the config differs from the unfinished run's in method.steps" in err and len(err.strip().splitlines()) == 1
    assert main(["run", "method=ls", "tasks=toy-quadratic", "method.steps=3000", f"out={tmp_path}", "resume=true"]) == 2
    assert "no unfinished run of ls on toy-quadratic with this config" in capsys.readouterr().err


def test_a_torn_journal_line_is_ignored(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    j.append({"key": ("ta", (0.1, 0.9)), "split": "test", "tasks": ["a"], "metrics": {}, "counted": True})
    with open(j.path, "a") as f:
        f.write('{"key": {"t": ["ta"')                          # killed mid-write
    assert [e["key"] for e in j.entries()] == [("ta", (0.1, 0.9))]
