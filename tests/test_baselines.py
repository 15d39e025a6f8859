"""Golden baselines: coverage (every method and offline suite has one, none is orphaned), the
tolerance rule, and the committed baselines reproduce (what CI's `bench check` does)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.runtime.check import BASELINES, compare, load_baselines, target
from bench.cli import main
from bench.runtime.config import compose
from bench.core.registry import METHODS, SUITES

NAMES = sorted(p.stem for p in BASELINES.glob("*.json"))
BUILTIN = {"method": [n for n in METHODS.names() if not METHODS.entry(n).plugin],      # a plugin's baselines are
           "suite": [n for n in SUITES.names() if not SUITES.entry(n).plugin]}        # its own (tests/test_plugin.py)
OFFLINE_SUITES = [s for s in BUILTIN["suite"] if s.startswith(("toy-", "tiny-"))]   # analytic and tiny suites


def _targets() -> list[tuple[str, str | None, str | None]]:
    return [(n, *target(b)) for n, b in load_baselines(BASELINES).items()]


@pytest.mark.parametrize("method", BUILTIN["method"])
def test_every_method_has_a_baseline(method):
    assert method in {m for _, m, _ in _targets()}, (
        f"no baseline runs method {method!r}: write results/baselines/<name>.json with 'description' and "
        f"'overrides' (method={method} tasks=<offline suite> ..., small config) and run "
        f"`python -m bench check --update only=<name>`")


@pytest.mark.parametrize("suite", OFFLINE_SUITES)
def test_every_offline_suite_has_a_baseline(suite):
    assert suite in {s for _, _, s in _targets()}, f"no baseline runs on suite {suite!r}"


@pytest.mark.parametrize("name", NAMES)
def test_no_orphan_baseline(name):
    b = json.loads((BASELINES / f"{name}.json").read_text())
    method, suite = target(b)
    assert method in METHODS.names(), f"{name}: unknown method {method!r}"
    assert suite in SUITES.names(), f"{name}: unknown suite {suite!r}"
    compose(b["overrides"])                                      # every override key and value still valid
    assert b.get("entries"), f"{name}: no expected values; run `python -m bench check --update only={name}`"
    for key, e in b["entries"].items():
        assert set(e) == {"expected", "abs", "rel"} and e["abs"] >= 0 and e["rel"] >= 0, (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_baseline_reproduces(name, capsys):
    assert main(["check", f"only={name}"]) == 0, capsys.readouterr().out


def test_tolerance_rule():
    tol = {"abs": 0.1, "rel": 0.1}
    assert compare(1.0, tol, 1.2)[0] and compare(1.0, tol, 0.8)[0]       # |diff| = 0.2 = 0.1 + 0.1·1
    assert not compare(1.0, tol, 1.2001)[0]
    assert compare(0.0, {"abs": 0.0, "rel": 0.5}, 0.0)[0] and not compare(0.0, {"abs": 0.0, "rel": 0.5}, 1e-12)[0]
    assert compare(None, tol, None)[0] and not compare(None, tol, 0.0)[0] and not compare(1.0, tol, None)[0]
    assert compare("a@1:x", tol, "a@1:x")[0] and not compare("a@1:x", tol, "a@2:x")[0]
    assert compare(float("nan"), tol, float("nan"))[0] and not compare(1.0, tol, float("nan"))[0]
    assert compare(36, {"abs": 0.0, "rel": 0.0}, 36) == (True, 0.0)
    assert compare(36, {"abs": 0.0, "rel": 0.0}, 37) == (False, 1.0)


def test_baselines_are_committed_under_results():
    assert BASELINES == Path(__file__).resolve().parent.parent / "results" / "baselines"
    assert NAMES, "no baselines: the parametrized checks above would silently collect nothing"
