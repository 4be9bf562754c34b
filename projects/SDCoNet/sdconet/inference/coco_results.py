"""Scene detections as COCO results (``[{image_id, category_id, bbox: [x, y, w, h], score}]``), and the image ids
that tie them to a whole-scene ground-truth json (``annotations/scenes_<split>.json`` of a split dataset).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = ["category_ids_for", "detections_to_coco", "match_image_ids"]

#: Decimals kept for box coordinates and scores in the json (1/100 px is below any annotation precision).
DECIMALS = 2
SCORE_DECIMALS = 4


def category_ids_for(num_classes: int, gt: Mapping[str, Any] | None = None) -> list[int]:
    """COCO category id of each class index: the ground truth's ids in ascending order (detectron2's contiguous
    mapping), else ``1..K`` (the split datasets' convention).

    Raises:
        ValueError: the ground truth has a different number of categories.
    """
    if gt is None:
        return list(range(1, num_classes + 1))
    ids = sorted(int(c["id"]) for c in gt.get("categories", []))
    if len(ids) != num_classes:
        raise ValueError(
            f"the ground truth has {len(ids)} categories but the model predicts {num_classes} classes"
        )
    return ids


def detections_to_coco(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, image_id: int, category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO result entries of one image.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2`` in image pixels.
        scores: (N,).
        labels: (N,) class indices.
        image_id: the image's id.
        category_ids: COCO category id per class index (:func:`category_ids_for`).
    """
    out = []
    for (x1, y1, x2, y2), score, label in zip(np.asarray(boxes, np.float64), scores, labels):
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(label)]),
                "bbox": [round(float(v), DECIMALS) for v in (x1, y1, x2 - x1, y2 - y1)],
                "score": round(float(score), SCORE_DECIMALS),
            }
        )
    return out


def _parts(path: str) -> tuple[str, ...]:
    return PurePath(str(path).replace("\\", "/")).parts


def match_image_ids(gt: Mapping[str, Any], paths: Sequence[str | os.PathLike]) -> dict[str, int]:
    """Find the ground-truth image of each input file.

    A GT ``file_name`` (path relative to the source dataset root) matches an input path when it is a suffix of it
    (``a/b/P0001.png`` matches ``/data/DOTA/a/b/P0001.png``); the longest matching suffix wins, and a bare base-name
    match is accepted only when unique.

    Returns:
        ``{str(path): image_id}`` for the inputs that were found (others are absent).
    """
    by_name: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    for img in gt.get("images", []):
        parts = _parts(img["file_name"])
        if parts:
            by_name.setdefault(parts[-1], []).append((parts, int(img["id"])))
    out = {}
    for path in paths:
        parts = _parts(str(path))
        candidates = by_name.get(parts[-1], []) if parts else []
        suffix = [(len(p), i) for p, i in candidates if parts[-len(p) :] == p]
        if suffix:
            longest = max(n for n, _ in suffix)
            ids = {i for n, i in suffix if n == longest}
            if len(ids) == 1:
                out[str(path)] = ids.pop()
        elif len({i for _, i in candidates}) == 1:  # only the base name agrees, but it is unique
            out[str(path)] = candidates[0][1]
    return out
