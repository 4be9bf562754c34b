"""What the inference tools know about the project's datasets: class names and tiling presets by dataset name.

A config's ``DATASETS.TRAIN`` (e.g. ``nwpu_vhr10_split_train``) selects the class names (when neither the user nor
the checkpoint gives them) and the tile size / overlap the model was trained with (the dataset tiler's
``PRESETS``). Class names can also come from any COCO json (its ``categories`` in id order).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from ..data.coco_check import load_coco_json
from ..data.readers import DOTA15_CLASSES, HRRSD_CLASSES, NWPU_VHR10_CLASSES
from ..data.synthetic import SYNTHETIC_CLASSES
from ..data.tiler import PRESETS

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_CLASSES",
    "DATASET_TILING",
    "SYNTHETIC_TILING",
    "class_names_from_coco",
    "dataset_key",
    "resolve_class_names",
]

#: Tiling for sliced prediction with a model trained on the synthetic 128-px tiles (the synthetic set itself is cut
#: without overlap). An overlap of 64 px >= the largest synthetic object (60 px) lets every object be seen whole by
#: at least one tile: the model never saw cut objects in training.
SYNTHETIC_TILING = (128, 64)

#: Split-dataset name (the part before ``_<split>``) -> class names in category-id order.
DATASET_CLASSES: dict[str, Sequence[str]] = {
    "nwpu_vhr10_split": NWPU_VHR10_CLASSES,
    "dota15_split": DOTA15_CLASSES,
    "hrrsd_split": HRRSD_CLASSES,
    "sdconet_synthetic": SYNTHETIC_CLASSES,
}
#: Split-dataset name -> (tile size, overlap) in HR pixels, as the dataset was tiled.
DATASET_TILING: dict[str, tuple[int, int]] = {
    "nwpu_vhr10_split": PRESETS["nwpu"],
    "dota15_split": PRESETS["dota15"],
    "hrrsd_split": PRESETS["hrrsd"],
    "sdconet_synthetic": SYNTHETIC_TILING,
}


def dataset_key(names: Sequence[str]) -> str | None:
    """The known dataset that the first of ``names`` (e.g. ``DATASETS.TRAIN``) belongs to, or None."""
    for name in names:
        for key in DATASET_CLASSES:
            if name == key or name.startswith(key + "_"):
                return key
    return None


def class_names_from_coco(path: str | os.PathLike) -> list[str]:
    """Category names of a COCO json, in ascending category-id order (detectron2's contiguous mapping).

    Raises:
        CocoFormatError (a ValueError): the file cannot be read, is not JSON, or has no valid ``categories`` list
            (:func:`sdconet.data.coco_check.load_coco_json`; the message names the file).
    """
    data, _ = load_coco_json(path, "categories")
    return [str(c["name"]) for c in sorted(data["categories"], key=lambda c: int(c["id"]))]


def resolve_class_names(
    num_classes: int,
    explicit: Sequence[str] | None = None,
    checkpoint: Sequence[str] | None = None,
    datasets: Sequence[str] = (),
) -> list[str]:
    """Pick the class names: explicit > checkpoint metadata > known dataset of the config > ``class_<i>``.

    Args:
        num_classes: the model's class count.
        explicit: names given by the user (``--class-names`` or a dataset json).
        checkpoint: names stored in the checkpoint, if any.
        datasets: the config's ``DATASETS.TRAIN`` names.

    Raises:
        ValueError: explicit names whose count differs from ``num_classes``.
    """
    if explicit is not None:
        if len(explicit) != num_classes:
            raise ValueError(
                f"{len(explicit)} class names given ({', '.join(explicit)}) but the model has {num_classes}"
            )
        return [str(n) for n in explicit]
    for source, names in (
        ("checkpoint", checkpoint),
        ("dataset", DATASET_CLASSES.get(dataset_key(datasets) or "")),
    ):
        if names is not None and len(names) == num_classes:
            return [str(n) for n in names]
        if names is not None:
            logger.warning("ignoring %d %s class names for a %d-class model", len(names), source, num_classes)
    return [f"class_{i}" for i in range(num_classes)]
