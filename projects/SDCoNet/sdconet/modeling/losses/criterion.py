"""DINO set criterion: Hungarian-matched focal + L1 + GIoU losses for the decoder, its auxiliary layers, the
two-stage encoder proposals and the contrastive denoising queries.

The returned dict has the same keys for every batch (fixed at construction by ``num_aux_layers``, ``with_enc``
and ``with_dn``), which DDP and loss logging need. A batch without ground truth gets zero denoising losses
that are still connected to the graph.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..box_ops import box_cxcywh_to_xyxy, check_boxes_xyxy
from ..dino.denoising import DNMeta
from .functional import l1_and_giou, sigmoid_focal_loss
from .matcher import HungarianMatcher

__all__ = ["SetCriterion"]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


class SetCriterion(nn.Module):
    """Weighted DINO detection losses.

    Keys (all weighted): ``loss_class``, ``loss_bbox``, ``loss_giou`` for the final decoder layer; the same
    with suffix ``_{i}`` for auxiliary layer ``i = 0..num_aux_layers-1``; ``_enc`` for the encoder proposals
    (matched with the same all-class targets, DINO convention); ``_dn`` and ``_dn_{i}`` for the denoising
    queries.

    Normalisers: ``num_boxes`` = ground truths in the batch, averaged over DDP ranks when
    ``torch.distributed`` is initialised, clamped to >= 1. Denoising uses ``num_dn_boxes * G`` where
    ``num_dn_boxes`` is the same average of the ground truths used for denoising (equal to ``num_boxes``
    unless ``max_gt_for_dn`` capped some images) and ``G`` the number of groups. Denoising class targets:
    positives one-hot, negatives and padding background; box losses on positives only.

    Args:
        num_classes: object classes (sigmoid classification, no background logit).
        matcher: the :class:`HungarianMatcher`.
        weight_class, weight_bbox, weight_giou: loss weights (the same for every output set).
        focal_alpha, focal_gamma: focal loss parameters.
        with_dn: emit the denoising keys.
        num_aux_layers: auxiliary decoder outputs expected (decoder layers - 1).
        with_enc: expect and score ``enc_outputs``.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_class: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        with_dn: bool = True,
        num_aux_layers: int = 5,
        with_enc: bool = True,
    ) -> None:
        super().__init__()
        if num_aux_layers < 0:
            raise ValueError(f"SetCriterion: num_aux_layers must be >= 0, got {num_aux_layers}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_class = weight_class
        self.weight_bbox = weight_bbox
        self.weight_giou = weight_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.with_dn = with_dn
        self.num_aux_layers = num_aux_layers
        self.with_enc = with_enc

    # ------------------------------------------------------------------------------------------------------
    def _suffixes(self) -> Tuple[List[str], List[str]]:
        matching = [""] + [f"_{i}" for i in range(self.num_aux_layers)] + (["_enc"] if self.with_enc else [])
        dn = (["_dn"] + [f"_dn_{i}" for i in range(self.num_aux_layers)]) if self.with_dn else []
        return matching, dn

    def loss_keys(self) -> List[str]:
        """The fixed, ordered key set that :meth:`forward` returns."""
        matching, dn = self._suffixes()
        return [f"loss_{kind}{s}" for s in matching + dn for kind in ("class", "bbox", "giou")]

    def _check_targets(self, targets: Sequence[Dict[str, torch.Tensor]], device: torch.device) -> None:
        """One synchronisation: labels in range and valid boxes in every image; detailed error on failure."""
        if not targets:
            return
        labels = torch.cat([t["labels"].to(device).reshape(-1) for t in targets])
        boxes = torch.cat([t["boxes"].to(device).reshape(-1, 4).float() for t in targets])
        if labels.numel() == 0:
            return
        xyxy = box_cxcywh_to_xyxy(boxes)
        bad = ((labels < 0) | (labels >= self.num_classes)).any()
        bad = bad | ~((xyxy[:, 2:] >= xyxy[:, :2]).all() & torch.isfinite(xyxy).all())
        if not bool(bad):
            return
        for b, t in enumerate(targets):
            lab = t["labels"]
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
                raise ValueError(
                    f"SetCriterion: targets[{b}]['labels'] outside [0, {self.num_classes}): "
                    f"min {int(lab.min())}, max {int(lab.max())}"
                )
            check_boxes_xyxy(
                box_cxcywh_to_xyxy(t["boxes"].reshape(-1, 4).float()), f"SetCriterion: targets[{b}]"
            )

    @staticmethod
    def _normalisers(num_gt: int, num_dn_gt: int, device: torch.device):
        """Python floats on one process (no device round trip); 0-dim tensors averaged over DDP ranks."""
        if dist.is_available() and dist.is_initialized():
            counts = torch.tensor([float(num_gt), float(num_dn_gt)], device=device)
            dist.all_reduce(counts)
            counts = (counts / dist.get_world_size()).clamp(min=1)
            return counts[0], counts[1]
        return max(float(num_gt), 1.0), max(float(num_dn_gt), 1.0)

    def _losses(
        self,
        out: Dict[str, torch.Tensor],
        targets: Sequence[Dict[str, torch.Tensor]],
        indices: Indices,
        normaliser: float,
        suffix: str,
    ) -> Dict[str, torch.Tensor]:
        """Weighted class/L1/GIoU losses of one output set for the given (pred_idx, tgt_idx) pairs."""
        logits, boxes = out["pred_logits"], out["pred_boxes"]
        device = logits.device
        # (batch, query, target) index triples built where the indices live and moved in one copy; targets of
        # all images concatenated, so the gathers are two ops whatever the batch size.
        offsets, total = [], 0
        for t in targets:
            offsets.append(total)
            total += int(t["labels"].shape[0])
        idx_device = indices[0][0].device if indices else device
        packed = torch.cat(
            [
                torch.stack(
                    [
                        torch.full((src.numel(),), b, dtype=torch.int64, device=idx_device),
                        src.to(idx_device, torch.int64),
                        tgt.to(idx_device, torch.int64) + offsets[b],
                    ]
                )
                for b, (src, tgt) in enumerate(indices)
            ],
            dim=1,
        ).to(device, non_blocking=True)
        batch_idx, src_idx, tgt_idx = packed[0], packed[1], packed[2]
        all_labels = torch.cat([t["labels"].to(device) for t in targets])
        all_boxes = torch.cat([t["boxes"].to(device).reshape(-1, 4) for t in targets])
        tgt_labels = all_labels[tgt_idx]
        tgt_boxes = all_boxes[tgt_idx]
        onehot = torch.zeros(logits.shape, dtype=torch.float32, device=device)
        onehot[batch_idx, src_idx, tgt_labels] = 1.0
        loss_class = sigmoid_focal_loss(logits, onehot, normaliser, self.focal_alpha, self.focal_gamma)
        loss_bbox, loss_giou = l1_and_giou(
            boxes[batch_idx, src_idx], tgt_boxes.reshape(-1, 4), normaliser, False
        )
        return {
            f"loss_class{suffix}": self.weight_class * loss_class,
            f"loss_bbox{suffix}": self.weight_bbox * loss_bbox,
            f"loss_giou{suffix}": self.weight_giou * loss_giou,
        }

    @staticmethod
    def _require(outputs: Dict, key: str, where: str) -> Dict[str, torch.Tensor]:
        value = outputs.get(key)
        if value is None:
            raise ValueError(f"SetCriterion: outputs[{key!r}] is missing but {where}")
        return value

    # ------------------------------------------------------------------------------------------------------
    def forward(
        self,
        outputs: Dict[str, object],
        targets: List[Dict[str, torch.Tensor]],
        dn_meta: Optional[DNMeta] = None,
        targets_checked: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Compute all weighted losses.

        Args:
            outputs: ``pred_logits (B, K, C)``, ``pred_boxes (B, K, 4)`` (sigmoid cxcywh, V-frame),
                ``aux_outputs`` (list of ``num_aux_layers`` such dicts), ``enc_outputs`` (dict or None),
                ``dn_outputs`` (``pred_logits (B, Nd, C)``, ``pred_boxes``, ``aux_outputs``; or None).
            targets: B dicts ``{"labels": (n,) int64, "boxes": (n, 4) cxcywh V-frame}``.
            dn_meta: the batch's :class:`DNMeta`, or None when no denoising queries were built.
            targets_checked: the caller validated the targets (labels in range, valid finite boxes): skip the
                checks here and in the matcher (host synchronisations). ``SDCoNet`` sanitises its targets.

        Returns:
            dict ``key -> scalar float32 tensor`` with exactly :meth:`loss_keys`.

        Raises:
            ValueError: on missing outputs, wrong numbers of auxiliary outputs, denoising outputs given to a
                criterion built with ``with_dn=False``, out-of-range labels or invalid target boxes.
        """
        pred_logits = outputs["pred_logits"]
        device = pred_logits.device
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"SetCriterion: {len(targets)} targets for a batch of {pred_logits.shape[0]}")
        if dn_meta is not None and not self.with_dn:
            raise ValueError("SetCriterion: dn_meta given but the criterion was built with with_dn=False")
        if not targets_checked:
            self._check_targets(targets, device)
        num_gt = sum(int(t["labels"].numel()) for t in targets)
        num_dn_gt = dn_meta.num_dn_gt if dn_meta is not None else 0
        num_boxes, num_dn_boxes = self._normalisers(num_gt, num_dn_gt, device)

        sets = [("", outputs)]
        aux = outputs.get("aux_outputs") or []
        if len(aux) != self.num_aux_layers:
            raise ValueError(f"SetCriterion: expected {self.num_aux_layers} aux_outputs, got {len(aux)}")
        sets += [(f"_{i}", a) for i, a in enumerate(aux)]
        if self.with_enc:
            sets.append(("_enc", self._require(outputs, "enc_outputs", "with_enc=True")))
        losses: Dict[str, torch.Tensor] = {}
        for suffix, out in sets:
            indices = self.matcher(out["pred_logits"], out["pred_boxes"], targets, check=not targets_checked)
            losses.update(self._losses(out, targets, indices, num_boxes, suffix))

        if self.with_dn:
            _, dn_suffixes = self._suffixes()
            if dn_meta is None:
                zero = (
                    pred_logits.float().sum() * 0.0
                )  # keeps the graph (and DDP) happy on batches without GT
                for suffix in dn_suffixes:
                    for kind in ("class", "bbox", "giou"):
                        losses[f"loss_{kind}{suffix}"] = zero
            else:
                dn_out = self._require(outputs, "dn_outputs", "dn_meta was given")
                dn_aux = dn_out.get("aux_outputs") or []
                if len(dn_aux) != self.num_aux_layers:
                    raise ValueError(
                        f"SetCriterion: expected {self.num_aux_layers} dn_outputs['aux_outputs'], "
                        f"got {len(dn_aux)}"
                    )
                if dn_out["pred_logits"].shape[1] != dn_meta.pad_size:
                    raise ValueError(
                        f"SetCriterion: dn_outputs has {dn_out['pred_logits'].shape[1]} queries, "
                        f"dn_meta.pad_size is {dn_meta.pad_size}"
                    )
                indices = dn_meta.positive_indices()
                normaliser = num_dn_boxes * dn_meta.num_groups
                for suffix, out in zip(dn_suffixes, [dn_out] + list(dn_aux)):
                    losses.update(self._losses(out, targets, indices, normaliser, suffix))
        return losses
