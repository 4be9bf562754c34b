"""DINO inference post-processing: top-k over queries x classes, no NMS."""

from __future__ import annotations

from typing import Dict, List

import torch

from .box_ops import box_cxcywh_to_xyxy


def topk_detections(
    pred_logits: torch.Tensor, pred_boxes: torch.Tensor, k: int
) -> List[Dict[str, torch.Tensor]]:
    """Select the ``k`` best (query, class) pairs per image.

    Args:
        pred_logits: (B, Q, C) class logits. pred_boxes: (B, Q, 4) sigmoid cxcywh in the valid-image frame.
        k: detections per image (clamped to Q * C).
    Returns:
        per image ``{"boxes": (k, 4) x1y1x2y2 in [0, 1] of the unpadded image, "scores": (k,), "labels": (k,)}``,
        sorted by score. A query may appear with several classes (DINO convention).
    """
    bsz, num_queries, num_classes = pred_logits.shape
    prob = pred_logits.float().sigmoid().flatten(1)
    k = min(k, num_queries * num_classes)
    scores, index = prob.topk(k, dim=1)
    query = index // num_classes
    labels = index % num_classes
    boxes = box_cxcywh_to_xyxy(pred_boxes.float()).clamp(0.0, 1.0)
    boxes = torch.gather(boxes, 1, query[..., None].expand(-1, -1, 4))
    return [{"boxes": boxes[b], "scores": scores[b], "labels": labels[b]} for b in range(bsz)]
