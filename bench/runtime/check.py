"""Regression baselines: re-run small configs and compare their records with golden values.

    python -m bench check                                   # every results/baselines/*.json; exit 1 on drift
    python -m bench check only=ta_grid-toy-quadratic-2t-grid
    python -m bench check --update only=NAME                # deliberately rewrite NAME's expected values
    python -m bench check into=results/runs/leaderboard seeds=[0,1,2]   # run the configs, keep records

A baseline is `results/baselines/<name>.json`:

    {"description": "...",
     "overrides": ["method=ta_grid", "tasks=toy-quadratic", "tasks.num_tasks=2", "seed=0", "device=cpu"],
     "entries": {"indicators.hv": {"expected": 1.76, "abs": 1e-09, "rel": 1e-06}, ...},
     "provenance": {...}}

`overrides` are `bench run` overrides (method= and tasks= are required; out= and run_id= are set
by the check). Each run goes into its own temporary results root (so a pooled IGD reference
depends on that run alone) through `bench.runtime.config.compose` + `bench.runtime.run.run`, on the CPU unless the
overrides name a device. An entry passes when |got − expected| ≤ abs + rel·|expected| (strings,
integers and nulls must match exactly); its tolerance is stated in the file, per entry. Entries:
the record's indicators (HV, normalised HV, GD, IGD, IGD+, point counts), the method's cost
counters (evaluations, training steps, trainable parameters; never wall time or memory), the suite
key, the pre-trained and fine-tuned reference metrics (suite drift), and each task's mean
objective over the included points (drift in dominated points that HV would not see).

To add a baseline for a new method or suite, write a file with `description` and `overrides` only
and run `python -m bench check --update only=<name>`: missing entries are filled with default
tolerances (analytic suites: abs 1e-9, rel 1e-6; trained suites: abs 5e-3, rel 1e-3, about one
flipped test prediction), existing tolerances are kept. Until then the file fails the check.
Files are rewritten atomically.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.core.record import atomic_write_text
from bench.core.registry import BenchError, unknown_choice

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BASELINES = PROJECT_ROOT / "results" / "baselines"
TOL_ANALYTIC = {"abs": 1e-9, "rel": 1e-6}
TOL_TRAINED = {"abs": 5e-3, "rel": 1e-3}
EXACT = {"abs": 0.0, "rel": 0.0}
COST_KEYS = ("evaluations", "train_steps", "trainable_params")


# ---- files -----------------------------------------------------------------------------------
def baseline_dir(path: str | None) -> Path:
    return BASELINES if path is None else Path(path)


def load_baselines(directory: Path, only: list[str] | None = None) -> dict[str, dict]:
    """name → baseline dict, for every *.json in `directory` (or the `only` names)."""
    if not directory.is_dir():
        raise BenchError(f"baselines={str(directory)!r} is not a directory")
    files = {p.stem: p for p in sorted(directory.glob("*.json"))}
    names = list(files)
    if only:
        for n in only:
            if n not in files:
                raise BenchError(unknown_choice("baseline", n, names))
        names = list(only)
    out = {}
    for n in names:
        try:
            b = json.loads(files[n].read_text())
        except json.JSONDecodeError as e:
            raise BenchError(f"baseline {str(files[n])!r} is not valid JSON ({e})") from None
        if not isinstance(b.get("overrides"), list):
            raise BenchError(f"baseline {str(files[n])!r} has no 'overrides' list")
        out[n] = b
    return out


def target(baseline: dict) -> tuple[str | None, str | None]:
    """(method, suite) named by a baseline's overrides."""
    kv = dict(o.split("=", 1) for o in baseline["overrides"] if "=" in o)
    return kv.get("method"), kv.get("tasks")


def check_overrides(name: str, overrides: list[str]) -> None:
    keys = {o.split("=", 1)[0] for o in overrides}
    missing = [k for k in ("method", "tasks") if k not in keys]
    if missing:
        raise BenchError(f"baseline {name!r} must name {' and '.join(f'{k}=' for k in missing)} in its overrides")
    bad = sorted(keys & {"out", "run_id"})
    if bad:
        raise BenchError(f"baseline {name!r} sets {bad[0]}=, which the check chooses; remove it")


# ---- running ---------------------------------------------------------------------------------
def run_baseline(name: str, overrides: list[str]):
    """Run one baseline config into a temporary results root; returns its RunRecord."""
    from bench.runtime.config import compose
    from bench.core.record import RunRecord
    from bench.runtime.run import run

    check_overrides(name, overrides)
    extra = [] if any(o.startswith("device=") for o in overrides) else ["device=cpu"]
    with tempfile.TemporaryDirectory(prefix="bench-check-") as root:
        spec = compose([*overrides, *extra, f"out={root}", f"run_id=baseline-{name}"])
        with contextlib.redirect_stdout(io.StringIO()):
            path = run(spec)
        return RunRecord.from_json(Path(path).read_text(), path=Path(path))


