"""Upscaling by module-name patterns: which parameters get a router, and merging them for a ray.

    >>> names = ["h.0.ln_1.weight", "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias",
    ...          "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias", "h.0.mlp.c_proj.weight", "ln_f.weight"]
    >>> module_groups(names, "mlp")
    {'h.0.mlp': ['h.0.mlp.c_fc.weight', 'h.0.mlp.c_fc.bias', 'h.0.mlp.c_proj.weight']}
    >>> list(module_groups(names, "all"))
    ['h.0.ln_1', 'h.0.attn', 'h.0.mlp', 'ln_f']

What a "module" is. An upscaled module is a *block* of the transformers module tree: the first
module on a parameter's path whose own name matches a pattern, e.g. `encoder.layers.N.mlp`
(CLIPMLP: fc1 + fc2) or `h.N.mlp` (GPT-2: the Conv1D c_fc + c_proj). Every parameter under the
block (weights and biases of all its Linear / Conv1D layers) shares the block's one router, as in
the authors' code, which wraps the whole MLP in one `ParetoWeightEnsemblingModule`; this is what
gives the paper's 264 router parameters for ViT-B/32 (12 MLP blocks × 22 at T = 2).

    upscale=mlp        blocks named `mlp`                                  (the paper's default)
    upscale=mlp+attn   … and blocks named `self_attn`, `attn` or `attention`
    upscale=all        … and every other parameter, grouped by the module that owns it directly
                       (each LayerNorm, embedding, patch convolution; a parameter outside any
                       module, like the toy suite's `theta`, is its own group)

The patterns match module names only, so CLIPVisionModel and GPT2Model (Conv1D weights
included) go through the same code, with no per-architecture class. Parameters outside every
upscaled block stay fixed at task arithmetic θ0 + init_lambda·Σ_i τ_i.

`MergePlan` works on flat parameter dicts: training, evaluation and export merge once per ray and
run the suite's `functional_call` forward. (tests/pwe_moe_oracle.py builds the same model a second
way, as the backbone module with each routed parameter parametrized by its router, and the tests
hold the two against each other.)
"""
from __future__ import annotations

import re
from typing import Iterable

import torch

from bench.api import BenchError, Params, task_arithmetic

# module-name patterns of the blocks each choice upscales (matched against one name component)
BLOCK_PATTERNS = {"mlp": r"mlp", "attn": r"self_attn|attn|attention"}
UPSCALE = {"mlp": ("mlp",), "mlp+attn": ("mlp", "attn"), "all": ("mlp", "attn")}


def module_groups(param_names: Iterable[str], upscale: str) -> dict[str, list[str]]:
    """{module name: [parameter names]} of the upscaled modules, in parameter order (pure function)."""
    if upscale not in UPSCALE:
        raise BenchError(f"unknown upscale {upscale!r}; valid choices: {', '.join(UPSCALE)}")
    block = re.compile("|".join(f"(?:{BLOCK_PATTERNS[k]})" for k in UPSCALE[upscale]))
    groups: dict[str, list[str]] = {}
    for name in param_names:
        parts = name.split(".")
        key = None
        for i in range(1, len(parts)):               # outermost matching module on the path
            if block.fullmatch(parts[i - 1]):
                key = ".".join(parts[:i])
                break
        if key is None and upscale == "all":
            key = ".".join(parts[:-1]) or name       # the module that owns the parameter directly
        if key is not None:
            groups.setdefault(key, []).append(name)
    return groups


def check_groups(groups: dict[str, list[str]], upscale: str, suite_name: str, param_names: list[str]) -> None:
    if not groups:
        sample = ", ".join(param_names[:3]) + (" …" if len(param_names) > 3 else "")
        raise BenchError(f"method.upscale={upscale!r} selects no module of suite {suite_name!r} "
                         f"(its parameters: {sample}); valid choices here: all")


class MergePlan:
    """θ(w): routed parameters θ0_p + Σ_i w_{m(p),i} τ_{p,i}; the rest fixed at θ0 + init_lambda·Σ τ.

    `merge(w)` takes the routers' output w [M, T] and returns a full flat parameter dict; gradients
    flow to w only (θ0 and τ are the suite's frozen tensors, never copied per step).
    """

    def __init__(self, theta0: Params, task_vectors: Params, groups: dict[str, list[str]], init_lambda: float):
        self.theta0, self.task_vectors = theta0, task_vectors
        self.groups = groups
        self.modules = list(groups)
        self.init_lambda = float(init_lambda)
        self.index = {p: m for m, names in enumerate(groups.values()) for p in names}
        num_tasks = next(iter(task_vectors.values())).shape[0]
        rest = [n for n in theta0 if n not in self.index]
        with torch.no_grad():
            self.fixed = task_arithmetic({n: theta0[n] for n in rest}, task_vectors, [self.init_lambda] * num_tasks)

    @property
    def num_modules(self) -> int:
        return len(self.modules)

    def merge(self, w: torch.Tensor) -> Params:
        out = dict(self.fixed)
        for p, m in self.index.items():
            t0, tv = self.theta0[p], self.task_vectors[p]
            # θ0 + τᵀw as one fused matrix-vector product: no temporary of the parameter's size, and
            # autograd keeps only views of τ (the backward is τ·∂L/∂θ, a [T] vector per tensor)
            out[p] = torch.addmv(t0.reshape(-1), tv.reshape(tv.shape[0], -1).t(), w[m].to(tv.dtype)).view(t0.shape)
        return out
