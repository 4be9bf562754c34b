"""The SR target batch: each input's ``hr_image`` normalised and placed on the padded SR canvas.

Shared by the SDCoNet meta-architecture (:meth:`~sdconet.d2.meta_arch.SDCoNet.prepare_hr`) and the SR branch of
stock detectors (:mod:`sdconet.d2.sr_branch`), so both check the mapper's HR tiles the same way and name the file
that is wrong.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import torch

__all__ = ["stack_hr_targets"]


def stack_hr_targets(
    batched_inputs: List[Dict],
    lr_sizes: Sequence[Tuple[int, int]],
    scale: int,
    canvas_shape: Tuple[int, int, int, int],
    device: torch.device,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    owner: str,
    missing_hint: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """HR tiles on the SR canvas and the mask of their pixels.

    Args:
        batched_inputs: d2 input dicts; each needs ``hr_image``, (3, scale*h, scale*w) in the mapper's pixel format.
        lr_sizes: the unpadded LR input size (h, w) of each input.
        scale: the SR factor.
        canvas_shape: (B, C, sH, sW) of the padded SR canvas (sH >= scale*h etc.).
        device: where the returned tensors live.
        normalise: maps an (3, H, W) image to the normalised float tensor on the target device.
        owner: the model's name, first word of every error.
        missing_hint: what to change when an input has no ``hr_image`` (appended to that error).

    Returns:
        ``(hr, valid)``: (B, C, sH, sW) float32 normalised HR, zero in the padding (the mean colour), and the
        (B, 1, sH, sW) float32 mask, 1 on the HR pixels and 0 on the padding.

    Raises:
        ValueError: an input without ``hr_image``, or one whose size is not ``scale`` x its LR size (names the file).
    """
    b, c, sh, sw = canvas_shape
    hr = torch.zeros((b, c, sh, sw), dtype=torch.float32, device=device)
    valid = torch.zeros((b, 1, sh, sw), dtype=torch.float32, device=device)
    for i, (x, (h, w)) in enumerate(zip(batched_inputs, lr_sizes)):
        name = x.get("file_name", i)
        if "hr_image" not in x:
            raise ValueError(f"{owner}: '{name}' has no 'hr_image' but the SR branch needs one ({missing_hint})")
        target = normalise(x["hr_image"])
        if tuple(target.shape[-2:]) != (scale * h, scale * w):
            raise ValueError(
                f"{owner}: '{name}' hr_image is {tuple(target.shape[-2:])}, expected {scale} x the LR input "
                f"{(h, w)} = {(scale * h, scale * w)}"
            )
        hr[i, :, : scale * h, : scale * w] = target
        valid[i, :, : scale * h, : scale * w] = 1.0
    return hr, valid
