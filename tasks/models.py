"""Feature functions shared by every suite of one architecture family (tiny and published alike).

Parameters are applied with `torch.func.functional_call` on the suite's one backbone module: no
copies. Module names are the transformers ones (`encoder.layers.N.mlp.fc1`, `h.N.mlp.c_fc`, …).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch
from torch.func import functional_call

from bench.api import Params


def clip_vision_features(backbone: torch.nn.Module, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pooled output of a `CLIPVisionModel` ([B, hidden]) for batch["pixel_values"]."""
    out = functional_call(backbone, params, (), {"pixel_values": batch["pixel_values"]}, strict=False)
    return out.pooler_output


def gpt2_features(backbone: torch.nn.Module, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hidden state of the last non-pad token of a `GPT2Model` ([B, hidden]); right padding, as
    `GPT2ForSequenceClassification` pools."""
    mask = batch["attention_mask"]
    hidden = functional_call(backbone, params, (), {"input_ids": batch["input_ids"], "attention_mask": mask},
                             strict=False).last_hidden_state
    last = mask.sum(dim=1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut right padding to the batch's longest sequence (never pad to the model maximum)."""
    n = int(batch["attention_mask"].sum(dim=1).max())
    return {k: (v[:, :n] if v.dim() == 2 and k in ("input_ids", "attention_mask", "token_type_ids") else v)
            for k, v in batch.items()}


def backbone_params(backbone: torch.nn.Module) -> Params:
    """The merge-able parameters of a backbone: every parameter, detached, as a flat dict."""
    return {n: p.detach().clone() for n, p in backbone.named_parameters()}


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Silence transformers' and datasets' info logs and per-file progress bars (loading, saving,
    building): the one place that does; the harness prints its own progress. `datasets` is silenced
    only where it is already imported (its import alone costs ~1.5 s; code that loads data imports it
    before entering the block)."""
    import transformers

    datasets = sys.modules.get("datasets")
    tl = transformers.utils.logging
    verbosity, bars = tl.get_verbosity(), tl.is_progress_bar_enabled()
    tl.set_verbosity_error()
    tl.disable_progress_bar()
    if datasets is not None:
        dl = datasets.utils.logging
        dverbosity, dbars = dl.get_verbosity(), not datasets.utils.are_progress_bars_disabled()
        dl.set_verbosity_error()
        datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        tl.set_verbosity(verbosity)
        if bars:
            tl.enable_progress_bar()
        if datasets is not None:
            dl.set_verbosity(dverbosity)
            if dbars:
                datasets.utils.enable_progress_bars()