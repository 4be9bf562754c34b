"""Dataset mapper: HR tile -> (LR model input, HR SR target, instances in the LR frame).

In the default ``"degrade"`` mode the mapper reads the HR tile, applies the (optional) flip to the HR image, and makes
the LR input with the data module's degradation function :func:`sdconet.data.degradation.degrade` -- the same call
in training and testing. Boxes are mapped to the LR input frame (the model predicts boxes normalised to its input, so
this is only a scale). ``height``/``width`` keep the tile's original size, so ``detector_postprocess`` returns the
predictions in the HR frame and COCOEvaluator scores them against the original annotations, as in the paper.

In ``"real"`` mode the image file itself is the (low-quality) model input: no degradation, no HR target.

The same mapper feeds detectron2's own detectors (the baselines): the pixel format follows ``INPUT.FORMAT`` (``RGB``
for Swin/SDCoNet, ``BGR`` for the MSRA ResNet weights; the degradation works per channel, so the order does not
change it), the boxes are in the LR input frame (the frame a stock detector trains in), and ``height``/``width``
make every meta-architecture's own postprocessing return boxes in the HR tile frame: AP is measured in the same frame
for SDCoNet and the baselines. The HR tile is only emitted for models with an SR branch.

Tiles whose size is not a multiple of the SR factor ``s`` are cropped at the bottom/right to the largest multiple
(at most ``s - 1`` pixels) so the HR target is exactly ``s x`` the LR input.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from sdconet.data.errors import ImageReadError

from .config import config_has_sr

__all__ = ["LR_MODES", "SDCoNetDatasetMapper"]

logger = logging.getLogger(__name__)

LR_MODES = ("degrade", "real")
#: Pixel formats the mapper emits (``INPUT.FORMAT``).
IMAGE_FORMATS = ("RGB", "BGR")


def _flip_augmentations(random_flip: str) -> List[T.Augmentation]:
    if random_flip == "none":
        return []
    if random_flip not in ("horizontal", "vertical"):
        raise ValueError(f"INPUT.RANDOM_FLIP must be none|horizontal|vertical (got '{random_flip}')")
    return [T.RandomFlip(horizontal=random_flip == "horizontal", vertical=random_flip == "vertical")]


def _boxes_only(obj: Dict) -> Dict:
    """Drop masks/keypoints (horizontal-box detection) so they are neither transformed nor batched."""
    return {k: v for k, v in obj.items() if k not in ("segmentation", "keypoints")}


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))


class SDCoNetDatasetMapper:
    """Callable mapping one detectron2 dataset dict to the meta-architecture's input dict.

    Args:
        is_train: training (augment, keep annotations as ``instances``) or testing (no augmentation; annotations
            dropped).
        augmentations: geometric augmentations applied to the HR tile (training: the flip).
        sr_scale: SR factor s (LR = HR / s).
        lr_mode: ``"degrade"`` (LR made from the HR tile) or ``"real"`` (the file is the LR input; no HR).
        keep_hr: emit ``hr_image`` (degrade mode). Needed for the SR loss and the SR evaluator.
        degrade_fn: ``(hr uint8 HWC, scale) -> lr uint8`` (per channel); default
            :func:`sdconet.data.degradation.degrade`.
        image_format: ``"RGB"`` or ``"BGR"``: channel order of ``image`` and ``hr_image``.

    Output dict: the input's keys (``file_name``, ``image_id``, ``height``, ``width`` = original tile size) plus
    ``image`` (3, h, w) uint8 LR input, ``hr_image`` (3, s*h, s*w) uint8 (degrade mode, ``keep_hr``), both in
    ``image_format``, and in training ``instances`` (``gt_boxes`` absolute XYXY in the LR input frame,
    ``gt_classes``).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Optional[List[T.Augmentation]] = None,
        sr_scale: int = 2,
        lr_mode: str = "degrade",
        keep_hr: bool = True,
        degrade_fn: Optional[Callable[[np.ndarray, int], np.ndarray]] = None,
        image_format: str = "RGB",
    ) -> None:
        if image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"SDCoNetDatasetMapper: INPUT.FORMAT must be one of {IMAGE_FORMATS} (got '{image_format}')"
            )
        if lr_mode not in LR_MODES:
            raise ValueError(f"SDCoNetDatasetMapper: lr_mode must be one of {LR_MODES} (got '{lr_mode}')")
        if sr_scale < 1:
            raise ValueError(f"SDCoNetDatasetMapper: sr_scale must be >= 1 (got {sr_scale})")
        if degrade_fn is None and lr_mode == "degrade":
            from sdconet.data.degradation import degrade as degrade_fn  # the one degradation of the project
        self.is_train = is_train
        self.augmentations = list(augmentations or [])
        self.sr_scale = int(sr_scale)
        self.lr_mode = lr_mode
        self.keep_hr = keep_hr and lr_mode == "degrade"
        self.degrade_fn = degrade_fn
        self.image_format = image_format
        logger.info(
            "SDCoNetDatasetMapper(%s): lr_mode=%s, scale=%d, format=%s, HR target %s, augmentations=%s",
            "train" if is_train else "test",
            lr_mode,
            self.sr_scale,
            image_format,
            "on" if self.keep_hr else "off",
            self.augmentations,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict:
        return {
            "is_train": is_train,
            "augmentations": _flip_augmentations(cfg.INPUT.RANDOM_FLIP) if is_train else [],
            "sr_scale": cfg.MODEL.SDCONET.SR.SCALE,
            "lr_mode": cfg.INPUT.LR_MODE,
            # SDCoNet always gets it (its tests and evaluators expect it); other models only with an SR branch.
            "keep_hr": cfg.MODEL.META_ARCHITECTURE == "SDCoNet" or config_has_sr(cfg),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        try:
            image = utils.read_image(d["file_name"], format=self.image_format)
        except (
            OSError,
            SyntaxError,
            ValueError,
        ) as exc:  # e.g. "image file is truncated", without the file name
            raise ImageReadError(d["file_name"], f"{type(exc).__name__}: {exc}") from exc
        utils.check_image_size(d, image)  # also fills height/width when the dict lacks them
        if not image.flags.writeable:  # PIL-backed arrays are read-only; torch.from_numpy warns on them
            image = image.copy()
        transforms: List[T.Transform] = []
        s = self.sr_scale if self.lr_mode == "degrade" else 1
        h, w = image.shape[:2]
        ch, cw = h - h % s, w - w % s
        if ch == 0 or cw == 0:
            raise ValueError(f"{d['file_name']}: tile {h}x{w} is smaller than the SR factor {s}")
        if (ch, cw) != (h, w):
            crop = T.CropTransform(0, 0, cw, ch)
            image = crop.apply_image(image)
            transforms.append(crop)
        aug_input = T.AugInput(image)
        transforms.extend(T.AugmentationList(self.augmentations)(aug_input).transforms)
        image = aug_input.image

        if self.lr_mode == "degrade":
            lr = self.degrade_fn(image, self.sr_scale)
            if lr.shape[:2] != (ch // s, cw // s) or lr.dtype != np.uint8:
                raise ValueError(
                    f"{d['file_name']}: degrade() returned {lr.dtype} {lr.shape[:2]}, expected uint8 "
                    f"{(ch // s, cw // s)} for a {ch}x{cw} HR tile at scale {s}"
                )
            transforms.append(T.ResizeTransform(ch, cw, ch // s, cw // s))
            d["image"] = _chw(lr)
            if self.keep_hr:
                d["hr_image"] = _chw(image)
        else:
            lr = image
            d["image"] = _chw(lr)
        lr_size = lr.shape[:2]

        annos = d.pop("annotations", None)
        if self.is_train and annos is not None:
            tl = T.TransformList(transforms)
            annos = [
                utils.transform_instance_annotations(_boxes_only(obj), tl, lr_size)
                for obj in annos
                if obj.get("iscrowd", 0) == 0
            ]
            instances = utils.annotations_to_instances(annos, lr_size)
            d["instances"] = utils.filter_empty_instances(instances)
        return d
