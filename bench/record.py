"""Run records: one self-describing directory per run, written atomically.

    <out>/<suite>/<method>/<run-id>/record.json   config, seed, versions, every point, indicators, cost
                                    front.csv     one row per point (X, per-task metrics, flags)
                                    config.yaml   the resolved Hydra config

The directory is assembled under a hidden temporary name and renamed into place, so a crash or a
full disk never leaves a partial record behind. `load_records` reads them back for tables, plots,
pooled IGD reference fronts and regression checks.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.registry import BenchError

SCHEMA = 1


def ensure_writable(out: str | os.PathLike) -> Path:
    """Create the results root if needed and prove it is writable, before any work is done."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as e:
        raise BenchError(f"out={str(out)!r} is not writable ({e.strerror or e})") from None
    return out


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=False, default=_json_default, allow_nan=True) + "\n"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def front_csv(record: dict) -> str:
    buf = io.StringIO()
    points = record["points"]
    x_names = list(points[0]["x"]) if points else []
    tasks = record["tasks"]
    cols = x_names + [f"{t}.{m}" for t in tasks for m in ("loss", "accuracy")] + ["split", "nondominated"]
    w = csv.writer(buf)
    w.writerow(cols)
    for p in points:
        w.writerow([p["x"][k] for k in x_names]
                   + [p["metrics"][t].get(m) for t in tasks for m in ("loss", "accuracy")]
                   + [p["split"], p["nondominated"]])
    return buf.getvalue()


def write_run(out: Path, record: dict, config_yaml: str, files: dict[str, bytes] | None = None) -> Path:
    """Write record.json, front.csv, config.yaml (+ extra `files`, e.g. trained routers) atomically;
    returns the path of record.json."""
    final = Path(out) / record["suite"] / record["method"] / record["run_id"]
    if final.exists():
        raise BenchError(f"run directory {str(final)!r} already exists; choose another run_id")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{record['run_id']}-"))
    try:
        (tmp / "record.json").write_text(to_json(record))
        (tmp / "front.csv").write_text(front_csv(record))
        (tmp / "config.yaml").write_text(config_yaml)
        for name, data in (files or {}).items():
            (tmp / name).write_bytes(data)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / "record.json"


def iter_record_paths(out: str | os.PathLike) -> Iterator[Path]:
    out = Path(out)
    if out.exists():
        yield from sorted(p for p in out.glob("*/*/*/record.json") if not p.parent.name.startswith("."))


def load_records(out: str | os.PathLike, suite: str | None = None) -> list[dict]:
    recs = []
    for p in iter_record_paths(out):
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unreadable records are skipped, never half-used
        if rec.get("schema") != SCHEMA or (suite is not None and rec.get("suite") != suite):
            continue
        rec["_path"] = str(p)
        recs.append(rec)
    return recs


def record_F(record: dict, *, included_only: bool = True) -> np.ndarray:
    """[n, T] minimization-space objectives of a record's points."""
    from bench.front import to_minimization

    pts = [p for p in record["points"] if p.get("include", True) or not included_only]
    F = np.array([[np.nan if p["metrics"][t].get(record["objective"]) is None else p["metrics"][t][record["objective"]]
                   for t in record["tasks"]] for p in pts], dtype=float).reshape(len(pts), len(record["tasks"]))
    return to_minimization(F, record["objective"])
