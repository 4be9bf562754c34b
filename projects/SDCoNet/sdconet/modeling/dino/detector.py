"""The detection branch: detection levels -> saliency -> pruned deformable encoder -> DINO decoder.

Input is the shared encoder's stage 2-4 feature maps; output the DINO predictions (and, in training, the
weighted detection + saliency losses).
"""

from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..box_ops import inverse_sigmoid
from ..level_shapes import Shapes, as_shape_list, level_sizes, level_starts, shape_tensors
from ..losses.criterion import SetCriterion
from ..losses.matcher import HungarianMatcher
from ..saliency.predictor import SaliencyPredictor
from ..saliency.targets import saliency_loss, saliency_targets
from ..saliency.token_selection import select_tokens
from .decoder import DINODecoder
from .denoising import CDNQueryGenerator
from .encoder import SaliencyPrunedEncoder
from .levels import DetectionLevels
from .mlp import MLP
from .ms_deform_attn import MSDeformAttn
from .position_encoding import sine_position_embedding
from .two_stage import ProposalMemory, encoder_proposals, token_centers

#: Prior probability of the focal-loss class heads at initialisation (RetinaNet / DINO).
CLASS_PRIOR_PROB = 0.01


def level_valid_sizes(pixel_mask: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """Valid (h, w) token counts of every level from the input padding mask.

    Args:
        pixel_mask: (B, H, W) bool, True = padded pixel (bottom/right padding).
        strides: stride of each level relative to ``pixel_mask``.
    Returns:
        (B, L, 2) long: ``ceil(valid_h / stride), ceil(valid_w / stride)``.
    """
    valid_h = (~pixel_mask[:, :, 0]).sum(1)
    valid_w = (~pixel_mask[:, 0, :]).sum(1)
    per_level = [torch.stack([(valid_h + s - 1) // s, (valid_w + s - 1) // s], dim=-1) for s in strides]
    return torch.stack(per_level, dim=1)


def level_masks(valid_hw: torch.Tensor, spatial_shapes: Shapes) -> List[torch.Tensor]:
    """Per-level padding masks (B, H_l, W_l), True = padded token.

    Args:
        valid_hw: (B, L, 2) long valid token counts. spatial_shapes: (L, 2) tensor or L ``(H_l, W_l)`` ints.
    """
    masks = []
    for lvl, (h, w) in enumerate(as_shape_list(spatial_shapes)):
        rows = torch.arange(h, device=valid_hw.device)[None, :, None] >= valid_hw[:, lvl, 0][:, None, None]
        cols = torch.arange(w, device=valid_hw.device)[None, None, :] >= valid_hw[:, lvl, 1][:, None, None]
        masks.append(rows | cols)
    return masks


class DINODetector(nn.Module):
    """DINO with saliency-driven hierarchical token filtering (the detection branch of SDCoNet).

    Args:
        in_channels: channels of the encoder stages fed in (Swin-T stages 2-4: 192, 384, 768).
        num_classes: object classes (no background class; sigmoid focal classification).
        hidden_dim, nheads, num_points, enc_layers, dec_layers, dim_feedforward, dropout: transformer sizes.
        num_queries: decoder queries chosen from the encoder proposals (mixed query selection).
        level_strides: stride of each of the 4 levels relative to the input (8, 16, 32, 64).
        use_saliency: predict saliency, supervise it and (unless ``filter_mode == "none"``) prune tokens.
        filter_mode, level_ratios, layer_ratios: token filtering (see ``token_selection.select_tokens``).
        alpha_mode, alpha_value, saliency_propagation: top-down propagation (``SaliencyPredictor``).
        saliency_target, saliency_sigma, saliency_loss_weight: Eq. 7 targets and the weight of L_sa.
        saliency_level_bounds: ``()`` = every box marks every level (paper); ``(64, 128, 256)`` = the authors'
            FCOS-style level ranges of max(l, t, r, b) (``saliency_targets`` ``level_ranges``), in input pixels x
            ``saliency_range_scale`` (HR pixels for an LR input of an x``s`` model: scale ``s``).
        saliency_always_mark_center: a box without a token centre at a level marks its centre cell (ours).
        value_mode: deformable self-attention values, ``"current"`` (paper) or ``"initial"`` (official).
        background_mode: ``"per_layer"`` (official SDCoNet) or ``"once"`` (Salience-DETR), see the encoder.
        dn_number, label_noise_ratio, box_noise_scale, dn_max_gt: contrastive denoising (0 disables DN).
        weight_*, cost_*, focal_*: loss weights and matcher costs.
        max_level_size: background-embedding table size (largest level side).
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int] = (192, 384, 768),
        num_classes: int,
        hidden_dim: int = 256,
        nheads: int = 8,
        num_points: int = 4,
        enc_layers: int = 6,
        dec_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        num_queries: int = 300,
        level_strides: Sequence[int] = (8, 16, 32, 64),
        use_saliency: bool = True,
        filter_mode: str = "joint",
        level_ratios: Sequence[float] = (0.6, 0.8, 1.0, 1.0),
        layer_ratios: Sequence[float] = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2),
        alpha_mode: str = "learnable",
        alpha_value: float = 0.5,
        saliency_propagation: str = "paper",
        saliency_target: str = "gaussian",
        saliency_sigma: float = 0.8493218002880191,
        saliency_loss_weight: float = 2.0,
        saliency_level_bounds: Sequence[float] = (),
        saliency_always_mark_center: bool = True,
        saliency_range_scale: float = 1.0,
        value_mode: str = "current",
        background_mode: str = "per_layer",
        dn_number: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        dn_max_gt: int = 0,
        weight_class: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        max_level_size: int = 128,
    ) -> None:
        super().__init__()
        num_levels = len(level_strides)
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.level_strides = tuple(level_strides)
        self.use_saliency = use_saliency
        self.filter_mode = filter_mode if use_saliency else "none"
        self.level_ratios = tuple(level_ratios)
        self.layer_ratios = tuple(layer_ratios)
        self.saliency_target = saliency_target
        self.saliency_sigma = saliency_sigma
        self.saliency_loss_weight = saliency_loss_weight
        self.saliency_level_bounds = tuple(float(b) for b in saliency_level_bounds)
        self.saliency_always_mark_center = bool(saliency_always_mark_center)
        self.saliency_range_scale = float(saliency_range_scale)

        self.levels = DetectionLevels(
            tuple(in_channels), hidden_dim, num_extra_levels=num_levels - len(in_channels)
        )
        self.level_embed = nn.Parameter(torch.empty(num_levels, hidden_dim))
        self.saliency = (
            SaliencyPredictor(
                dim=hidden_dim,
                hidden_dim=hidden_dim,
                num_levels=num_levels,
                alpha_mode=alpha_mode,
                alpha_value=alpha_value,
                propagation=saliency_propagation,
            )
            if use_saliency
            else None
        )
        self.encoder = SaliencyPrunedEncoder(
            enc_layers,
            hidden_dim,
            nheads,
            num_levels,
            num_points,
            dim_feedforward,
            dropout,
            use_background=use_saliency and self.filter_mode != "none",
            value_mode=value_mode,
            max_level_size=max_level_size,
            background_mode=background_mode,
        )
        self.decoder = DINODecoder(
            dec_layers, hidden_dim, nheads, num_levels, num_points, dim_feedforward, dropout
        )
        self.proposal_memory = ProposalMemory(hidden_dim)
        self.tgt_embed = nn.Embedding(num_queries, hidden_dim)

        # Prediction heads: one per decoder layer + one for the encoder proposals, unshared (detrex style).
        class_head = nn.Linear(hidden_dim, num_classes)
        bbox_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.class_heads = nn.ModuleList(copy.deepcopy(class_head) for _ in range(dec_layers))
        self.bbox_heads = nn.ModuleList(copy.deepcopy(bbox_head) for _ in range(dec_layers))
        self.enc_class_head = copy.deepcopy(class_head)
        self.enc_bbox_head = copy.deepcopy(bbox_head)

        self.dn = (
            CDNQueryGenerator(
                num_classes,
                hidden_dim,
                dn_number=dn_number,
                label_noise_ratio=label_noise_ratio,
                box_noise_scale=box_noise_scale,
                max_gt_for_dn=dn_max_gt or None,
            )
            if dn_number > 0
            else None
        )
        matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou, focal_alpha, focal_gamma)
        self.criterion = SetCriterion(
            num_classes,
            matcher,
            weight_class=weight_class,
            weight_bbox=weight_bbox,
            weight_giou=weight_giou,
            focal_alpha=focal_alpha,
            focal_gamma=focal_gamma,
            with_dn=self.dn is not None,
            num_aux_layers=dec_layers - 1,
            with_enc=True,
        )
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for module in (self.encoder, self.decoder, self.proposal_memory):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        if self.encoder.background is not None:
            self.encoder.background.reset_parameters()
        nn.init.normal_(self.level_embed)
        nn.init.normal_(self.tgt_embed.weight)
        bias = -math.log((1 - CLASS_PRIOR_PROB) / CLASS_PRIOR_PROB)
        for head in list(self.class_heads) + [self.enc_class_head]:
            nn.init.constant_(head.bias, bias)
        for head in list(self.bbox_heads) + [self.enc_bbox_head]:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)

    # ----------------------------------------------------------------------------------------------------------
    def forward(
        self,
        features: Sequence[torch.Tensor],
        pixel_mask: torch.Tensor,
        targets: Optional[List[Dict[str, torch.Tensor]]] = None,
    ) -> Dict[str, object]:
        """Run the detection branch.

        Args:
            features: encoder stage maps (B, C_s, H/s, W/s) for strides 8, 16, 32 of the input.
            pixel_mask: (B, H, W) bool, True = padded input pixel.
            targets: per-image ``{"labels", "boxes" (cxcywh, V-frame)}``; needed in training (denoising queries).
        Returns:
            dict with ``pred_logits (B, K, C)``, ``pred_boxes (B, K, 4)`` (sigmoid cxcywh, V-frame),
            ``aux_outputs``, ``enc_outputs``, ``dn_outputs``/``dn_meta`` (training), ``saliency_logits`` (list of
            (B, H_l, W_l) or None), ``kept_masks`` (per encoder layer (B, S) bool), ``spatial_shapes``,
            ``valid_hw`` (B, L, 2), ``level_padding`` (list of (B, H_l, W_l) bool) and ``image_hw`` (B, 2) long
            (valid input height, width in pixels).
        """
        maps = self.levels(list(features))
        # The level layout depends only on the padded input size: Python ints from the map shapes (no host
        # synchronisation, static under torch.compile); the tensor form only for ratios and the outputs.
        shapes = [(m.shape[-2], m.shape[-1]) for m in maps]
        level_start_index = level_starts(shapes)
        spatial_shapes = shape_tensors(shapes, maps[0].device)[0]
        valid_hw = level_valid_sizes(pixel_mask, self.level_strides)
        masks = level_masks(valid_hw, shapes)
        src_flat, pos_flat, mask_flat = [], [], []
        for lvl, (fmap, mask) in enumerate(zip(maps, masks)):
            pos = sine_position_embedding(mask, num_feats=fmap.shape[1] // 2).to(fmap.dtype)
            src_flat.append(fmap.flatten(2).transpose(1, 2))
            pos_flat.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].to(fmap.dtype))
            mask_flat.append(mask.flatten(1))
        src = torch.cat(src_flat, 1)
        pos = torch.cat(pos_flat, 1)
        padding = torch.cat(mask_flat, 1)
        valid_ratios = (valid_hw.flip(-1).float() / spatial_shapes.flip(-1)[None].float()).to(
            src.dtype
        )  # (B,L,2)
        centers = token_centers(shapes, valid_hw).to(src.dtype)
        enc_refs = centers[:, :, None] * valid_ratios[:, None]  # (B, S, L, 2) padded-canvas frame

        saliency_logits = None
        selections = None
        if self.saliency is not None:
            sizes = level_sizes(shapes)
            level_tokens = [(s + p) for s, p in zip(src.split(sizes, 1), pos.split(sizes, 1))]
            saliency_logits, flat_scores = self.saliency(level_tokens, shapes, [~m for m in masks])
            if self.filter_mode != "none":
                selections = select_tokens(
                    flat_scores.detach(),
                    shapes,
                    level_start_index,
                    valid_hw.prod(-1),
                    level_ratios=self.level_ratios,
                    layer_ratios=self.layer_ratios,
                    mode=self.filter_mode,
                    check_values=False,  # the counts come from the padding mask: valid by construction
                )
        memory, kept_masks = self.encoder(src, pos, enc_refs, shapes, level_start_index, padding, selections)

        # ---- mixed query selection (two-stage) ----
        memory_in, proposals_unsig, proposal_valid = encoder_proposals(memory, padding, shapes, valid_hw)
        out_memory = self.proposal_memory(memory_in)
        enc_logits = self.enc_class_head(out_memory)
        enc_coords_unsig = self.enc_bbox_head(out_memory) + proposals_unsig
        k = min(self.num_queries, memory.shape[1])
        scores = enc_logits.max(-1).values.masked_fill(~proposal_valid, float("-inf"))
        topk = scores.topk(k, dim=1).indices  # (B, K)
        refs_undetached = torch.gather(enc_coords_unsig, 1, topk[..., None].expand(-1, -1, 4))
        enc_outputs = {
            "pred_logits": torch.gather(enc_logits, 1, topk[..., None].expand(-1, -1, enc_logits.shape[-1])),
            "pred_boxes": refs_undetached.sigmoid(),
        }
        bsz = memory.shape[0]
        tgt = self.tgt_embed.weight[:k][None].expand(bsz, -1, -1)
        refs = refs_undetached.detach()

        dn_queries = None
        if self.training and self.dn is not None:
            if targets is None:
                raise ValueError("DINODetector: targets are required in training mode")
            dn_queries = self.dn(targets, num_queries=k, device=memory.device)
        attn_mask = None
        num_dn = 0
        if dn_queries is not None:
            num_dn = dn_queries.dn_content.shape[1]
            tgt = torch.cat([dn_queries.dn_content.to(tgt.dtype), tgt], 1)
            refs = torch.cat([dn_queries.dn_refs_unsig.to(refs.dtype), refs], 1)
            attn_mask = dn_queries.attn_mask
        elif self.training and self.dn is not None:
            # Keep the label embedding in the graph on batches without objects (DDP needs every parameter used).
            tgt = tgt + self.dn.label_enc.weight[0, 0] * 0.0

        hs, refs_pred = self.decoder(
            tgt,
            refs,
            memory,
            padding,
            shapes,
            level_start_index,
            valid_ratios,
            self.bbox_heads,
            attn_mask,
        )
        logits, boxes = [], []
        for i, (h, r) in enumerate(zip(hs, refs_pred)):
            logits.append(self.class_heads[i](h))
            boxes.append((self.bbox_heads[i](h) + inverse_sigmoid(r)).sigmoid())

        def split(t: torch.Tensor):
            return t[:, :num_dn], t[:, num_dn:]

        outputs: Dict[str, object] = {}
        match_logits = [split(t)[1] for t in logits]
        match_boxes = [split(t)[1] for t in boxes]
        outputs["pred_logits"], outputs["pred_boxes"] = match_logits[-1], match_boxes[-1]
        outputs["aux_outputs"] = [
            {"pred_logits": a, "pred_boxes": b} for a, b in zip(match_logits[:-1], match_boxes[:-1])
        ]
        outputs["enc_outputs"] = enc_outputs
        if dn_queries is not None:
            dn_logits = [split(t)[0] for t in logits]
            dn_boxes = [split(t)[0] for t in boxes]
            outputs["dn_outputs"] = {
                "pred_logits": dn_logits[-1],
                "pred_boxes": dn_boxes[-1],
                "aux_outputs": [
                    {"pred_logits": a, "pred_boxes": b} for a, b in zip(dn_logits[:-1], dn_boxes[:-1])
                ],
            }
            outputs["dn_meta"] = dn_queries.dn_meta
        else:
            outputs["dn_outputs"] = None
            outputs["dn_meta"] = None
        outputs["saliency_logits"] = saliency_logits
        outputs["kept_masks"] = kept_masks
        outputs["spatial_shapes"] = spatial_shapes
        outputs["level_shapes"] = shapes  # the same as Python ints
        outputs["valid_hw"] = valid_hw
        outputs["level_padding"] = masks
        outputs["image_hw"] = torch.stack([(~pixel_mask[:, :, 0]).sum(1), (~pixel_mask[:, 0, :]).sum(1)], dim=1)
        return outputs

    def saliency_target_maps(
        self, outputs: Dict[str, object], targets: List[Dict[str, torch.Tensor]]
    ) -> List[torch.Tensor]:
        """Per-level saliency targets (B, H_l, W_l) of a forward's ``outputs`` for ``targets`` (V-frame boxes), with
        this detector's target mode, level assignment and centre rule (``saliency_targets``)."""
        level_ranges = image_sizes = None
        if self.saliency_level_bounds:
            edges = (-1.0, *self.saliency_level_bounds, math.inf)
            level_ranges = list(zip(edges[:-1], edges[1:]))
            image_sizes = outputs["image_hw"].float() * self.saliency_range_scale
        return saliency_targets(
            [t["boxes"] for t in targets],
            outputs.get("level_shapes", outputs["spatial_shapes"]),
            outputs["valid_hw"],
            mode=self.saliency_target,
            sigma=self.saliency_sigma,
            level_ranges=level_ranges,
            image_sizes=image_sizes,
            always_mark_center=self.saliency_always_mark_center,
        )

    def losses(
        self,
        outputs: Dict[str, object],
        targets: List[Dict[str, torch.Tensor]],
        targets_checked: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Weighted detection losses (+ ``loss_saliency`` when saliency is on); the same keys for every batch.

        ``targets_checked``: the targets were validated already (``sanitize_targets``), so the criterion and the
        matcher skip their own checks (host synchronisations).
        """
        losses = self.criterion(outputs, targets, outputs.get("dn_meta"), targets_checked=targets_checked)
        if self.saliency is not None:
            logit_maps = outputs["saliency_logits"]
            target_maps = self.saliency_target_maps(outputs, targets)
            valid = [~m for m in outputs["level_padding"]]
            losses["loss_saliency"] = self.saliency_loss_weight * saliency_loss(
                logit_maps, target_maps, valid
            )
        return losses
