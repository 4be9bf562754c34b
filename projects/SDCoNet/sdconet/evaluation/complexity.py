"""Model complexity: parameters and inference FLOPs (fvcore; one multiply-add counts as one FLOP).

fvcore counts matmul/linear/conv/einsum-style ops; ops it has no handler for (``grid_sample`` inside the
deformable attention, ``topk``, ``gather``/``scatter``, softmax, norms' elementwise work ...) are not counted and
are reported in ``unsupported`` so a reader knows what is missing — the same convention as the paper's tables.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)


class InferencePath(nn.Module):
    """Wrap an ``SDCoNet`` so that tracing sees exactly its inference path and returns plain tensors.

    The SR decoder is skipped unless the variant needs it to detect (serial), as at deployment.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, pixel_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        if m.serial:
            sr = m.sr_decoder(m.sr_encoder(images))
            enc = m.encoder(sr)
            mask = ~m._hr_valid_mask(pixel_mask)
        else:
            enc = m.encoder(images)
            mask = pixel_mask
        out = m.detector(enc["stages"][1:], mask, None)
        return out["pred_logits"], out["pred_boxes"]


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameters in total, per top-level child, and in the deployed (inference) model."""
    per_child = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    total = sum(p.numel() for p in model.parameters())
    inference = total - (per_child.get("sr_decoder", 0) if not getattr(model, "serial", False) else 0)
    return {"total": total, "inference": inference, **{f"child.{k}": v for k, v in per_child.items()}}


@torch.no_grad()
def inference_gflops(
    model: nn.Module, lr_size: Tuple[int, int], batch: int = 1
) -> Tuple[float, Dict[str, int]]:
    """GFLOPs (fvcore, multiply-add = 1) of one inference on ``batch`` LR images of ``lr_size``.

    Returns:
        (gflops per image, {unsupported op name: occurrences}).
    """
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    images = torch.zeros(batch, 3, *lr_size, device=param.device, dtype=param.dtype)
    mask = torch.zeros(batch, *lr_size, dtype=torch.bool, device=param.device)
    analysis = FlopCountAnalysis(InferencePath(model), (images, mask))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    total = analysis.total()
    unsupported = dict(Counter(analysis.unsupported_ops()))
    model.train(was_training)
    return total / batch / 1e9, unsupported
