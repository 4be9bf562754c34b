"""Box utilities: format conversion, IoU / generalised IoU, inverse sigmoid.

Boxes are normalised floats; ``cxcywh`` = (centre x, centre y, width, height), ``xyxy`` = (x1, y1, x2, y2).

Denominators are clamped at ``eps`` instead of having ``eps`` added (DINO adds 1e-6): for the tiny normalised
areas of small remote-sensing objects (an 8-pixel box on an 800-pixel image has area 1e-4) an added 1e-6 would
bias a perfect match's IoU by ~1%. Clamping only matters for degenerate (zero-area) pairs.
"""

from __future__ import annotations

from typing import Tuple

import torch

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "elementwise_generalized_box_iou",
    "check_boxes_xyxy",
    "inverse_sigmoid",
]

#: Smallest denominator in IoU/GIoU (normalised-area units), only reached by degenerate boxes.
AREA_EPS = 1e-12


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) ``cx, cy, w, h`` -> (..., 4) ``x1, y1, x2, y2``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) ``x1, y1, x2, y2`` -> (..., 4) ``cx, cy, w, h``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (...) area ``(x2 - x1) * (y2 - y1)`` (negative for inverted boxes; not clamped)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def check_boxes_xyxy(boxes: torch.Tensor, name: str) -> None:
    """Raise if any xyxy box has ``x2 < x1``, ``y2 < y1`` or a non-finite coordinate (synchronises).

    Args:
        boxes: (N, 4) xyxy.
        name: how the caller calls this argument, used in the message.

    Raises:
        ValueError: naming the argument and the first offending box.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}: expected (N, 4) xyxy boxes, got shape {tuple(boxes.shape)}")
    ok = (boxes[:, 2:] >= boxes[:, :2]).all(-1) & torch.isfinite(boxes).all(-1)
    if not bool(ok.all()):
        bad = int((~ok).nonzero()[0, 0])
        raise ValueError(
            f"{name}: invalid xyxy box at index {bad}: {boxes[bad].tolist()} "
            "(need x2 >= x1, y2 >= y1, finite); degenerate or NaN boxes "
            "(filter w <= 0 or h <= 0 ground truth in the dataset)"
        )


def _inter_union(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pairwise intersection and clamped union, (N, M) each."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area1[:, None] + area2[None, :] - inter).clamp(min=eps)
    return inter, union


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = AREA_EPS) -> torch.Tensor:
    """Pairwise IoU.

    Args:
        boxes1: (N, 4) xyxy. boxes2: (M, 4) xyxy.
        eps: lower clamp of the union.

    Returns:
        (N, M) IoU.
    """
    inter, union = _inter_union(boxes1, boxes2, eps)
    return inter / union


def generalized_box_iou(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = AREA_EPS, check: bool = True
) -> torch.Tensor:
    """Pairwise generalised IoU: ``IoU - (hull - union) / hull`` in ``[-1, 1]``.

    Args:
        boxes1: (N, 4) xyxy. boxes2: (M, 4) xyxy.
        eps: lower clamp of the union and hull areas.
        check: validate both sets (``x2 >= x1``, ``y2 >= y1``, finite); costs a device synchronisation.

    Returns:
        (N, M) GIoU.

    Raises:
        ValueError: (with ``check``) on an invalid box, naming ``boxes1``/``boxes2`` and the index.
    """
    if check:
        check_boxes_xyxy(boxes1, "generalized_box_iou: boxes1")
        check_boxes_xyxy(boxes2, "generalized_box_iou: boxes2")
    inter, union = _inter_union(boxes1, boxes2, eps)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = (wh[..., 0] * wh[..., 1]).clamp(min=eps)
    return inter / union - (hull - union) / hull


def elementwise_generalized_box_iou(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = AREA_EPS
) -> torch.Tensor:
    """GIoU of corresponding pairs (the diagonal of :func:`generalized_box_iou`, in O(N)); no validation.

    Args:
        boxes1: (N, 4) xyxy. boxes2: (N, 4) xyxy.
        eps: lower clamp of the union and hull areas.

    Returns:
        (N,) GIoU.
    """
    if boxes1.shape != boxes2.shape:
        raise ValueError(
            f"elementwise_generalized_box_iou: shapes differ, {tuple(boxes1.shape)} vs {tuple(boxes2.shape)}"
        )
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    wh_inter = (
        torch.min(boxes1[..., 2:], boxes2[..., 2:]) - torch.max(boxes1[..., :2], boxes2[..., :2])
    ).clamp(min=0)
    inter = wh_inter[..., 0] * wh_inter[..., 1]
    union = (area1 + area2 - inter).clamp(min=eps)
    wh_hull = (
        torch.max(boxes1[..., 2:], boxes2[..., 2:]) - torch.min(boxes1[..., :2], boxes2[..., :2])
    ).clamp(min=0)
    hull = (wh_hull[..., 0] * wh_hull[..., 1]).clamp(min=eps)
    return inter / union - (hull - union) / hull


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Logit of ``x`` clamped to [0, 1], with both ``x`` and ``1 - x`` floored at ``eps`` (|logit| <= ~6.9).

    Args:
        x: any-shape tensor of probabilities.
        eps: floor (1e-3 as in DINO/detrex; fp16-safe).

    Returns:
        Tensor of the same shape and dtype.
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
