"""PWE-MoE routers: one small MLP per upscaled module, mapping a preference ray to merging weights.

    >>> import torch
    >>> routers = Routers(num_modules=12, num_tasks=2, generator=torch.Generator().manual_seed(0))
    >>> routers.num_trainable()          # 12 × (4T² + 3T) at T = 2: the paper's 264 for ViT-B/32
    264
    >>> routers(torch.tensor([0.3, 0.7])).shape      # [modules, tasks]
    torch.Size([12, 2])

Each router R_m is Linear(T, 2T) → ReLU → Linear(2T, T) with weights ~ N(0, 0.01²) (std 0.01, as
the authors' `ParetoWeightEnsemblingModule`), first bias 0, last bias `init_lambda`, and no softmax:
its outputs are the (unconstrained) task-arithmetic coefficients of that module. The M routers are
stored stacked ([M, 2T, T] …) and evaluated with one batched matmul (the tests check each against
the paper's plain `nn.Sequential`).
"""
from __future__ import annotations

import torch
from torch import nn


def router_param_count(num_modules: int, num_tasks: int) -> int:
    """(#upscaled modules) × (4T² + 3T): two Linear layers T → 2T → T with biases."""
    T = num_tasks
    return num_modules * (4 * T * T + 3 * T)


class Routers(nn.Module):
    """M independent routers Δ^{T−1} → R^T, stacked. Input r [T] (or [B, T]); output [M, T] ([B, M, T])."""

    def __init__(self, num_modules: int, num_tasks: int, init_lambda: float = 0.3, init_std: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        M, T = num_modules, num_tasks
        self.num_modules, self.num_tasks = M, T

        def normal(*shape):
            return torch.randn(*shape, generator=generator) * init_std

        self.w1 = nn.Parameter(normal(M, 2 * T, T))
        self.b1 = nn.Parameter(torch.zeros(M, 2 * T))
        self.w2 = nn.Parameter(normal(M, T, 2 * T))
        self.b2 = nn.Parameter(torch.full((M, T), float(init_lambda)))

    def forward(self, ray: torch.Tensor) -> torch.Tensor:
        r = ray.to(self.w1.dtype)
        h = torch.relu(torch.einsum("mht,...t->...mh", self.w1, r) + self.b1)
        return torch.einsum("mth,...mh->...mt", self.w2, h) + self.b2

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
