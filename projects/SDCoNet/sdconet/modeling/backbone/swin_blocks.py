"""(Shifted-)window self-attention blocks that accept any feature-map size (paper Eq. 3).

One forward routine, :func:`run_swin_block`, serves both the shared Swin-T encoder (it runs timm's
``SwinTransformerBlock`` modules, keeping their parameter names so pretrained checkpoints load unchanged) and
the SR decoder (:class:`SwinBlock`, built from timm's ``WindowAttention``/``Mlp``/``DropPath``). It differs
from timm's own block forward in three ways, all of which only matter when the map is not a multiple of the
window:

* the map is padded (bottom/right) to a window multiple **before** the cyclic shift and the shift mask is
  computed for the padded size (as in the Swin detection code and mmdet); timm pads after rolling, which lets
  wrapped-around tokens share a region with their non-neighbours;
* padded tokens are, by default, masked out as keys, so a real token's output does not depend on the padding;
* the shift is decided per forward and per axis: a block shifts by ``window // 2`` only along axes where the
  map is larger than the window (the rule timm and SwinIR apply at build time, applied here to the actual
  size).

When the map is a multiple of the window the result equals timm's block exactly.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from timm.models.swin_transformer import WindowAttention
from torch import nn

#: Additive attention logit for pairs of tokens that must not attend to each other (the value Swin uses).
MASK_VALUE = -100.0
#: Region label given to padded tokens in the window mask (real regions are 0..8).
_PAD_LABEL = 9


def window_shift(
    size: Tuple[int, int], window: Tuple[int, int], target_shift: Tuple[int, int]
) -> Tuple[int, int]:
    """Per-axis cyclic shift in use: ``target_shift`` where the map is larger than the window, else 0."""
    return tuple(s if n > w else 0 for n, w, s in zip(size, window, target_shift))


def window_attention_mask(
    size: Tuple[int, int],
    window: Tuple[int, int],
    shift: Tuple[int, int],
    mask_padding: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> Optional[torch.Tensor]:
    """Additive attention mask for the windows of a padded, shifted map.

    Args:
        size: (H, W) of the unpadded map.
        window: (wh, ww) window size.
        shift: (sh, sw) cyclic shift applied after padding (0 = none).
        mask_padding: also forbid attending to padded tokens.
        device, dtype: of the returned mask.
    Returns:
        (nW, wh*ww, wh*ww) with 0 (allowed) / ``MASK_VALUE`` (forbidden), windows in row-major order of the
        padded, rolled map; None when nothing needs masking.
    """
    h, w = size
    wh, ww = window
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
    has_pad = mask_padding and (hp != h or wp != w)
    if not any(shift) and not has_pad:
        return None
    labels = torch.zeros(hp, wp, dtype=torch.long, device=device)
    if any(shift):
        # Three bands per axis in rolled coordinates: untouched, window-edge, wrapped-around (Swin's scheme).
        bands_h = ((0, hp - wh), (hp - wh, hp - shift[0]), (hp - shift[0], hp)) if shift[0] else ((0, hp),)
        bands_w = ((0, wp - ww), (wp - ww, wp - shift[1]), (wp - shift[1], wp)) if shift[1] else ((0, wp),)
        for i, (h0, h1) in enumerate(bands_h):
            for j, (w0, w1) in enumerate(bands_w):
                labels[h0:h1, w0:w1] = i * 3 + j
    if has_pad:
        pad = torch.ones(hp, wp, dtype=torch.bool, device=device)
        pad[:h, :w] = False
        pad = torch.roll(pad, shifts=(-shift[0], -shift[1]), dims=(0, 1))
        labels = labels.masked_fill(pad, _PAD_LABEL)
    windows = labels.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    different = windows.unsqueeze(1) != windows.unsqueeze(2)
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill(different, MASK_VALUE)


def shifted_window_attention(
    x: torch.Tensor,
    attn: WindowAttention,
    target_shift: Tuple[int, int],
    mask_padding: bool = True,
) -> torch.Tensor:
    """(S)W-MSA on a map of any size.

    Args:
        x: (B, H, W, C) tokens (already layer-normed).
        attn: a timm ``WindowAttention``; its ``window_size`` sets the window.
        target_shift: (sh, sw) shift of a shifted block, (0, 0) for a regular one.
        mask_padding: forbid attending to the padding added to reach a window multiple.
    Returns:
        (B, H, W, C).
    """
    b, h, w, c = x.shape
    wh, ww = attn.window_size
    shift = window_shift((h, w), (wh, ww), tuple(target_shift))
    pad_h, pad_w = (-h) % wh, (-w) % ww
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    mask = window_attention_mask((h, w), (wh, ww), shift, mask_padding, x.device, x.dtype)
    windows = x.view(b, hp // wh, wh, wp // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)
    windows = attn(windows, mask=mask)
    x = windows.view(b, hp // wh, wp // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    if any(shift):
        x = torch.roll(x, shifts=shift, dims=(1, 2))
    return x[:, :h, :w, :]


def run_swin_block(block: nn.Module, x: torch.Tensor, mask_padding: bool = True) -> torch.Tensor:
    """Pre-LN Swin block: ``x + Attn(LN(x))`` then ``+ MLP(LN(.))`` (paper Eq. 3, standard residual form).

    Args:
        block: a module with ``norm1, attn (timm WindowAttention), drop_path1, norm2, mlp, drop_path2`` and
            ``target_shift_size`` — timm's ``SwinTransformerBlock`` or :class:`SwinBlock`.
        x: (B, H, W, C) tokens, any H, W.
        mask_padding: see :func:`shifted_window_attention`.
    Returns:
        (B, H, W, C).
    """
    x = x + block.drop_path1(
        shifted_window_attention(block.norm1(x), block.attn, block.target_shift_size, mask_padding)
    )
    return x + block.drop_path2(block.mlp(block.norm2(x)))


class SwinBlock(nn.Module):
    """A Swin Transformer block (W-MSA or SW-MSA + MLP) for maps of any size (SR decoder, paper Eq. 3).

    Args:
        dim: channels C.
        num_heads: attention heads.
        window_size: square window side.
        shifted: SW-MSA block (shift ``window_size // 2`` where the map is larger than the window).
        mlp_ratio: MLP hidden width / C.
        drop_path: stochastic-depth rate.
        mask_padding: forbid attending to window padding.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 8,
        shifted: bool = False,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
        mask_padding: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SwinBlock: dim {dim} is not divisible by num_heads {num_heads}")
        self.mask_padding = mask_padding
        half = window_size // 2 if shifted else 0
        self.target_shift_size = (half, half)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads=num_heads, window_size=window_size)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        return run_swin_block(self, x, self.mask_padding)
