"""The SR decoder (paper Sec. III-C, Eq. 2-4): a U-Net-style Swin decoder on the shared encoder's features.

Path, coarse to fine (strides relative to the LR input, Swin-T channels)::

    stage 4 (768 @/32) -> bottleneck: 3x3 s2 conv + GN (1536 @/64)
    -> patch expand (Eq. 2: LN + 2x2 s2 transposed conv) to 768 @/32, + stage 4 -> Swin blocks (Eq. 3)
    -> expand to 384 @/16, + stage 3 -> blocks -> 192 @/8, + stage 2 -> blocks -> 96 @/4, + stage 1 -> blocks
    -> + patch-embedding long skip -> LN -> unembed (transposed conv k=s=patch) to ``unembed_channels`` @ LR
    -> reconstruction (Eq. 4) -> (B, 3, scale*H, scale*W)

Skips are additive (as in the official code). The bottleneck belongs to the SR branch (it gets the SR learning
rate and is not run while SR is frozen). Deliberate differences from the official code: the bottleneck map is
flattened to tokens correctly (the official ``view`` without permute scrambles it), no constant DIV2K mean is
added to the output (the output lives in the same normalised space as the input), and the /4 skip is the
encoder's LayerNorm-ed stage 1 (the official code adds the raw stage-0 output). Eq. 3 is implemented in the
standard Swin residual form ``T' = T + Attn(LN(T)); T_out = T' + MLP(LN(T'))`` (what the official decoder
runs).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..backbone.swin_blocks import SwinBlock

logger = logging.getLogger(__name__)

#: Negative slope of the reconstruction LeakyReLU (PyTorch default, as in the official tail).
LEAKY_SLOPE = 0.01
#: Std of the truncated-normal init of Linear layers and relative-position tables (Swin convention).
INIT_STD = 0.02
TAILS = ("paper", "official")


class PatchExpand(nn.Module):
    """Patch expanding (Eq. 2): LayerNorm over channels, then a 2x2 stride-2 transposed conv.

    Args:
        in_channels: C_in.
        out_channels: C_out.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_channels)
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C_in) tokens -> (B, 2H, 2W, C_out) tokens."""
        return self.up(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _reconstruction(in_channels: int, channels: int, scale: int, tail: str) -> nn.Sequential:
    """Eq. 4 ``Conv(PixelShuffle(LeakyReLU(Conv(F))))`` ("paper"), or the official tail ("official"):
    conv, conv, LeakyReLU, (conv + PixelShuffle(2)) x log2(scale), conv."""
    act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if tail == "paper":
        return nn.Sequential(
            nn.Conv2d(in_channels, channels * scale**2, 3, padding=1),
            act,
            nn.PixelShuffle(scale),
            nn.Conv2d(channels, 3, 3, padding=1),
        )
    if scale & (scale - 1):
        raise ValueError(f"SRDecoder: tail='official' needs a power-of-two scale, got {scale}")
    layers: List[nn.Module] = [
        nn.Conv2d(in_channels, in_channels, 3, padding=1),
        nn.Conv2d(in_channels, channels, 3, padding=1),
        act,
    ]
    for _ in range(scale.bit_length() - 1):
        layers += [nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2)]
    layers.append(nn.Conv2d(channels, 3, 3, padding=1))
    return nn.Sequential(*layers)


def _add_skip(x: torch.Tensor, skip: torch.Tensor, name: str) -> torch.Tensor:
    """x + skip, both (B, H, W, C); x may exceed skip by one row/column (ceil of the stride-2 bottleneck)."""
    h, w = skip.shape[1:3]
    if (
        x.shape[0] != skip.shape[0]
        or x.shape[-1] != skip.shape[-1]
        or not (0 <= x.shape[1] - h <= 1 and 0 <= x.shape[2] - w <= 1)
    ):
        raise ValueError(
            f"SRDecoder: decoder map {tuple(x.shape)} does not fit skip {name} {tuple(skip.shape)}"
        )
    return x[:, :h, :w] + skip


class SRDecoder(nn.Module):
    """SR branch: bottleneck + Swin U-Net decoder + pixel-shuffle reconstruction.

    Args:
        encoder_channels: channels of the 4 encoder stages (the decoder stages use them in reverse).
        scale: SR factor s (2 or 4 in the paper's setting; any integer for tail="paper").
        bottleneck_channels: channels of the stride-64 bottleneck.
        depths: Swin blocks per decoder stage, coarse to fine.
        num_heads: heads per decoder stage, coarse to fine.
        window_size: decoder window side.
        mlp_ratio: MLP hidden width / channels.
        drop_path_rate: stochastic depth, linear from 0 over all decoder blocks (coarse to fine).
        patch_size: the encoder's patch-embedding stride (the unembed transposed conv undoes it).
        unembed_channels: channels at LR resolution after unembedding (F_dec of Eq. 4).
        recon_channels: channels after the PixelShuffle.
        num_groups: GroupNorm groups of the bottleneck.
        tail: "paper" (Eq. 4 literally) or "official" (the authors' extra convs; power-of-two scales).
        mask_window_padding: mask padded tokens inside attention windows.
        use_checkpoint: gradient checkpointing per Swin block.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int] = (96, 192, 384, 768),
        scale: int = 2,
        bottleneck_channels: int = 1536,
        depths: Sequence[int] = (2, 6, 2, 2),
        num_heads: Sequence[int] = (6, 12, 6, 3),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        patch_size: int = 4,
        unembed_channels: int = 32,
        recon_channels: int = 16,
        num_groups: int = 32,
        tail: str = "paper",
        mask_window_padding: bool = True,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        encoder_channels, depths, num_heads = tuple(encoder_channels), tuple(depths), tuple(num_heads)
        n = len(encoder_channels)
        if len(depths) != n or len(num_heads) != n:
            raise ValueError(
                f"SRDecoder: encoder_channels {encoder_channels}, depths {depths} and num_heads {num_heads} "
                "need the same length (one decoder stage per encoder stage)"
            )
        if int(scale) != scale or scale < 1:
            raise ValueError(f"SRDecoder: scale must be a positive integer, got {scale}")
        if tail not in TAILS:
            raise ValueError(f"SRDecoder: tail must be one of {TAILS}, got {tail!r}")
        if bottleneck_channels % num_groups:
            raise ValueError(
                f"SRDecoder: bottleneck_channels {bottleneck_channels} not divisible by "
                f"num_groups {num_groups}"
            )
        self.encoder_channels = encoder_channels
        self.scale = int(scale)
        self.patch_size = int(patch_size)
        self.use_checkpoint = use_checkpoint

        self.bottleneck = nn.Sequential(
            nn.Conv2d(encoder_channels[-1], bottleneck_channels, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(num_groups, bottleneck_channels),
        )
        dims = encoder_channels[::-1]  # coarse to fine
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.expands = nn.ModuleList()
        self.stages = nn.ModuleList()
        for i, (dim, depth, heads) in enumerate(zip(dims, depths, num_heads)):
            self.expands.append(PatchExpand(bottleneck_channels if i == 0 else dims[i - 1], dim))
            first = sum(depths[:i])
            self.stages.append(
                nn.ModuleList(
                    SwinBlock(dim, heads, window_size, shifted=j % 2 == 1, mlp_ratio=mlp_ratio,
                              drop_path=rates[first + j], mask_padding=mask_window_padding)
                    for j in range(depth)
                )
            )  # fmt: skip
        self.norm = nn.LayerNorm(dims[-1])
        self.unembed = nn.ConvTranspose2d(
            dims[-1], unembed_channels, kernel_size=patch_size, stride=patch_size
        )
        self.reconstruction = _reconstruction(unembed_channels, recon_channels, self.scale, tail)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.bottleneck[0].weight)

    def forward(self, enc: Dict[str, object], out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Reconstruct the SR image.

        Args:
            enc: output of ``SwinEncoder.forward``: ``"patch"`` (B, C_1, H/p, W/p) and ``"stages"`` (4 NCHW
            maps at
                strides p, 2p, 4p, 8p).
            out_size: (H_hr, W_hr); default ``scale x`` the LR size ``(p * H/p, p * W/p)``. A different size
            is
                reached by bilinear resizing (align_corners=False).
        Returns:
            (B, 3, H_hr, W_hr) image in the normalised space of the LR input.
        """
        patch, stages = enc["patch"], list(enc["stages"])
        if len(stages) != len(self.encoder_channels):
            raise ValueError(
                f"SRDecoder: expected {len(self.encoder_channels)} encoder stages, got {len(stages)}"
            )
        for i, (s, c) in enumerate(zip(stages, self.encoder_channels)):
            if s.dim() != 4 or s.shape[1] != c:
                raise ValueError(
                    f"SRDecoder: encoder stage {i + 1} must be (B, {c}, H, W), got {tuple(s.shape)}"
                )
        lr_h, lr_w = patch.shape[-2] * self.patch_size, patch.shape[-1] * self.patch_size

        # NCHW -> (B, h, w, C) tokens by a real permute (the official code's plain view() scrambles them).
        x = self.bottleneck(stages[-1]).permute(0, 2, 3, 1)
        for i, (expand, blocks) in enumerate(zip(self.expands, self.stages)):
            skip_index = len(stages) - 1 - i
            x = _add_skip(expand(x), stages[skip_index].permute(0, 2, 3, 1), f"stage {skip_index + 1}")
            for block in blocks:
                if self.use_checkpoint and x.requires_grad:
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        x = _add_skip(x, patch.permute(0, 2, 3, 1), "patch embedding")
        x = self.unembed(self.norm(x).permute(0, 3, 1, 2))  # (B, unembed_channels, lr_h, lr_w)
        sr = self.reconstruction(x)
        want = (lr_h * self.scale, lr_w * self.scale) if out_size is None else tuple(int(v) for v in out_size)
        if tuple(sr.shape[-2:]) != want:
            sr = F.interpolate(sr, size=want, mode="bilinear", align_corners=False)
        return sr
