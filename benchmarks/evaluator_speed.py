"""Evaluator throughput against a naive evaluation loop, on the offline suites (or any ModelSuite).

    python benchmarks/evaluator_speed.py                       # tiny-clip and tiny-gpt2, CPU
    python benchmarks/evaluator_speed.py --suite clip-vit-b32 --set weights=random --device cuda

Naive loop: deep-copy the model, load_state_dict(merged weights), a torch DataLoader over the split
with batch 64, fp32, no caching. The Evaluator: functional_call on the one backbone, data moved to
the device once, large batches, inference_mode, bf16 autocast on CUDA. Both score the same merged
model (task arithmetic at λ = 0.3); their accuracies are printed side by side as a cross-check.
Prints examples/s (images/s or tokens/s for text suites).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.config import build_from_config  # noqa: E402
from bench.evaluator import Evaluator  # noqa: E402
from bench.merge import task_arithmetic  # noqa: E402
from bench.registry import SUITES  # noqa: E402


def naive_accuracy(suite, params, task, split, device, batch_size=64):
    model = copy.deepcopy(suite.backbone).to(device).float()
    model.load_state_dict({k: v.float() for k, v in params.items()}, strict=False)
    head = copy.deepcopy(suite.heads[task]).to(device).float()
    data = suite.eval_data(task, split)
    keys = list(data)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*[data[k] for k in keys]),
                                         batch_size=batch_size)
    correct = n = 0
    with torch.no_grad():
        for tensors in loader:
            batch = suite.prepare(dict(zip(keys, tensors)), device)
            feats = suite.features({k: v for k, v in model.named_parameters()}, batch)
            correct += int((head(feats).argmax(-1) == batch["labels"]).sum())
            n += len(batch["labels"])
    return correct / n


def units(suite, task, split):
    data = suite.eval_data(task, split)
    if "attention_mask" in data:
        return int(data["attention_mask"].sum()), "tokens"
    return len(data["labels"]), "images"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", action="append", help="suite name (repeatable); default tiny-clip and tiny-gpt2")
    ap.add_argument("--set", action="append", default=[], help="suite option key=value, e.g. weights=random")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.set)
    for name in args.suite or ["tiny-clip", "tiny-gpt2"]:
        suite = build_from_config(SUITES, {"name": name, **extra}, "tasks").to(args.device)
        params = task_arithmetic(suite.theta0(), suite.task_vectors(), [0.3] * suite.num_tasks)
        total = sum(units(suite, t, args.split)[0] for t in suite.tasks)
        unit = units(suite, suite.tasks[0], args.split)[1]
        ev = Evaluator(suite, args.device)
        ev.evaluate(params, args.split, key="warmup")
        t0 = time.perf_counter()
        for r in range(args.repeats):
            res = ev.evaluate(params, args.split, key=("bench", r))   # new key: no cache hit
        t_ev = (time.perf_counter() - t0) / args.repeats
        t0 = time.perf_counter()
        naive = {t: naive_accuracy(suite, params, t, args.split, args.device) for t in suite.tasks}
        t_nv = time.perf_counter() - t0
        print(f"{name} ({suite.num_tasks} tasks, {total} {unit}, device {args.device}, "
              f"{torch.get_num_threads()} threads)")
        print(f"  evaluator: {total / t_ev:12.0f} {unit}/s   naive loop: {total / t_nv:12.0f} {unit}/s   "
              f"speed-up {t_nv / t_ev:.2f}x")
        diff = max(abs(res[t]['accuracy'] - naive[t]) for t in suite.tasks)
        print(f"  max accuracy difference evaluator vs naive: {diff:.4f}")


if __name__ == "__main__":
    main()
