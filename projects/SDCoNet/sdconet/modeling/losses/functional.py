"""Detection loss helpers: sigmoid focal loss and matched-box L1 + GIoU (all computed in float32)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from ..box_ops import box_cxcywh_to_xyxy, check_boxes_xyxy, elementwise_generalized_box_iou

__all__ = ["sigmoid_focal_loss", "l1_and_giou"]


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_boxes: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Sigmoid focal loss summed over every element and divided by ``num_boxes``.

    Per element: ``alpha_t * (1 - p_t)^gamma * BCEWithLogits(x, t)`` with ``p = sigmoid(x)``,
    ``p_t = p t + (1 - p)(1 - t)``, ``alpha_t = alpha t + (1 - alpha)(1 - t)``. This equals DINO's "mean over
    queries, sum, divide by num_boxes, times num_queries".

    Args:
        logits: (..., C) class logits (any dtype; computed in float32).
        targets: same shape, 0/1 (or soft) targets; all-zero rows are "no object".
        num_boxes: normaliser (number of ground-truth boxes, >= 1 expected).
        alpha: positive-class weight in [0, 1]; a negative value disables the alpha weighting.
        gamma: focusing exponent.

    Returns:
        Scalar float32 loss.
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"sigmoid_focal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
            "differ in shape"
        )
    x = logits.float()
    t = targets.to(x.dtype)
    prob = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = prob * t + (1 - prob) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.sum() / num_boxes


def l1_and_giou(
    pred_boxes: torch.Tensor, tgt_boxes: torch.Tensor, num_boxes: float, check: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """L1 and GIoU losses of matched box pairs, each summed and divided by ``num_boxes``.

    Args:
        pred_boxes: (N, 4) predicted ``cx, cy, w, h`` (V-frame, normalised).
        tgt_boxes: (N, 4) matched ground-truth ``cx, cy, w, h``; must be valid (``w, h >= 0``).
        num_boxes: normaliser.
        check: validate the target boxes (one device synchronisation); callers that validated already pass
            False.

    Returns:
        ``(loss_bbox, loss_giou)`` float32 scalars: ``sum |pred - tgt| / num_boxes`` and
        ``sum (1 - GIoU) / num_boxes``. With ``N == 0`` both are zeros still connected to ``pred_boxes``.

    Raises:
        ValueError: if the shapes differ or a target box is invalid.
    """
    if pred_boxes.shape != tgt_boxes.shape or pred_boxes.shape[-1:] != (4,):
        raise ValueError(
            f"l1_and_giou: pred_boxes {tuple(pred_boxes.shape)} and tgt_boxes {tuple(tgt_boxes.shape)} "
            "must both be (N, 4)"
        )
    pred = pred_boxes.float()
    tgt = tgt_boxes.float()
    loss_bbox = (pred - tgt).abs().sum() / num_boxes
    tgt_xyxy = box_cxcywh_to_xyxy(tgt)
    if check and tgt.numel():
        check_boxes_xyxy(tgt_xyxy, "l1_and_giou: tgt_boxes (as xyxy)")
    giou = elementwise_generalized_box_iou(box_cxcywh_to_xyxy(pred), tgt_xyxy)
    loss_giou = (1 - giou).sum() / num_boxes
    return loss_bbox, loss_giou
