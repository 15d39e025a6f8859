"""pareto_merging: a task-arithmetic base plus a preference-dependent low-rank correction per weight matrix.

    python -m bench run method=pareto_merging tasks=tiny-clip tasks.names=[digits,dots]
    python -m bench run method=pareto_merging tasks=toy-quadratic method.targets=all

After Chen & Kwok, "Pareto Merging: Multi-Objective Optimization for Preference-Aware Model
Merging", ICML 2025 (arXiv 2408.12105; its first version: "You Only Merge Once"). No code was
released; this follows the paper's structure: a preference-independent merged base model plus a
preference-dependent personalised part, a low-rank tensor contracted with the preference,
W(γ) = G ×₁ A ×₂ B ×₃ γ. Here, for each selected weight matrix W ∈ R^{m×k}:

    W(r) = W_base + A_W (Σ_t r_t G_{W,t}) B_Wᵀ,     A_W ∈ R^{m×q}, B_W ∈ R^{k×q}, G_W ∈ R^{T×q×q}

and every other parameter is W_base, the task-arithmetic merge θ0 + init_lambda·Σ_i τ_i. Choices
the paper leaves open here, and why:
- the base is task arithmetic with λ = `init_lambda` (0.3), fixed (the paper puts PM on top of
  several merging methods; task arithmetic is the harness's common starting point, as PWE-MoE's);
- the matrices: every 2-D weight inside attention and MLP blocks (`targets=mlp+attn`, module
  names as PWE-MoE's `upscale`), embeddings and norms excluded (their low rank buys little);
  `targets=all` adds every other parameter, a vector as a 1 × d matrix (so the analytic toy's one
  parameter vector can be corrected). A 1 × d matrix has rank 1 whatever `rank` says (q = min(rank, m, k)):
  on a suite of one vector (toy-quadratic) the correction is A(Σ_t r_t G_t)Bᵀ with A a scalar, so every
  preference moves the model along the one direction B: the front is a line through the base, not a
  surface, and the toy rows compare a one-dimensional family with the others' full fronts;
- rank q = `rank` (4): the paper's correction is small beside the model; q = 4 adds T·q² + q·(m+k)
  parameters per matrix (ViT-B/32, 2 tasks: about 0.3 M of 88 M);
- initialisation: A and B ~ N(0, 1/√dim) (drawn from the run's stream), G = 0, so training starts
  exactly at the base model, as LoRA starts at its base;
- training: the labelled train splits with any scalarizer, r ~ Dirichlet per step (the paper
  trains data-free or on unlabelled data; the harness compares every method on the same labelled
  batches), through methods/conditioned.py like PWE-MoE and phn.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bench.api import BenchError, Params, task_arithmetic
from bench.methods.conditioned import Conditioned
from bench.methods.pwe_moe.upscale import module_groups


def targets_of(theta0: Params, targets: str, suite_name: str) -> list[str]:
    """The parameters that get a low-rank correction (see the module docstring)."""
    if targets == "all":
        return list(theta0)
    names = [n for names in module_groups(list(theta0), targets).values() for n in names if theta0[n].dim() == 2]
    if not names:
        raise BenchError(f"method.targets={targets!r} selects no weight matrix of suite {suite_name!r}; "
                         f"valid choices here: all")
    return names


class LowRankMerge(nn.Module):
    """preference → base + A (Σ_t r_t G_t) Bᵀ for every target matrix."""

    def __init__(self, theta0: Params, task_vectors: Params, names: list[str], rank: int, init_lambda: float,
                 generator: torch.Generator):
        super().__init__()
        T = next(iter(task_vectors.values())).shape[0]
        with torch.no_grad():        # the suite's tensors; not parameters, not saved with the net
            self.base = task_arithmetic(theta0, task_vectors, [init_lambda] * T)
        self.names = names
        self.keys = [re.sub(r"\W", "_", n) for n in names]          # ParameterDict keys cannot hold dots
        self.A, self.B, self.G = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        for name, key in zip(names, self.keys):
            m, k = self.shape(theta0[name])
            q = min(rank, m, k)
            ref = theta0[name]
            self.A[key] = nn.Parameter(torch.randn(m, q, generator=generator).to(ref) / m ** 0.5)
            self.B[key] = nn.Parameter(torch.randn(k, q, generator=generator).to(ref) / k ** 0.5)
            self.G[key] = nn.Parameter(torch.zeros(T, q, q, dtype=ref.dtype, device=ref.device))

    @staticmethod
    def shape(t: torch.Tensor) -> tuple[int, int]:
        return (t.shape[0], t[0].numel()) if t.dim() >= 2 else (1, t.numel())

    def forward(self, ray: torch.Tensor) -> Params:
        out = dict(self.base)
        for name, key in zip(self.names, self.keys):
            core = torch.einsum("t,tij->ij", ray.to(self.G[key]), self.G[key])
            delta = self.A[key] @ core @ self.B[key].T
            out[name] = self.base[name] + delta.view(self.base[name].shape)
        return out


@dataclass(frozen=True)
class ParetoMerging(Conditioned):
    """Task-arithmetic base + a preference-conditioned low-rank correction per weight matrix."""

    paper = "Chen & Kwok, Pareto Merging: Multi-Objective Optimization for Preference-Aware Model Merging, ICML 2025"
    url = "https://arxiv.org/abs/2408.12105"
    budget = "steps"            # one run of `steps` for every preference
    state_file = "lowrank.pt"
    label = "pareto_merging"

    rank: int = 4                   # q of each matrix's A (m×q), B (k×q) and core G (T×q×q)
    targets: Literal["mlp", "mlp+attn", "all"] = "mlp+attn"   # which weights get a correction (the rest: the base)

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise BenchError(f"method.rank={self.rank} must be ≥ 1")

    def build(self, suite, generator: torch.Generator) -> LowRankMerge:
        theta0 = suite.theta0()
        return LowRankMerge(theta0, suite.task_vectors(), targets_of(theta0, self.targets, suite.name), self.rank,
                            self.init_lambda, generator)

    def structure(self, net: LowRankMerge):
        return {n: list(net.A[k].shape) + [net.B[k].shape[0]] for n, k in zip(net.names, net.keys)}

    def describe(self, net: LowRankMerge, ray: torch.Tensor) -> dict:
        """How far the preference moves the model: ‖ΔW(r)‖ / ‖W_base‖ over the corrected matrices."""
        merged = net(ray)
        num = sum(float((merged[n] - net.base[n]).norm() ** 2) for n in net.names)
        den = sum(float(net.base[n].norm() ** 2) for n in net.names)
        return {"relative_correction": round((num / max(den, 1e-30)) ** 0.5, 8)}

    def export_facts(self, net: LowRankMerge, ray: torch.Tensor) -> dict:
        """`describe`'s and the structure; the factors A, B, G live in the saved net (`rebuild` reapplies them)."""
        return {**self.describe(net, ray), "targets": self.targets, "rank": self.rank,
                "corrected": list(net.names),
                "merged": "W(r) = W_base + A_W (sum_t r_t G_{W,t}) B_W^T for every corrected matrix, W_base = theta0 + "
                          "init_lambda * sum_i tau_i (also every other parameter); A, B, G are in the run's saved net: "
                          "see rebuild"}
