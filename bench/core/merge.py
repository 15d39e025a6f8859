"""Merging arithmetic on flat parameter dicts (`dict[str, Tensor]`).

    >>> import torch
    >>> theta0 = {"w": torch.zeros(2)}
    >>> tv = {"w": torch.tensor([[1.0, 0.0], [0.0, 2.0]])}     # [T, *shape]
    >>> task_arithmetic(theta0, tv, [0.5, 0.25])["w"]
    tensor([0.5000, 0.5000])
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

Params = dict[str, torch.Tensor]


def task_arithmetic(theta0: Params, task_vectors: Params, lam: Sequence[float] | torch.Tensor) -> Params:
    """θ(λ) = θ0 + Σ_i λ_i τ_i. `lam` may require grad (layerwise/taskwise training)."""
    # a list or array keeps its float64 values until it meets each parameter's dtype (a float32
    # tensor made from the list first would put float64 suites' λ off by ~1e-8)
    lam_t = lam if isinstance(lam, torch.Tensor) else torch.as_tensor(np.asarray(lam, dtype=np.float64))
    out = {}
    for name, t0 in theta0.items():
        tv = task_vectors[name]
        l = lam_t.to(device=tv.device, dtype=tv.dtype)
        out[name] = t0 + torch.tensordot(l, tv, dims=1)
    return out


def stack_task_vectors(theta0: Params, finetuned: Sequence[Params]) -> Params:
    """τ stacked per parameter: {name: [T, *shape]} with τ_i = θ_i − θ0. Names and shapes must match."""
    out = {}
    for i, ft in enumerate(finetuned):
        check_compatible(theta0, ft, f"fine-tuned model {i}")
    for name, t0 in theta0.items():
        out[name] = torch.stack([ft[name].to(t0.dtype) - t0 for ft in finetuned])
    return out


def check_compatible(reference: Params, other: Params, what: str) -> None:
    """Raise ValueError naming the first parameter whose name or shape differs."""
    from bench.core.registry import BenchError

    for name, t in reference.items():
        if name not in other:
            raise BenchError(f"{what} has no parameter {name!r} (the pre-trained model has it, shape {tuple(t.shape)})")
        if tuple(other[name].shape) != tuple(t.shape):
            raise BenchError(f"{what}: parameter {name!r} has shape {tuple(other[name].shape)}, "
                             f"the pre-trained model has {tuple(t.shape)}")
    extra = [n for n in other if n not in reference]
    if extra:
        raise BenchError(f"{what} has parameter {extra[0]!r} that the pre-trained model lacks")


def params_hash(params: Params) -> str:
    """Content hash of a parameter dict (names, dtypes, shapes, values)."""
    h = hashlib.sha1()
    for name in sorted(params):
        t = params[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
