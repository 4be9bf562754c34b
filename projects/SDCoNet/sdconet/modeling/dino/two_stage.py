"""Encoder proposals for DINO's mixed query selection (two-stage)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..level_shapes import Shapes, as_shape_list

#: Proposal box side at level l is BASE_PROPOSAL_SIZE * 2**l (of the image), as in DINO / Deformable-DETR.
BASE_PROPOSAL_SIZE = 0.05
#: Proposals whose coordinates leave (MARGIN, 1 - MARGIN) are invalid (upstream value).
PROPOSAL_MARGIN = 0.01


def token_centers(spatial_shapes: Shapes, valid_hw: torch.Tensor) -> torch.Tensor:
    """Centre of every token in the valid-image frame.

    Args:
        spatial_shapes: (L, 2) long (H_l, W_l) or L pairs of ints. valid_hw: (B, L, 2) valid (h, w) token counts per level.
    Returns:
        (B, S, 2) ``((j + 0.5) / w_valid, (i + 0.5) / h_valid)``; padded tokens get values > 1.
    """
    out = []
    for lvl, (h, w) in enumerate(as_shape_list(spatial_shapes)):
        ys = torch.arange(h, device=valid_hw.device, dtype=torch.float32) + 0.5
        xs = torch.arange(w, device=valid_hw.device, dtype=torch.float32) + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        vh = valid_hw[:, lvl, 0].float().clamp(min=1)[:, None]
        vw = valid_hw[:, lvl, 1].float().clamp(min=1)[:, None]
        out.append(torch.stack([grid_x.reshape(1, -1) / vw, grid_y.reshape(1, -1) / vh], dim=-1))
    return torch.cat(out, dim=1)


def encoder_proposals(
    memory: torch.Tensor, padding_mask: torch.Tensor, spatial_shapes: Shapes, valid_hw: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One default box per token and the memory prepared for the encoder heads.

    Args:
        memory: (B, S, D) encoder output. padding_mask: (B, S) bool True = pad.
        spatial_shapes: (L, 2) long or L pairs of ints. valid_hw: (B, L, 2) valid token counts.
    Returns:
        memory_in: (B, S, D) memory with padded/invalid tokens zeroed;
        proposals_unsig: (B, S, 4) cxcywh in logit space, V-frame; invalid tokens get 0 (a neutral box; their
            selection score is set to -inf by the caller, so they are only used when nothing else is left);
        valid: (B, S) bool, tokens with a usable proposal.
    """
    centers = token_centers(spatial_shapes, valid_hw)
    sizes = []
    for lvl, (h, w) in enumerate(as_shape_list(spatial_shapes)):
        sizes.append(torch.full((h * w,), BASE_PROPOSAL_SIZE * 2.0**lvl, device=memory.device))
    wh = torch.cat(sizes)[None, :, None].expand(centers.shape[0], -1, 2)
    proposals = torch.cat([centers, wh], dim=-1)
    valid = ((proposals > PROPOSAL_MARGIN) & (proposals < 1 - PROPOSAL_MARGIN)).all(-1) & ~padding_mask
    safe = proposals.clamp(PROPOSAL_MARGIN, 1 - PROPOSAL_MARGIN)
    proposals_unsig = torch.log(safe / (1 - safe)).masked_fill(~valid[..., None], 0.0)
    memory_in = memory.masked_fill(~valid[..., None], 0.0)
    return memory_in, proposals_unsig.to(memory.dtype), valid


class ProposalMemory(nn.Module):
    """``Linear + LayerNorm`` applied to the memory before the encoder heads (DINO's enc_output)."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, S, D)."""
        return self.norm(self.linear(memory))
