"""Image crops of detections (SAHI's ``export_crop``): one PNG per detection, in a folder per class.

Crops are read through the scene source (:mod:`sdconet.inference.sources`), so a huge raster is read only where
the detections are. File names: ``<crops_dir>/<class name>/<scene name>_<det index>.png``, where ``det index`` is
the detection's position in the scene's results (the ``det_id`` of the GeoJSON/GeoPackage features).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.image_io import write_image
from ..data.scene_tiles import safe_stem

__all__ = ["crop_window", "export_crops"]


def crop_window(
    box: Sequence[float], width: int, height: int, pad: int = 0
) -> tuple[int, int, int, int] | None:
    """The pixel window ``(x0, y0, x1, y1)`` covering ``box`` (rounded outwards, ``pad`` pixels added), clipped to
    the scene; None when nothing of it lies inside."""
    x0 = max(0, math.floor(box[0]) - pad)
    y0 = max(0, math.floor(box[1]) - pad)
    x1 = min(width, math.ceil(box[2]) + pad)
    y1 = min(height, math.ceil(box[3]) + pad)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def export_crops(
    source,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    crops_dir: str | os.PathLike,
    scene_name: str,
    *,
    min_score: float = 0.0,
    pad: int = 0,
) -> int:
    """Write a PNG of every detection with ``score >= min_score``.

    Args:
        source: the scene source the boxes refer to (``read(window)``, ``width``, ``height``).
        boxes: (N, 4) ``x1, y1, x2, y2`` in the source's pixels.
        scores: (N,).
        labels: (N,) class indices.
        class_names: name per class (the sub-folder).
        crops_dir: root folder of the crops.
        scene_name: file-name stem of the scene.
        min_score: skip detections below this score.
        pad: context pixels added on every side.

    Returns:
        The number of crops written.
    """
    root = Path(crops_dir)
    stem = safe_stem(scene_name)
    written = 0
    for i, (box, score, label) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), scores, labels)):
        if float(score) < min_score:
            continue
        win = crop_window(box, int(source.width), int(source.height), int(pad))
        if win is None:
            continue
        folder = root / safe_stem(str(class_names[int(label)]))
        write_image(folder / f"{stem}_{i:05d}.png", np.ascontiguousarray(source.read(win)))
        written += 1
    return written
