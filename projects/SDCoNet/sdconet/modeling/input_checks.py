"""Value checks of the model inputs (NaN/Inf, padding-mask layout), kept apart from the static checks.

Static checks (types, shapes, dtypes, channels) cost nothing and stay in ``SDCoNet.forward``. The checks here
read tensor values, which on an accelerator is a host synchronisation and under ``torch.compile`` a graph
break. ``SDCoNet.forward`` runs them unless it is being compiled/exported or told not to
(``check_values=False``); callers that prepare inputs on the host (the predictor, the tools, the detectron2
meta-architecture) run them there, on CPU data, or know the values are valid by construction.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["check_input_values"]


def check_input_values(
    images: torch.Tensor, pixel_mask: Optional[torch.Tensor] = None, hr_images: Optional[torch.Tensor] = None
) -> None:
    """Raise ``ValueError`` on non-finite pixels or a padding mask that pads the top-left corner.

    Args:
        images: (B, 3, H, W) normalised LR images.
        pixel_mask: (B, H, W) bool, True = padding (bottom/right only), or None.
        hr_images: (B, 3, sH, sW) normalised HR images, or None.
    """
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise ValueError("SDCoNet: images contain NaN or Inf values")
    if pixel_mask is not None and pixel_mask.numel() and bool(pixel_mask[:, 0, 0].any()):
        raise ValueError("SDCoNet: pixel_mask marks the top-left pixel as padding; pad bottom/right only")
    if hr_images is not None and hr_images.is_floating_point() and not bool(torch.isfinite(hr_images).all()):
        raise ValueError("SDCoNet: hr_images contain NaN or Inf values")
