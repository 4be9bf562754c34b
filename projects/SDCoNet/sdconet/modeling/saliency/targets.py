"""Saliency supervision: soft per-token targets (paper Eq. 7) and the soft-target focal loss.

Targets are built per level on the token grid. A token ``(i, j)`` of level ``l`` of image ``b`` with
``(h, w) = valid_hw[b, l]`` valid tokens has its centre at ``((j + 0.5) / w, (i + 0.5) / h)`` in the V-frame
(the image's unpadded extent, the frame of the GT boxes). For a GT box ``(cx, cy, bw, bh)`` the
**scale-normalised offsets** are ``dx = (x - cx) / (bw / 2)`` and ``dy = (y - cy) / (bh / 2)`` (-1 and +1 on
the box edges), so a box and its scaled copy produce the same pattern. A token is inside the box when
``|dx| <= 1`` and ``|dy| <= 1`` (edges included). Values (0 outside every box, max over overlapping boxes,
0 at padded tokens):

* ``"gaussian"`` (paper, Eq. 7): ``exp(-(dx^2 + dy^2) / (2 sigma^2))``. Default ``sigma = 1 / sqrt(2 ln 2)`` ~
  0.849, chosen so that an edge midpoint gets 0.5 and a corner 0.25 — the same edge value as the official
  cone.
* ``"cone"`` (official Salience-DETR / SDCoNet code): ``1 - 0.5 * sqrt(dx^2 + dy^2)`` (this equals the
  official ``1 - 0.5 * sqrt(((l-r)/(l+r))^2 + ((t-b)/(t+b))^2)``): 1 at the centre, 0.5 at edge midpoints,
  ~0.29 at corners.

Small objects: with the x2 LR input many boxes are smaller than a stride-8 cell and contain no token centre at
some (or all) levels. With ``always_mark_center=True`` such a box sets the token whose cell contains the box
centre to **1.0** (that cell contains the object centre, i.e. its best-case offset is 0), so every object has
a positive token at every level. The official code has no such rule (``always_mark_center=False``).

Official FCOS-style level assignment (option): with ``level_ranges`` and ``image_sizes``, a box only
contributes to a token of level ``l`` if ``max(l, t, r, b)`` of that token, in the pixel units of
``image_sizes``, lies in ``(lo_l, hi_l]`` (official: ``((-1, 64), (64, 128), (128, 256), (256, inf))`` in HR
pixels). A tiny box marks its centre cell only at the level whose range holds ``max(box_w, box_h) / 2``.
Unlike the official code, the max over boxes is taken over the in-range boxes only (the official takes it over
all containing boxes, then zeroes tokens with no in-range box).
"""

from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..level_shapes import as_shape_list

logger = logging.getLogger(__name__)

TARGET_MODES = ("gaussian", "cone")
#: sigma with exp(-1 / (2 sigma^2)) = 0.5: an edge midpoint (|dx| = 1, dy = 0) gets 0.5, a corner 0.25.
DEFAULT_GAUSSIAN_SIGMA = 1.0 / math.sqrt(2.0 * math.log(2.0))
#: Official FCOS-style object-size ranges per level (max(l, t, r, b) in HR input pixels), finest level first.
OFFICIAL_LEVEL_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, math.inf))
#: Tolerance of the inside-box test on normalised offsets (token centres exactly on an edge are inside).
_INSIDE_TOL = 1e-6
#: Upper bound on boxes x tokens evaluated at once (memory of the dense per-box value tensor).
_MAX_CHUNK_ELEMENTS = 1 << 22