def entries_of(record) -> dict[str, Any]:
    """The checked values of a record, flat `section.key` names. Indicators the record does not
    store (IGD-type against a pooled front) are computed against the front of this record alone,
    the pooled reference of a results root that holds only it."""
    import numpy as np

    from bench.core import indicators

    out: dict[str, Any] = {"suite_key": record.suite_key}
    ctx = indicators.Context(record.F_included, record.ref_point, pf=indicators.pooled_front([record.F_included]))
    pooled = indicators.compute(ctx, [n for n in indicators.INDICATORS.names() if n not in record.indicators])
    ind = {**record.indicators, **pooled}
    out.update({f"indicators.{k}": ind.get(k) for k in indicators.INDICATORS.names()
                if k in ind and indicators.INDICATORS.get(k).kind != "str"})
    out.update({f"cost.{k}": record.cost.get(k) for k in COST_KEYS if k in record.cost})
    obj = record.objective
    for kind in ("pretrained", "finetuned"):
        for t, m in record.references.get(kind, {}).items():
            out[f"references.{kind}.{t}.{obj}"] = m.get(obj)
    F = record.F_included
    for j, t in enumerate(record.tasks):
        col = F[:, j][np.isfinite(F[:, j])] if len(F) else F[:0, 0]
        out[f"front.mean_{obj if obj == 'loss' else 'error'}.{t}"] = float(col.mean()) if len(col) else None
    return out


def default_tolerance(record, value: Any) -> dict[str, float]:
    if value is None or isinstance(value, (str, bool, int)):
        return dict(EXACT)
    return dict(TOL_ANALYTIC if record.analytic else TOL_TRAINED)


# ---- comparing -------------------------------------------------------------------------------
def compare(expected: Any, tol: dict, got: Any) -> tuple[bool, float | None]:
    """(passes, |diff|) for one entry: |got − expected| ≤ abs + rel·|expected|."""
    exp = expected
    if exp is None or got is None or isinstance(exp, str) or isinstance(got, str):
        return exp == got, None
    exp, got = float(exp), float(got)
    if math.isnan(exp) or math.isnan(got):
        return math.isnan(exp) and math.isnan(got), None
    diff = abs(got - exp)
    return diff <= float(tol.get("abs", 0.0)) + float(tol.get("rel", 0.0)) * abs(exp), diff


def check_one(baseline: dict, got: dict[str, Any]) -> list[dict]:
    """One row per entry (entry, expected, got, diff, tol, ok); entries the baseline lacks come
    last with tol None (reported, not failed: `--update` adds them)."""
    rows = []
    entries = baseline.get("entries") or {}
    for key, e in entries.items():
        if key not in got:
            rows.append({"entry": key, "expected": e.get("expected"), "got": "(missing)", "diff": None,
                         "tol": e, "ok": False})
            continue
        ok, diff = compare(e.get("expected"), e, got[key])
        rows.append({"entry": key, "expected": e.get("expected"), "got": got[key], "diff": diff, "tol": e, "ok": ok})
    for key in got:
        if key not in entries:
            rows.append({"entry": key, "expected": "(new)", "got": got[key], "diff": None, "tol": None, "ok": True})
    return rows


def _v(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.10g}"
    return "null" if x is None else str(x)


def _tol(t: dict | None) -> str:
    if t is None:
        return "-"
    if float(t.get("abs", 0)) == 0 and float(t.get("rel", 0)) == 0:
        return "exact"
    return f"abs {t.get('abs', 0):g} + rel {t.get('rel', 0):g}"


def format_drift(name: str, rows: list[dict]) -> str:
    bad = [r for r in rows if not r["ok"]]
    header = ("entry", "expected", "got", "|diff|", "tolerance")
    table = [header] + [(r["entry"], _v(r["expected"]), _v(r["got"]), _v(r["diff"]) if r["diff"] is not None else "-",
                         _tol(r["tol"])) for r in bad]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"DRIFT {name}: {len(bad)} of {len([r for r in rows if r['tol'] is not None])} entries"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)


def updated(baseline: dict, record, got: dict[str, Any]) -> dict:
    """The baseline with every entry's expected value replaced by `got` (tolerances kept)."""
    old = baseline.get("entries") or {}
    entries = {}
    for key, value in got.items():
        tol = {k: old[key][k] for k in ("abs", "rel") if key in old and k in old[key]} or default_tolerance(record, value)
        entries[key] = {"expected": value, **tol}
    env = record.env
    prov = {"updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **{k: env.get(k) for k in ("git", "python", "torch", "transformers", "pymoo", "device", "cpu_isa", "cpu")},
            "suite_version": record.suite_version}
    return {"description": baseline.get("description", ""), "overrides": baseline["overrides"],
            "entries": entries, "provenance": prov}


