"""The project's Swin-T encoder as a detectron2 ``Backbone``, with yacs builders for detectron2's own detectors.

detectron2 ships a ``SwinTransformer`` (``modeling/backbone/swin.py``) but registers no yacs builder for it and has
no Swin-T weights under its ``detectron2://`` names. The baselines use the *same* encoder SDCoNet uses
(:class:`sdconet.modeling.backbone.swin_encoder.SwinEncoder`, timm's blocks, the same output LayerNorms and window
padding), filled from the same ImageNet checkpoint (``MODEL.SWIN.PRETRAINED``: the official
``swin_tiny_patch4_window7_224.pth``, a timm checkpoint, or a timm hub name) by
:func:`sdconet.modeling.backbone.swin_weights.load_swin_weights`. Holding the backbone fixed then really compares the
detectors.

Registered in ``BACKBONE_REGISTRY`` (``MODEL.BACKBONE.NAME``):

* ``build_sdconet_swin_backbone``: the Swin encoder alone (outputs ``MODEL.SWIN.OUT_FEATURES``);
* ``build_sdconet_swin_fpn_backbone``: + FPN with a max-pool P6 (Faster / Cascade R-CNN, like
  ``build_resnet_fpn_backbone``); ``MODEL.FPN.IN_FEATURES`` e.g. ``["stage1", "stage2", "stage3", "stage4"]``;
* ``build_sdconet_swin_retinanet_fpn_backbone``: + FPN with P6/P7 convs on the last input stage (RetinaNet, like
  ``build_retinanet_resnet_fpn_backbone``); ``MODEL.FPN.IN_FEATURES`` e.g. ``["stage2", "stage3", "stage4"]``.

Inputs are RGB normalised with the ImageNet statistics (``INPUT.FORMAT RGB``, ``MODEL.PIXEL_MEAN/STD``); the
builders refuse other pixel formats.
"""

from __future__ import annotations

import logging
from typing import Dict, Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from sdconet.modeling.backbone.swin_encoder import SwinEncoder
from sdconet.modeling.backbone.swin_weights import load_swin_weights

__all__ = [
    "SWIN_OUTPUTS",
    "SwinBackbone",
    "build_sdconet_swin_backbone",
    "build_sdconet_swin_fpn_backbone",
    "build_sdconet_swin_retinanet_fpn_backbone",
]

logger = logging.getLogger(__name__)

#: Output names: the patch embedding and the 4 stages.
SWIN_OUTPUTS = ("patch", "stage1", "stage2", "stage3", "stage4")


class SwinBackbone(Backbone):
    """detectron2 ``Backbone`` around :class:`SwinEncoder` (parameters under ``encoder.``).

    Args:
        encoder: the Swin encoder.
        out_features: names to return, from :data:`SWIN_OUTPUTS`: ``"patch"`` (patch embedding, stride p,
            ``embed_dim`` channels) and ``"stage1"``..``"stage4"`` (strides p, 2p, 4p, 8p; each after its LayerNorm).

    ``forward(x)``: (B, 3, H, W) normalised RGB, H and W multiples of :attr:`size_divisibility` (detectron2's
    ``ImageList`` pads to it) -> ``{name: (B, C, H/stride, W/stride)}``.
    """

    def __init__(self, encoder: SwinEncoder, out_features: Sequence[str] = SWIN_OUTPUTS[1:]) -> None:
        super().__init__()
        out_features = list(out_features)
        unknown = [f for f in out_features if f not in SWIN_OUTPUTS]
        if unknown or not out_features:
            raise ValueError(
                f"SwinBackbone: out_features {out_features} must be a non-empty subset of {list(SWIN_OUTPUTS)}"
            )
        self.encoder = encoder
        self._out_features = out_features
        self._out_feature_strides = {"patch": encoder.patch_size}
        self._out_feature_channels = {"patch": encoder.embed_dim}
        for i, (stride, channels) in enumerate(zip(encoder.strides, encoder.out_channels)):
            self._out_feature_strides[f"stage{i + 1}"] = stride
            self._out_feature_channels[f"stage{i + 1}"] = channels

    @property
    def size_divisibility(self) -> int:
        return self.encoder.size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        enc = self.encoder(x)
        feats = {"patch": enc["patch"], **{f"stage{i + 1}": s for i, s in enumerate(enc["stages"])}}
        return {name: feats[name] for name in self._out_features}


