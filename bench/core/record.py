"""Run records: one typed `RunRecord` per run, the only reader and writer of record.json.

    <out>/<suite>/<method>/<run-id>/record.json   config, seed, versions, every point, indicators, cost
                                    front.csv     one row per point (X, per-task metrics, flags)
                                    config.yaml   the resolved Hydra config
                                    <artifacts>   e.g. PWE-MoE's routers.pt

    >>> import numpy as np
    >>> from bench.core.front import Front
    >>> front = Front(tasks=["a", "b"], objective="accuracy", X=[[0.0], [1.0]], x_names=["lambda"],
    ...               metrics=[{"a": {"loss": 1.0, "accuracy": 0.9}, "b": {"loss": 2.0, "accuracy": 0.5}},
    ...                        {"a": {"loss": 2.0, "accuracy": 0.6}, "b": {"loss": 1.0, "accuracy": 0.8}}])
    >>> rec = RunRecord.from_front(front, suite="s", method="m", ref_point=[1.0, 1.0])
    >>> rec.F                                        # minimization form, computed once
    array([[0.1, 0.5],
           [0.4, 0.2]])
    >>> RunRecord.from_json(rec.to_json()).F.tolist() == rec.F.tolist()
    True

A record is frozen: X and F (minimization form, `bench.core.front.to_minimization`) are computed once
when it is made from a Front or read from JSON, and every consumer (indicators, tables, plots,
checks, export) reads them from here. Files a method leaves (its `Front.artifacts`) are written
beside record.json and listed in `artifacts`; they never pass through the JSON. A run owns its
directory from the start (bench/runtime/rundir.py) and writes every file atomically, record.json last: a
directory without record.json is an unfinished run, never read as a record. Schema 2 (this one) stores only indicators that depend on the run
alone; version-1 records (which also stored IGD against a pooled front) are still read.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.core.front import Front, natural_values, to_minimization
from bench.core.registry import BenchError

SCHEMA = 2
READABLE = (1, 2)


@dataclass(frozen=True)
class RunRecord:
    suite: str
    method: str
    tasks: tuple[str, ...]
    objective: str
    ref_point: np.ndarray
    X: np.ndarray                         # [n, k] what identifies each point (coefficients, ray)
    x_names: tuple[str, ...]
    F: np.ndarray                         # [n, T] minimization form of every point
    metrics: tuple[dict, ...]             # per point: {task: {"loss", "accuracy"}} as measured
    split: tuple[str, ...]
    include: np.ndarray                   # points that count for the indicators
    nondominated: np.ndarray              # within the included points (and within the others)
    extras: tuple[dict, ...] = ()         # per point: ray, mu, routing, kind …
    suite_key: str = ""
    suite_version: str = ""
    suite_config: dict = field(default_factory=dict)
    analytic: bool = False                # the suite has a closed-form front
    weights: str = "real"                 # "random": benchmark-only, never in a leaderboard
    method_paper: str = ""
    method_url: str = ""
    seed: int = 0
    run_id: str = ""
    created: str = ""
    config: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)   # {"pretrained": {task: metrics}, "finetuned": {...}}
    meta: dict = field(default_factory=dict)
    indicators: dict = field(default_factory=dict)
    igd_ref: dict = field(default_factory=dict)     # analytic suites: the front IGD is measured against
    cost: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    plugins: tuple[dict, ...] = ()        # the plugins behind the run: {"name", "version", "kind"} (none: [])
    schema: int = SCHEMA
    path: Path | None = None              # where it was read from (not serialised)

    # ---- making one -------------------------------------------------------------------------
    @classmethod
    def from_front(cls, front: Front, **fields: Any) -> "RunRecord":
        """The record of `front`; `fields` fill the rest (suite, method, ref_point, seed, …). Points
        whose training diverged (`extras["diverged"]`) or whose metrics are not finite are kept,
        flagged, and excluded from the indicators (`excluded` counts them)."""
        F = front.to_minimization()
        include = front.include & ~_diverged(front.extras) & np.isfinite(F).all(axis=1)
        return cls(tasks=tuple(front.tasks), objective=front.objective, X=front.X, x_names=tuple(front.x_names),
                   F=F, metrics=tuple(front.metrics), split=tuple(front.split), include=include,
                   nondominated=_nondominated(F, include), extras=tuple(front.extras),
                   artifacts=tuple(sorted(front.artifacts)),
                   **{k: (np.asarray(v, dtype=float) if k == "ref_point" else v) for k, v in fields.items()})

    def replace(self, **changes: Any) -> "RunRecord":
        return dataclasses.replace(self, **changes)

    # ---- views --------------------------------------------------------------------------------
    @property
    def F_included(self) -> np.ndarray:
        """[m, T] minimization-space objectives of the points that count for indicators."""
        return self.F[self.include]

    def excluded(self) -> dict[str, int]:
        """Points that would count but do not: diverged training, non-finite metrics."""
        candidates = ~np.array([e.get("kind") == "predicted" for e in self.extras], dtype=bool) \
            if self.extras else np.ones(len(self.F), dtype=bool)
        diverged = _diverged(self.extras) & candidates
        nonfinite = ~np.isfinite(self.F).all(axis=1) & candidates & ~diverged
        return {"n_diverged": int(diverged.sum()), "n_nonfinite": int(nonfinite.sum())}

    @property
    def values(self) -> np.ndarray:
        """[n, T] the objective's values in their natural direction, as measured (NaN where missing)."""
        return natural_values(self.metrics, self.tasks, self.objective)

    @property
    def directory(self) -> Path | None:
        return None if self.path is None else self.path.parent

    def reference_values(self, kind: str) -> np.ndarray:
        """[T] metric (natural direction) of the pre-trained model on every task ("pretrained") or of
        each fine-tuned model on its own task ("finetuned"); NaN where missing."""
        ref = self.references.get(kind, {})
        return np.array([np.nan if ref.get(t, {}).get(self.objective) is None else float(ref[t][self.objective])
                         for t in self.tasks], dtype=float)

    # ---- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        points = [{"x": dict(zip(self.x_names, map(float, self.X[i]))), "metrics": self.metrics[i],
                   "split": self.split[i], "nondominated": bool(self.nondominated[i]),
                   "include": bool(self.include[i]), **(self.extras[i] if self.extras else {})}
                  for i in range(len(self.F))]
        d = {"schema": SCHEMA, "suite": self.suite, "suite_key": self.suite_key, "suite_version": self.suite_version,
             "suite_config": self.suite_config, "tasks": list(self.tasks), "analytic": self.analytic,
             "weights": self.weights, "method": self.method, "method_paper": self.method_paper,
             "method_url": self.method_url, "seed": self.seed,
             "run_id": self.run_id, "created": self.created, "config": self.config, "objective": self.objective,
             "ref_point": [float(v) for v in self.ref_point], "references": self.references, "points": points,
             "meta": self.meta, "indicators": self.indicators, "cost": self.cost, "env": self.env,
             "artifacts": list(self.artifacts), "plugins": list(self.plugins)}
        if self.igd_ref:
            d["igd_ref"] = self.igd_ref
        return d

    def to_json(self) -> str:
        """Standard JSON: a non-finite number (a diverged loss) is written as null."""
        return json.dumps(_finite(self.to_dict()), indent=1, default=_json_default, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path | None = None) -> "RunRecord":
        d = json.loads(text)
        if d.get("schema") not in READABLE:
            raise ValueError(f"record schema {d.get('schema')!r}; readable: {READABLE}")
        tasks, obj, pts = list(d["tasks"]), d["objective"], d["points"]
        x_names = list(pts[0]["x"]) if pts else []
        metrics = tuple(p["metrics"] for p in pts)
        core = ("x", "metrics", "split", "nondominated", "include")
        igd_ref = d.get("igd_ref") or {}
        indicators = dict(d.get("indicators", {}))
        if igd_ref.get("kind") == "pooled":          # schema 1: IGD against whatever else was under `out`
            for k in ("gd", "igd", "igd_plus"):
                indicators.pop(k, None)
        return cls(suite=d["suite"], method=d["method"], tasks=tuple(tasks), objective=obj,
                   ref_point=np.asarray(d["ref_point"], dtype=float),
                   X=np.array([[p["x"][k] for k in x_names] for p in pts], dtype=float).reshape(len(pts), len(x_names)),
                   x_names=tuple(x_names), F=to_minimization(natural_values(metrics, tasks, obj), obj), metrics=metrics,
                   split=tuple(p.get("split", "test") for p in pts),
                   include=np.array([p.get("include", True) for p in pts], dtype=bool),
                   nondominated=np.array([p.get("nondominated", False) for p in pts], dtype=bool),
                   extras=tuple({k: v for k, v in p.items() if k not in core} for p in pts),
                   suite_key=d.get("suite_key", ""), suite_version=str(d.get("suite_version", "")),
                   suite_config=d.get("suite_config", {}),
                   analytic=d.get("analytic", igd_ref.get("kind") == "analytic"),
                   weights=d.get("weights", "real"), method_paper=d.get("method_paper", ""), method_url=d.get("method_url", ""),
                   seed=int(d.get("seed", 0)), run_id=d.get("run_id", ""), created=d.get("created", ""),
                   config=d.get("config", {}), references=d.get("references", {}), meta=d.get("meta", {}),
                   indicators=indicators, igd_ref=igd_ref if igd_ref.get("kind") == "analytic" else {},
                   cost=d.get("cost", {}), env=d.get("env", {}),
                   artifacts=tuple(d.get("artifacts", ())), plugins=tuple(d.get("plugins", ())), schema=int(d["schema"]), path=path)

    def front_csv(self) -> str:
        buf = io.StringIO()
        cols = list(self.x_names) + [f"{t}.{m}" for t in self.tasks for m in ("loss", "accuracy")] + ["split", "nondominated"]
        w = csv.writer(buf)
        w.writerow(cols)
        for i in range(len(self.F)):
            w.writerow([float(v) for v in self.X[i]]
                       + [self.metrics[i][t].get(m) for t in self.tasks for m in ("loss", "accuracy")]
                       + [self.split[i], bool(self.nondominated[i])])
        return buf.getvalue()


