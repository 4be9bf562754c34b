"""Saliency score prediction with top-down propagation (paper Sec. III-D-1, Eq. 5-6).

One lightweight predictor, shared by all feature levels, turns every feature token into a saliency logit:

    S_l = MLP_2(concat(local, broadcast(mean_valid(global)))),  [local | global] = MLP_1(F_l)     (Eq. 5)

and a top-down pathway refines the fine levels with the coarse ones (processed coarsest first):

    "paper"    S_{l-1} = alpha_{l-1} * UP(S_l) + MLP(F_{l-1})                                        (Eq. 6)
    "official" m_{l-1} <- m_{l-1} + m_{l-1} * UP(S_l) * alpha_{l-1};  S_{l-1} = MLP(m_{l-1})
               (Salience-DETR / official SDCoNet code; the modulated tokens are used for scoring only)

Conventions (see docs/ARCHITECTURE.md):

* Levels are ordered finest first (stride 8, 16, 32, 64); tokens are row-major inside a level.
* ``valid_masks`` are bool ``(B, H_l, W_l)`` with **True = VALID token** (the opposite of the pixel padding
  mask; pass ``~padding_mask`` of a level). Padding is at the bottom/right, so each image's valid tokens of a
  level form the top-left rectangle ``[0:h_valid, 0:w_valid]``.
* Padded tokens never influence valid outputs: the global average is taken over valid tokens only, and before
  a coarse map is upsampled its padded cells are overwritten with the nearest valid cell (edge replication).
  That is exactly what bilinear upsampling with border clamping sees for the same image without padding, so
  with the usual integer stride ratios the result is batch-size invariant (no zero or padded value leaks into
  boundary tokens).
* ``UP`` is bilinear with ``align_corners=False``. With ``align_corners=True`` the sampling positions depend
  on the padded canvas size, i.e. on the other images in the batch. When the fine grid is an integer multiple
  ``r`` of the coarse grid (up to the ceil of a stride-2 conv), the upsampling uses the exact factor ``r`` and
  crops, so a coarse cell always covers the same ``r`` fine cells.
"""

from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..level_shapes import Shapes, as_shape_list

logger = logging.getLogger(__name__)

ALPHA_MODES = ("learnable", "fixed", "none")
PROPAGATION_MODES = ("paper", "official")
#: Official Salience-DETR / SDCoNet initialisation of the learnable alpha: U(-0.3, 0.3).
OFFICIAL_ALPHA_INIT_RANGE = 0.3


def level_valid_hw(valid_mask: torch.Tensor) -> torch.Tensor:
    """Number of valid rows and columns per image for one level.

    Args:
        valid_mask: bool ``(B, H, W)``, True = valid token; valid tokens form a top-left rectangle.

    Returns:
        long ``(B, 2)`` holding ``(h_valid, w_valid)``.
    """
    h = valid_mask.any(dim=2).sum(dim=1)
    w = valid_mask.any(dim=1).sum(dim=1)
    return torch.stack([h, w], dim=1)


def fill_padding_from_border(x: torch.Tensor, valid_hw: torch.Tensor) -> torch.Tensor:
    """Replace padded cells by the nearest valid cell (edge replication of the valid top-left rectangle).

    Args:
        x: ``(B, H, W)`` map.
        valid_hw: long ``(B, 2)`` valid ``(h, w)`` per image.

    Returns:
        ``(B, H, W)`` map equal to ``x`` on the valid rectangle; padded values are copies of valid ones, so
        they carry no information from padded features. Differentiable (a gather).
    """
    b, h, w = x.shape
    last_row = (valid_hw[:, 0] - 1).clamp(min=0)
    last_col = (valid_hw[:, 1] - 1).clamp(min=0)
    rows = torch.minimum(torch.arange(h, device=x.device)[None, :], last_row[:, None])  # (B, H)
    cols = torch.minimum(torch.arange(w, device=x.device)[None, :], last_col[:, None])  # (B, W)
    x = x.gather(1, rows[:, :, None].expand(b, h, w))
    return x.gather(2, cols[:, None, :].expand(b, h, w))


def _integer_factor(fine: int, coarse: int) -> Optional[int]:
    """Integer r with ceil(fine / r) == coarse (a stride-r downsampling of the fine grid), else None."""
    r = max(1, round(fine / coarse))
    return r if (coarse - 1) * r < fine <= coarse * r else None


