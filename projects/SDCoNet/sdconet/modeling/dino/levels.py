"""Detection feature levels from the Swin stages (the official ``ChannelMapperSR`` neck, detection part).

Stages 2-4 (strides 8/16/32 of the LR input) each go through a 1x1 conv + GroupNorm to ``out_channels``; extra
levels come from 3x3 stride-2 convs + GroupNorm, the first on the last (normed) stage map, later ones on the
previous extra level. With the defaults this gives 4 levels of 256 channels at strides 8/16/32/64. No
activation (as in the official neck and DINO's input projections). Convs are Xavier-uniform with zero bias.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


def _conv_gn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, num_groups: int
) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.GroupNorm(num_groups, out_channels))


class DetectionLevels(nn.Module):
    """Project encoder stages to ``len(in_channels) + num_extra_levels`` maps of ``out_channels``.

    Args:
        in_channels: channels of the encoder stages fed in (Swin-T stages 2-4: 192, 384, 768).
        out_channels: channels of every level (the detector's hidden size).
        num_groups: GroupNorm groups.
        num_extra_levels: 3x3 stride-2 levels appended after the last stage.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (192, 384, 768),
        out_channels: int = 256,
        num_groups: int = 32,
        num_extra_levels: int = 1,
    ) -> None:
        super().__init__()
        if out_channels % num_groups:
            raise ValueError(
                f"DetectionLevels: out_channels {out_channels} not divisible by num_groups {num_groups}"
            )
        if num_extra_levels < 0:
            raise ValueError(f"DetectionLevels: num_extra_levels must be >= 0, got {num_extra_levels}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = int(out_channels)
        self.num_levels = len(self.in_channels) + num_extra_levels
        self.lateral = nn.ModuleList(_conv_gn(c, out_channels, 1, 1, num_groups) for c in self.in_channels)
        extra_in = [self.in_channels[-1]] + [out_channels] * (num_extra_levels - 1)
        self.extra = nn.ModuleList(
            _conv_gn(c, out_channels, 3, 2, num_groups) for c in extra_in[:num_extra_levels]
        )

    def forward(self, stages: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Map encoder stages to detection levels.

        Args:
            stages: ``len(in_channels)`` NCHW maps (B, in_channels[i], H_i, W_i), finest first.
        Returns:
            ``num_levels`` maps (B, out_channels, H_l, W_l), finest first; each extra level has
            ``ceil(H / 2) x ceil(W / 2)`` of the level before it.
        """
        if len(stages) != len(self.in_channels):
            raise ValueError(
                f"DetectionLevels: expected {len(self.in_channels)} stage maps, got {len(stages)}"
            )
        for i, (x, c) in enumerate(zip(stages, self.in_channels)):
            if x.dim() != 4 or x.shape[1] != c:
                raise ValueError(f"DetectionLevels: stage {i} must be (B, {c}, H, W), got {tuple(x.shape)}")
        levels = [proj(x) for proj, x in zip(self.lateral, stages)]
        src = stages[-1]
        for conv in self.extra:
            src = conv(src)
            levels.append(src)
        return levels
