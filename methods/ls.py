"""ls: linear scalarization, one model trained per preference ray.

    python -m bench run method=ls tasks=toy-quadratic
    python -m bench run method=ls tasks=tiny-clip method.space=layerwise method.steps=100

For each ray r, minimise Σ_i r_i L_i with Adam on one labelled train batch per task per step
(`methods.ray_training` holds the loop and the trainable spaces). The classic scalarization
baseline of Pareto multi-task learning, as run in the PWE-MoE paper (Tang et al., "Towards
Efficient Pareto Set Approximation via Mixture of Experts Based Model Fusion", 2024,
https://arxiv.org/abs/2406.09770). LS can only reach the convex part of a front and does not
control where on the front a ray lands: `mu` in each point measures how far r⊙l is from the ray.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.registry import METHODS
from methods.ray_training import RayTraining


def ls_direction(losses: torch.Tensor, leaves: list[torch.Tensor], weights: np.ndarray) -> list[torch.Tensor]:
    """∇ Σ_k w_k L_k over the leaves (one backward pass)."""
    w = torch.as_tensor(np.asarray(weights), dtype=losses.dtype, device=losses.device)
    return list(torch.autograd.grad((w * losses).sum(), leaves, materialize_grads=True))


@METHODS.register("ls", "linear scalarization: one model per preference ray (full / layerwise / taskwise)")
@dataclass(frozen=True)
class LinearScalarization(RayTraining):
    paper = "Linear scalarization per preference ray (baseline in Tang et al., PWE-MoE, 2024)"
    url = "https://arxiv.org/abs/2406.09770"
    registry_name = "ls"
    direction_name = "sum_i r_i grad L_i"

    def direction(self, losses, leaves, ray, support):
        return ls_direction(torch.stack(losses), leaves, ray[support]), {"backward_passes": 1}
