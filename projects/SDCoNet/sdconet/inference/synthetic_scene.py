"""Large synthetic scenes with known boxes, for demos and tests of whole-scene inference.

A scene is a mosaic of synthetic tiles drawn by the dataset generator
(:func:`sdconet.data.synthetic.render_synthetic_tile`: textured ground, vehicles / planes / tanks): cell ``(row,
col)`` is drawn from ``numpy.random.default_rng([seed, row, col])`` and pasted at ``(col * cell, row * cell)``, so
objects look exactly like the training data of ``sdconet_synthetic``. The cells do not line up with the inference
tiles, so plenty of objects straddle tile borders. Cells at the right/bottom edge are cropped; objects that would be
cut by that crop are not drawn (the boxes stay exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.coco_format import build_scenes_coco
from ..data.scene_tiles import SceneTiles
from ..data.synthetic import SYNTHETIC_CLASSES, render_synthetic_tile

__all__ = ["SyntheticScene", "make_synthetic_scene", "scenes_ground_truth"]

#: Default cell size: the synthetic dataset's tile size (HR pixels).
DEFAULT_CELL = 128


@dataclass
class SyntheticScene:
    """A synthetic scene.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) float64 ``x1, y1, x2, y2`` in scene pixels (tight boxes of the drawn pixels).
        labels: (N,) int64 class indices into ``class_names``.
        class_names: the classes.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def make_synthetic_scene(
    width: int = 2000,
    height: int = 2000,
    seed: int = 0,
    cell: int = DEFAULT_CELL,
    classes: Sequence[str] = SYNTHETIC_CLASSES,
    objects_per_cell: tuple[int, int] = (2, 6),
    min_object_size: int = 8,
    max_object_size: int = 60,
) -> SyntheticScene:
    """Draw a ``width x height`` scene (see the module docstring).

    Args:
        width: scene width in pixels.
        height: scene height.
        seed: master seed.
        cell: side of the synthetic tiles the mosaic is made of.
        classes: class names (shapes ``vehicle``, ``plane``, ``tank``).
        objects_per_cell: inclusive range of objects attempted per cell.
        min_object_size: smallest object side in pixels.
        max_object_size: largest object side in pixels (capped by the cell).
    """
    if width < 1 or height < 1 or cell < 8:
        raise ValueError(f"need width, height >= 1 and cell >= 8, got {width}, {height}, {cell}")
    image = np.zeros((height, width, 3), dtype=np.uint8)
    boxes, labels = [], []
    for row in range(-(-height // cell)):
        for col in range(-(-width // cell)):
            rng = np.random.default_rng([seed, row, col])
            tile, objects = render_synthetic_tile(
                rng, cell, classes, objects_per_cell, min_object_size, min(max_object_size, cell // 2)
            )
            y0, x0 = row * cell, col * cell
            h, w = min(cell, height - y0), min(cell, width - x0)
            crop = tile[:h, :w].copy()
            fill = np.median(crop.reshape(-1, 3), axis=0).astype(np.uint8)  # ~ the ground colour
            for obj in objects:
                x1, y1, x2, y2 = (int(v) for v in obj.box)
                if x2 <= w and y2 <= h:
                    boxes.append((x1 + x0, y1 + y0, x2 + x0, y2 + y0))
                    labels.append(obj.category)
                else:  # cut by the scene edge: cover the visible part so every drawn object has its box
                    crop[y1:y2, x1:x2] = fill
            image[y0 : y0 + h, x0 : x0 + w] = crop
    return SyntheticScene(
        image=image,
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=tuple(classes),
    )


def scenes_ground_truth(
    scenes: Sequence[SyntheticScene], file_names: Sequence[str], info: dict | None = None
) -> dict:
    """Whole-scene COCO ground truth of synthetic scenes, in the layout of ``annotations/scenes_<split>.json``."""
    if len(scenes) != len(file_names):
        raise ValueError(f"{len(scenes)} scenes but {len(file_names)} file names")
    records = [
        SceneTiles(
            image_id=name,
            rel_path=name,
            width=sc.image.shape[1],
            height=sc.image.shape[0],
            tiles=[],
            scene_objects=[(int(c), tuple(float(v) for v in b), False) for b, c in zip(sc.boxes, sc.labels)],
        )
        for sc, name in zip(scenes, file_names)
    ]
    names = scenes[0].class_names if scenes else SYNTHETIC_CLASSES
    return build_scenes_coco(records, names, info or {"description": "synthetic scenes"})
