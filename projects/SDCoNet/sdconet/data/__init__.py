"""sdconet.data: framework-free dataset tools.

Readers (NWPU VHR-10, DOTA, HRRSD, COCO) → tiler (DOTA_devkit windows, visible-fraction rule) → split
dataset on disk (tiles + COCO json + statistics), the synthetic demo dataset, and the one HR → LR
degradation. Names are imported lazily so that worker processes do not pay for torch unless they
degrade images.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "degrade": "degradation",
    "degrade_tensor": "degradation",
    "lr_size": "degradation",
    "read_image_rgb": "image_io",
    "write_image": "image_io",
    "DataError": "errors",
    "ImageReadError": "errors",
    "AnnotationParseError": "errors",
    "UnknownClassError": "errors",
    "split_paths": "layout",
    "SPLIT_DATASETS": "layout",
    "PRESETS": "tiler",
    "tile_windows": "tiler",
    "select_objects": "tiler",
    "crop_tile": "tiler",
    "split_by_source": "split",
    "prepare_split_dataset": "prepare",
    "TilingOptions": "prepare",
    "make_synthetic_split": "synthetic",
    "ensure_synthetic_dataset": "synthetic",
    "SYNTHETIC_CLASSES": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
