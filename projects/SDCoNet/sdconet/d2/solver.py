"""Optimizer factory: ``SOLVER.OPTIMIZER`` over the fixed gradient-routing parameter groups, for any model.

SDCoNet: the groups of its core (``encoder``/``sr_encoder`` = backbone, ``sr_decoder`` = SR). A detectron2 detector
(optionally with the SR add-on): ``backbone.bottom_up`` (or the whole ``backbone`` when it has no bottom-up part) =
backbone, ``sr_branch`` = SR, everything else = detection. The same six groups either way, so the LR scheduler, the
per-group LR logging and the checkpoints do not depend on the model.
"""

from __future__ import annotations

import logging
from typing import Tuple

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

from sdconet.engine.clipping import full_model_clipping
from sdconet.engine.routing import ENCODER_PREFIXES, SR_PREFIXES, build_param_groups

__all__ = ["build_optimizer", "build_sdconet_optimizer", "core_of", "routing_prefixes", "unwrap"]

logger = logging.getLogger(__name__)

_OPTIMIZERS = {"ADAMW": torch.optim.AdamW, "ADAM": torch.optim.Adam, "SGD": torch.optim.SGD}
#: Parameter-name prefix of the SR add-on (sdconet.d2.sr_branch).
SR_BRANCH_PREFIX = "sr_branch."


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def core_of(model: nn.Module) -> nn.Module:
    """The framework-free core model inside a (possibly DDP-wrapped) SDCoNet; any other model itself."""
    model = unwrap(model)
    return getattr(model, "core", model)


def routing_prefixes(model: nn.Module) -> Tuple[nn.Module, Tuple[str, ...], Tuple[str, ...]]:
    """``(module whose parameters are grouped, backbone prefixes, SR prefixes)`` for ``model``."""
    model = unwrap(model)
    core = getattr(model, "core", None)
    if core is not None:
        extra = [n for n, _ in model.named_parameters() if not n.startswith("core.")]
        if extra:
            raise ValueError(f"build_optimizer: parameters outside model.core would be skipped: {extra}")
        return core, ENCODER_PREFIXES, SR_PREFIXES
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        encoder: Tuple[str, ...] = ()
    elif isinstance(getattr(backbone, "bottom_up", None), nn.Module):
        encoder = ("backbone.bottom_up.",)
    else:
        encoder = ("backbone.",)
    return model, encoder, (SR_BRANCH_PREFIX,)


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over :func:`sdconet.engine.routing.build_param_groups` of the model.

    Groups (fixed for the whole run, SR group present from iteration 0): backbone lr x ``BACKBONE_MULTIPLIER``,
    detection lr x 1, SR decoder lr x ``SR_LR_MULTIPLIER``; no weight decay on norms and position tables (as
    detectron2's ``WEIGHT_DECAY_NORM 0``). ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"`` clips the global
    gradient norm of all parameters at ``CLIP_VALUE`` (paper: 0.1); ``"value"``/``"norm"`` fall back to
    detectron2's per-parameter clipping. SGD takes ``SOLVER.MOMENTUM``/``NESTEROV`` (detectron2's recipe).
    """
    s = cfg.SOLVER
    name = s.OPTIMIZER.upper()
    if name not in _OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {sorted(_OPTIMIZERS)} (got '{s.OPTIMIZER}')")
    module, encoder_prefixes, sr_prefixes = routing_prefixes(model)
    groups = build_param_groups(
        module,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        backbone_multiplier=s.BACKBONE_MULTIPLIER,
        sr_multiplier=s.SR_LR_MULTIPLIER,
        encoder_prefixes=encoder_prefixes,
        sr_prefixes=sr_prefixes,
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


#: The name this factory had when it served SDCoNet only.
build_sdconet_optimizer = build_optimizer
