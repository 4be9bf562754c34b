"""Registration of the split datasets (written by ``datasets/prepare_*.py``) and of the embedded synthetic demo set.

Importing :mod:`sdconet.d2` calls :func:`register_sdconet_datasets` once: every ``<dataset>_<split>`` of
:data:`sdconet.data.layout.SPLIT_DATASETS` is registered as a COCO-json dataset under
``$SDCONET_DATASETS/<dataset>/`` (default ``./datasets``, resolved at import time) with its ``thing_classes``.
Registration is lazy (nothing is read until a dataset is used) and idempotent.

The synthetic dataset (``sdconet_synthetic_{train,test}``) is generated on first use into a cache folder
(:func:`sdconet.data.synthetic.default_synthetic_root`: ``$SDCONET_SYNTHETIC_ROOT``, else
``$SDCONET_DATASETS/sdconet_synthetic``, else ``datasets/_cache/sdconet_synthetic`` in a checkout), so the quick
config needs no download.

Your own sliced data: register it before building the trainer, e.g. in a copy of ``train_net.py``
(:func:`register_checked_coco_instances` is detectron2's ``register_coco_instances`` plus the project's COCO
validation: duplicate ids, missing keys or bad boxes stop with an error naming the file and the id)::

    from sdconet.d2.datasets import register_checked_coco_instances
    register_checked_coco_instances("my_tiles_train", {}, "path/to/instances_train.json", "path/to/train/images")
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from sdconet.data.coco_check import load_coco_json as load_coco_json_checked
from sdconet.data.layout import SPLIT_DATASETS, split_paths
from sdconet.data.readers import DOTA15_CLASSES, HRRSD_CLASSES, NWPU_VHR10_CLASSES
from sdconet.data.synthetic import SYNTHETIC_CLASSES, default_synthetic_root, ensure_synthetic_dataset

__all__ = [
    "DATASETS_ENV",
    "load_checked_coco_json",
    "register_checked_coco_instances",
    "SYNTHETIC_NAME",
    "datasets_root",
    "register_sdconet_datasets",
    "register_split_dataset",
    "synthetic_root",
]

logger = logging.getLogger(__name__)

#: Environment variable holding the root folder of the prepared split datasets.
DATASETS_ENV = "SDCONET_DATASETS"
DEFAULT_DATASETS_ROOT = "./datasets"
SYNTHETIC_NAME = "sdconet_synthetic"

#: Class names (category ids 1..K in the json, in this order) of each prepared dataset.
_CLASSES: Dict[str, Sequence[str]] = {
    "nwpu_vhr10_split": NWPU_VHR10_CLASSES,
    "dota15_split": DOTA15_CLASSES,
    "hrrsd_split": HRRSD_CLASSES,
}


def datasets_root() -> str:
    """``$SDCONET_DATASETS`` or ``./datasets``."""
    return os.environ.get(DATASETS_ENV, DEFAULT_DATASETS_ROOT)


def synthetic_root(root: Optional[str] = None) -> str:
    """Cache folder of the synthetic dataset: ``<root>/sdconet_synthetic`` for an explicit ``root``, else the data
    module's default."""
    return os.path.join(root, SYNTHETIC_NAME) if root else default_synthetic_root()


def load_checked_coco_json(json_file: str, image_root: str, name: str) -> List[Dict]:
    """detectron2's ``load_coco_json`` after the project's COCO validation
    (:func:`sdconet.data.coco_check.load_coco_json`: duplicate or missing ids, bad boxes, ... are an error naming
    the file and the id instead of a silently wrong dataset; warnings are logged)."""
    _, report = load_coco_json_checked(json_file, "instances")
    for warning in report.warnings:
        logger.warning("%s", warning)
    return load_coco_json(json_file, image_root, name)


def register_checked_coco_instances(name: str, metadata: Dict, json_file: str, image_root: str) -> None:
    """detectron2's ``register_coco_instances`` with the project's COCO validation when the dataset is loaded
    (:func:`load_checked_coco_json`). Use it for your own COCO data."""
    DatasetCatalog.register(name, lambda: load_checked_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )


def register_split_dataset(name: str, dataset_root: str, split: str, thing_classes: Sequence[str]) -> bool:
    """Register ``name`` -> ``<dataset_root>/annotations/instances_<split>.json`` (lazy, validated on load).
    False if already there."""
    if name in DatasetCatalog.list():
        return False
    json_file, image_root = split_paths(dataset_root, split)
    register_checked_coco_instances(name, {"thing_classes": list(thing_classes)}, json_file, image_root)
    return True


def _register_synthetic(name: str, root: str, split: str) -> bool:
    if name in DatasetCatalog.list():
        return False
    json_file, image_root = split_paths(root, split)

    def load() -> List[Dict]:
        ensure_synthetic_dataset(root)  # generates into the cache folder on first use
        return load_checked_coco_json(json_file, image_root, name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(SYNTHETIC_CLASSES),
    )
    return True


def register_sdconet_datasets(root: Optional[str] = None) -> List[str]:
    """Register every split dataset under ``root`` (default ``$SDCONET_DATASETS`` or ``./datasets``).

    Returns:
        names newly registered by this call (empty when everything was registered before).
    """
    explicit = root
    root = root or datasets_root()
    new = []
    for dataset, splits in SPLIT_DATASETS.items():
        for split in splits:
            name = f"{dataset}_{split}"
            if dataset == SYNTHETIC_NAME:
                added = _register_synthetic(name, synthetic_root(explicit), split)
            elif dataset in _CLASSES:
                added = register_split_dataset(name, os.path.join(root, dataset), split, _CLASSES[dataset])
            else:
                logger.warning("No class list for dataset '%s'; register it yourself", dataset)
                continue
            if added:
                new.append(name)
    return new
