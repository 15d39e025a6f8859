"""Shared fixtures. Offline suites are built once into a repo-local cache (.cache/test-suites,
git-ignored) and reused by every test and later runs; set PARETOBENCH_CACHE to move it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import bench  # noqa: F401  (first: it pins the CPU kernels of torch and OpenBLAS before a test imports numpy)

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PARETOBENCH_CACHE", str(ROOT / ".cache" / "test-suites"))


@pytest.fixture
def out(tmp_path) -> Path:
    """A fresh results root."""
    return tmp_path / "runs"
