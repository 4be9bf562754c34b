"""A peer detector for side-by-side speed ratios: Deformable-DETR from the optional ``transformers`` package.

The peer is randomly initialised (no download) with a Swin-T backbone (stages 2-4, strides 8/16/32, plus the
extra stride-64 level) and the same width, heads, levels, points, layers and queries as the SDCoNet it is
compared with. Its deformable attention is transformers' pure-PyTorch ``grid_sample`` implementation (custom
kernels disabled), so the comparison pits two pure-PyTorch deformable-attention paths against each other.

``transformers`` is an optional extra (``pip install -e ".[peer]"``); nothing here imports it at module load.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Backbone stages fed to the peer's transformer (Swin stages 2-4: strides 8, 16, 32 of the input).
PEER_BACKBONE_STAGES = ("stage2", "stage3", "stage4")


def transformers_version() -> Optional[str]:
    """The installed ``transformers`` version, or None when the package is absent."""
    if importlib.util.find_spec("transformers") is None:
        return None
    import transformers

    return str(transformers.__version__)


def peer_available() -> bool:
    """Whether the peer can be built (``transformers`` installed)."""
    return transformers_version() is not None


@dataclass
class PeerSpec:
    """Size of the Deformable-DETR peer (defaults: SDCoNet's detector at the paper's setting, FFN 2048).

    Attributes:
        image_size: input side the Swin backbone is built for (other sizes still run).
        embed_dim, depths, num_heads_swin, window_size, mlp_ratio: the Swin backbone.
        hidden_dim, nheads, num_levels, num_points, enc_layers, dec_layers, ffn_dim, num_queries: the
            deformable transformer (``ffn_dim`` for both encoder and decoder layers).
        num_classes: classes of the (sigmoid) classification head.
        two_stage: encoder proposals pick the queries (as DINO's query selection) with iterative box
            refinement; False = plain Deformable-DETR with learned queries.
    """

    image_size: int = 256
    embed_dim: int = 96
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads_swin: Tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    hidden_dim: int = 256
    nheads: int = 8
    num_levels: int = 4
    num_points: int = 4
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 2048
    num_queries: int = 300
    num_classes: int = 10
    two_stage: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def peer_spec_from_config(
    cfg,
    image_size: int,
    *,
    ffn_dim: Optional[int] = None,
    num_queries: Optional[int] = None,
    two_stage: bool = True,
) -> PeerSpec:
    """The peer matching an :class:`~sdconet.modeling.config.SDCoNetConfig` (same sizes unless overridden).

    Args:
        cfg: the SDCoNet configuration.
        image_size: LR input side.
        ffn_dim: feed-forward width (default: ``cfg.dim_feedforward``).
        num_queries: decoder queries (default: ``cfg.num_queries``).
        two_stage: see :class:`PeerSpec`.
    """
    s = cfg.swin
    return PeerSpec(
        image_size=int(image_size),
        embed_dim=s.embed_dim,
        depths=tuple(s.depths),
        num_heads_swin=tuple(s.num_heads),
        window_size=s.window_size,
        mlp_ratio=s.mlp_ratio,
        hidden_dim=cfg.hidden_dim,
        nheads=cfg.nheads,
        num_levels=cfg.num_feature_levels,
        num_points=cfg.num_points,
        enc_layers=cfg.enc_layers,
        dec_layers=cfg.dec_layers,
        ffn_dim=int(ffn_dim if ffn_dim is not None else cfg.dim_feedforward),
        num_queries=int(num_queries if num_queries is not None else cfg.num_queries),
        num_classes=cfg.num_classes,
        two_stage=two_stage,
    )


class PeerInference(nn.Module):
    """Deformable-DETR inference with SDCoNet's input conventions.

    ``forward(images (B, 3, H, W) normalised RGB, pixel_mask (B, H, W) bool, True = padding)`` returns
    ``(logits (B, K, C), boxes (B, K, 4) sigmoid cxcywh)``; transformers' own mask convention (1 = valid) is
    translated here.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, pixel_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=images, pixel_mask=(~pixel_mask).long())
        return out.logits, out.pred_boxes


def build_peer(spec: PeerSpec) -> PeerInference:
    """Build the randomly initialised transformers Deformable-DETR described by ``spec``.

    Raises:
        ImportError: when ``transformers`` is not installed (``pip install -e ".[peer]"``).
    """
    if not peer_available():
        raise ImportError(
            "build_peer: the peer needs the optional 'transformers' package (pip install -e '.[peer]')"
        )
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection, SwinConfig

    swin = SwinConfig(
        image_size=spec.image_size,
        embed_dim=spec.embed_dim,
        depths=list(spec.depths),
        num_heads=list(spec.num_heads_swin),
        window_size=spec.window_size,
        mlp_ratio=spec.mlp_ratio,
        out_features=list(PEER_BACKBONE_STAGES),
    )
    config = DeformableDetrConfig(
        backbone_config=swin,
        use_pretrained_backbone=False,
        num_labels=spec.num_classes,
        d_model=spec.hidden_dim,
        encoder_attention_heads=spec.nheads,
        decoder_attention_heads=spec.nheads,
        num_feature_levels=spec.num_levels,
        encoder_n_points=spec.num_points,
        decoder_n_points=spec.num_points,
        encoder_layers=spec.enc_layers,
        decoder_layers=spec.dec_layers,
        encoder_ffn_dim=spec.ffn_dim,
        decoder_ffn_dim=spec.ffn_dim,
        num_queries=spec.num_queries,
        two_stage=spec.two_stage,
        two_stage_num_proposals=spec.num_queries,
        with_box_refine=spec.two_stage,
        dropout=0.0,
        disable_custom_kernels=True,
    )
    model = DeformableDetrForObjectDetection(config)
    model.eval()
    logger.info(
        "peer Deformable-DETR: %.1f M parameters, %s", sum(p.numel() for p in model.parameters()) / 1e6, spec
    )
    return PeerInference(model)
