"""detectron2's own detectors (the baseline configs) for ``tools/benchmark.py``: build them and call them on LR images.

The tool measures them beside SDCoNet in one run (same process, interleaved timing). Each model is built from its
baseline config under ``configs/baselines`` (the NWPU file; the dataset only changes the data), randomly initialised
(no ImageNet download), with the LR input size and the class count given, in eval mode. At inference a ``... + SR``
config *is* its stock detector (the SR branch does not run), so only the stock detectors are listed.

Random weights and the MSRA R-50 input scaling (BGR minus the mean, std 1: pixel values up to +-130) give activations
~60x too large, so the random RPN regresses degenerate boxes that NMS collapses to a handful of proposals, and the
R-CNN heads would be timed and counted on almost nothing. The R50 builds here therefore divide by the ImageNet std
(the same operations, so the same FLOPs): the random RPN then keeps its full budget (``POST_NMS_TOPK_TEST`` 1000
proposals), as a trained one does.

A call is the detectron2 inference of a list of ``{"image": (3, h, w) 0-255}`` dicts in the backbone's pixel format:
normalisation, padding, backbone, heads and postprocessing (NMS, ``detector_postprocess``), the counterpart of
SDCoNet's timed call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from sdconet.modeling.constants import PIXEL_STD

from .config import load_cfg
from .sr_branch import build_model

__all__ = ["BASELINES", "BaselineOutputs", "baseline_inputs", "build_baseline", "baseline_config_path"]

#: benchmark name -> (baseline config under configs/baselines, description).
BASELINES: Dict[str, Tuple[str, str]] = {
    "faster-r50": ("faster_rcnn_R50_FPN_x2_nwpu.yaml", "Faster R-CNN R50-FPN (detectron2)"),
    "retinanet-r50": ("retinanet_R50_FPN_x2_nwpu.yaml", "RetinaNet R50-FPN (detectron2)"),
    "cascade-r50": ("cascade_rcnn_R50_FPN_x2_nwpu.yaml", "Cascade R-CNN R50-FPN (detectron2)"),
    "faster-swint": ("faster_rcnn_swinT_FPN_x2_nwpu.yaml", "Faster R-CNN Swin-T-FPN (detectron2 + our Swin-T)"),
    "retinanet-swint": ("retinanet_swinT_FPN_x2_nwpu.yaml", "RetinaNet Swin-T-FPN (detectron2 + our Swin-T)"),
    "cascade-swint": ("cascade_rcnn_swinT_FPN_x2_nwpu.yaml", "Cascade R-CNN Swin-T-FPN (detectron2 + our Swin-T)"),
}

_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "baselines"


def baseline_config_path(name: str) -> Path:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline '{name}'; known: {sorted(BASELINES)}")
    return _CONFIGS / BASELINES[name][0]


def build_baseline(name: str, size: int, *, num_classes: int = 10, device: str = "cpu") -> nn.Module:
    """The baseline ``name`` for square LR inputs of side ``size``, random init, eval mode, on ``device``."""
    opts = [
        "MODEL.WEIGHTS", "", "MODEL.SWIN.PRETRAINED", "", "MODEL.DEVICE", str(device),
        "MODEL.SWIN.IMG_SIZE", f"[{size}, {size}]",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes), "MODEL.RETINANET.NUM_CLASSES", str(num_classes),
    ]  # fmt: skip
    cfg = load_cfg(str(baseline_config_path(name)), opts)
    if cfg.INPUT.FORMAT == "BGR" and list(cfg.MODEL.PIXEL_STD) == [1.0, 1.0, 1.0]:
        cfg.MODEL.PIXEL_STD = list(PIXEL_STD)[::-1]  # random weights need unit-scale inputs (module docstring)
    cfg.freeze()
    model = build_model(cfg).eval()
    model.input_format = cfg.INPUT.FORMAT
    return model


def baseline_inputs(images: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
    """(B, 3, H, W) images on the 0-255 scale -> detectron2's list of input dicts (output frame = input size)."""
    return [{"image": img} for img in images]


class BaselineOutputs(nn.Module):
    """A detectron2 detector as ``images (B, 3, H, W) 0-255 -> (boxes, scores, classes[, SR images])`` tensors.

    For tracing FLOP counters, which only keep the work that reaches the returned tensors: the SR images are returned
    when the model produces them (an SR add-on with ``sr_eval``), so their cost is counted then.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        out = self.model(baseline_inputs(images))
        inst = [o["instances"] for o in out]
        sr = [o["sr_image"] for o in out if "sr_image" in o]
        return (
            torch.cat([i.pred_boxes.tensor for i in inst]),
            torch.cat([i.scores for i in inst]),
            torch.cat([i.pred_classes for i in inst]),
            *sr,
        )
