"""Deformable transformer encoder whose layers update only the salient tokens (paper Eq. 8).

Layer ``i`` gathers the tokens chosen for it (``sdconet.modeling.saliency.token_selection``), runs multi-scale deformable
self-attention + FFN on them only, and scatters them back; the other valid tokens keep their values and receive
the learnable background embedding ``B_ij = [R_i || C_j]``. Without a selection every token is updated (plain
DINO encoder).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..saliency.background_embedding import BackgroundEmbedding
from .mlp import FeedForward
from .ms_deform_attn import MSDeformAttn

Selection = Tuple[torch.Tensor, torch.Tensor]  # (indices (B, N) long, counts (B,) long)


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: ``x = LN(x + MSDA(x + pos)); x = LN(x + FFN(x))`` (DINO / Deformable-DETR).

    Args:
        dim: token channels. nheads, num_levels, num_points: deformable-attention sizes.
        dim_feedforward: FFN hidden width. dropout: dropout probability (0 in DINO).
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
        self.self_attn = MSDeformAttn(dim, nheads, num_levels, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dim_feedforward, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        value_input: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        value_padding_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Update ``query`` tokens.

        Args:
            query: (B, N, D) tokens to update. query_pos: (B, N, D) their position + level embeddings.
            reference_points: (B, N, L, 2) token centres in each level's padded-canvas frame.
            value_input: (B, S, D) all tokens (values of the deformable attention).
            spatial_shapes: (L, 2) long. level_start_index: (L,) long.
            value_padding_mask: (B, S) bool, True = padded token, or None.
        Returns:
            (B, N, D) updated tokens.
        """
        attn = self.self_attn(
            query + query_pos,
            reference_points,
            value_input,
            spatial_shapes,
            level_start_index,
            value_padding_mask,
        )
        return self.ffn(self.norm1(query + self.dropout(attn)))


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, S, *rest); index: (B, N) -> (B, N, *rest)."""
    shape = index.shape + x.shape[2:]
    flat_index = index.reshape(index.shape + (1,) * (x.dim() - 2)).expand(shape)
    return torch.gather(x, 1, flat_index)


class SaliencyPrunedEncoder(nn.Module):
    """A stack of :class:`DeformableEncoderLayer` with optional saliency-driven token selection.

    Args:
        num_layers: encoder depth (6). dim, nheads, num_levels, num_points, dim_feedforward, dropout: layer sizes.
        use_background: add the learnable background embedding to skipped tokens (Eq. 8).
        background_mode: ``"per_layer"`` — after every layer, to the valid tokens that layer skipped (the authors'
            SDCoNet code: a never-selected token receives it once per layer, and with ``value_mode="current"``
            those shifted tokens are the values of later layers); ``"once"`` — after the last layer, to the valid
            tokens outside the last layer's selection (Salience-DETR).
        value_mode: ``"current"`` — values are the current, partially updated tokens (paper Eq. 8, default);
            ``"initial"`` — values stay the encoder input for every layer (the official code / Salience-DETR).
        max_level_size: background-table length (largest level side; 128 = 1024 px LR at stride 8).
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
        use_background: bool = True,
        value_mode: str = "current",
        max_level_size: int = 128,
        background_mode: str = "per_layer",
    ) -> None:
        super().__init__()
        if value_mode not in ("current", "initial"):
            raise ValueError(
                f"SaliencyPrunedEncoder: value_mode must be 'current' or 'initial', got {value_mode!r}"
            )
        if background_mode not in ("per_layer", "once"):
            raise ValueError(
                f"SaliencyPrunedEncoder: background_mode must be 'per_layer' or 'once', got {background_mode!r}"
            )
        self.background_mode = background_mode
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(dim, nheads, num_levels, num_points, dim_feedforward, dropout)
            for _ in range(num_layers)
        )
        self.value_mode = value_mode
        self.background = BackgroundEmbedding(dim, max_level_size, max_level_size) if use_background else None

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor,
        selections: Optional[Sequence[Selection]] = None,
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Encode the flattened multi-level tokens.

        Args:
            src: (B, S, D) input tokens (level features, no position). pos: (B, S, D) position + level embedding.
            reference_points: (B, S, L, 2) token centres per level in the padded-canvas frame.
            spatial_shapes: (L, 2) long. level_start_index: (L,) long.
            padding_mask: (B, S) bool, True = padded token.
            selections: None (update every token in every layer) or one ``(indices (B, N_i), counts (B,))`` per
                layer; only the first ``counts[b]`` indices of row ``b`` are real, the rest are filler.
        Returns:
            memory (B, S, D) and a list of per-layer kept-token masks (B, S) bool (empty without selections).
        """
        if selections is not None and len(selections) != len(self.layers):
            raise ValueError(
                f"SaliencyPrunedEncoder: got {len(selections)} selections for {len(self.layers)} layers"
            )
        memory = src
        kept_masks: List[torch.Tensor] = []
        bsz, num_tokens, dim = src.shape
        background = None
        if selections is not None and self.background is not None:
            background = self.background(spatial_shapes).to(src.dtype)[None]  # (1, S, D)
        valid = ~padding_mask
        for i, layer in enumerate(self.layers):
            value_input = memory if self.value_mode == "current" else src
            if selections is None:
                memory = layer(
                    memory,
                    pos,
                    reference_points,
                    value_input,
                    spatial_shapes,
                    level_start_index,
                    padding_mask,
                )
                continue
            index, counts = selections[i]
            rows = torch.arange(index.shape[1], device=index.device)[None, :] < counts[:, None]  # (B, N)
            query = _gather_tokens(memory, index)
            updated = layer(
                query,
                _gather_tokens(pos, index),
                _gather_tokens(reference_points, index),
                value_input,
                spatial_shapes,
                level_start_index,
                padding_mask,
            )
            # Filler rows go to a dummy slot S so they never overwrite a real token.
            target = torch.where(rows, index, torch.full_like(index, num_tokens))
            kept = torch.zeros(bsz, num_tokens + 1, dtype=torch.bool, device=src.device)
            kept.scatter_(1, target, torch.ones_like(target, dtype=torch.bool))
            kept = kept[:, :num_tokens]
            kept_masks.append(kept)
            base = memory
            if background is not None and self.background_mode == "per_layer":
                base = memory + background * (valid & ~kept).unsqueeze(-1).to(memory.dtype)
            padded_base = torch.cat([base, base.new_zeros(bsz, 1, dim)], dim=1)
            memory = padded_base.scatter(1, target.unsqueeze(-1).expand(-1, -1, dim), updated)[:, :num_tokens]
        if background is not None and self.background_mode == "once" and kept_masks:
            memory = memory + background * (valid & ~kept_masks[-1]).unsqueeze(-1).to(memory.dtype)
        return memory, kept_masks
