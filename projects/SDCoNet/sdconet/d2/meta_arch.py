"""The detectron2 meta-architecture ``SDCoNet``: the only place that translates d2 structures <-> core tensors.

Inputs (one dict per image, from :class:`~sdconet.d2.mapper.SDCoNetDatasetMapper`):

* ``image``: (3, h, w) uint8/float RGB, the LR model input (0-255);
* ``hr_image``: (3, s*h, s*w) RGB HR tile (the SR target) -- needed in training while the SR branch trains, and at
  evaluation when ``TEST.SR_EVAL.ENABLED``;
* ``instances``: training GT in the LR input frame (``gt_boxes`` absolute XYXY, ``gt_classes`` in [0, C));
* ``height``/``width``: the frame predictions are returned in (the HR tile's original size).

Batches are padded bottom/right with :class:`ImageList` to ``core.size_divisibility`` after normalisation (pad value
0 = the mean colour) and the padding mask (True = padded) is derived from ``ImageList.image_sizes`` in training and in
evaluation alike, so padded test batches are handled correctly.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import move_device_like
from detectron2.modeling import META_ARCH_REGISTRY, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from sdconet.modeling.backbone.swin_weights import load_swin_weights
from sdconet.modeling.build import build_sdconet

from .config import sdconet_config_from_cfg
from .hr_targets import stack_hr_targets

__all__ = ["SDCoNet"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class SDCoNet(nn.Module):
    """detectron2 wrapper around the framework-free core model (``self.core``).

    Args:
        core: the core model (``sdconet.modeling.build.build_sdconet``); parameter names of checkpoints carry the
            prefix ``core.``.
        pixel_mean, pixel_std: RGB normalisation, 0-255 scale (non-persistent buffers; they follow ``.to()``).
        sr_eval: in eval mode, also run the SR branch and return ``sr_image`` (variants with SR only).
        compile_mode: ``torch.compile`` the core's eval forward with this mode (``TEST.COMPILE``; None = eager,
            "auto" = reduce-overhead on CUDA, default on CPU). One static graph per padded batch shape
            (``fullgraph=True``); training is never compiled.
        compile_backend: the ``torch.compile`` backend (``TEST.COMPILE.BACKEND``).
    """

    @configurable
    def __init__(
        self,
        *,
        core: nn.Module,
        pixel_mean,
        pixel_std,
        sr_eval: bool = False,
        compile_mode: Optional[str] = None,
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        self.core = core
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        if self.pixel_mean.shape != (3, 1, 1) or self.pixel_std.shape != (3, 1, 1):
            raise ValueError(f"SDCoNet: pixel_mean/pixel_std need 3 values, got {pixel_mean} / {pixel_std}")
        self.sr_eval = bool(sr_eval) and bool(core.has_sr)
        self.compile_mode = compile_mode or None
        self.compile_backend = compile_backend
        self._compiled_eval = None
        if sr_eval and not core.has_sr:
            logger.warning("TEST.SR_EVAL.ENABLED ignored: this variant has no SR branch")

    @classmethod
    def from_config(cls, cfg) -> Dict:
        if cfg.INPUT.FORMAT != "RGB":
            raise ValueError(f"INPUT.FORMAT must be 'RGB' for SDCoNet (got '{cfg.INPUT.FORMAT}')")
        core = build_sdconet(sdconet_config_from_cfg(cfg))
        if cfg.MODEL.SWIN.PRETRAINED:
            for name in ("encoder", "sr_encoder"):
                if getattr(core, name, None) is not None:
                    report = load_swin_weights(getattr(core, name), cfg.MODEL.SWIN.PRETRAINED)
                    logger.info(
                        "Loaded %d %s tensors from %s (%s layout)",
                        len(report["loaded"]),
                        name,
                        report["source"],
                        report["layout"],
                    )
        return {
            "core": core,
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "sr_eval": cfg.TEST.SR_EVAL.ENABLED,
            "compile_mode": (cfg.TEST.COMPILE.MODE or "auto") if cfg.TEST.COMPILE.ENABLED else None,
            "compile_backend": cfg.TEST.COMPILE.BACKEND,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ----------------------------------------------------------------------------------------------- inputs
    def _normalise(self, img: torch.Tensor) -> torch.Tensor:
        img = move_device_like(img, self.pixel_mean).float()
        return (img - self.pixel_mean) / self.pixel_std

    @staticmethod
    def check_values(batched_inputs: List[Dict]) -> None:
        """Value checks at the host boundary (the core skips its own): finite floating-point images.

        Run on the inputs as the mapper made them (on the CPU: no device synchronisation); uint8 images are
        finite by construction. The padding mask is built from the image sizes, so its layout needs no check.
        """
        for i, x in enumerate(batched_inputs):
            for key in ("image", "hr_image"):
                t = x.get(key)
                if (
                    isinstance(t, torch.Tensor)
                    and t.is_floating_point()
                    and not bool(torch.isfinite(t).all())
                ):
                    raise ValueError(f"SDCoNet: '{x.get('file_name', i)}' {key} contains NaN or Inf values")

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalised LR batch padded to ``core.size_divisibility`` (``ImageList.image_sizes`` = unpadded sizes)."""
        images = [self._normalise(x["image"]) for x in batched_inputs]
        return ImageList.from_tensors(images, self.core.size_divisibility, pad_value=0.0)

    @staticmethod
    def padding_mask(images: ImageList) -> torch.Tensor:
        """(B, H, W) bool, True = padded pixel, from ``images.image_sizes``."""
        b, _, h, w = images.tensor.shape
        mask = torch.ones((b, h, w), dtype=torch.bool, device=images.tensor.device)
        for i, (ih, iw) in enumerate(images.image_sizes):
            mask[i, :ih, :iw] = False
        return mask

    def prepare_hr(self, batched_inputs: List[Dict], images: ImageList) -> torch.Tensor:
        """(B, 3, s*H, s*W) normalised HR batch aligned with the padded LR canvas (zero = mean padding)."""
        s = self.core.sr_scale
        b, _, h, w = images.tensor.shape
        hr, _ = stack_hr_targets(
            batched_inputs,
            images.image_sizes,
            s,
            (b, 3, s * h, s * w),
            images.tensor.device,
            self._normalise,
            "SDCoNet",
            "INPUT.LR_MODE 'real' has no HR target: use a variant without SR, or SOLVER.SR_START_EPOCH beyond the "
            "run, or disable TEST.SR_EVAL",
        )
        return hr.to(images.tensor.dtype)

    @staticmethod
    def prepare_targets(
        batched_inputs: List[Dict], images: ImageList, device
    ) -> List[Dict[str, torch.Tensor]]:
        """Instances (absolute XYXY, LR frame) -> ``{"labels", "boxes" cxcywh normalised to the unpadded image}``.

        The targets stay where the mapper made them (the CPU): the core validates them there, without a device
        synchronisation, and moves them to ``device`` itself (``sanitize_targets``).
        """
        targets = []
        for i, (x, (h, w)) in enumerate(zip(batched_inputs, images.image_sizes)):
            if "instances" not in x:
                raise ValueError(f"SDCoNet: training input {x.get('file_name', i)} has no 'instances'")
            inst = x["instances"]
            xyxy = inst.gt_boxes.tensor.float()
            scale = xyxy.new_tensor([w, h, w, h])
            x1, y1, x2, y2 = (xyxy / scale).unbind(-1)
            boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)
            targets.append({"labels": inst.gt_classes.long(), "boxes": boxes})
        return targets

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of weighted losses. Eval: ``[{"instances": Instances}]`` in each input's height/width."""
        self.check_values(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        mask = self.padding_mask(images)
        if self.training:
            targets = self.prepare_targets(batched_inputs, images, self.device)
            hr = self.prepare_hr(batched_inputs, images) if self.core.sr_enabled else None
            return self.core(images.tensor, mask, targets, hr_images=hr, check_values=False)
        return self.inference(batched_inputs, images, mask)

    def inference(self, batched_inputs: List[Dict], images: ImageList, mask: torch.Tensor) -> List[Dict]:
        if self.compile_mode is None:
            outputs = self.core(images.tensor, mask, return_sr=self.sr_eval, check_values=False)
        else:
            padded = self._eval_graph()(images.tensor, mask, return_sr=self.sr_eval, check_values=False)
            outputs = self.core.unbatch(padded)  # crops the SR images on the host
        return self.postprocess(outputs, batched_inputs, images.image_sizes)

    def _eval_graph(self):
        """The compiled ``core.forward_padded`` (built on first use, on the model's device)."""
        if self._compiled_eval is None:
            mode = self.compile_mode
            if mode == "auto":
                mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            logger.info(
                "TEST.COMPILE: torch.compile(mode=%s) of the eval forward; each new shape compiles", mode
            )
            options = {"mode": mode} if self.compile_backend == "inductor" else {}
            self._compiled_eval = torch.compile(
                self.core.forward_padded,
                fullgraph=True,
                dynamic=False,
                backend=self.compile_backend,
                **options,
            )
        return self._compiled_eval

    def postprocess(
        self, outputs: List[Dict[str, torch.Tensor]], batched_inputs: List[Dict], image_sizes: List
    ) -> List[Dict]:
        """Core outputs (``boxes`` XYXY normalised to the unpadded LR input) -> ``[{"instances"}]`` in each input's
        ``height``/``width`` frame (the HR tile for the LR/HR mapper), as detectron2's detectors do."""
        results = []
        for x, out, (h, w) in zip(batched_inputs, outputs, image_sizes):
            boxes = out["boxes"] * out["boxes"].new_tensor([w, h, w, h])
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(boxes)
            inst.scores = out["scores"]
            inst.pred_classes = out["labels"]
            r = {"instances": detector_postprocess(inst, x.get("height", h), x.get("width", w))}
            if self.sr_eval:
                r["sr_image"] = self._denormalise(out["sr"])
            results.append(r)
        return results

    def _denormalise(self, img: Optional[torch.Tensor]) -> torch.Tensor:
        """(3, H, W) normalised -> float RGB on the 0-255 scale, clamped."""
        return (img.float() * self.pixel_std + self.pixel_mean).clamp(0, 255)
