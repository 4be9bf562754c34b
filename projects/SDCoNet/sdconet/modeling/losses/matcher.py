"""Hungarian matcher between predictions and ground truth (DINO costs: focal class + L1 + GIoU)."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..box_ops import box_cxcywh_to_xyxy, check_boxes_xyxy, generalized_box_iou

__all__ = ["HungarianMatcher"]

#: Replaces non-finite costs (NaN/inf from diverging predictions) so the assignment stays feasible.
INVALID_COST = 1e8


class HungarianMatcher(nn.Module):
    """One-to-one matching per image with ``scipy.optimize.linear_sum_assignment``.

    Cost of pairing query ``q`` with ground truth ``j`` of class ``c_j``::

        C = cost_class * focal(q, c_j) + cost_bbox * |b_q - b_j|_1 + cost_giou * (-GIoU(b_q, b_j))
        focal(q, c) = alpha (1 - p)^gamma (-log p) - (1 - alpha) p^gamma (-log(1 - p)),  p = sigmoid(x_qc)

    The logs are computed exactly as ``softplus(-x)`` / ``softplus(x)`` (DINO uses ``log(p + 1e-8)``; equal up
    to that epsilon for ordinary logits, never infinite). Everything runs in float32 under ``no_grad``;
    non-finite costs are replaced by ``INVALID_COST``.

    Args:
        cost_class, cost_bbox, cost_giou: weights of the three cost terms.
        focal_alpha, focal_gamma: focal parameters of the class cost.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def cost_matrix(
        self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, tgt_boxes: torch.Tensor
    ):
        """Cost of one image.

        Args:
            logits: (Q, C) class logits. boxes: (Q, 4) predicted cxcywh.
            labels: (n,) int64 in ``[0, C)``. tgt_boxes: (n, 4) cxcywh.

        Returns:
            (Q, n) float32 cost (non-finite entries replaced).
        """
        x = logits.float()
        prob = x.sigmoid()
        alpha, gamma = self.focal_alpha, self.focal_gamma
        pos = alpha * (1 - prob) ** gamma * F.softplus(-x)
        neg = (1 - alpha) * prob**gamma * F.softplus(x)
        cost_class = (pos - neg)[:, labels]
        pred = boxes.float()
        tgt = tgt_boxes.float()
        cost_bbox = torch.cdist(pred, tgt, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(tgt), check=False)
        cost = self.cost_class * cost_class + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou
        return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, INVALID_COST))

    @torch.no_grad()
    def forward(
        self,
        pred_logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        targets: List[Dict[str, torch.Tensor]],
        check: bool = True,
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Match every image independently.

        Args:
            pred_logits: (B, Q, C) class logits.
            pred_boxes: (B, Q, 4) predicted ``cx, cy, w, h`` (V-frame, normalised).
            targets: B dicts with ``labels`` int64 (n,) in ``[0, C)`` and ``boxes`` (n, 4) cxcywh.
            check: validate the targets' labels and boxes first (one host synchronisation per image); False
                when the caller already did (the model sanitises its targets once per batch).

        Returns:
            B pairs ``(pred_idx, tgt_idx)`` of int64 CPU tensors of length ``min(Q, n)``, sorted by
            ``pred_idx`` (empty when ``n == 0``).

        Raises:
            ValueError: on mismatched batch sizes, out-of-range labels or invalid ground-truth boxes.
        """
        bsz, num_queries, num_classes = pred_logits.shape
        if len(targets) != bsz or pred_boxes.shape[:2] != (bsz, num_queries):
            raise ValueError(
                f"HungarianMatcher: pred_logits {tuple(pred_logits.shape)}, "
                f"pred_boxes {tuple(pred_boxes.shape)} "
                f"and {len(targets)} targets disagree on the batch/query sizes"
            )
        empty = torch.zeros(0, dtype=torch.int64)
        costs: List[torch.Tensor] = []
        for b, tgt in enumerate(targets):
            labels, tgt_boxes = tgt["labels"], tgt["boxes"]
            if labels.numel() == 0 or num_queries == 0:
                continue
            labels = labels.to(pred_logits.device)
            tgt_boxes = tgt_boxes.to(pred_boxes.device)
            if check:
                lo, hi = torch.stack([labels.min(), labels.max()]).tolist()
                if lo < 0 or hi >= num_classes:
                    raise ValueError(
                        f"HungarianMatcher: targets[{b}]['labels'] has values outside [0, {num_classes}): "
                        f"min {lo}, max {hi}"
                    )
                check_boxes_xyxy(
                    box_cxcywh_to_xyxy(tgt_boxes.float()), f"HungarianMatcher: targets[{b}]['boxes']"
                )
            costs.append(self.cost_matrix(pred_logits[b], pred_boxes[b], labels, tgt_boxes))
        # One device -> host copy for the whole batch (the assignment itself is host work).
        flat = torch.cat([c.flatten() for c in costs]).cpu().double().numpy() if costs else None
        indices: List[Tuple[torch.Tensor, torch.Tensor]] = []
        start = 0
        for tgt in targets:
            n = tgt["labels"].numel()
            if n == 0 or num_queries == 0:
                indices.append((empty, empty.clone()))
                continue
            cost = flat[start : start + num_queries * n].reshape(num_queries, n)
            start += num_queries * n
            rows, cols = linear_sum_assignment(cost)
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
