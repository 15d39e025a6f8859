"""Published reference values, reproduced with one command each.

    python -m bench check published=fusionbench-clip-vit-b32-ta device=cuda
    python -m bench check published=fusionbench-gpt2-glue-finetuned tasks.pretrained=/m/gpt2 'tasks.finetuned=/m/gpt2_{task}'
    python -m bench check published=pwe-moe-router-params-vit-b32      # random weights: nothing to download

A reference is one YAML file in results/published/ (or any path given as `published=FILE.yaml`):
`source` (document, address, table, paper), `protocol` (what runs: `bench run` overrides and the
ids, split, metric and merge they amount to), the published per-task `values`, the stated
`average` (rounded to `decimals`), an absolute `tolerance` per task (`per_task`, per-task
exceptions under `tasks`) and for the average, with `why`, and the `discrepancies` found in the
source. Every other `key=value` of the command is a `bench run` override on top of the protocol's
(`device=cuda`, `tasks.pretrained=DIR`, `'tasks.finetuned=DIR/{task}'`, `out=DIR`, ...); a subset of
tasks (`tasks.names=[...]`) is compared task by task, without the average. Offline with a checkpoint
or dataset missing, the suite's one-line error names every missing id and the commands that fetch them.

Protocol kinds (nothing here evaluates a model: the suites and the Evaluator do):

- `pretrained`: θ0 on every task, scored by the Evaluator (a record's `references.pretrained`);
- `finetuned`: each fine-tuned model on its own task (a record's `references.finetuned`);
- `merged`: a `bench run` of the overrides (bench.runtime.run.run, a record under `out=`, by default
  results/runs/published), compared at the point whose coefficients all equal `select.lambda`;
- `router_params`: the method builds its net on the suite (`tasks.weights=random`: the real
  architecture, random weights, no data read); its trainable parameters are the count at the
  suite's T, and routers of the same modules (bench.methods.pwe_moe.Routers) give the other T.

The command prints published, measured, |diff| and tolerance per task and for the average, and
exits 0 when every compared value is within its tolerance, 1 otherwise (2 for a mistake in what
was asked, as every command).

>>> ref = load_reference("pwe-moe-router-params-vit-b32")
>>> ref.kind, ref.values
('router_params', {'2': 264.0, '3': 540.0, '8': 3360.0})
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.registry import BenchError, unknown_choice

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = PROJECT_ROOT / "results" / "published"
KINDS = ("pretrained", "finetuned", "merged", "router_params")
DEFAULT_OUT = "results/runs/published"    # merged runs' records: beside, not inside, the leaderboard's results root


@dataclass(frozen=True)
class Reference:
    """One published reference (a results/published/*.yaml file), validated."""

    name: str
    title: str
    source: dict[str, str]
    protocol: dict[str, Any]
    values: dict[str, float]            # task (or T) → published value, in the file's order
    average: float | None               # as stated by the source (None: no average)
    decimals: int                       # the rounding of the published values and average
    tolerance: dict[str, Any]           # per_task, average, tasks {task: tol}, why
    discrepancies: list[str] = field(default_factory=list)
    unrounded: dict[str, Any] | None = None
    path: Path | None = None

    @property
    def kind(self) -> str:
        return self.protocol["kind"]

    def tol(self, task: str) -> float:
        return float(self.tolerance.get("tasks", {}).get(task, self.tolerance["per_task"]))

    def mean(self) -> float:
        return sum(self.values.values()) / len(self.values)


def names(directory: Path = PUBLISHED) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def reference_path(spec: str, directory: Path = PUBLISHED) -> Path:
    """A reference name in `directory`, or a path to a .yaml file."""
    p = Path(spec).expanduser()
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        if not p.is_file():
            raise BenchError(f"published={spec!r}: no such file (a name in {directory} or a .yaml path)")
        return p
    if not (Path(directory) / f"{spec}.yaml").is_file():
        raise BenchError(unknown_choice("published reference", spec, names(directory)))
    return Path(directory) / f"{spec}.yaml"


def load_reference(spec: str, directory: Path = PUBLISHED) -> Reference:
    """The reference `spec` (name or path), checked: one-line BenchError naming the first problem."""
    import yaml

    path = reference_path(spec, directory)
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise BenchError(f"published reference {str(path)!r} is not valid YAML ({' '.join(str(e).split())[:200]})") from None
    where = f"published reference {str(path)!r}"
    if not isinstance(d, dict):
        raise BenchError(f"{where} is not a mapping")
    for key in ("name", "source", "protocol", "values", "tolerance"):
        if key not in d:
            raise BenchError(f"{where} has no {key!r}")
    if d["name"] != path.stem:
        raise BenchError(f"{where}: name {d['name']!r} differs from its file name {path.stem!r}")
    source, protocol, tol = d["source"], d["protocol"], d["tolerance"]
    if not isinstance(source, dict) or not all(source.get(k) for k in ("document", "table")):
        raise BenchError(f"{where}: source needs a document and a table (write 'documentation page' where unnumbered)")
    if not isinstance(protocol, dict) or protocol.get("kind") not in KINDS:
        raise BenchError(f"{where}: " + unknown_choice("protocol kind", protocol.get("kind") if isinstance(protocol, dict)
                                                       else None, list(KINDS)))
    if not isinstance(protocol.get("overrides"), list) or not protocol["overrides"]:
        raise BenchError(f"{where}: protocol.overrides must be a list of `bench run` overrides")
    if protocol["kind"] == "merged" and not isinstance((protocol.get("select") or {}).get("lambda"), (int, float)):
        raise BenchError(f"{where}: a merged protocol needs select.lambda, the coefficient compared")
    values = d["values"]
    if not isinstance(values, dict) or not values or not all(_number(v) for v in values.values()):
        raise BenchError(f"{where}: values must map each task to a number")
    if not isinstance(tol, dict) or not _number(tol.get("per_task")) or tol["per_task"] < 0 or not tol.get("why"):
        raise BenchError(f"{where}: tolerance needs per_task ≥ 0 and a why")
    average = d.get("average")
    if average is not None and not (_number(average) and _number(tol.get("average"))):
        raise BenchError(f"{where}: a stated average needs a number and tolerance.average")
    return Reference(name=d["name"], title=str(d.get("title", d["name"])), source=dict(source), protocol=dict(protocol),
                     values={str(k): float(v) for k, v in values.items()},
                     average=None if average is None else float(average), decimals=int(d.get("decimals", 1)),
                     tolerance=dict(tol), discrepancies=[str(x) for x in d.get("discrepancies") or []],
                     unrounded=d.get("unrounded"), path=path)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---- running the protocol ------------------------------------------------------------------------
def overrides_for(ref: Reference, extra: list[str]) -> list[str]:
    """The protocol's overrides with the command's on top (a key given on the command line wins),
    and out= defaulting to results/runs/published."""
    key = lambda o: o.split("=", 1)[0].lstrip("+~")  # noqa: E731
    given = {key(o) for o in extra}
    base = [o for o in ref.protocol["overrides"] if key(o) not in given]
    return [*base, *([] if "out" in given else [f"out={DEFAULT_OUT}"]), *extra]


def measure(ref: Reference, extra: list[str]) -> tuple[dict[str, float], list[str]]:
    """({task: measured value}, facts to print) for the reference's protocol."""
    from bench.runtime.config import compose

    spec = compose(overrides_for(ref, extra))
    if ref.kind in ("pretrained", "finetuned"):
        return _references(spec, ref.kind)
    if ref.kind == "merged":
        return _merged(spec, float(ref.protocol["select"]["lambda"]))
    return _router_params(spec, [int(t) for t in ref.values])


def _references(spec, kind: str) -> tuple[dict[str, float], list[str]]:
    """θ0 on every task, or each fine-tuned model on its own task: the Evaluator, as a record's references."""
    import torch

    from bench.core.evaluator import Evaluator
    from bench.runtime.hardware import choose_threads, resolve_device

    s = spec.settings
    device = resolve_device(s.device)
    suite = spec.build_suite().to(device)
    torch.set_num_threads(choose_threads(s.threads, suite, device))
    ev = Evaluator(suite, device, batch_size=s.eval_batch_size)
    if kind == "pretrained":
        m = ev.evaluate(suite.theta0, "test", key=("theta0",))
    else:
        m = {t: ev.evaluate(lambda i=i: suite.finetuned(i), "test", key=("finetuned", i), tasks=[t])[t]
             for i, t in enumerate(suite.tasks)}
    return {t: 100.0 * m[t]["accuracy"] for t in suite.tasks}, [f"measured: {suite.name} {kind} on the test split, "
                                                                 f"{_device(device, ev.amp)}"]


def _merged(spec, lam: float) -> tuple[dict[str, float], list[str]]:
    """A `bench run` (its record under out=), read at the point whose coefficients all equal `lam`."""
    from bench.runtime.run import run

    path = Path(run(spec))
    rec = json.loads(path.read_text())
    for p in rec["points"]:
        if p["x"] and all(abs(x - lam) < 1e-9 for x in p["x"].values()):
            return ({t: 100.0 * p["metrics"][t]["accuracy"] for t in rec["tasks"]},
                    [f"measured: {rec['method']} on {rec['suite']} at λ = {lam:g}, {rec['env']['device']}"
                     + (", bf16 autocast" if rec["env"]["device"].startswith("cuda") else ", fp32"),
                     f"record: {path}"])
    grid = sorted({round(x, 12) for p in rec["points"] for x in p["x"].values()})
    raise BenchError(f"the run has no point at λ = {lam:g} (its coefficients: {grid}); keep the protocol's "
                     f"method.lo/hi/points, record {path}")


def _router_params(spec, counts_for: list[int]) -> tuple[dict[str, float], list[str]]:
    """The method's own net on the suite (its trainable parameters: the count at the suite's T), and
    routers of the same upscaled modules for the other T."""
    import torch

    from bench.methods.pwe_moe.router import Routers

    suite, method = spec.build_suite(), spec.method
    if not hasattr(method, "build"):
        raise BenchError(f"method {spec.method_name!r} builds no net; router_params needs a PWE-MoE method")
    net = method.build(suite, torch.Generator().manual_seed(0))
    if not isinstance(getattr(net, "routers", None), Routers):
        raise BenchError(f"method {spec.method_name!r} has no PWE-MoE routers; router_params needs pwe_moe_ls or pwe_moe_epo")
    own = sum(p.numel() for p in net.parameters() if p.requires_grad)
    modules = net.routers.num_modules
    out = {str(T): float(own if T == suite.num_tasks else Routers(modules, T).num_trainable()) for T in counts_for}
    mark = "weights=random" if getattr(suite, "random_weights", False) else "real weights"
    return out, [f"measured: {spec.method_name} (upscale={method.upscale}) on {suite.name} ({mark}): "
                 f"{modules} upscaled modules ({net.plan.modules[0]}, …); T = {suite.num_tasks}: the method's net, "
                 f"other T: Routers({modules}, T)"]


def _device(device, amp: bool) -> str:
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{device} ({name}{', bf16 autocast' if amp else ', fp32'})"


# ---- comparing and reporting ---------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    label: str
    published: float
    measured: float
    tol: float

    @property
    def diff(self) -> float:
        return abs(self.measured - self.published)

    @property
    def ok(self) -> bool:
        return self.diff <= self.tol + 1e-9


def compare(ref: Reference, measured: dict[str, float]) -> tuple[list[Row], list[str]]:
    """Rows per compared task (and the average when every task was measured), and notes."""
    tasks = [t for t in ref.values if t in measured]
    if not tasks:
        raise BenchError(f"{ref.name}: none of the reference's tasks ({', '.join(ref.values)}) was measured "
                         f"(measured: {', '.join(measured)})")
    label = (lambda t: f"T={t}") if ref.kind == "router_params" else (lambda t: t)  # noqa: E731
    rows = [Row(label(t), ref.values[t], measured[t], ref.tol(t)) for t in tasks]
    notes = []
    if ref.average is not None:
        if len(tasks) == len(ref.values):
            rows.append(Row("average", ref.average, sum(measured[t] for t in tasks) / len(tasks),
                            float(ref.tolerance["average"])))
        else:
            notes.append(f"average not compared: {len(tasks)} of the reference's {len(ref.values)} tasks measured")
    return rows, notes


def report(ref: Reference, rows: list[Row], facts: list[str], notes: list[str]) -> str:
    d = ref.decimals
    fmt = (lambda v: f"{v:.0f}") if ref.kind == "router_params" else (lambda v: f"{v:.{max(d + 1, 2)}f}")  # noqa: E731
    width = max(8, *(len(r.label) for r in rows))
    lines = [f"{ref.name}: {ref.title}",
             f"source: {ref.source['document']}; {ref.source['table']}",
             f"{'':<{width}}  {'published':>10}  {'measured':>10}  {'|diff|':>8}  {'tol':>6}"]
    for r in rows:
        lines.append(f"{r.label:<{width}}  {r.published:>10.{d}f}  {fmt(r.measured):>10}  {fmt(r.diff):>8}  "
                     f"{r.tol:>6g}  {'ok' if r.ok else 'FAIL'}")
    lines += facts + notes + [f"tolerance: {ref.tolerance['why']}"]
    failed = [r for r in rows if not r.ok]
    lines.append(f"ok: all {len(rows)} within tolerance" if not failed else
                 "FAIL: " + ", ".join(f"{r.label} (|diff| {fmt(r.diff)} > {r.tol:g})" for r in failed))
    return "\n".join(lines)


def check_published(spec: str, overrides: list[str] | None = None) -> int:
    """Run reference `spec`'s protocol (with `overrides` on top), print the comparison; 0 when every
    compared value is within tolerance, 1 otherwise."""
    ref = load_reference(spec)
    try:
        measured, facts = measure(ref, list(overrides or []))
    except BenchError as e:            # e.g. offline: which ids to fetch, for this reference
        raise BenchError(f"{ref.name}: {e}") from None
    rows, notes = compare(ref, measured)
    print(report(ref, rows, facts, notes))
    return 0 if all(r.ok for r in rows) else 1


def cmd_published(argv: list[str]) -> int:
    """`bench check published=NAME [override ...]`: the raw arguments of the command."""
    given = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] == "published"]
    if len(given) != 1 or not given[0]:
        raise BenchError(f"give one reference, published=NAME; valid names: {', '.join(names())}")
    bad = next((a for a in argv if a.startswith("-")), None)
    if bad is not None:
        raise BenchError(f"unknown flag {bad!r} with published=; other arguments are `bench run` overrides (key=value)")
    return check_published(given[0], [a for a in argv if a.split("=", 1)[0] != "published"])


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.runtime.published published=NAME [override ...]` (what `bench check published=` runs)."""
    try:
        return cmd_published(list(sys.argv[1:] if argv is None else argv))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
