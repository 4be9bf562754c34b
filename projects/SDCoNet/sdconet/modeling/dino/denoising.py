"""DINO's contrastive denoising (CDN) queries: noised ground truth placed before the matching queries.

Layout (per batch): ``M`` = the largest number of ground truths used for denoising in any image, ``G`` =
``max(1, dn_number // M)`` groups of ``2M`` slots, ``Nd = 2 M G`` denoising queries. Group ``g`` holds
positives in rows ``[2gM, 2gM + M)`` and negatives in ``[2gM + M, 2(g + 1)M)``; slot ``j < n_b`` carries
ground truth ``j`` of image ``b``, slots ``j >= n_b`` are padding (zero content, reference logit 0, i.e. box
(0.5, 0.5, 0.5, 0.5)) that are trained as background.

Noise: every query's label is replaced, with probability ``label_noise_ratio / 2``, by a uniform random class.
Every corner coordinate of the box (xyxy) moves by ``s * u * (w/2 or h/2) * box_noise_scale`` with a random
sign ``s`` and ``u ~ U[0, 1)`` for positives, ``U[1, 2)`` for negatives, then is clamped to [0, 1].

Cap (``max_gt_for_dn``): on dense tiles with hundreds of objects ``Nd`` would be large even with one group
(``2 M`` queries, and the decoder self-attention grows as ``(Nd + K)^2``). With the cap set, an image with
more ground truths uses a uniformly random subset of that size for denoising (a fresh subset every call); the
matching losses still use all of them. The chosen indices are kept in :class:`DNMeta` so the denoising loss
pairs each slot with the right target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid

__all__ = [
    "CDNQueryGenerator",
    "DNQueries",
    "DNMeta",
    "dn_positive_indices",
    "dn_attention_mask",
    "cdn_box_noise",
]


@dataclass
class DNMeta:
    """What the criterion needs to score the denoising queries.

    Attributes:
        num_groups: ``G``.
        pad_size: ``Nd = 2 * max_gt * num_groups``.
        max_gt: ``M``.
        gt_indices: per image, (n_b,) int64 indices into that image's targets of the ground truths placed in
            slots ``0..n_b-1`` (all of them, or the random subset when capped).
    """

    num_groups: int
    pad_size: int
    max_gt: int
    gt_indices: List[torch.Tensor]

    @property
    def num_dn_gt(self) -> int:
        """Ground truths used for denoising in the batch (per group)."""
        return sum(int(idx.numel()) for idx in self.gt_indices)

    def positive_indices(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Fixed assignment of the positive queries: see :func:`dn_positive_indices`."""
        return dn_positive_indices(self)


