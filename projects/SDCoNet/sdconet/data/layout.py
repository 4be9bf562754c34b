"""The on-disk layout of a split dataset (framework-free; the detectron2 registration calls these).

::

    <root>/
      annotations/instances_<split>.json   # COCO json of the tiles (file_name relative to the image root)
      annotations/scenes_<split>.json      # COCO json of the whole source scenes (for scene-level evaluation)
      <split>/images/*.png                 # HR tiles
      <split>/images_lr_x<s>/*.png         # optional offline LR copies (same file names)
      <split>_sources.txt                  # source image ids of the split, one per line
      stats.json, stats.md                 # statistics (Table I style)
"""

from __future__ import annotations

import os
from pathlib import Path

# Registered dataset names → their splits, for ``<name>_<split>`` (e.g. ``nwpu_vhr10_split_train``).
SPLIT_DATASETS: dict[str, tuple[str, ...]] = {
    "nwpu_vhr10_split": ("train", "test"),
    "dota15_split": ("train", "val"),
    "hrrsd_split": ("train", "test"),
    "sdconet_synthetic": ("train", "test"),
}


def split_paths(root: str | os.PathLike, split: str) -> tuple[str, str]:
    """Return ``(json_path, image_root)`` of one split, e.g. for ``register_coco_instances``."""
    root = Path(root)
    return str(root / "annotations" / f"instances_{split}.json"), str(root / split / "images")


def scenes_json_path(root: str | os.PathLike, split: str) -> str:
    """Path of the split's whole-scene COCO json (boxes in source-image pixels)."""
    return str(Path(root) / "annotations" / f"scenes_{split}.json")


def lr_image_root(root: str | os.PathLike, split: str, scale: int) -> str:
    """Folder of the optional offline LR copies of a split's tiles."""
    return str(Path(root) / split / f"images_lr_x{scale}")


def sources_path(root: str | os.PathLike, split: str) -> str:
    """Text file listing the split's source image ids."""
    return str(Path(root) / f"{split}_sources.txt")


def stats_paths(root: str | os.PathLike) -> tuple[str, str]:
    """Return ``(stats.json, stats.md)`` paths."""
    root = Path(root)
    return str(root / "stats.json"), str(root / "stats.md")
