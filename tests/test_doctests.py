"""The doctests of methods/ and tasks/, imported under their installed names (bench.methods, bench.tasks):
pytest's own --doctest-modules would import those folders a second time as top-level packages."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import bench.methods
import bench.tasks

MODULES = ["bench.methods", "bench.tasks"] + [m.name for pkg in (bench.methods, bench.tasks)
                                              for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests failed in {name} (printed above)"


def test_every_module_is_collected():
    assert {"bench.methods.ta_grid", "bench.methods.pwe_moe.trainer", "bench.tasks.toy", "bench.tasks.clip"} <= set(MODULES)
