"""Sine position embeddings: per-pixel (encoder tokens) and per-box (decoder query positions).

Choice of constants for :func:`sine_position_embedding`: temperature 10000 and offset -0.5 (positions
``(i + 0.5) / n``) as in Deformable DETR, detrex DINO/Focus-DETR and Salience-DETR. The original DINO code
uses temperature 20 and offset 0 (positions ``i / n``, ``i = 1..n``); both train well from scratch and the
choice only matters when loading DINO checkpoints, so both are arguments.

Channel layout of one coordinate's ``num_feats`` channels: channel ``2i`` is ``sin(v / T^(2i/num_feats))`` and
channel ``2i + 1`` is ``cos`` of the same argument (interleaved sin/cos pairs sharing a frequency).
"""

from __future__ import annotations

import math

import torch

__all__ = ["sine_position_embedding", "box_sine_embedding"]

#: Added to the per-row/column valid count before dividing (Deformable DETR's value).
NORMALIZE_EPS = 1e-6


def _frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """(num_feats,) float32 divisors ``T^(2 * (k // 2) / num_feats)``."""
    if num_feats < 2 or num_feats % 2 != 0:
        raise ValueError(
            f"sine position embedding: num_feats must be a positive even number, got {num_feats}"
        )
    k = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F) with sin on even channels and cos on odd channels."""
    return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)


def sine_position_embedding(
    mask: torch.Tensor,
    num_feats: int = 128,
    temperature: float = 10000.0,
    normalize: bool = True,
    scale: float = 2 * math.pi,
    offset: float = -0.5,
) -> torch.Tensor:
    """2-D sine position embedding of a feature map, computed in the valid (unpadded) frame.

    Positions are the cumulative count of valid pixels along each axis; with ``normalize`` they are divided by
    the number of valid pixels of that column/row (so they span ``[0, scale]`` over the valid region whatever
    the padding) after adding ``offset``. Padded pixels get values that are never used as keys (their tokens
    are masked); below/right of the valid region they repeat the last valid row/column, fully padded
    columns/rows get large but bounded (sin/cos) values.

    Args:
        mask: (B, H, W) bool, True = padded pixel.
        num_feats: channels per axis (even); the output has ``2 * num_feats``.
        temperature: frequency base ``T``.
        normalize: divide by the valid count and multiply by ``scale``; otherwise raw pixel counts are used.
        scale: range of the normalised positions.
        offset: added to the 1-based counts before normalising (-0.5 puts positions at pixel centres).

    Returns:
        (B, 2 * num_feats, H, W) float32: channels ``[0, num_feats)`` encode y, the rest encode x.
    """
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ValueError(
            f"sine_position_embedding: mask must be (B, H, W) bool, got {tuple(mask.shape)} {mask.dtype}"
        )
    not_mask = ~mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    if normalize:
        y_embed = (y_embed + offset) / (y_embed[:, -1:, :] + NORMALIZE_EPS) * scale
        x_embed = (x_embed + offset) / (x_embed[:, :, -1:] + NORMALIZE_EPS) * scale
    dim_t = _frequencies(num_feats, temperature, mask.device)
    pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
    pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
    return torch.cat([pos_y, pos_x], dim=-1).permute(0, 3, 1, 2).contiguous()


def box_sine_embedding(
    boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0
) -> torch.Tensor:
    """Sine embedding of normalised points or boxes (DINO's decoder query positions).

    Each coordinate ``v`` in [0, 1] is scaled by ``2 * pi`` and embedded with ``num_feats`` interleaved
    sin/cos channels; the per-coordinate blocks are concatenated in the order ``(y, x, w, h)``.

    Args:
        boxes: (..., 4) ``(cx, cy, w, h)`` or (..., 2) ``(x, y)``, normalised (any frame).
        num_feats: channels per coordinate (even).
        temperature: frequency base ``T``.

    Returns:
        (..., 4 * num_feats) for boxes or (..., 2 * num_feats) for points, in ``boxes``'s floating dtype
        (computed in float32).
    """
    if boxes.shape[-1] not in (2, 4):
        raise ValueError(f"box_sine_embedding: last dim must be 2 or 4, got shape {tuple(boxes.shape)}")
    dim_t = _frequencies(num_feats, temperature, boxes.device)
    coords = boxes.float() * (2 * math.pi)
    embeds = [_interleave_sin_cos(coords[..., i, None] / dim_t) for i in range(boxes.shape[-1])]
    order = [1, 0] if boxes.shape[-1] == 2 else [1, 0, 2, 3]
    out = torch.cat([embeds[i] for i in order], dim=-1)
    return out.to(boxes.dtype) if boxes.is_floating_point() else out