def dn_positive_indices(meta: DNMeta) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per image ``(pred_idx, tgt_idx)``: query ``g * 2M + j`` is paired with ground truth ``gt_indices[j]``.

    Args:
        meta: the batch's :class:`DNMeta`.

    Returns:
        B pairs of int64 tensors of length ``G * n_b`` (on the device of ``gt_indices``), group-major.
    """
    out = []
    stride = 2 * meta.max_gt
    for idx in meta.gt_indices:
        n = idx.numel()
        groups = torch.arange(meta.num_groups, dtype=torch.int64, device=idx.device)
        slots = torch.arange(n, dtype=torch.int64, device=idx.device)
        pred_idx = (groups[:, None] * stride + slots[None, :]).reshape(-1)
        out.append((pred_idx, idx.to(torch.int64).repeat(meta.num_groups)))
    return out


def cdn_box_noise(
    boxes: torch.Tensor,
    is_negative: torch.Tensor,
    box_noise_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """CDN corner jitter: each xyxy coordinate moves by ``s * u * half_size * box_noise_scale``, then clamps.

    ``s`` is a random sign, ``u ~ U[0, 1)`` for positives and ``U[1, 2)`` for negatives, ``half_size`` is
    ``w/2`` for x coordinates and ``h/2`` for y coordinates.

    Args:
        boxes: (..., 4) cxcywh, normalised.
        is_negative: bool tensor of shape ``boxes.shape[:-1]``.
        box_noise_scale: ``lambda``.
        generator: optional random generator on ``boxes``'s device.

    Returns:
        (..., 4) float32 cxcywh of the jittered boxes (negatives may have ``w`` or ``h`` <= 0).
    """
    boxes = boxes.float()
    xyxy = box_cxcywh_to_xyxy(boxes)
    half = boxes[..., 2:] * 0.5
    diff = torch.cat([half, half], dim=-1)
    sign = torch.randint(0, 2, boxes.shape, device=boxes.device, generator=generator).float() * 2 - 1
    magnitude = torch.rand(boxes.shape, device=boxes.device, generator=generator)
    magnitude = magnitude + is_negative[..., None].float()  # negatives: U[1, 2)
    xyxy = (xyxy + sign * magnitude * diff * box_noise_scale).clamp(0.0, 1.0)
    return box_xyxy_to_cxcywh(xyxy)


def dn_attention_mask(pad_size: int, group_size: int, num_queries: int, device: torch.device) -> torch.Tensor:
    """Decoder self-attention mask: ``pad_size`` denoising queries, then ``num_queries`` matching ones.

    Args:
        pad_size: ``Nd`` (a multiple of ``group_size``).
        group_size: ``2M``.
        num_queries: ``K`` matching queries.
        device: where to build the mask.

    Returns:
        (Nd + K, Nd + K) bool, True = blocked (``nn.MultiheadAttention`` convention): matching rows cannot see
        denoising columns; denoising groups cannot see each other; denoising rows may see matching columns.
    """
    total = pad_size + num_queries
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    if pad_size == 0:
        return mask
    group = torch.arange(pad_size, device=device) // group_size
    mask[:pad_size, :pad_size] = group[:, None] != group[None, :]
    mask[pad_size:, :pad_size] = True
    return mask


@dataclass
class DNQueries:
    """Denoising queries of one batch.

    Attributes:
        dn_content: (B, Nd, D) content queries (label embeddings; zero in padding slots).
        dn_refs_unsig: (B, Nd, 4) reference boxes as logits (``inverse_sigmoid`` of noised cxcywh, V-frame).
        attn_mask: (Nd + K, Nd + K) bool, True = blocked.
        dn_meta: the :class:`DNMeta` for the criterion.
    """

    dn_content: torch.Tensor
    dn_refs_unsig: torch.Tensor
    attn_mask: torch.Tensor
    dn_meta: DNMeta


class CDNQueryGenerator(nn.Module):
    """Builds DINO's contrastive denoising queries from the ground truth.

    Args:
        num_classes: object classes (labels in ``[0, num_classes)``).
        hidden_dim: query width ``D``.
        dn_number: denoising budget; ``G = max(1, dn_number // M)`` groups of ``2M`` queries (0 disables CDN).
        label_noise_ratio: a query's label is re-drawn with probability ``label_noise_ratio / 2``.
        box_noise_scale: ``lambda`` of the corner jitter (0 disables box noise).
        max_gt_for_dn: if set, images with more ground truths use a random subset of this size (see module
            doc).
    """

    def __init__(
        self,
        num_classes: int,
        hidden_dim: int = 256,
        dn_number: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        max_gt_for_dn: Optional[int] = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"CDNQueryGenerator: num_classes must be >= 1, got {num_classes}")
        if dn_number < 0:
            raise ValueError(f"CDNQueryGenerator: dn_number must be >= 0, got {dn_number}")
        if not 0.0 <= label_noise_ratio <= 1.0:
            raise ValueError(
                f"CDNQueryGenerator: label_noise_ratio must be in [0, 1], got {label_noise_ratio}"
            )
        if box_noise_scale < 0:
            raise ValueError(f"CDNQueryGenerator: box_noise_scale must be >= 0, got {box_noise_scale}")
        if max_gt_for_dn is not None and max_gt_for_dn < 1:
            raise ValueError(f"CDNQueryGenerator: max_gt_for_dn must be None or >= 1, got {max_gt_for_dn}")
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.dn_number = dn_number
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.max_gt_for_dn = max_gt_for_dn
        self.label_enc = nn.Embedding(num_classes, hidden_dim)  # default N(0, 1) init

    def _select_gt(
        self,
        targets: List[Dict[str, torch.Tensor]],
        device: torch.device,
        generator: Optional[torch.Generator],
    ) -> List[torch.Tensor]:
        chosen = []
        for b, tgt in enumerate(targets):
            labels = tgt["labels"]
            if labels.device.type == "cpu" and labels.numel():  # free check; avoids CUDA index asserts
                lo, hi = int(labels.min()), int(labels.max())
                if lo < 0 or hi >= self.num_classes:
                    raise ValueError(
                        f"CDNQueryGenerator: targets[{b}]['labels'] outside [0, {self.num_classes}): "
                        f"min {lo}, max {hi}"
                    )
            n = int(labels.shape[0])
            if self.max_gt_for_dn is not None and n > self.max_gt_for_dn:
                perm = torch.randperm(n, device=device, generator=generator)[: self.max_gt_for_dn]
                chosen.append(perm.sort().values)
            else:
                chosen.append(torch.arange(n, dtype=torch.int64, device=device))
        return chosen

    def forward(
        self,
        targets: List[Dict[str, torch.Tensor]],
        num_queries: int,
        device: Optional[torch.device] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Optional[DNQueries]:
        """Noised queries for a batch, or None if denoising is off or no image has ground truth.

        Args:
            targets: B dicts ``{"labels": (n,) int64, "boxes": (n, 4) cxcywh V-frame}``.
            num_queries: ``K`` matching queries that follow the denoising ones (for the attention mask).
            device: where to build the queries (default: the label embedding's device).
            generator: optional random generator on ``device`` (default: torch's global one).

        Returns:
            :class:`DNQueries` or None.
        """
        if self.dn_number == 0 or not targets:
            return None
        device = torch.device(device) if device is not None else self.label_enc.weight.device
        gt_indices = self._select_gt(targets, device, generator)
        max_gt = max(int(idx.numel()) for idx in gt_indices)
        if max_gt == 0:
            return None
        num_groups = max(1, self.dn_number // max_gt)
        bsz = len(targets)
        group_size = 2 * max_gt
        pad_size = group_size * num_groups

        labels = torch.zeros(bsz, max_gt, dtype=torch.int64, device=device)
        boxes = torch.full(
            (bsz, max_gt, 4), 0.5, dtype=torch.float32, device=device
        )  # padding: any valid box
        valid = torch.zeros(bsz, max_gt, dtype=torch.bool, device=device)
        for b, (tgt, idx) in enumerate(zip(targets, gt_indices)):
            n = idx.numel()
            if n:
                labels[b, :n] = tgt["labels"].to(device)[idx]
                boxes[b, :n] = tgt["boxes"].to(device=device, dtype=torch.float32)[idx]
                valid[b, :n] = True

        # One group = M positives then M negatives; repeat G times -> (B, Nd).
        def tile(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x], dim=1).repeat(1, num_groups, *([1] * (x.dim() - 2)))

        labels, boxes, valid = tile(labels), tile(boxes), tile(valid)
        is_negative = (torch.arange(pad_size, device=device) % group_size) >= max_gt  # (Nd,)

        if self.label_noise_ratio > 0:
            flip = (
                torch.rand(bsz, pad_size, device=device, generator=generator) < self.label_noise_ratio * 0.5
            )
            random_labels = torch.randint(
                0, self.num_classes, (bsz, pad_size), device=device, generator=generator
            )
            labels = torch.where(flip, random_labels, labels)

        if self.box_noise_scale > 0:
            boxes = cdn_box_noise(boxes, is_negative.expand(bsz, -1), self.box_noise_scale, generator)

        content = self.label_enc(labels) * valid[..., None].to(self.label_enc.weight.dtype)
        refs = torch.where(valid[..., None], inverse_sigmoid(boxes), torch.zeros_like(boxes))
        attn_mask = dn_attention_mask(pad_size, group_size, num_queries, device)
        meta = DNMeta(num_groups=num_groups, pad_size=pad_size, max_gt=max_gt, gt_indices=gt_indices)
        return DNQueries(dn_content=content, dn_refs_unsig=refs, attn_mask=attn_mask, dn_meta=meta)
