"""Tile one source scene: which tiles exist, what they contain, and writing their pixels.

:func:`tile_scene` is pure metadata (no pixels), so a count-only run and a full run share it exactly;
:func:`write_scene_tiles` cuts and writes the pixels of the tiles it returned.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .boxes import sanitize_boxes
from .image_io import write_image
from .records import SourceImage
from .tiler import DEFAULT_MIN_VISIBLE, crop_tile, select_objects, tile_windows


@dataclass(frozen=True)
class TileAnnotation:
    """One object in a tile. ``box`` is ``x1, y1, x2, y2`` in tile pixels (HR)."""

    category: int
    box: tuple[float, float, float, float]
    truncated: bool
    difficult: bool


@dataclass
class TileRecord:
    """One tile: file name, offset in the scene (``tile_x``, ``tile_y``), stored size and padding.

    The tile's pixel ``(u, v)`` is the scene's pixel ``(u + tile_x, v + tile_y)``; the right ``pad_w``
    columns and bottom ``pad_h`` rows are zero padding.
    """

    file_name: str
    tile_x: int
    tile_y: int
    width: int
    height: int
    pad_w: int
    pad_h: int
    annotations: list[TileAnnotation] = field(default_factory=list)


@dataclass
class SceneTiles:
    """The tiles of one source scene plus the bookkeeping of its boxes.

    Attributes:
        image_id: source id.
        rel_path: source path relative to the dataset root.
        width: scene width (pixels actually read).
        height: scene height.
        tiles: tile records in window order (row-major).
        scene_objects: ``(category, (x1, y1, x2, y2), difficult)`` of the cleaned scene boxes.
        num_clipped: boxes clipped to the scene.
        num_dropped: degenerate boxes dropped.
        num_cut_dropped: (object, tile) pairs dropped by the visible-fraction rule.
    """

    image_id: str
    rel_path: str
    width: int
    height: int
    tiles: list[TileRecord]
    scene_objects: list[tuple[int, tuple[float, float, float, float], bool]]
    num_clipped: int = 0
    num_dropped: int = 0
    num_cut_dropped: int = 0


def safe_stem(image_id: str) -> str:
    """File-name-safe form of a source id (anything but letters, digits, ``.``, ``_``, ``-`` → ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._") or "image"


def tile_file_name(image_id: str, x0: int, y0: int, ext: str = ".png") -> str:
    """Tile file name ``<source>__<x0>_<y0><ext>`` (offsets in scene pixels)."""
    return f"{safe_stem(image_id)}__{x0}_{y0}{ext}"


def _round(value: float) -> float:
    # Keep 1/1000 px: removes float noise such as 123.45000000000002 and keeps the json deterministic.
    return round(float(value), 3) + 0.0


def tile_scene(
    record: SourceImage,
    width: int,
    height: int,
    tile_size: int,
    overlap: int,
    min_visible: float = DEFAULT_MIN_VISIBLE,
    pad: bool = True,
    keep_empty: bool = True,
    image_ext: str = ".png",
) -> SceneTiles:
    """Compute the tiles of a scene and the objects each keeps (no pixels touched).

    Args:
        record: the scene and its objects (scene pixel coordinates).
        width: scene width as read from the image.
        height: scene height.
        tile_size: tile side in pixels.
        overlap: window overlap in pixels.
        min_visible: visible-fraction threshold of the keeping rule (strict ``>``).
        pad: pad tiles of small scenes to ``tile_size`` (else store the smaller size).
        keep_empty: keep tiles without objects.
        image_ext: tile file extension.

    Returns:
        :class:`SceneTiles`.
    """
    n = len(record.objects)
    boxes = np.array([o.box for o in record.objects], dtype=np.float64).reshape(n, 4)
    categories = np.array([o.category for o in record.objects], dtype=np.int64)
    difficult = np.array([o.difficult for o in record.objects], dtype=bool)
    clean = sanitize_boxes(boxes, width, height)
    categories, difficult = categories[clean.keep], difficult[clean.keep]
    tiles = []
    cut_dropped = 0
    for window in tile_windows(width, height, tile_size, overlap):
        x0, y0, x1, y1 = window
        chosen = select_objects(clean.boxes, window, min_visible)
        cut_dropped += chosen.num_dropped_cut
        if chosen.indices.size == 0 and not keep_empty:
            continue
        anns = [
            TileAnnotation(
                category=int(categories[i]),
                box=tuple(_round(v) for v in box),
                truncated=bool(trunc),
                difficult=bool(difficult[i]),
            )
            for i, box, trunc in zip(chosen.indices, chosen.boxes, chosen.truncated)
        ]
        tile_w, tile_h = (tile_size, tile_size) if pad else (x1 - x0, y1 - y0)
        tiles.append(
            TileRecord(
                file_name=tile_file_name(record.image_id, x0, y0, image_ext),
                tile_x=x0,
                tile_y=y0,
                width=tile_w,
                height=tile_h,
                pad_w=tile_w - (x1 - x0),
                pad_h=tile_h - (y1 - y0),
                annotations=anns,
            )
        )
    scene_objects = [
        (int(c), tuple(_round(v) for v in b), bool(d)) for c, b, d in zip(categories, clean.boxes, difficult)
    ]
    return SceneTiles(
        image_id=record.image_id,
        rel_path=record.rel_path or os.path.basename(record.path),
        width=width,
        height=height,
        tiles=tiles,
        scene_objects=scene_objects,
        num_clipped=clean.num_clipped,
        num_dropped=clean.num_dropped,
        num_cut_dropped=cut_dropped,
    )


def write_scene_tiles(
    image: np.ndarray,
    scene: SceneTiles,
    image_root: str | os.PathLike,
    lr_root: str | os.PathLike | None = None,
    lr_scale: int = 2,
    skip_existing: bool = False,
    jpeg_quality: int = 95,
) -> int:
    """Cut the scene's tiles out of ``image`` and write them (atomically), optionally with LR copies.

    Args:
        image: (H, W, 3) uint8 RGB scene.
        scene: the result of :func:`tile_scene` for this image.
        image_root: folder of the HR tiles.
        lr_root: folder of the LR copies (made with :func:`sdconet.data.degradation.degrade`), or None.
        lr_scale: LR downsampling factor.
        skip_existing: leave files that already exist untouched (resume an interrupted run).
        jpeg_quality: quality of ``.jpg`` tiles.

    Returns:
        Number of files written.
    """
    written = 0
    image_root = Path(image_root)
    for tile in scene.tiles:
        window = (
            tile.tile_x,
            tile.tile_y,
            tile.tile_x + tile.width - tile.pad_w,
            tile.tile_y + tile.height - tile.pad_h,
        )
        hr_path = image_root / tile.file_name
        lr_path = Path(lr_root) / tile.file_name if lr_root is not None else None
        need_hr = not (skip_existing and hr_path.exists())
        need_lr = lr_path is not None and not (skip_existing and lr_path.exists())
        if not (need_hr or need_lr):
            continue
        pixels = crop_tile(image, window, max(tile.width, tile.height), pad=tile.pad_w > 0 or tile.pad_h > 0)
        pixels = pixels[: tile.height, : tile.width]
        if need_hr:
            write_image(hr_path, pixels, jpeg_quality)
            written += 1
        if need_lr:
            from .degradation import degrade  # imported lazily: torch is only needed for LR copies

            write_image(lr_path, degrade(pixels, lr_scale), jpeg_quality)
            written += 1
    return written
