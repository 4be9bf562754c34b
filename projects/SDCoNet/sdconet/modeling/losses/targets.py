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

    The value checks run on the targets where they are (pass CPU targets and no device synchronisation is
    needed) with two host reads for the whole batch; the results are then moved to ``device``.

    Returns:
        a new list of ``{"labels": int64 (n,), "boxes": float32 (n, 4)}`` on ``device``.
    """
    labels_list, boxes_list = [], []
    for i, t in enumerate(targets):
        if "labels" not in t or "boxes" not in t:
            raise ValueError(f"targets[{i}]: needs 'labels' and 'boxes' keys, got {sorted(t)}")
        labels = torch.as_tensor(t["labels"]).long().reshape(-1)
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float32)
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] != labels.shape[0]:
            raise ValueError(
                f"targets[{i}]: boxes must be (n, 4) with n = len(labels) = {labels.shape[0]}, "
                f"got {tuple(boxes.shape)}"
            )
        labels_list.append(labels)
        boxes_list.append(boxes.to(labels.device))
    if not labels_list:
        return []
    counts = [int(lab.shape[0]) for lab in labels_list]
    labels = torch.cat(labels_list)
    boxes = torch.cat(boxes_list)
    # 1st host read: any non-finite box or out-of-range label in the batch (details only on failure)
    bad = ~torch.isfinite(boxes).all(1) | (labels < 0) | (labels >= num_classes)
    if labels.numel() and bool(bad.any()):
        for i, (lab, bx) in enumerate(zip(labels_list, boxes_list)):
            if not torch.isfinite(bx).all():
                raise ValueError(f"targets[{i}]: boxes contain NaN or Inf")
            if lab.numel() and (lab.min() < 0 or lab.max() >= num_classes):
                raise ValueError(
                    f"targets[{i}]: labels must lie in [0, {num_classes}), got min {int(lab.min())} "
                    f"max {int(lab.max())}"
                )
    corners = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    clipped = corners.clamp(0.0, 1.0)
    wh = clipped[:, 2:] - clipped[:, :2]
    keep = (wh > 0).all(1)
    out_boxes = torch.cat([clipped[:, :2] + wh / 2, wh], 1)
    # 2nd host read: how many boxes were clipped / dropped (logged per image only when any)
    n_clipped, n_dropped = (
        torch.stack([(clipped != corners).any(1).sum(), (~keep).sum()]).tolist() if labels.numel() else (0, 0)
    )
    if n_clipped or n_dropped:
        changed = (clipped != corners).any(1)
        for i, part in enumerate(changed.split(counts)):
            if part.any():
                logger.warning("targets[%d]: %s box(es) reach outside the image; clipped", i, int(part.sum()))
        for i, part in enumerate((~keep).split(counts)):
            if part.any():
                logger.warning(
                    "targets[%d]: dropped %d box(es) with zero width or height", i, int(part.sum())
                )
    out = []
    for lab, bx, ok in zip(labels.split(counts), out_boxes.split(counts), keep.split(counts)):
        if n_dropped:
            lab, bx = lab[ok], bx[ok]
        out.append({"labels": lab.to(device, non_blocking=True), "boxes": bx.to(device, non_blocking=True)})
    return out
