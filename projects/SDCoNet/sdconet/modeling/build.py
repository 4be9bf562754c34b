"""Build an :class:`SDCoNet` (any ablation variant) from an :class:`SDCoNetConfig`."""

from __future__ import annotations

import math

from .backbone.swin_encoder import SwinEncoder
from .config import SDCoNetConfig
from .dino.detector import DINODetector
from .sdconet import SDCoNet
from .sr.decoder import SRDecoder

#: The background-embedding tables cover at least a 1024 x 1024 LR input at stride 8.
MIN_BACKGROUND_TABLE = 128
#: Stride of the finest detection level relative to the detector's input.
FINEST_DETECTION_STRIDE = 8


def _swin(cfg: SDCoNetConfig, img_size) -> SwinEncoder:
    s = cfg.swin
    return SwinEncoder(
        embed_dim=s.embed_dim,
        depths=tuple(s.depths),
        num_heads=tuple(s.num_heads),
        window_size=s.window_size,
        mlp_ratio=s.mlp_ratio,
        drop_path_rate=s.drop_path_rate,
        img_size=tuple(img_size),
    )


def build_sdconet(cfg: SDCoNetConfig) -> SDCoNet:
    """Instantiate the model described by ``cfg`` (variants: dino, dino_saliency, dino_sr, sdconet, serial)."""
    cfg.validate()
    lr_size = tuple(cfg.swin.img_size)
    det_size = tuple(v * cfg.sr.scale for v in lr_size) if cfg.serial else lr_size
    encoder = _swin(cfg, det_size)
    sr_encoder = _swin(cfg, lr_size) if cfg.serial else None
    sr_decoder = None
    if cfg.use_sr:
        sr_channels = (sr_encoder or encoder).out_channels
        r = cfg.sr
        sr_decoder = SRDecoder(
            encoder_channels=tuple(sr_channels),
            scale=r.scale,
            bottleneck_channels=r.bottleneck_channels,
            depths=tuple(r.depths),
            num_heads=tuple(r.num_heads),
            window_size=r.window_size,
            mlp_ratio=r.mlp_ratio,
            drop_path_rate=r.drop_path_rate,
        )
    table = max(MIN_BACKGROUND_TABLE, math.ceil(max(det_size) / FINEST_DETECTION_STRIDE))
    detector = DINODetector(
        in_channels=tuple(encoder.out_channels[1:]),
        num_classes=cfg.num_classes,
        hidden_dim=cfg.hidden_dim,
        nheads=cfg.nheads,
        num_points=cfg.num_points,
        enc_layers=cfg.enc_layers,
        dec_layers=cfg.dec_layers,
        dim_feedforward=cfg.dim_feedforward,
        dropout=cfg.dropout,
        num_queries=cfg.num_queries,
        use_saliency=cfg.use_saliency,
        filter_mode=cfg.filter_mode,
        level_ratios=tuple(cfg.level_ratios),
        layer_ratios=tuple(cfg.layer_ratios),
        alpha_mode=cfg.alpha_mode,
        alpha_value=cfg.alpha_value,
        saliency_propagation=cfg.saliency_propagation,
        saliency_target=cfg.saliency_target,
        saliency_sigma=cfg.saliency_sigma,
        saliency_loss_weight=cfg.saliency_loss_weight,
        saliency_level_bounds=tuple(cfg.saliency_level_bounds),
        saliency_always_mark_center=cfg.saliency_always_mark_center,
        # level bounds are in HR px: the detector sees the LR input (x s), the serial one the SR image (x 1)
        saliency_range_scale=1.0 if cfg.serial else float(cfg.sr.scale),
        value_mode=cfg.value_mode,
        background_mode=cfg.background_mode,
        dn_number=cfg.dn_number,
        label_noise_ratio=cfg.label_noise_ratio,
        box_noise_scale=cfg.box_noise_scale,
        dn_max_gt=cfg.dn_max_gt,
        weight_class=cfg.weight_class,
        weight_bbox=cfg.weight_bbox,
        weight_giou=cfg.weight_giou,
        cost_class=cfg.cost_class,
        cost_bbox=cfg.cost_bbox,
        cost_giou=cfg.cost_giou,
        focal_alpha=cfg.focal_alpha,
        focal_gamma=cfg.focal_gamma,
        max_level_size=table,
    )
    return SDCoNet(
        encoder=encoder,
        detector=detector,
        sr_decoder=sr_decoder,
        sr_encoder=sr_encoder,
        sr_scale=cfg.sr.scale,
        sr_loss_weight=cfg.sr.loss_weight,
        topk_test=cfg.topk_test,
    )
