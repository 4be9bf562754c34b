"""Pure-PyTorch multi-scale deformable attention core (the ``grid_sample`` reference path).

This is the function every other backend is tested against. It samples each level's value map bilinearly at
the given locations with ``torch.nn.functional.grid_sample`` (``mode="bilinear"``, ``padding_mode="zeros"``,
``align_corners=False``): a normalised location ``u`` on a level of width ``W`` reads the pixel coordinate
``u * W - 0.5`` (pixel centres sit at ``(i + 0.5) / W``), and taps outside the map read 0. The samples are
weighted by the attention weights and summed over levels and points.

Dtype. ``grid_sample`` needs the grid in the input's dtype, so the sampling locations and attention weights
are cast to ``value.dtype`` and the whole computation runs in that dtype (float32, bfloat16 or float16); the
output has ``value``'s dtype. In bfloat16 the locations themselves are rounded to ~3 significant digits (a
fraction of a pixel on levels wider than ~100 tokens); under CUDA autocast PyTorch runs ``grid_sample`` in
float32 anyway. Pass float32 tensors where exactness matters.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from ..level_shapes import as_shape_list

__all__ = ["ms_deform_attn_pytorch", "check_msda_inputs"]


def check_msda_inputs(
    value: torch.Tensor,
    spatial_shapes: Union[torch.Tensor, Sequence[Sequence[int]]],
    level_start_index: Union[torch.Tensor, Sequence[int], None],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    where: str = "multi_scale_deformable_attention",
) -> None:
    """Validates the shapes shared by every backend (no device synchronisation).

    Args:
        value: (B, S, M, Dh). spatial_shapes: (L, 2) tensor or L ``(H_l, W_l)`` int pairs.
        level_start_index: (L,) tensor, L ints, or None.
        sampling_locations: (B, Nq, M, L, P, 2). attention_weights: (B, Nq, M, L, P).
        where: name used in the error messages.

    Raises:
        ValueError: naming the offending argument and its shape.
    """
    if value.dim() != 4:
        raise ValueError(f"{where}: value must be (B, S, M, Dh), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"{where}: sampling_locations must be (B, Nq, M, L, P, 2), got {tuple(sampling_locations.shape)}"
        )
    bsz, _, heads, _ = value.shape
    _, nq, _, levels, points, _ = sampling_locations.shape
    if sampling_locations.shape[0] != bsz or sampling_locations.shape[2] != heads:
        raise ValueError(
            f"{where}: sampling_locations {tuple(sampling_locations.shape)} does not match value "
            f"{tuple(value.shape)} in batch size / number of heads"
        )
    if tuple(attention_weights.shape) != (bsz, nq, heads, levels, points):
        raise ValueError(
            f"{where}: attention_weights must be {(bsz, nq, heads, levels, points)}, "
            f"got {tuple(attention_weights.shape)}"
        )
    ss_shape = (
        tuple(spatial_shapes.shape)
        if isinstance(spatial_shapes, torch.Tensor)
        else (len(spatial_shapes), *{len(s) for s in spatial_shapes})
    )
    if ss_shape != (levels, 2):
        raise ValueError(f"{where}: spatial_shapes must be ({levels}, 2), got {ss_shape}")
    if level_start_index is not None:
        lsi_shape = (
            tuple(level_start_index.shape)
            if isinstance(level_start_index, torch.Tensor)
            else (len(level_start_index),)
        )
        if lsi_shape != (levels,):
            raise ValueError(f"{where}: level_start_index must be ({levels},), got {lsi_shape}")


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: Union[torch.Tensor, Sequence[Sequence[int]]],
    level_start_index: Union[torch.Tensor, Sequence[int], None],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention core with ``grid_sample`` (CPU or GPU; float32/bfloat16/float16).

    Args:
        value: (B, S, M, Dh) per-head values; tokens flattened level by level (finest first, row-major within
            a level). Padded tokens should already be zero (the caller masks them).
        spatial_shapes: (L, 2) long, ``(H_l, W_l)`` per level, or the same as L pairs of Python ints (no host
            synchronisation, no ``torch.compile`` graph break; a tensor is read with ``.tolist()``);
            ``S == sum(H_l * W_l)``.
        level_start_index: (L,) exclusive cumsum of ``H_l * W_l`` (tensor or ints) or None. Only used for
            validation here: the levels are taken contiguously in order, as the token layout requires.
        sampling_locations: (B, Nq, M, L, P, 2) normalised ``(x, y)`` in each level's padded-canvas frame
            (P-frame, ``[0, 1]`` spans the whole map; values outside read zeros).
        attention_weights: (B, Nq, M, L, P) weights (already soft-maxed over ``L * P`` by the caller).

    Returns:
        (B, Nq, M * Dh) in ``value``'s dtype; channel ``m * Dh + d`` is head ``m``, channel ``d``.
        Differentiable with respect to ``value``, ``sampling_locations`` and ``attention_weights``.

    Raises:
        ValueError: on inconsistent shapes, or if ``S`` differs from ``sum(H_l * W_l)``.
    """
    where = "ms_deform_attn_pytorch"
    check_msda_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, where)
    bsz, num_tokens, heads, head_dim = value.shape
    _, nq, _, levels, points, _ = sampling_locations.shape
    shapes = as_shape_list(spatial_shapes)
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != num_tokens:
        raise ValueError(
            f"{where}: value has S={num_tokens} tokens but spatial_shapes {shapes} sum to {sum(sizes)}"
        )
    dtype = value.dtype
    # grid_sample works on [-1, 1]; x first, y second (same as our (x, y) locations).
    grids = 2.0 * sampling_locations.to(dtype) - 1.0
    value_levels = value.split(sizes, dim=1)
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # (B, H*W, M, Dh) -> (B*M, Dh, H, W)
        v = value_levels[lvl].flatten(2).transpose(1, 2).reshape(bsz * heads, head_dim, h, w)
        # (B, Nq, M, P, 2) -> (B*M, Nq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (B*M, Dh, Nq, L, P) -> (B*M, Dh, Nq, L*P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    # (B, Nq, M, L, P) -> (B*M, 1, Nq, L*P)
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(bsz * heads, 1, nq, levels * points)
    out = (stacked * weights).sum(-1).view(bsz, heads * head_dim, nq)
    return out.transpose(1, 2).contiguous()
