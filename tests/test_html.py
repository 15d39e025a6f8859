"""The HTML leaderboard in a real headless browser (Debian's chromium driven by playwright).

The screenshot is a test artifact: $PARETOBENCH_ARTIFACTS (default .cache/test-artifacts)/leaderboard.png.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.runtime.config import compose
from bench.runtime.run import run
from bench.reports.tables import load_leaderboard

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("PARETOBENCH_ARTIFACTS", ROOT / ".cache" / "test-artifacts"))


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory) -> tuple[Path, Path]:
    """Records of four configs on toy-quadratic T = 2 (two seeds of one) and one on T = 3, and the page."""
    out = tmp_path_factory.mktemp("runs")
    runs = [("method=ta_grid", "seed=0"), ("method=ta_grid", "seed=1"), ("method=ta_grid", "method.mode=grid"),
            ("method=ls", "method.steps=5", "method.partitions=3"), ("method=map", "method.generations=5"),
            ("method=ta_grid", "tasks.num_tasks=3")]
    for overrides in runs:
        with contextlib.redirect_stdout(io.StringIO()):
            run(compose(["tasks=toy-quadratic", *overrides, f"out={out}", "device=cpu"]))
    site = tmp_path_factory.mktemp("site")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["table", "format=html", f"out={out}", f"out_dir={site}"]) == 0
    return out, site


def test_page_files_and_links(page_dir):
    out, site = page_dir
    text = (site / "index.html").read_text()
    assert text.count('<section class="suite"') == 2
    for href in [h.split('"')[0] for h in text.split('href="')[1:] if h.startswith("records/")]:
        assert (site / href).is_file(), href
    for src in [s.split('"')[0] for s in text.split('<img src="')[1:]]:
        assert (site / src).is_file(), src
    assert "eaf" not in text or (site / "figures").glob("*-eaf.png")


def test_html_needs_out_dir(page_dir, capsys):
    out, _ = page_dir
    assert main(["table", "format=html", f"out={out}"]) == 2
    assert "give out_dir=DIR" in capsys.readouterr().err


REPORTS = ("bench.reports.tables", "bench.reports.reference", "bench.reports.bootstrap", "bench.reports.report", "bench.reports.html", "bench.reports.plots",
           "bench.reports.plots_many", "bench.reports.eaf", "bench.reports.figstyle", "bench.reports.leaderboard")


def entries(fn) -> dict[str, int]:
    """Run fn; per report module, the most times one call stack entered it: its frames among the
    stack's report-module frames, counted as runs (html → plots → html would be 2 for html)."""
    import sys

    most: dict[str, int] = {}

    def profile(frame, event, arg):
        if event != "call" or frame.f_globals.get("__name__") not in REPORTS:
            return
        chain, f = [], frame
        while f is not None:
            m = f.f_globals.get("__name__")
            if m in REPORTS and (not chain or chain[-1] != m):
                chain.append(m)
            f = f.f_back
        for m in set(chain):
            most[m] = max(most.get(m, 0), chain.count(m))

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return most


def test_the_page_reads_the_records_once(page_dir, tmp_path, monkeypatch):
    """`bench table format=html`: one reading of the records, one table build and bootstrap for the
    table, the page and the figures; and no report module is entered again from below itself."""
    import importlib

    out, site = page_dir
    calls = {}
    for target in ("bench.reports.tables:load_records", "bench.reports.tables:build_tables", "bench.reports.bootstrap:group_samples",
                   "bench.reports.tables:reference_front"):
        module, name = target.split(":")
        original = getattr(importlib.import_module(module), name)

        def counted(*args, _t=target, _f=original, **kwargs):
            calls[_t] = calls.get(_t, 0) + 1
            return _f(*args, **kwargs)
        monkeypatch.setattr(importlib.import_module(module), name, counted)
    with contextlib.redirect_stdout(io.StringIO()):
        most = entries(lambda: main(["table", "format=html", f"out={out}", f"out_dir={tmp_path / 'site'}",
                                     "resamples=10"]))
    assert calls == {"bench.reports.tables:load_records": 1, "bench.reports.tables:build_tables": 1,
                     "bench.reports.bootstrap:group_samples": 2, "bench.reports.tables:reference_front": 2}   # two suite keys
    assert {"bench.reports.report", "bench.reports.tables", "bench.reports.html", "bench.reports.plots", "bench.reports.figstyle"} <= set(most)
    assert max(most.values()) == 1, most
    assert (tmp_path / "site" / "index.html").read_text() == (site / "index.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_in_a_headless_browser(page_dir):
    from playwright.sync_api import sync_playwright

    out, site = page_dir
    tables = load_leaderboard(str(out), resamples=0).tables
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((site / "index.html").as_uri())
        page.wait_for_load_state("load")
        sections = page.locator("section.suite")
        assert sections.count() == len(tables)
        for i, t in enumerate(tables):                     # one row per (method, config) group
            assert sections.nth(i).locator("tbody tr").count() == len(t.rows)
        # sorting: by evaluations ascending, then descending
        first = sections.nth(0)
        col = [h.strip() for h in first.locator("thead th").all_inner_texts()].index("evals ↓")
        def column() -> list[float]:
            return [float(v) for v in first.locator(f"tbody tr td:nth-child({col + 1})").evaluate_all(
                "tds => tds.map(td => td.dataset.sort)")]
        labels = first.locator("tbody tr td:first-child")
        first.locator("thead th").nth(col).click()
        ascending = labels.all_inner_texts()
        assert column() == sorted(column()) and column() != sorted(column(), reverse=True)
        first.locator("thead th").nth(col).click()
        assert column() == sorted(column(), reverse=True)
        assert labels.all_inner_texts() != ascending                # the rows moved, not only the numbers
        # filters: T and method
        page.locator("input[name=T][value='3']").uncheck()
        assert sections.nth(1).is_hidden() and first.is_visible()
        page.locator("input[name=method][value='ls']").uncheck()
        assert first.locator("tbody tr[data-method=ls]").is_hidden()
        page.locator("input[name=T][value='3']").check()
        page.locator("input[name=method][value='ls']").check()
        # contents: one link per section; following one puts its heading below the sticky filter bar
        links = page.locator("nav.toc a")
        assert links.count() == len(tables)
        links.nth(len(tables) - 1).click()
        bar = page.locator("#filters").bounding_box()
        heading = sections.nth(len(tables) - 1).locator("h2").bounding_box()
        assert heading["y"] >= bar["y"] + bar["height"] - 1, (heading, bar)
        page.evaluate("window.scrollTo(0, 0)")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)
        browser.close()
    assert errors == []
