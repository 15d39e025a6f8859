"""The orchestrator: suite → method → front → indicators → record.

    python -m bench run method=ta_grid tasks=toy-quadratic seed=0 out=results/runs

`run(spec)` is the whole pipeline; everything it calls lives in its own module. `spec` is a RunSpec,
composed and validated once (bench.runtime.config.compose), used here as it is.
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
import uuid
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from bench.core import indicators

from bench.runtime import parallel
from bench.runtime.config import RunSpec
from bench.core.evaluator import Evaluator, references
from bench.runtime.hardware import (choose_threads, environment, peak_memory_kind, peak_memory_mb, reset_peak_memory,
                            resolve_device, seed_everything)
from bench.core.record import EXAMPLES, RunRecord, check_writable, examples_file, write_run
from bench.runtime.rundir import JOURNAL, Checkpoints, Journal, claim, find_resumable, run_directory
from bench.core.registry import INDICATORS, METHODS, SUITES, BenchError, plugins_used


def run(spec: RunSpec, suite=None) -> Path:
    """Run one method on one suite and write its record; returns the path of record.json. `suite`: the spec's
    suite already built (a benchmark running many methods on one suite builds it once); else built here."""
    s, config, method = spec.settings, spec.config, spec.method
    check_writable(s.out)
    directory = (find_resumable(s.out, spec.suite_name, spec.method_name, config, s.resume) if s.resume else
                 run_directory(s.out, spec.suite_name, spec.method_name, s.run_id or new_run_id(s.seed)))
    with claim(directory, config, resume=s.resume is not None):
        device = resolve_device(s.device)
        deterministic = device.type == "cpu" if s.deterministic is None else s.deterministic
        seed_everything(s.seed, deterministic)
        suite = (suite if suite is not None else spec.build_suite()).to(device)
        evaluator = Evaluator(suite, device, batch_size=s.eval_batch_size, compile=s.compile,
                              journal=Journal(directory / JOURNAL))
        checkpoints = Checkpoints(directory, s.checkpoint_every)
        torch.set_num_threads(choose_threads(s.threads, suite, device))
        compile_s = evaluator.warm_up() if s.compile else None

        setup = parallel.Setup.of(config["tasks"], device, threads=torch.get_num_threads(), deterministic=deterministic,
                                  seed=s.seed, eval_batch_size=s.eval_batch_size, compile=s.compile,
                                  plugins=tuple(s.plugins))

        reset_peak_memory(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with threadpool_limits(limits=1, user_api="blas"), parallel.workers(s.workers, setup):
            # numpy's BLAS in methods: small matrices, reproducible sums; independent units on `workers`
            front = method.approximate_front(suite, evaluator=evaluator, seed=s.seed, checkpoints=checkpoints)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = peak_memory_mb(device)

        pf = suite.true_front()
        record = RunRecord.from_front(
            front, suite=suite.name, method=spec.method_name, ref_point=suite.ref_point(), suite_key=suite.key,
            suite_version=suite.version, suite_config=suite.config(), analytic=pf is not None,
            weights="random" if suite.random_weights else "real", method_paper=getattr(method, "paper", ""),
            method_url=getattr(method, "url", ""),
            seed=s.seed, run_id=directory.name,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            config=config, references=references(evaluator), meta=front.meta,
            cost={"wall_s": wall, "cpu_s": cpu, **({"compile_s": compile_s} if s.compile else {}),
                  "evaluations": evaluator.evaluations, "evaluations_by_split": dict(evaluator.counts),
                  "train_steps": 0, "trainable_params": 0, **front.cost, "peak_mem_mb": peak,
                  "peak_mem_kind": peak_memory_kind(device),
                  **({"resumed_from": directory.name, "evaluations_reused": evaluator.reused} if s.resume else {})},
            env={**environment(device), "deterministic": deterministic},
            plugins=tuple(plugins_used([METHODS.entry(spec.method_name), SUITES.entry(spec.suite_name), *INDICATORS])))
        ctx = indicators.Context(record.F_included, record.ref_point, pf=pf, objective=record.objective,
                                 finetuned=record.reference_values("finetuned"), rays=indicators.record_rays(record))
        excluded = record.excluded()
        if not record.include.any():
            raise BenchError(f"{record.method}: no point has finite metrics ({excluded['n_diverged']} diverged in "
                             f"training, {excluded['n_nonfinite']} non-finite); nothing to score or record")
        record = record.replace(indicators={**indicators.compute(ctx, indicators.per_record(record.analytic)), **excluded},
                                igd_ref={"kind": "analytic", "hash": indicators.front_hash(pf), "n_points": len(pf)}
                                if pf is not None else {})
        warn_excluded(excluded, len(record.F))
        examples = examples_file(front.metrics)
        if examples is not None:
            record = record.replace(artifacts=tuple(sorted({*record.artifacts, EXAMPLES})))
        path = write_run(directory, record, spec.yaml,
                         {**front.artifacts, **({EXAMPLES: examples} if examples is not None else {})})
    ind = record.indicators
    print(f"{record.method} on {suite.describe()}: hv={ind['hv']:.6g} igd+={_fmt(ind.get('igd_plus'))} "
          f"points={ind['n_points']} nondominated={ind['n_nondominated']} evaluations={evaluator.evaluations} "
          f"wall={wall:.2f}s")
    print(path)
    return path


def warn_excluded(excluded: dict[str, int], n: int) -> None:
    if any(excluded.values()):
        print(f"warning: {excluded['n_diverged']} of {n} points diverged in training and {excluded['n_nonfinite']} "
              f"have non-finite metrics; they are flagged in the record and left out of the indicators",
              file=sys.stderr)


def new_run_id(seed: int) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-s{seed}-{uuid.uuid4().hex[:6]}"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
