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


def pytest_configure(config):
    """Under `pytest -n N` (make test), the controller builds both offline suites once, one after the
    other, before any worker starts: side by side on 2 cores (each build has its own 2 processes) they
    took 398 s, in a row 257 s. A single-process run builds them lazily, where a test first asks."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    from bench.registry import SUITES

    for name in ("tiny-clip", "tiny-gpt2"):
        SUITES.build(name)
