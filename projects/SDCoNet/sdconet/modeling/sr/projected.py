"""The SR decoder on any 4-stage backbone: per-stage channel projections in front of :class:`SRDecoder`.

SDCoNet's SR decoder (``decoder.py``) is built for the Swin-T stage widths 96/192/384/768 at strides 4/8/16/32 plus
the patch-embedding map at stride 4. Other backbones have other widths (ResNet-50: res2-res5 = 256/512/1024/2048,
stem = 64). :class:`ProjectedSRDecoder` maps each stage to the decoder's width with a 1x1 conv + GroupNorm (the
official code's ChannelMapper style), and leaves a stage untouched when its width already matches -- with Swin-T
stages and ``decoder_channels = (96, 192, 384, 768)`` it is exactly SDCoNet's decoder (no projection parameters).

The long skip of the decoder takes a stride-``patch_size`` map: the backbone's patch embedding (Swin) or stem
(ResNet, ``"stem"`` output), projected the same way; without one, the projected first stage is used.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .decoder import SRDecoder

__all__ = ["ProjectedSRDecoder", "channel_projection"]

#: GroupNorm groups of the projections (as the official ChannelMapper: GN(32)).
DEFAULT_PROJECTION_GROUPS = 32


def channel_projection(in_channels: int, out_channels: int, num_groups: int) -> nn.Module:
    """``nn.Identity`` when the widths match, else 1x1 conv (no bias) + GroupNorm(``num_groups``).

    Raises:
        ValueError: if ``out_channels`` is not divisible by ``num_groups``.
    """
    if in_channels == out_channels:
        return nn.Identity()
    if out_channels % num_groups:
        raise ValueError(
            f"ProjectedSRDecoder: projection width {out_channels} is not divisible by num_groups {num_groups}"
        )
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
    nn.init.xavier_uniform_(conv.weight)
    return nn.Sequential(conv, nn.GroupNorm(num_groups, out_channels))


class ProjectedSRDecoder(nn.Module):
    """SR branch for a backbone with 4 stages at strides p, 2p, 4p, 8p (p = ``patch_size``, 4 for Swin/ResNet).

    Args:
        in_channels: channels of the 4 stage maps, fine to coarse (ResNet-50 res2-res5: 256, 512, 1024, 2048;
            Swin-T: 96, 192, 384, 768).
        patch_channels: channels of the optional stride-p map for the decoder's long skip (ResNet stem: 64; Swin
            patch embedding: ``in_channels[0]``); ``None`` = no such map, the projected first stage is used.
        decoder_channels: widths of the decoder stages, fine to coarse (SDCoNet: Swin-T's 96, 192, 384, 768).
        projection_groups: GroupNorm groups of the projections.
        **decoder_kwargs: the other :class:`SRDecoder` arguments (``scale``, ``bottleneck_channels``, ``depths``,
            ``num_heads``, ``window_size``, ``mlp_ratio``, ``drop_path_rate``, ``patch_size``, ...).

    Attributes:
        projections: one module per stage (``nn.Identity`` where the width already matches).
        patch_projection: the long-skip projection, or ``None`` without a patch map.
        decoder: the :class:`SRDecoder`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        patch_channels: Optional[int] = None,
        decoder_channels: Sequence[int] = (96, 192, 384, 768),
        projection_groups: int = DEFAULT_PROJECTION_GROUPS,
        **decoder_kwargs,
    ) -> None:
        super().__init__()
        in_channels, decoder_channels = (
            tuple(int(c) for c in in_channels),
            tuple(int(c) for c in decoder_channels),
        )
        if len(in_channels) != len(decoder_channels):
            raise ValueError(
                f"ProjectedSRDecoder: in_channels {in_channels} and decoder_channels {decoder_channels} need one "
                "entry per backbone stage each"
            )
        if "encoder_channels" in decoder_kwargs:
            raise ValueError(
                "ProjectedSRDecoder: pass the decoder widths as decoder_channels, not encoder_channels"
            )
        self.in_channels = in_channels
        self.patch_channels = None if patch_channels is None else int(patch_channels)
        self.projections = nn.ModuleList(
            channel_projection(c_in, c_out, projection_groups)
            for c_in, c_out in zip(in_channels, decoder_channels)
        )
        self.patch_projection = (
            None
            if patch_channels is None
            else channel_projection(int(patch_channels), decoder_channels[0], projection_groups)
        )
        self.decoder = SRDecoder(encoder_channels=decoder_channels, **decoder_kwargs)

    @property
    def scale(self) -> int:
        return self.decoder.scale

    @property
    def patch_size(self) -> int:
        return self.decoder.patch_size

    def forward(
        self,
        stages: Sequence[torch.Tensor],
        patch: Optional[torch.Tensor] = None,
        out_size: Optional[Tuple[int, int]] = None,
    ) -> torch.Tensor:
        """Reconstruct the SR image from backbone features.

        Args:
            stages: 4 maps (B, in_channels[i], H/(p*2^i), W/(p*2^i)), fine to coarse, of an input of size (H, W)
                (a multiple of 8p, e.g. a detectron2 batch padded to the backbone's size divisibility).
            patch: (B, patch_channels, H/p, W/p), required when ``patch_channels`` was given, else must be None.
            out_size: (H_hr, W_hr); default ``scale x (H, W)``.

        Returns:
            (B, 3, H_hr, W_hr) SR image in the normalised pixel space of the backbone's input.
        """
        stages = list(stages)
        if len(stages) != len(self.projections):
            raise ValueError(
                f"ProjectedSRDecoder: expected {len(self.projections)} stage maps, got {len(stages)}"
            )
        for i, (s, c) in enumerate(zip(stages, self.in_channels)):
            if s.dim() != 4 or s.shape[1] != c:
                raise ValueError(
                    f"ProjectedSRDecoder: stage {i + 1} must be (B, {c}, H, W), got {tuple(s.shape)}"
                )
        if (patch is None) != (self.patch_projection is None):
            want = (
                "no patch map"
                if self.patch_projection is None
                else f"a patch map with {self.patch_channels} ch"
            )
            raise ValueError(
                f"ProjectedSRDecoder: built for {want}, got patch={None if patch is None else tuple(patch.shape)}"
            )
        projected = [proj(s) for proj, s in zip(self.projections, stages)]
        if patch is None:
            skip = projected[0]
        else:
            if patch.dim() != 4 or patch.shape[1] != self.patch_channels:
                raise ValueError(
                    f"ProjectedSRDecoder: patch map must be (B, {self.patch_channels}, H, W), got {tuple(patch.shape)}"
                )
            skip = self.patch_projection(patch)
        if skip.shape[-2:] != projected[0].shape[-2:]:
            raise ValueError(
                f"ProjectedSRDecoder: patch map {tuple(skip.shape[-2:])} and stage 1 {tuple(projected[0].shape[-2:])} "
                "must have the same size (both at stride patch_size)"
            )
        return self.decoder({"patch": skip, "stages": projected}, out_size=out_size)
