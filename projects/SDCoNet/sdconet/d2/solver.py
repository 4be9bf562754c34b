"""Optimizer factory: AdamW over the fixed gradient-routing parameter groups, with full-model norm clipping."""

from __future__ import annotations

import logging

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

from sdconet.engine.clipping import full_model_clipping
from sdconet.engine.routing import build_param_groups

__all__ = ["build_sdconet_optimizer", "core_of"]

logger = logging.getLogger(__name__)

_OPTIMIZERS = {"ADAMW": torch.optim.AdamW, "ADAM": torch.optim.Adam, "SGD": torch.optim.SGD}


def core_of(model: nn.Module) -> nn.Module:
    """The framework-free core model inside a (possibly DDP-wrapped) meta-architecture."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "core", model)


def build_sdconet_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over :func:`sdconet.engine.routing.build_param_groups` of ``model.core``.

    Groups (fixed for the whole run, SR group present from iteration 0): encoder lr x ``BACKBONE_MULTIPLIER``,
    detection lr x 1, SR decoder lr x ``SR_LR_MULTIPLIER``; no weight decay on norms and position tables.
    ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"`` clips the global gradient norm of all parameters at
    ``CLIP_VALUE`` (paper: 0.1); ``"value"``/``"norm"`` fall back to detectron2's per-parameter clipping.
    """
    s = cfg.SOLVER
    name = s.OPTIMIZER.upper()
    if name not in _OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {sorted(_OPTIMIZERS)} (got '{s.OPTIMIZER}')")
    core = core_of(model)
    extra_params = (
        [n for n, _ in model.named_parameters() if not n.startswith("core.")] if core is not model else []
    )
    if extra_params:
        raise ValueError(
            f"build_sdconet_optimizer: parameters outside model.core would be skipped: {extra_params}"
        )
    groups = build_param_groups(
        core,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        backbone_multiplier=s.BACKBONE_MULTIPLIER,
        sr_multiplier=s.SR_LR_MULTIPLIER,
    )
    opt_cls = _OPTIMIZERS[name]
    clip = s.CLIP_GRADIENTS
    kwargs = {"lr": s.BASE_LR}
    if name == "SGD":
        kwargs.update(momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        optimizer = full_model_clipping(opt_cls, clip.CLIP_VALUE, clip.NORM_TYPE)(groups, **kwargs)
    else:
        optimizer = maybe_add_gradient_clipping(cfg, opt_cls)(groups, **kwargs)
    logger.info(
        "Optimizer %s, clipping %s: %s",
        type(optimizer).__name__,
        f"{clip.CLIP_TYPE}@{clip.CLIP_VALUE}" if clip.ENABLED else "off",
        ", ".join(
            f"{g['name']}: {len(g['params'])} tensors lr={g['lr']:.2e} wd={g['weight_decay']:.0e}"
            for g in optimizer.param_groups
        ),
    )
    return optimizer