def upsample_bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling ``(B, H_c, W_c) -> (B, H_f, W_f)`` with ``align_corners=False``.

    Uses the exact integer factor (then crops) when the grids are related by a strided downsampling, so the
    mapping of fine to coarse cells does not depend on the padded canvas size; falls back to ``size=``
    otherwise.
    """
    hf, wf = int(size[0]), int(size[1])
    hc, wc = int(x.shape[-2]), int(x.shape[-1])  # plain ints also under jit tracing (FLOP counting)
    rh, rw = _integer_factor(hf, hc), _integer_factor(wf, wc)
    if rh is not None and rw is not None:
        up = F.interpolate(
            x[:, None],
            scale_factor=(float(rh), float(rw)),
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )
        return up[:, 0, :hf, :wf]
    return F.interpolate(x[:, None], size=(hf, wf), mode="bilinear", align_corners=False)[:, 0]


class SaliencyMLP(nn.Module):
    """The per-level saliency predictor of Eq. 5 (the official "MaskPredictor").

    MLP_1 = LayerNorm -> Linear(dim, hidden) -> GELU; the first ``hidden // 2`` channels are the local branch,
    the rest the global branch, which is averaged over the level's valid tokens and broadcast back; the
    concatenation goes through MLP_2 = Linear(hidden, hidden/2) -> GELU -> Linear(hidden/2, hidden/4) -> GELU
    -> Linear(., 1).

    Args:
        dim: input channels.
        hidden_dim: width of MLP_1 (and input width of MLP_2); must be a multiple of 4.
    """

    def __init__(self, dim: int = 256, hidden_dim: int = 256):
        super().__init__()
        if dim < 1 or hidden_dim < 4 or hidden_dim % 4 != 0:
            raise ValueError(
                f"SaliencyMLP: dim must be >= 1 and hidden_dim a positive multiple of 4 "
                f"(got dim={dim}, hidden_dim={hidden_dim})"
            )
        self.local_dim = hidden_dim // 2
        self.mlp1 = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU())
        self.mlp2 = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim // 2),
            nn.GELU(),
            nn.Linear(hidden_dim // 2, hidden_dim // 4),
            nn.GELU(),
            nn.Linear(hidden_dim // 4, 1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases (as the official code)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Score the tokens of one level.

        Args:
            x: ``(B, N, dim)`` tokens of one level.
            valid: bool ``(B, N)``, True = valid token.

        Returns:
            ``(B, N)`` logits (values at padded tokens are meaningless).
        """
        z = self.mlp1(x)
        local, glob = z[..., : self.local_dim], z[..., self.local_dim :]
        w = valid.to(glob.dtype)[..., None]
        mean = (glob * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp(min=1.0)
        fused = torch.cat([local, mean.expand_as(glob)], dim=-1)
        return self.mlp2(fused)[..., 0]


class SaliencyPredictor(nn.Module):
    """Multi-level saliency logits with top-down propagation (Eq. 5-6); one MLP shared by all levels.

    Args:
        dim: token channels (the detector's hidden dim).
        hidden_dim: predictor width (official 256: local/global halves of 128, then 128 -> 64 -> 1).
        num_levels: number of feature levels L; ``alpha`` has one entry per non-coarsest level.
        alpha_mode: ``"learnable"`` (nn.Parameter, paper default), ``"fixed"`` (non-persistent buffer holding
            ``alpha_value``) or ``"none"`` (alpha = 1, non-persistent buffer) — Table VII.
        alpha_value: the fixed alpha (paper: 0.5); also the default initial value of the learnable alpha.
        alpha_init: initial learnable alpha. ``None`` -> ``alpha_value`` (0.5: the learnable model starts from
            the paper's fixed-alpha model and the top-down prior enters with a positive sign); ``"uniform"``
            -> the official U(-0.3, 0.3), which can start with an inverted prior. Ignored unless
            ``alpha_mode="learnable"``.
        propagation: ``"paper"`` (Eq. 6, logits are summed) or ``"official"`` (Salience-DETR token
            modulation).

    ``alpha[l]`` (l = 0..L-2) weights the upsampled map of level ``l + 1`` when level ``l`` is computed.
    """

    def __init__(
        self,
        dim: int = 256,
        hidden_dim: int = 256,
        num_levels: int = 4,
        alpha_mode: str = "learnable",
        alpha_value: float = 0.5,
        alpha_init: Optional[Union[float, str]] = None,
        propagation: str = "paper",
    ):
        super().__init__()
        if alpha_mode not in ALPHA_MODES:
            raise ValueError(
                f"SaliencyPredictor: alpha_mode must be one of {ALPHA_MODES} (got {alpha_mode!r})"
            )
        if propagation not in PROPAGATION_MODES:
            raise ValueError(
                f"SaliencyPredictor: propagation must be one of {PROPAGATION_MODES} (got {propagation!r})"
            )
        if num_levels < 1:
            raise ValueError(f"SaliencyPredictor: num_levels must be >= 1 (got {num_levels})")
        if isinstance(alpha_init, str) and alpha_init != "uniform":
            raise ValueError(
                f"SaliencyPredictor: alpha_init must be a float, None or 'uniform' (got {alpha_init!r})"
            )
        self.num_levels = num_levels
        self.alpha_mode = alpha_mode
        self.alpha_value = float(alpha_value)
        self.alpha_init = alpha_init
        self.propagation = propagation
        self.mlp = SaliencyMLP(dim, hidden_dim)
        n_alpha = max(num_levels - 1, 0)
        if alpha_mode == "learnable":
            self.alpha = nn.Parameter(torch.empty(n_alpha))
        else:
            value = self.alpha_value if alpha_mode == "fixed" else 1.0
            self.register_buffer("alpha", torch.full((n_alpha,), value), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.mlp.reset_parameters()
        if isinstance(self.alpha, nn.Parameter):
            with torch.no_grad():
                if self.alpha_init == "uniform":
                    self.alpha.uniform_(-OFFICIAL_ALPHA_INIT_RANGE, OFFICIAL_ALPHA_INIT_RANGE)
                else:
                    init = self.alpha_value if self.alpha_init is None else float(self.alpha_init)
                    self.alpha.fill_(init)

    def extra_repr(self) -> str:
        return f"num_levels={self.num_levels}, alpha_mode={self.alpha_mode}, propagation={self.propagation}"

    def forward(
        self,
        tokens: Union[Sequence[torch.Tensor], torch.Tensor],
        spatial_shapes: Shapes,
        valid_masks: Sequence[torch.Tensor],
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Predict per-level saliency logits.

        Args:
            tokens: list of L tensors ``(B, H_l*W_l, dim)`` (level features + position/level embedding, finest
                first, row-major), or the flattened ``(B, S, dim)`` sequence in the same order.
            spatial_shapes: long ``(L, 2)`` holding ``(H_l, W_l)``, or L pairs of Python ints.
            valid_masks: list of L bool ``(B, H_l, W_l)``, **True = valid token**, valid region top-left.

        Returns:
            ``(logit_maps, scores)``: ``logit_maps`` is a list of L ``(B, H_l, W_l)`` logits after propagation
            (finest first; padded cells are 0, supervise with ``saliency_loss``, which ignores them);
            ``scores`` is ``(B, S)`` with the same logits in token order and ``-inf`` at padded tokens (for
            ``select_tokens``).
        """
        shapes = as_shape_list(spatial_shapes)
        if len(shapes) != self.num_levels or len(valid_masks) != self.num_levels:
            raise ValueError(
                f"SaliencyPredictor: expected {self.num_levels} levels, got spatial_shapes with "
                f"{len(shapes)} "
                f"and valid_masks with {len(valid_masks)}"
            )
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.split([h * w for h, w in shapes], dim=1)
        if len(tokens) != self.num_levels:
            raise ValueError(
                f"SaliencyPredictor: expected {self.num_levels} token tensors, got {len(tokens)}"
            )
        for lvl, (tok, mask, (h, w)) in enumerate(zip(tokens, valid_masks, shapes)):
            if tok.shape[1] != h * w or tuple(mask.shape[1:]) != (h, w) or mask.shape[0] != tok.shape[0]:
                raise ValueError(
                    f"SaliencyPredictor: level {lvl}: tokens {tuple(tok.shape)} / "
                    f"valid_mask {tuple(mask.shape)} "
                    f"do not match spatial shape {(h, w)}"
                )

        maps: List[Optional[torch.Tensor]] = [None] * self.num_levels
        prev: Optional[torch.Tensor] = None  # refined logits of the next-coarser level, padding border-filled
        for lvl in range(self.num_levels - 1, -1, -1):
            h, w = shapes[lvl]
            valid = valid_masks[lvl].bool()
            x = tokens[lvl]
            b = x.shape[0]
            up = None if prev is None else upsample_bilinear(prev, (h, w)).reshape(b, h * w)
            if self.propagation == "official" and up is not None:
                x = x + x * (up * self.alpha[lvl].to(up.dtype))[..., None]
            s = self.mlp(x, valid.flatten(1))
            if self.propagation == "paper" and up is not None:
                s = s + self.alpha[lvl].to(s.dtype) * up
            s = s.reshape(b, h, w)
            maps[lvl] = s.masked_fill(~valid, 0.0)
            prev = fill_padding_from_border(s, level_valid_hw(valid))

        scores = torch.cat(
            [m.flatten(1).masked_fill(~v.bool().flatten(1), -math.inf) for m, v in zip(maps, valid_masks)],
            dim=1,
        )
        return maps, scores
