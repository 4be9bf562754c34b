"""Level shapes as Python ints, and their tensor form, without host synchronisation.

The multi-level token layout (levels finest first, each ``H_l x W_l`` tokens row-major) depends only on the
padded input size, so the model keeps it as Python ints (``[(H_0, W_0), ...]``) taken from feature-map shapes.
Reading them back from a device tensor (``spatial_shapes.tolist()``) would be a host synchronisation and a
``torch.compile`` graph break. Functions that used to take the ``(L, 2)`` tensor accept either form; the tensor
form (for the Triton kernel and for callers that want it) is built from the ints, cached per device in eager
mode and a graph constant under ``torch.compile``.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import torch

__all__ = ["ShapeList", "as_shape_list", "level_sizes", "level_starts", "shape_tensors"]

ShapeList = List[Tuple[int, int]]
Shapes = Union[torch.Tensor, Sequence[Sequence[int]]]

_CACHE: Dict[Tuple[Tuple[Tuple[int, int], ...], str], Tuple[torch.Tensor, torch.Tensor]] = {}


def as_shape_list(spatial_shapes: Shapes) -> ShapeList:
    """``[(H_l, W_l), ...]`` as Python ints. A tensor is read with ``.tolist()`` (eager callers only)."""
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def level_sizes(spatial_shapes: Shapes) -> List[int]:
    """Tokens per level ``H_l * W_l``."""
    return [h * w for h, w in as_shape_list(spatial_shapes)]


def level_starts(spatial_shapes: Shapes) -> List[int]:
    """Exclusive cumulative sum of the level sizes (index of each level's first token)."""
    starts, total = [], 0
    for n in level_sizes(spatial_shapes):
        starts.append(total)
        total += n
    return starts


def shape_tensors(spatial_shapes: Shapes, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(spatial_shapes (L, 2) long, level_start_index (L,) long)`` on ``device``.

    Eager: cached per (shapes, device) and copied without blocking, so repeated calls cost nothing. Under
    ``torch.compile`` the tensors are created in the graph from constants.
    """
    shapes = tuple(as_shape_list(spatial_shapes))
    starts = level_starts(shapes)
    if torch.compiler.is_compiling():
        return (
            torch.tensor(shapes, dtype=torch.long, device=device),
            torch.tensor(starts, dtype=torch.long, device=device),
        )
    key = (shapes, str(device))
    hit = _CACHE.get(key)
    if hit is None:
        hit = (
            torch.tensor(shapes, dtype=torch.long).reshape(len(shapes), 2).to(device, non_blocking=True),
            torch.tensor(starts, dtype=torch.long).to(device, non_blocking=True),
        )
        if len(_CACHE) > 256:  # many input sizes: keep the cache bounded
            _CACHE.clear()
        _CACHE[key] = hit
    return hit