def _diverged(extras) -> np.ndarray:
    return np.array([bool(e.get("diverged")) for e in extras], dtype=bool)


def _finite(obj):
    """`obj` with every non-finite float (and numpy scalar or array element) replaced by None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _nondominated(F: np.ndarray, include: np.ndarray) -> np.ndarray:
    """Non-dominated within the included points, and within the others (e.g. MAP's predictions)."""
    from bench.core.indicators import nondominated_mask

    nd = np.zeros(len(F), dtype=bool)
    for group in (include, ~include):
        idx = np.flatnonzero(group)
        nd[idx] = nondominated_mask(F[idx])
    return nd


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


# ---- files ---------------------------------------------------------------------------------------
def check_writable(out: str | os.PathLike) -> Path:
    """The results root `out` can be written: it is (or its nearest existing parent is) a writable
    directory. Nothing is created; a run makes its directory only when it starts."""
    out = Path(out)
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise BenchError(f"out={str(out)!r} is not writable ({str(probe)!r} is not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"out={str(out)!r} is not writable (no write permission on {str(probe)!r})")
    return out


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()     # what open() would give; mkstemp's files are private (0600)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` through a temporary sibling, fsync and rename: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


EXAMPLES = "examples.npz"


def examples_file(metrics) -> bytes | None:
    """examples.npz: for every point evaluated on test, each task's per-example correctness (packed
    bits; `points` holds the points' indices, `n_<task>` the example counts). None if there is none."""
    rows = [(i, m.examples) for i, m in enumerate(metrics) if getattr(m, "examples", None)]
    if not rows:
        return None
    arrays = {"points": np.array([i for i, _ in rows], dtype=np.int64)}
    for t in rows[0][1]:
        arrays[f"n_{t}"] = np.array(len(rows[0][1][t]), dtype=np.int64)
        arrays[f"bits_{t}"] = np.stack([np.packbits(ex[t]) for _, ex in rows])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_examples(record: RunRecord) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(point indices, {task: bool [points, examples]}) from a record's examples.npz, or None."""
    if record.directory is None or not (record.directory / EXAMPLES).is_file():
        return None
    with np.load(record.directory / EXAMPLES) as z:
        tasks = [k[2:] for k in z.files if k.startswith("n_")]
        return z["points"], {t: np.unpackbits(z[f"bits_{t}"], axis=1)[:, :int(z[f"n_{t}"])].astype(bool)
                             for t in tasks}


def write_run(directory: Path, record: RunRecord, config_yaml: str, artifacts: dict[str, bytes] | None = None) -> Path:
    """front.csv, config.yaml and the artifacts, then record.json (its presence marks a finished
    run), each atomically, into the run's `directory`; returns record.json's path."""
    directory = Path(directory)
    atomic_write_text(directory / "front.csv", record.front_csv())
    atomic_write_text(directory / "config.yaml", config_yaml)
    for name, data in (artifacts or {}).items():
        atomic_write_bytes(directory / name, data)
    atomic_write_text(directory / "record.json", record.to_json())
    return directory / "record.json"


def iter_record_paths(out: str | os.PathLike) -> Iterator[Path]:
    out = Path(out)
    if out.exists():
        yield from sorted(p for p in out.glob("*/*/*/record.json") if not p.parent.name.startswith("."))


def load_records(out: str | os.PathLike, suite: str | None = None) -> list[RunRecord]:
    """Every readable record under `out` (optionally of one suite); unreadable ones are skipped."""
    recs = []
    for p in iter_record_paths(out):
        try:
            rec = RunRecord.from_json(p.read_text(), path=p)
        except (OSError, ValueError, KeyError, TypeError):
            continue                      # never half-used
        if suite is None or rec.suite == suite:
            recs.append(rec)
    return recs
