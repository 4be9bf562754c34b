"""Multi-scale deformable attention module (Deformable DETR / DINO), without residual or dropout."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..level_shapes import shape_tensors
from ..ops import multi_scale_deformable_attention, preload_triton

__all__ = ["MSDeformAttn"]


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: a query samples ``P`` points per head and level near its reference.

    The residual connection, dropout and normalisation belong to the calling layer.

    Args:
        embed_dim: model width ``D`` (divisible by ``num_heads``).
        num_heads: attention heads ``M``; head width ``D / M``.
        num_levels: feature levels ``L``.
        num_points: sampling points ``P`` per head and level.
    """

    def __init__(
        self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"MSDeformAttn: embed_dim={embed_dim} must be divisible by num_heads={num_heads}"
            )
        for name, val in (("num_heads", num_heads), ("num_levels", num_levels), ("num_points", num_points)):
            if val < 1:
                raise ValueError(f"MSDeformAttn: {name} must be >= 1, got {val}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.head_dim = embed_dim // num_heads
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()
        preload_triton()  # where a GPU (or the interpreter) exists: import the kernel before any torch.compile

    def reset_parameters(self) -> None:
        """Deformable-DETR initialisation.

        Offsets: zero weight; the bias places head ``m``'s points on the ray at angle ``2*pi*m/M`` projected
        onto the unit square (max-norm 1), point ``p`` at distance ``p + 1``, the same at every level (layout
        ``(M, L, P, 2)``, ``(x, y)`` last). Attention weights: zero weight and bias (uniform ``1/(L*P)``).
        Value/output projections: xavier-uniform weight, zero bias.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        # float64 so that e.g. (1, -1) comes out exact before the cast to the parameter dtype
        angles = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (M, 2)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        scale = torch.arange(1, self.num_points + 1, dtype=torch.float64)  # point p -> distance p + 1
        grid = directions[:, None, None, :] * scale[None, None, :, None]  # (M, 1, P, 2)
        grid = grid.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value_input: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        value_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Attend from ``query`` to the multi-scale ``value_input`` tokens.

        Args:
            query: (B, Nq, D) queries with their positional embedding already added.
            reference_points: (B, Nq, L, 2) points ``(x, y)`` or (B, Nq, L, 4) boxes ``(cx, cy, w, h)``, in
                each level's padded-canvas frame (P-frame, normalised to [0, 1]). With points the offsets are
                in pixels of the level (normalised by ``(W_l, H_l)``); with boxes an offset of ``P`` reaches
                the box edge (``loc = c + offset / P * wh / 2``).
            value_input: (B, S, D) all tokens, without positional embedding, flattened level by level.
            spatial_shapes: (L, 2) long ``(H_l, W_l)``, or L pairs of Python ints (no host synchronisation).
            level_start_index: (L,) long exclusive cumsum of ``H_l * W_l`` (tensor, ints or None).
            value_padding_mask: (B, S) bool, True = padded token (its value is zeroed), or None.

        Returns:
            (B, Nq, D) attention output (after ``output_proj``; no residual).
        """
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(
                f"MSDeformAttn: query must be (B, Nq, {self.embed_dim}), got {tuple(query.shape)}"
            )
        bsz, nq, _ = query.shape
        if value_input.dim() != 3 or value_input.shape[0] != bsz or value_input.shape[-1] != self.embed_dim:
            raise ValueError(
                f"MSDeformAttn: value_input must be ({bsz}, S, {self.embed_dim}), "
                f"got {tuple(value_input.shape)}"
            )
        ref_dim = reference_points.shape[-1]
        if (
            reference_points.dim() != 4
            or reference_points.shape[:3] != (bsz, nq, self.num_levels)
            or ref_dim
            not in (
                2,
                4,
            )
        ):
            raise ValueError(
                f"MSDeformAttn: reference_points must be ({bsz}, {nq}, {self.num_levels}, 2 or 4), "
                f"got {tuple(reference_points.shape)}"
            )
        num_tokens = value_input.shape[1]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points

        value = self.value_proj(value_input)
        if value_padding_mask is not None:
            if tuple(value_padding_mask.shape) != (bsz, num_tokens):
                raise ValueError(
                    f"MSDeformAttn: value_padding_mask must be ({bsz}, {num_tokens}), "
                    f"got {tuple(value_padding_mask.shape)}"
                )
            value = value.masked_fill(value_padding_mask[..., None], 0.0)
        value = value.view(bsz, num_tokens, heads, self.head_dim)

        offsets = self.sampling_offsets(query).view(bsz, nq, heads, levels, points, 2)
        weights = self.attention_weights(query).view(bsz, nq, heads, levels * points)
        weights = F.softmax(weights, dim=-1).view(bsz, nq, heads, levels, points)

        if ref_dim == 2:
            # Offsets are in pixels of each level: normalise by (W_l, H_l), i.e. (x, y) order.
            shapes_t = spatial_shapes
            if not isinstance(shapes_t, torch.Tensor):
                shapes_t = shape_tensors(spatial_shapes, offsets.device)[0]
            normalizer = shapes_t.flip(-1).to(offsets.dtype)  # (L, 2) = (W, H)
            locations = (
                reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
            )
        else:
            centers = reference_points[:, :, None, :, None, :2]
            sizes = reference_points[:, :, None, :, None, 2:]
            locations = centers + offsets / points * sizes * 0.5

        out = multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out)
