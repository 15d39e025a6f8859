"""Peak memory is measured per run: a process that runs job after job (a leaderboard or launcher worker)
reports each run's own peak, not the largest so far (bench.runtime.run.reset_peak_memory)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOBS = """
import json, sys
from bench.runtime.config import compose
from bench.runtime.run import run
for dim in sys.argv[2:]:
    path = run(compose(["method=ta_grid", "tasks=toy-quadratic", f"tasks.dim={dim}", "tasks.front_points=10",
                        "method.points=3", f"out={sys.argv[1]}"]))
    print("PEAK", json.dumps(json.loads(path.read_text())["cost"]))
"""


def peaks(out: Path, *dims: int) -> list[dict]:
    """Runs of toy-quadratic at these sizes, one after another in one process: each run's cost."""
    p = subprocess.run([sys.executable, "-c", JOBS, str(out), *map(str, dims)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return [json.loads(line[5:]) for line in p.stdout.splitlines() if line.startswith("PEAK ")]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the per-run CPU peak needs Linux's /proc")
def test_two_runs_in_one_process_report_their_own_peaks(tmp_path):
    big, small = 2000, 10            # the big run's Hessians and front: O(dim²) float64, ~130 MB more at 2000
    together = peaks(tmp_path, big, small)
    alone_big, alone_small = peaks(tmp_path, big)[0], peaks(tmp_path, small)[0]
    assert [c["peak_mem_kind"] for c in together] == ["run_max_rss", "run_max_rss"]
    mb = [c["peak_mem_mb"] for c in together]
    assert mb[0] > 1.1 * mb[1], mb                                  # different sizes, different peaks
    assert abs(mb[0] - alone_big["peak_mem_mb"]) <= 0.1 * alone_big["peak_mem_mb"], (mb, alone_big)
    assert abs(mb[1] - alone_small["peak_mem_mb"]) <= 0.1 * alone_small["peak_mem_mb"], (mb, alone_small)
