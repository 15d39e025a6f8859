"""Shared fixtures. Offline suites are built once into a repo-local cache (.cache/test-suites,
git-ignored) and reused by every test and later runs; set PARETOBENCH_CACHE to move it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PARETOBENCH_CACHE", str(ROOT / ".cache" / "test-suites"))


@pytest.fixture
def out(tmp_path) -> Path:
    """A fresh results root."""
    return tmp_path / "runs"



_BUILDS: list = []


def pytest_configure(config):
    """`make test` (pytest -n N over the whole tree): the controller starts both offline-suite builds in
    the background, so the workers run the tests that need no suite meanwhile instead of waiting for a
    build inside their first test; a test that needs a suite waits on its build lock (tasks/offline.py)
    and then loads it. A run of named files or a single process builds lazily, where a test first asks."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None) or config.option.file_or_dir:
        return
    import subprocess
    import sys

    for name in ("tiny-clip", "tiny-gpt2"):
        _BUILDS.append(subprocess.Popen([sys.executable, "-c", f"from bench.registry import SUITES; SUITES.build({name!r})"],
                                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_unconfigure(config):
    for p in _BUILDS:                 # finished long before the tests, unless the run was cut short
        if p.poll() is None:
            p.terminate()
        p.wait()
