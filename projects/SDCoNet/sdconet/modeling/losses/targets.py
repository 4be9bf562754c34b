"""Validation and clean-up of detection targets before they reach the losses."""

from __future__ import annotations

import logging
from typing import Dict, List

import torch

logger = logging.getLogger(__name__)


def sanitize_targets(targets: List[Dict[str, torch.Tensor]], num_classes: int, device: torch.device):
    """Check targets and make them safe for the matcher and GIoU.

    Boxes are ``cx, cy, w, h`` normalised to the unpadded image. Boxes reaching outside [0, 1] are clipped to
    the image (logged); boxes left with zero width or height are dropped (logged). Non-finite values, wrong
    shapes and labels outside ``[0, num_classes)`` raise ``ValueError`` naming the image index.

    Returns:
        a new list of ``{"labels": int64 (n,), "boxes": float32 (n, 4)}`` on ``device``.
    """
    out = []
    for i, t in enumerate(targets):
        if "labels" not in t or "boxes" not in t:
            raise ValueError(f"targets[{i}]: needs 'labels' and 'boxes' keys, got {sorted(t)}")
        labels = torch.as_tensor(t["labels"], device=device).long().reshape(-1)
        boxes = torch.as_tensor(t["boxes"], device=device, dtype=torch.float32)
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] != labels.shape[0]:
            raise ValueError(
                f"targets[{i}]: boxes must be (n, 4) with n = len(labels) = {labels.shape[0]}, "
                f"got {tuple(boxes.shape)}"
            )
        if not torch.isfinite(boxes).all():
            raise ValueError(f"targets[{i}]: boxes contain NaN or Inf")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"targets[{i}]: labels must lie in [0, {num_classes}), got min {int(labels.min())} "
                f"max {int(labels.max())}"
            )
        x1y1 = boxes[:, :2] - boxes[:, 2:] / 2
        x2y2 = boxes[:, :2] + boxes[:, 2:] / 2
        clipped = torch.cat([x1y1, x2y2], 1).clamp(0.0, 1.0)
        if not torch.equal(clipped, torch.cat([x1y1, x2y2], 1)):
            logger.warning(
                "targets[%d]: %s box(es) reach outside the image; clipped",
                i,
                int((clipped != torch.cat([x1y1, x2y2], 1)).any(1).sum()),
            )
        wh = clipped[:, 2:] - clipped[:, :2]
        keep = (wh > 0).all(1)
        if not bool(keep.all()):
            logger.warning("targets[%d]: dropped %d box(es) with zero width or height", i, int((~keep).sum()))
        clipped, wh = clipped[keep], wh[keep]
        out.append({"labels": labels[keep], "boxes": torch.cat([clipped[:, :2] + wh / 2, wh], 1)})
    return out
