"""Learnable background embedding B_ij = Concat(R_i, C_j) for tokens a pruned encoder layer skips (Eq. 8)."""

from __future__ import annotations

import torch
from torch import nn

from ..level_shapes import Shapes, as_shape_list


class BackgroundEmbedding(nn.Module):
    """Row and column tables, shared by all levels; ``B[i, j] = [R_i || C_j]`` (paper order: row first).

    Args:
        dim: token dimension (even); each table holds ``dim // 2`` channels.
        max_rows, max_cols: table lengths = the largest level height/width supported. 128 covers a 1024x1024 LR
            input at stride 8 (1024 / 8); a larger map raises a clear error.
    """

    def __init__(self, dim: int = 256, max_rows: int = 128, max_cols: int = 128) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"BackgroundEmbedding: dim must be even, got {dim}")
        self.row = nn.Embedding(max_rows, dim // 2)
        self.col = nn.Embedding(max_cols, dim // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.row.weight)
        nn.init.xavier_uniform_(self.col.weight)

    def forward(self, spatial_shapes: Shapes) -> torch.Tensor:
        """Embeddings of every token of every level, flattened level by level (row-major).

        Args:
            spatial_shapes: (L, 2) long, (H_l, W_l) per level, or L pairs of ints.
        Returns:
            (S, dim) with S = sum H_l * W_l.
        """
        out = []
        for h, w in as_shape_list(spatial_shapes):
            if h > self.row.num_embeddings or w > self.col.num_embeddings:
                raise ValueError(
                    f"BackgroundEmbedding: level of {h}x{w} tokens exceeds the tables "
                    f"({self.row.num_embeddings}x{self.col.num_embeddings}); build the model with larger "
                    "max_rows/max_cols (input too large)"
                )
            rows = self.row.weight[:h, None, :].expand(h, w, -1)
            cols = self.col.weight[None, :w, :].expand(h, w, -1)
            out.append(torch.cat([rows, cols], dim=-1).reshape(h * w, -1))
        return torch.cat(out, dim=0)
