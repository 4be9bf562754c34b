"""A small multi-layer perceptron (the DETR box head)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them.

    Args:
        input_dim: channels in. hidden_dim: channels of the hidden layers. output_dim: channels out.
        num_layers: number of ``nn.Linear`` layers (>= 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP: num_layers must be >= 1, got {num_layers}")
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., input_dim) -> (..., output_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class FeedForward(nn.Module):
    """Transformer FFN with a post-norm residual: ``LN(x + W2 · drop(ReLU(W1 x)))`` (DINO / Deformable-DETR).

    Args:
        dim: token channels. hidden_dim: FFN width (2048 in DINO). dropout: dropout probability.
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        return self.norm(x + self.dropout(self.linear2(self.dropout(torch.relu(self.linear1(x))))))
