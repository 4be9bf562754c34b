"""The shared Swin-T encoder (paper Sec. III-B, Eq. 1) built from timm's ``SwinTransformer``.

The encoder keeps timm's ``patch_embed`` and ``layers`` (so parameter names are timm's and pretrained
checkpoints load directly, see :mod:`sdconet.modeling.backbone.swin_weights`) and drops the classifier and final norm.
It runs the stages itself: ``patch_embed -> layers[i].downsample -> layers[i].blocks`` with
:func:`~.swin_blocks.run_swin_block`, and passes every stage output through its own LayerNorm before
converting NHWC -> NCHW.

Input sizes and window shifts: the timm model is built with ``img_size`` = the real input size,
``strict_img_size=False`` and ``always_partition=True``, so no window is ever clamped at build time (every
block keeps the full ``window_size`` and its pretrained relative-position table). The shift of a shifted block
is decided at every forward, per axis, from the actual stage size: ``window // 2`` where the stage is larger
than the window, else 0. A model built at 256 and fed 512 or 288x224 therefore behaves exactly like one built
at that size; a stage smaller than the window (e.g. stage 4 of a 128 input) is one padded window without
shift. Stage maps that are not a window multiple (every Swin-T stage of a 256 input) are padded to a window
multiple inside each block with the pad masked out (``mask_window_padding=True``; False reproduces
mmdet/official Swin, whose padded tokens are attended).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple, Union

import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from .swin_blocks import run_swin_block

logger = logging.getLogger(__name__)


def _pair(v: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"SwinEncoder: {name} must be an int or (H, W), got {v}")
    return v


class SwinEncoder(nn.Module):
    """Hierarchical Swin encoder with NCHW outputs at strides 4/8/16/32.

    Args:
        embed_dim: channels of stage 1 (doubles per stage: 96/192/384/768 for Swin-T).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window side.
        mlp_ratio: MLP hidden width / channels.
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        img_size: (H, W) (or int) input size the timm model is built for; recorded only — any size that is a
            multiple of ``size_divisibility`` runs (see the module docstring for the shift rule).
        patch_size: patch-embedding stride.
        mask_window_padding: mask padded tokens inside attention windows (see module docstring).
        use_checkpoint: gradient checkpointing per block (saves memory in training, costs a recompute).

    Attributes:
        out_channels: channels of the 4 stage outputs.
        strides: strides of the 4 stage outputs relative to the input.
        size_divisibility: inputs must be padded to a multiple of this (``patch_size * 2**(num_stages - 1)``).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        img_size: Union[int, Sequence[int]] = (256, 256),
        patch_size: int = 4,
        mask_window_padding: bool = True,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(depths) != len(num_heads):
            raise ValueError(f"SwinEncoder: depths {depths} and num_heads {num_heads} differ in length")
        self.img_size = _pair(img_size, "img_size")
        self.patch_size = int(patch_size)
        self.size_divisibility = self.patch_size * 2 ** (len(depths) - 1)
        if any(s % self.size_divisibility for s in self.img_size):
            raise ValueError(
                f"SwinEncoder: img_size {self.img_size} must be a multiple of size_divisibility "
                f"{self.size_divisibility}"
            )
        swin = SwinTransformer(
            img_size=self.img_size,
            patch_size=self.patch_size,
            in_chans=3,
            num_classes=0,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            always_partition=True,
            strict_img_size=False,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
        )
        self.patch_embed = swin.patch_embed
        self.layers = swin.layers
        self.out_channels = tuple(int(embed_dim * 2**i) for i in range(len(depths)))
        self.strides = tuple(self.patch_size * 2**i for i in range(len(depths)))
        self.embed_dim = int(embed_dim)
        self.window_size = int(window_size)
        self.mask_window_padding = mask_window_padding
        self.use_checkpoint = use_checkpoint
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in self.out_channels)

    def forward(self, x: torch.Tensor) -> Dict[str, Union[torch.Tensor, List[torch.Tensor]]]:
        """Encode an image batch.

        Args:
            x: (B, 3, H, W) normalised images, H and W multiples of ``size_divisibility``.
        Returns:
            ``{"patch": (B, embed_dim, H/p, W/p) patch-embedding output (after its norm),
            "stages": [(B, out_channels[i], H/strides[i], W/strides[i]) for i in 0..3]}``, each stage output
            passed through its own LayerNorm.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SwinEncoder: expected images (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.size_divisibility or w % self.size_divisibility:
            raise ValueError(
                f"SwinEncoder: input size {(h, w)} is not a multiple of size_divisibility "
                f"{self.size_divisibility}; pad the images at the bottom/right first"
            )
        tokens = self.patch_embed(x)  # (B, H/p, W/p, C) after its LayerNorm
        patch = tokens
        stages = []
        for layer, norm in zip(self.layers, self.out_norms):
            tokens = layer.downsample(tokens)
            for block in layer.blocks:
                if self.use_checkpoint and tokens.requires_grad:
                    tokens = checkpoint(
                        run_swin_block, block, tokens, self.mask_window_padding, use_reentrant=False
                    )
                else:
                    tokens = run_swin_block(block, tokens, self.mask_window_padding)
            stages.append(norm(tokens).permute(0, 3, 1, 2).contiguous())
        return {"patch": patch.permute(0, 3, 1, 2).contiguous(), "stages": stages}
