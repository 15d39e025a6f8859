"""Test oracles for PWE-MoE: the upscaled model built a second, independent way.

    moe = PWEMoEModel(suite.backbone, plan, routers)
    moe.set_preference([0.3, 0.7]); out = moe(pixel_values=x)
    dense = moe.unload([0.3, 0.7])            # a plain backbone module; `moe` stays usable

The harness merges flat parameter dicts (`bench.methods.pwe_moe.upscale.MergePlan`); here the backbone
module itself has each routed parameter parametrized by its router (torch.nn.utils.parametrize),
as the authors' `ParetoWeightEnsemblingModule` wraps modules, and `sequential_router` rebuilds one
router as the paper's `nn.Sequential`. The tests hold the two against each other.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize


def sequential_router(routers, m: int) -> nn.Sequential:
    """Router m of stacked `Routers` as the paper's `nn.Sequential(Linear(T, 2T), ReLU(), Linear(2T, T))`."""
    T = routers.num_tasks
    seq = nn.Sequential(nn.Linear(T, 2 * T), nn.ReLU(), nn.Linear(2 * T, T)).to(routers.w1)
    with torch.no_grad():
        seq[0].weight.copy_(routers.w1[m])
        seq[0].bias.copy_(routers.b1[m])
        seq[2].weight.copy_(routers.w2[m])
        seq[2].bias.copy_(routers.b2[m])
    return seq


class _Ensemble(nn.Module):
    """Parametrization of one routed tensor: θ0 ↦ θ0 + Σ_i w_{m,i} τ_i, w read from a shared cell."""

    def __init__(self, task_vectors: torch.Tensor, module_index: int, cell: list):
        super().__init__()
        self.register_buffer("task_vectors", task_vectors.detach().clone())
        self.module_index = module_index
        self.cell = cell                                 # [w]: one merge per forward for all tensors

    def forward(self, theta0: torch.Tensor) -> torch.Tensor:
        w = self.cell[0][self.module_index]
        return theta0 + torch.tensordot(w.to(self.task_vectors.dtype), self.task_vectors, dims=1)


class PWEMoEModel(nn.Module):
    """The upscaled backbone: routed parameters parametrized by their routers, the rest at TA."""

    def __init__(self, backbone: nn.Module, plan, routers: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.routers = routers
        self.backbone.requires_grad_(False)
        num_tasks = next(iter(plan.task_vectors.values())).shape[0]
        self.preference = torch.full((num_tasks,), 1.0 / num_tasks)
        self._cell = [routers(self.preference).detach()]
        with torch.no_grad():
            for name, value in plan.fixed.items():
                _param(self.backbone, name).copy_(value)
            self._template = copy.deepcopy(self.backbone)    # plain module: what `unload` fills
            for name, m in plan.index.items():
                _param(self.backbone, name).copy_(plan.theta0[name])
                owner, leaf = _split(self.backbone, name)
                parametrize.register_parametrization(owner, leaf, _Ensemble(plan.task_vectors[name], m, self._cell))
        self._routed = list(plan.index)

    def set_preference(self, ray) -> "PWEMoEModel":
        self.preference = torch.as_tensor(ray, dtype=torch.float32)
        return self

    def forward(self, *args, **kwargs):
        self._cell[0] = self.routers(self.preference.to(self.routers.b2.device))   # merge once, input-independent
        with parametrize.cached():
            return self.backbone(*args, **kwargs)

    def unload(self, ray) -> nn.Module:
        """A dense copy of the backbone merged at `ray`: no routers, no extra inference cost. The
        parametrized model is left as it was (it can be unloaded again or run)."""
        with torch.no_grad():
            self._cell[0] = self.routers(torch.as_tensor(ray, dtype=torch.float32).to(self.routers.b2.device))
            dense = copy.deepcopy(self._template)
            for name in self._routed:
                _param(dense, name).copy_(_param(self.backbone, name))    # the parametrization's value
        return dense


def _split(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, leaf = name.rpartition(".")
    return (root.get_submodule(owner) if owner else root), leaf


def _param(root: nn.Module, name: str) -> torch.Tensor:
    owner, leaf = _split(root, name)
    return getattr(owner, leaf)