def dump_baseline(b: dict) -> str:
    """JSON with one line per entry, so that a diff of a baseline file reads entry by entry."""
    head = {k: v for k, v in b.items() if k != "entries"}
    lines = ["{"]
    for k in ("description", "overrides"):
        lines.append(f" {json.dumps(k)}: {json.dumps(head.pop(k), ensure_ascii=False)},")
    lines.append(' "entries": {')
    items = list(b["entries"].items())
    lines += [f"  {json.dumps(k)}: {json.dumps(v)}" + ("," if i < len(items) - 1 else "") for i, (k, v) in enumerate(items)]
    lines.append(" }" + ("," if head else ""))
    rest = list(head.items())
    lines += [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" + ("," if i < len(rest) - 1 else "")
              for i, (k, v) in enumerate(rest)]
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- the command -----------------------------------------------------------------------------
def run_into(baselines: dict[str, dict], into: str, seeds: list[int] | None) -> int:
    """Run every baseline config (× seeds) into the results root `into`, one process each so that
    wall time and peak memory are each run's own; the records are kept (no comparison)."""
    from bench.core.record import check_writable

    check_writable(into)
    for name, b in baselines.items():
        check_overrides(name, b["overrides"])
        base = [o for o in b["overrides"] if not o.startswith("seed=")]
        own = [int(o.split("=", 1)[1]) for o in b["overrides"] if o.startswith("seed=")] or [0]
        for seed in (seeds if seeds is not None else own):
            cmd = [sys.executable, "-m", "bench", "run", *base, f"seed={seed}", f"out={into}", f"run_id={name}-s{seed}"]
            if not any(o.startswith("device=") for o in base):
                cmd.append("device=cpu")
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode == -signal.SIGINT:        # the run was stopped by Ctrl-C: so is this command
                raise KeyboardInterrupt
            if p.returncode != 0:
                sys.stderr.write(p.stderr)
                return p.returncode
            print(p.stdout.strip().splitlines()[-1])
    return 0


def check_baselines(only: list[str] | None = None, baselines: str | None = None, *, update: bool = False,
                    into: str | None = None, seeds: list[int] | None = None) -> int:
    """Re-run the baselines `only` names (default: all) of the directory `baselines` and compare (exit code 1 on
    drift); `update` rewrites their expected values; `into` runs them into a results root for `seeds` instead."""
    directory = baseline_dir(baselines)
    baselines = load_baselines(directory, only)
    if not baselines:
        raise BenchError(f"no baselines in {str(directory)!r}")
    if into is not None:
        return run_into(baselines, into, seeds)
    from bench.runtime.progress import progress

    drifted, errors = [], []
    for name, b in progress(baselines.items(), "bench check", total=len(baselines), every_item=True,
                            unit="baseline", disable=len(baselines) < 2):
        try:
            record = run_baseline(name, b["overrides"])
        except Exception as e:   # one broken method must not hide the others' drift
            errors.append(name)
            print(f"ERROR {name}: {type(e).__name__}: {e}")
            continue
        got = entries_of(record)
        rows = check_one(b, got)
        bad = [r for r in rows if not r["ok"]]
        new = [r["entry"] for r in rows if r["tol"] is None]
        if update:
            old = b.get("entries") or {}
            changed = [k for k, v in got.items() if k not in old or old[k].get("expected") != v]
            fresh = updated(b, record, got)
            if b.get("entries") and fresh["entries"] == b["entries"]:
                print(f"kept    {name} (values unchanged, file not rewritten)")
                continue
            atomic_write_text(directory / f"{name}.json", dump_baseline(fresh))
            if not b.get("entries"):
                print(f"created {name} ({len(got)} entries)")
            else:
                print(f"updated {name}: {', '.join(changed) or 'entry set'}")
        elif not b.get("entries"):
            drifted.append(name)
            print(f"EMPTY {name}: no expected values yet; run `python -m bench check --update only={name}`")
        elif bad:
            drifted.append(name)
            print(format_drift(name, rows))
            made_on, here = (b.get("provenance") or {}).get("cpu"), record.env.get("cpu")
            if made_on != here:
                print(f"  note: made on {made_on or 'an unrecorded CPU'}, run on {here}: CPU runs (suite builds, "
                      f"training) differ across processor vendors even with the instruction set pinned")
        else:
            print(f"ok    {name} ({len(rows) - len(new)} entries)" + (f"; not in the baseline: {', '.join(new)}" if new else ""))
    if update:
        return 1 if errors else 0
    print(f"{len(baselines)} baselines: {len(baselines) - len(drifted) - len(errors)} ok, {len(drifted)} drifted"
          + (f", {len(errors)} failed to run" if errors else ""))
    if drifted:
        print(f"if the change is intended: python -m bench check --update only={','.join(drifted)}")
    return 1 if drifted or errors else 0
