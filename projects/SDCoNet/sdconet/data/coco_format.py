"""Build the COCO dictionaries of a split (tiles and whole scenes) from :class:`SceneTiles`.

Tile image entries carry, besides ``id``, ``file_name``, ``width``, ``height`` (the stored tile size,
padding included): ``source_image`` (source id), ``source_file`` (path relative to the source dataset
root), ``source_width``/``source_height``, ``tile_x``/``tile_y`` (offset of the tile's top-left pixel in
the scene) and ``pad_w``/``pad_h`` (zero columns on the right / rows at the bottom). A detection
``(x, y, w, h)`` in tile pixels is ``(x + tile_x, y + tile_y, w, h)`` in the scene.

Annotations: ``bbox`` ``[x, y, w, h]`` in tile pixels (HR), ``area = w·h``, ``iscrowd = 0``,
``truncated`` (1 when cut by the tile border) and ``difficult`` (the source's flag). Category ids are
1..K in the dataset's class order. Ids are assigned in order (scenes sorted by id, tiles row-major),
so the output is deterministic.
"""

from __future__ import annotations

from typing import Any, Sequence

from .scene_tiles import SceneTiles


def categories(class_names: Sequence[str], supercategory: str = "object") -> list[dict[str, Any]]:
    """COCO ``categories`` with contiguous ids 1..K."""
    return [{"id": i + 1, "name": n, "supercategory": supercategory} for i, n in enumerate(class_names)]


def _bbox(box: Sequence[float]) -> tuple[list[float], float]:
    x1, y1, x2, y2 = box
    w, h = round(x2 - x1, 3), round(y2 - y1, 3)
    return [x1, y1, w, h], w * h


def build_tiles_coco(
    scenes: Sequence[SceneTiles], class_names: Sequence[str], info: dict[str, Any]
) -> dict[str, Any]:
    """COCO instances dict of all tiles of ``scenes`` (in the given order)."""
    images, annotations = [], []
    for scene in scenes:
        for tile in scene.tiles:
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": tile.file_name,
                    "width": tile.width,
                    "height": tile.height,
                    "source_image": scene.image_id,
                    "source_file": scene.rel_path,
                    "source_width": scene.width,
                    "source_height": scene.height,
                    "tile_x": tile.tile_x,
                    "tile_y": tile.tile_y,
                    "pad_w": tile.pad_w,
                    "pad_h": tile.pad_h,
                }
            )
            for ann in tile.annotations:
                bbox, area = _bbox(ann.box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": ann.category + 1,
                        "bbox": bbox,
                        "area": area,
                        "iscrowd": 0,
                        "truncated": int(ann.truncated),
                        "difficult": int(ann.difficult),
                    }
                )
    return {
        "info": dict(info),
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(class_names),
    }


def build_scenes_coco(
    scenes: Sequence[SceneTiles], class_names: Sequence[str], info: dict[str, Any]
) -> dict[str, Any]:
    """COCO instances dict of the whole source scenes (``file_name`` = path relative to the source root).

    Use it as ground truth for scene-level evaluation of sliced predictions.
    """
    images, annotations = [], []
    for scene in scenes:
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": scene.rel_path,
                "width": scene.width,
                "height": scene.height,
                "source_image": scene.image_id,
            }
        )
        for category, box, difficult in scene.scene_objects:
            bbox, area = _bbox(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category + 1,
                    "bbox": bbox,
                    "area": area,
                    "iscrowd": 0,
                    "difficult": int(difficult),
                }
            )
    return {
        "info": dict(info),
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(class_names),
    }
