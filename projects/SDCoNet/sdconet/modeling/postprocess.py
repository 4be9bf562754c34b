"""DINO inference post-processing: top-k over queries x classes, no NMS."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from .box_ops import box_cxcywh_to_xyxy


def topk_detections_batched(
    pred_logits: torch.Tensor, pred_boxes: torch.Tensor, k: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select the ``k`` best (query, class) pairs per image, batched (fixed shapes, no host synchronisation).

    Args:
        pred_logits: (B, Q, C) class logits. pred_boxes: (B, Q, 4) sigmoid cxcywh in the valid-image frame.
        k: detections per image (clamped to Q * C).
    Returns:
        ``boxes (B, k, 4)`` x1y1x2y2 in [0, 1] of the unpadded image, ``scores (B, k)``, ``labels (B, k)`` int64,
        sorted by score. A query may appear with several classes (DINO convention).
    """
    _, num_queries, num_classes = pred_logits.shape
    prob = pred_logits.float().sigmoid().flatten(1)
    k = min(k, num_queries * num_classes)
    scores, index = prob.topk(k, dim=1)
    query = index // num_classes
    labels = index % num_classes
    boxes = box_cxcywh_to_xyxy(pred_boxes.float()).clamp(0.0, 1.0)
    boxes = torch.gather(boxes, 1, query[..., None].expand(-1, -1, 4))
    return boxes, scores, labels


def topk_detections(
    pred_logits: torch.Tensor, pred_boxes: torch.Tensor, k: int
) -> List[Dict[str, torch.Tensor]]:
    """:func:`topk_detections_batched` split per image: ``[{"boxes": (k, 4), "scores": (k,), "labels": (k,)}]``."""
    boxes, scores, labels = topk_detections_batched(pred_logits, pred_boxes, k)
    return [{"boxes": boxes[b], "scores": scores[b], "labels": labels[b]} for b in range(boxes.shape[0])]
