"""The one degradation that turns an HR tile into its LR model input (paper: bicubic ×1/2).

Definition (used by the tiler's offline LR copies, the detectron2 mapper and the inference tools):

* ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False, scale_factor=1/scale,
  recompute_scale_factor=False)``, cubic coefficient a = −0.75, border pixels replicated;
* **no antialiasing by default** (``antialias=False``): this is exactly the official SDCoNet code's
  ``F.interpolate(x, scale_factor=0.5, mode="bicubic")``. Note that Pillow's and MATLAB's ``imresize``
  bicubic *do* antialias (they widen the kernel by ``scale``), so they give a softer LR image;
  pass ``antialias=True`` to get that behaviour instead.
* LR size is ``(floor(H / scale), floor(W / scale))``; LR pixel ``i`` is centred on HR coordinate
  ``scale * (i + 0.5)``, so a box in HR pixels maps to LR pixels by dividing by ``scale`` (the rows/columns
  beyond ``scale * floor(H / scale)`` only enter through the kernel's border taps).
* uint8 input gives uint8 output, rounded to nearest and clipped to 0–255 (bicubic overshoots at edges).
  Float input gives float output, unclipped. Because interpolation is linear, degrading a mean/std
  normalised HR tensor equals normalising the degraded image (up to the uint8 rounding and clipping).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_SCALE = 2
DEFAULT_MODE = "bicubic"


def lr_size(height: int, width: int, scale: int = DEFAULT_SCALE) -> tuple[int, int]:
    """Return the LR ``(height, width)`` = ``(floor(height / scale), floor(width / scale))``."""
    _check_scale(scale)
    return height // scale, width // scale


def _check_scale(scale: int) -> None:
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")


def degrade_tensor(
    hr: torch.Tensor, scale: int = DEFAULT_SCALE, mode: str = DEFAULT_MODE, antialias: bool = False
) -> torch.Tensor:
    """Downsample HR images to LR (the torch variant of :func:`degrade`; same numbers).

    Args:
        hr: (C, H, W) or (B, C, H, W) tensor, uint8 (0–255) or floating point (any range, e.g.
            normalised), on any device.
        scale: integer downsampling factor (≥ 1; 1 returns a copy).
        mode: ``"bicubic"`` (paper) or ``"bilinear"`` / ``"area"`` for experiments.
        antialias: low-pass filter before sampling (Pillow/MATLAB-like); default ``False`` = official code.

    Returns:
        Tensor of shape (..., floor(H / scale), floor(W / scale)) on ``hr``'s device; uint8 if ``hr`` is
        uint8 (rounded and clipped), else ``hr``'s floating dtype.
    """
    _check_scale(scale)
    if hr.dim() not in (3, 4):
        raise ValueError(f"hr must be (C, H, W) or (B, C, H, W), got shape {tuple(hr.shape)}")
    height, width = hr.shape[-2:]
    out_h, out_w = lr_size(int(height), int(width), scale)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"image of size {height}x{width} is smaller than the scale {scale}")
    if scale == 1:
        return hr.clone()
    batched = hr if hr.dim() == 4 else hr.unsqueeze(0)
    is_uint8 = batched.dtype == torch.uint8
    x = batched.float() if is_uint8 or not batched.is_floating_point() else batched
    kwargs = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
    if mode in ("bicubic", "bilinear"):
        kwargs["antialias"] = antialias
    y = F.interpolate(x, scale_factor=1.0 / scale, mode=mode, recompute_scale_factor=False, **kwargs)
    if y.shape[-2] < out_h or y.shape[-1] < out_w:  # float rounding in torch's size rule
        raise RuntimeError(f"interpolate returned {tuple(y.shape[-2:])}, expected ({out_h}, {out_w})")
    y = y[..., :out_h, :out_w]
    if is_uint8:
        y = y.round_().clamp_(0, 255).to(torch.uint8)
    return y if hr.dim() == 4 else y.squeeze(0)


def degrade(
    hr: np.ndarray, scale: int = DEFAULT_SCALE, mode: str = DEFAULT_MODE, antialias: bool = False
) -> np.ndarray:
    """Return the LR image of an HR tile (bicubic ×1/scale, no antialiasing; see the module docstring).

    Args:
        hr: (H, W, 3) uint8 RGB image (any channel count works).
        scale: integer downsampling factor.
        mode: interpolation mode, ``"bicubic"`` by default.
        antialias: see :func:`degrade_tensor`.

    Returns:
        (floor(H / scale), floor(W / scale), 3) uint8 array.
    """
    if not isinstance(hr, np.ndarray) or hr.ndim != 3:
        raise ValueError(f"hr must be an (H, W, C) numpy array, got {getattr(hr, 'shape', type(hr))}")
    if hr.dtype != np.uint8:
        raise ValueError(f"hr must be uint8, got {hr.dtype}")
    chw = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)
    lr = degrade_tensor(chw, scale=scale, mode=mode, antialias=antialias)
    return np.ascontiguousarray(lr.permute(1, 2, 0).numpy())