def _check_input(cfg, input_shape: ShapeSpec) -> None:
    if input_shape.channels != 3:
        raise ValueError(
            f"Swin backbone: expects 3 input channels (MODEL.PIXEL_MEAN), got {input_shape.channels}"
        )
    if cfg.INPUT.FORMAT != "RGB":
        raise ValueError(
            f"Swin backbone: INPUT.FORMAT must be 'RGB' (ImageNet Swin weights expect RGB with the ImageNet "
            f"mean/std in MODEL.PIXEL_MEAN/PIXEL_STD), got '{cfg.INPUT.FORMAT}'"
        )


@BACKBONE_REGISTRY.register()
def build_sdconet_swin_backbone(cfg, input_shape: ShapeSpec) -> SwinBackbone:
    """The Swin encoder from ``MODEL.SWIN.*``, with ``MODEL.SWIN.PRETRAINED`` loaded when set."""
    _check_input(cfg, input_shape)
    sw = cfg.MODEL.SWIN
    encoder = SwinEncoder(
        embed_dim=sw.EMBED_DIM,
        depths=tuple(sw.DEPTHS),
        num_heads=tuple(sw.NUM_HEADS),
        window_size=sw.WINDOW_SIZE,
        mlp_ratio=sw.MLP_RATIO,
        drop_path_rate=sw.DROP_PATH_RATE,
        img_size=tuple(sw.IMG_SIZE),
    )
    if sw.PRETRAINED:
        report = load_swin_weights(encoder, sw.PRETRAINED)
        logger.info(
            "Swin backbone: loaded %d tensors from %s (%s layout)",
            len(report["loaded"]),
            report["source"],
            report["layout"],
        )
    return SwinBackbone(encoder, sw.OUT_FEATURES)


def _fpn(cfg, bottom_up: SwinBackbone, top_block) -> FPN:
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def _check_fpn_inputs(cfg, bottom_up: SwinBackbone) -> None:
    missing = [f for f in cfg.MODEL.FPN.IN_FEATURES if f not in bottom_up.output_shape()]
    if missing:
        raise ValueError(
            f"Swin FPN backbone: MODEL.FPN.IN_FEATURES {list(cfg.MODEL.FPN.IN_FEATURES)} names {missing}, which "
            f"MODEL.SWIN.OUT_FEATURES {list(cfg.MODEL.SWIN.OUT_FEATURES)} does not output"
        )


@BACKBONE_REGISTRY.register()
def build_sdconet_swin_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """Swin encoder + FPN + max-pool P6 (the R-CNN family's ``build_resnet_fpn_backbone`` with Swin)."""
    bottom_up = build_sdconet_swin_backbone(cfg, input_shape)
    _check_fpn_inputs(cfg, bottom_up)
    return _fpn(cfg, bottom_up, LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_sdconet_swin_retinanet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """Swin encoder + FPN + P6/P7 convs on the last FPN input stage (``build_retinanet_resnet_fpn_backbone``)."""
    bottom_up = build_sdconet_swin_backbone(cfg, input_shape)
    _check_fpn_inputs(cfg, bottom_up)
    last = cfg.MODEL.FPN.IN_FEATURES[-1]
    top = LastLevelP6P7(bottom_up.output_shape()[last].channels, cfg.MODEL.FPN.OUT_CHANNELS, in_feature=last)
    return _fpn(cfg, bottom_up, top)
