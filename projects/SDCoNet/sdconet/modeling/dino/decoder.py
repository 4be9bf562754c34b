"""DINO decoder: deformable cross-attention, iterative box refinement and look-forward-twice."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ..box_ops import inverse_sigmoid
from .mlp import MLP, FeedForward
from .ms_deform_attn import MSDeformAttn
from .position_encoding import box_sine_embedding


class DINODecoderLayer(nn.Module):
    """Self-attention -> deformable cross-attention -> FFN, each post-norm (DINO order).

    Args:
        dim, nheads, num_levels, num_points, dim_feedforward, dropout: layer sizes.
    """

    def __init__(
        self,
        dim: int = 256,
        nheads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformAttn(dim, nheads, num_levels, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dim_feedforward, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        memory_padding_mask: Optional[torch.Tensor],
        self_attn_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Args:
            tgt: (B, T, D) queries. query_pos: (B, T, D).
            reference_points: (B, T, L, 4) boxes cxcywh in each level's padded-canvas frame.
            memory: (B, S, D) encoder output. memory_padding_mask: (B, S) bool True = pad.
            self_attn_mask: (T, T) bool, True = attention blocked (denoising groups), or None.
        Returns:
            (B, T, D).
        """
        q = k = tgt + query_pos
        attn, _ = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)
        tgt = self.norm2(tgt + self.dropout(attn))
        cross = self.cross_attn(
            tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index, memory_padding_mask
        )
        return self.ffn(self.norm1(tgt + self.dropout(cross)))


class DINODecoder(nn.Module):
    """Stack of :class:`DINODecoderLayer` with per-layer box refinement.

    The box heads are owned by the detector and passed to ``forward`` (one per layer): refinement uses the raw
    layer output, predictions the normed one; the reference fed to attention is always detached while the
    undetached refined box is kept for the next layer's prediction ("look forward twice").

    Args:
        num_layers, dim, nheads, num_levels, num_points, dim_feedforward, dropout: sizes.
    """

    def __init__(
        self,
        num_layers: int = 6,
        dim: int = 256,
        nheads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DINODecoderLayer(dim, nheads, num_levels, num_points, dim_feedforward, dropout)
            for _ in range(num_layers)
        )
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(
        self,
        tgt: torch.Tensor,
        refs_unsig: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_ratios: torch.Tensor,
        bbox_heads: nn.ModuleList,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Decode.

        Args:
            tgt: (B, T, D) initial content queries. refs_unsig: (B, T, 4) initial boxes, logit space, V-frame
                (detached by the caller). memory: (B, S, D). memory_padding_mask: (B, S) True = pad.
            valid_ratios: (B, L, 2) (w_valid / W_l, h_valid / H_l).
            bbox_heads: one box MLP per layer (D -> 4 deltas in logit space).
            self_attn_mask: (T, T) bool True = blocked, or None.
        Returns:
            hs: per layer (B, T, D) normed outputs; refs: per layer the (B, T, 4) sigmoid boxes that ENTERED the
            layer for prediction purposes (layer 0: initial boxes; layer l > 0: layer l-1's refined boxes,
            undetached, so layer l's box loss also trains layer l-1: look forward twice).
        """
        ref = refs_unsig.sigmoid()
        output = tgt
        hs: List[torch.Tensor] = []
        refs_for_pred: List[torch.Tensor] = [ref]
        scale = torch.cat([valid_ratios, valid_ratios], dim=-1)[:, None]  # (B, 1, L, 4)
        for i, layer in enumerate(self.layers):
            ref_input = ref.detach()[:, :, None] * scale  # (B, T, L, 4)
            query_pos = self.ref_point_head(
                box_sine_embedding(ref_input[:, :, 0, :], num_feats=self.dim // 2)
            )
            output = layer(
                output,
                query_pos,
                ref_input,
                memory,
                spatial_shapes,
                level_start_index,
                memory_padding_mask,
                self_attn_mask,
            )
            new_ref = (bbox_heads[i](output) + inverse_sigmoid(ref.detach())).sigmoid()
            hs.append(self.norm(output))
            if i < len(self.layers) - 1:
                refs_for_pred.append(new_ref)
            ref = new_ref.detach()
        return hs, refs_for_pred