def valid_hw_from_masks(valid_masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Valid token rows/columns per image and level.

    Args:
        valid_masks: list of L bool ``(B, H_l, W_l)``, True = valid token (top-left rectangle).

    Returns:
        long ``(B, L, 2)`` with ``(h_valid, w_valid)``.
    """
    hw = [torch.stack([m.any(dim=2).sum(dim=1), m.any(dim=1).sum(dim=1)], dim=1) for m in valid_masks]
    return torch.stack(hw, dim=1)


def _box_values(
    boxes: torch.Tensor,
    hv: int,
    wv: int,
    mode: str,
    sigma: float,
    level_range: Optional[Tuple[float, float]],
    image_hw: Optional[Tuple[float, float]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-box values on a ``(hv, wv)`` valid grid.

    Returns:
        ``values (n, hv, wv)`` (0 outside the box / out of range) and ``has_center (n,)`` (True if the box
        contains at least one token centre of this grid).
    """
    device = boxes.device
    cx, cy, bw, bh = boxes.unbind(-1)
    xs = (torch.arange(wv, device=device, dtype=boxes.dtype) + 0.5) / wv
    ys = (torch.arange(hv, device=device, dtype=boxes.dtype) + 0.5) / hv
    dx = (xs[None, :] - cx[:, None]) / (bw[:, None] / 2)  # (n, wv)
    dy = (ys[None, :] - cy[:, None]) / (bh[:, None] / 2)  # (n, hv)
    in_x = dx.abs() <= 1 + _INSIDE_TOL
    in_y = dy.abs() <= 1 + _INSIDE_TOL
    inside = in_y[:, :, None] & in_x[:, None, :]
    if level_range is not None:
        img_h, img_w = image_hw
        # max(l, r) = (1 + |dx|) * bw / 2 in pixels, likewise for (t, b).
        ext_x = (1 + dx.abs()) * (bw[:, None] * img_w / 2)
        ext_y = (1 + dy.abs()) * (bh[:, None] * img_h / 2)
        ext = torch.maximum(ext_y[:, :, None], ext_x[:, None, :])
        inside = inside & (ext > level_range[0]) & (ext <= level_range[1])
    if mode == "gaussian":
        val = torch.exp(-(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / (2 * sigma**2))
    else:
        val = 1 - 0.5 * torch.sqrt(dy[:, :, None] ** 2 + dx[:, None, :] ** 2)
    values = torch.where(inside, val.clamp(min=0.0), torch.zeros_like(val))
    has_center = in_x.any(dim=1) & in_y.any(dim=1)
    return values, has_center


@torch.no_grad()
def saliency_targets(
    boxes_list: Sequence[torch.Tensor],
    spatial_shapes: torch.Tensor,
    valid_hw: torch.Tensor,
    mode: str = "gaussian",
    sigma: float = DEFAULT_GAUSSIAN_SIGMA,
    level_ranges: Optional[Sequence[Tuple[float, float]]] = None,
    image_sizes: Optional[torch.Tensor] = None,
    always_mark_center: bool = True,
) -> List[torch.Tensor]:
    """Soft saliency targets per level (see the module docstring for the exact definition).

    Args:
        boxes_list: B tensors ``(n_b, 4)``, GT boxes ``cx, cy, w, h`` normalised to each image's unpadded size
            (V-frame); ``n_b = 0`` is allowed. Boxes with non-positive width or height are ignored.
        spatial_shapes: long ``(L, 2)`` padded ``(H_l, W_l)`` per level, finest first.
        valid_hw: long ``(B, L, 2)`` valid ``(h, w)`` token counts per image and level (see
            ``valid_hw_from_masks``); tokens outside ``[0:h, 0:w]`` are padding and get 0.
        mode: ``"gaussian"`` (paper Eq. 7) or ``"cone"`` (official).
        sigma: Gaussian width in units of the box half-size (``mode="gaussian"`` only).
        level_ranges: optional L pairs ``(lo, hi]`` of ``max(l, t, r, b)`` in the pixel units of
            ``image_sizes`` (official FCOS assignment, e.g. ``OFFICIAL_LEVEL_RANGES`` with HR pixel sizes).
        image_sizes: ``(B, 2)`` unpadded ``(height, width)`` per image in the units of ``level_ranges``;
            required with ``level_ranges`` and unused otherwise.
        always_mark_center: give 1.0 to the centre cell of a box that contains no token centre at a level.

    Returns:
        list of L float32 tensors ``(B, H_l, W_l)`` in [0, 1] on ``valid_hw``'s device (no gradient).
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"saliency_targets: mode must be one of {TARGET_MODES} (got {mode!r})")
    if mode == "gaussian" and not sigma > 0:
        raise ValueError(f"saliency_targets: sigma must be > 0 (got {sigma})")
    shapes = as_shape_list(spatial_shapes)
    num_levels = len(shapes)
    batch = len(boxes_list)
    if tuple(valid_hw.shape) != (batch, num_levels, 2):
        raise ValueError(
            f"saliency_targets: valid_hw must have shape (B={batch}, L={num_levels}, 2), "
            f"got {tuple(valid_hw.shape)}"
        )
    if level_ranges is not None:
        if len(level_ranges) != num_levels:
            raise ValueError(
                f"saliency_targets: level_ranges needs {num_levels} (lo, hi) pairs, got {len(level_ranges)}"
            )
        if image_sizes is None or tuple(image_sizes.shape) != (batch, 2):
            raise ValueError(
                "saliency_targets: level_ranges requires image_sizes of shape (B, 2) = (height, width)"
            )
        sizes = [(float(h), float(w)) for h, w in image_sizes.tolist()]
    device = valid_hw.device
    hw = valid_hw.tolist()
    targets = [torch.zeros(batch, h, w, device=device, dtype=torch.float32) for h, w in shapes]
    for b, boxes in enumerate(boxes_list):
        boxes = boxes.to(device=device, dtype=torch.float32).reshape(-1, 4)
        boxes = boxes[(boxes[:, 2] > 0) & (boxes[:, 3] > 0)]
        if boxes.shape[0] == 0:
            continue
        for lvl, (H, W) in enumerate(shapes):
            hv, wv = (int(v) for v in hw[b][lvl])
            if hv > H or wv > W or hv < 0 or wv < 0:
                raise ValueError(
                    f"saliency_targets: valid_hw[{b}, {lvl}] = {(hv, wv)} exceeds the level shape {(H, W)}"
                )
            if hv == 0 or wv == 0:
                continue
            rng = None if level_ranges is None else (float(level_ranges[lvl][0]), float(level_ranges[lvl][1]))
            img_hw = None if level_ranges is None else sizes[b]
            out = targets[lvl][b, :hv, :wv]
            chunk = max(1, _MAX_CHUNK_ELEMENTS // (hv * wv))
            for start in range(0, boxes.shape[0], chunk):
                bx = boxes[start : start + chunk]
                values, has_center = _box_values(bx, hv, wv, mode, sigma, rng, img_hw)
                out = torch.maximum(out, values.amax(dim=0))
                if always_mark_center:
                    tiny = ~has_center
                    if rng is not None:
                        half_ext = torch.maximum(bx[:, 2] * img_hw[1], bx[:, 3] * img_hw[0]) / 2
                        tiny &= (half_ext > rng[0]) & (half_ext <= rng[1])
                    if tiny.any():
                        cols = (bx[tiny, 0] * wv).floor().long().clamp(0, wv - 1)
                        rows = (bx[tiny, 1] * hv).floor().long().clamp(0, hv - 1)
                        out = out.index_put((rows, cols), torch.ones_like(rows, dtype=out.dtype))
            targets[lvl][b, :hv, :wv] = out
    return targets


def saliency_loss(
    logit_maps: Sequence[torch.Tensor],
    target_maps: Sequence[torch.Tensor],
    valid_masks: Sequence[torch.Tensor],
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Sigmoid focal loss on soft targets, normalised by the number of positive tokens (the paper's L_sa).

    Per token, with ``p = sigmoid(x)`` and soft target ``t``:
    ``BCE_with_logits(x, t) * ((1 - alpha) * p^gamma * (1 - t) + alpha * t * (1 - p)^gamma)`` (gradient flows
    through the weight, as Salience-DETR), computed in float32, summed over the valid tokens of all levels and
    images, divided by ``max(1, #valid tokens with t > 0)`` over the whole batch. The loss weight (2.0 in the
    paper/official code) is **not** applied here; the caller multiplies.

    Args:
        logit_maps: L logit tensors ``(B, H_l, W_l)`` (``SaliencyPredictor`` output).
        target_maps: L target tensors ``(B, H_l, W_l)`` in [0, 1] (``saliency_targets`` output).
        valid_masks: L bool ``(B, H_l, W_l)``, True = valid token; padded tokens are ignored.
        alpha: focal balance factor in [0, 1].
        gamma: focusing exponent (>= 0).

    Returns:
        scalar float32 loss.
    """
    if not (len(logit_maps) == len(target_maps) == len(valid_masks)) or len(logit_maps) == 0:
        raise ValueError(
            f"saliency_loss: need the same non-zero number of logit, target and mask levels "
            f"(got {len(logit_maps)}, {len(target_maps)}, {len(valid_masks)})"
        )
    if not 0.0 <= alpha <= 1.0 or gamma < 0:
        raise ValueError(f"saliency_loss: alpha must be in [0, 1] and gamma >= 0 (got {alpha}, {gamma})")
    total = logit_maps[0].new_zeros((), dtype=torch.float32)
    num_pos = logit_maps[0].new_zeros((), dtype=torch.float32)
    for lvl, (x, t, v) in enumerate(zip(logit_maps, target_maps, valid_masks)):
        if x.shape != t.shape or x.shape != v.shape:
            raise ValueError(
                f"saliency_loss: level {lvl}: logits {tuple(x.shape)}, targets {tuple(t.shape)} and mask "
                f"{tuple(v.shape)} must have the same shape"
            )
        v = v.bool()
        x, t = x[v].float(), t[v].float()
        p = torch.sigmoid(x)
        weight = (1 - alpha) * p.pow(gamma) * (1 - t) + alpha * t * (1 - p).pow(gamma)
        total = total + (F.binary_cross_entropy_with_logits(x, t, reduction="none") * weight).sum()
        num_pos = num_pos + (t > 0).sum()
    return total / num_pos.clamp(min=1.0)
