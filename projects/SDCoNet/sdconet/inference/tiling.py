"""Which tiles a scene is cut into, and the model input of each tile.

Tiles are the dataset tiler's windows (:func:`sdconet.data.tiler.tile_windows`: DOTA_devkit starts, the last window
moved back to end at the scene edge), so a model sees the same kind of tiles as in training. Two input modes:

* ``"hr"``: the scene is a high-resolution image (as in the datasets). ``tile_size``/``overlap`` are HR pixels
  (the presets, e.g. 512/200 for NWPU); every HR tile is degraded with :func:`sdconet.data.degradation.degrade`
  (bicubic x1/s) into the LR model input, and the predicted boxes are scaled by s back into the HR tile, then offset
  into the scene. Results are in HR scene pixels.
* ``"native"``: the scene already is the low-quality model input. It is cut into tiles of ``tile_size // s`` with
  overlap ``overlap // s`` (the LR size of the same tiles, so the model sees objects at its training scale) and the
  boxes stay in the image's own pixels.

Either way a model input tile is at most ``tile_size // s`` pixels a side (:attr:`ScenePlan.lr_tile`).
``tile_size = 0`` runs the whole scene as one tile. ``full_image=True`` adds SAHI's "standard prediction": the whole
scene shrunk to one tile (:data:`FULL_IMAGE_TILE`), for objects larger than the overlap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from ..data.degradation import degrade
from ..data.tiler import Window, tile_windows

__all__ = [
    "DEFAULT_BORDER_MARGIN_LR",
    "FULL_IMAGE_TILE",
    "MODES",
    "ScenePlan",
    "SkippedTile",
    "TileTask",
    "TilingOptions",
    "iter_tile_tasks",
    "plan_scene",
    "scene_windows",
]

MODES = ("hr", "native")
#: Default border margin in LR (model-input) pixels: a box edge this close to an inner tile edge is "cut".
DEFAULT_BORDER_MARGIN_LR = 3.0
#: Tile id of the detections of the optional whole-scene pass.
FULL_IMAGE_TILE = -1


@dataclass(frozen=True)
class TilingOptions:
    """How every scene of a run is tiled (module docstring).

    Attributes:
        mode: ``"hr"`` or ``"native"``.
        tile_size: tile side in HR pixels (native mode cuts ``tile_size // s``); 0 = the whole scene in one pass.
        overlap: overlap of neighbouring tiles in HR pixels (native: ``overlap // s``).
        full_image: also predict the whole scene shrunk to one tile.
        border_margin: "cut" margin in scene pixels; None = 3 LR pixels (``3 s`` in ``hr`` mode).
    """

    mode: str = "hr"
    tile_size: int = 512
    overlap: int = 200
    full_image: bool = False
    border_margin: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.tile_size < 0:
            raise ValueError(f"tile_size must be >= 0, got {self.tile_size}")
        if self.overlap < 0 or (self.tile_size and self.overlap >= self.tile_size):
            raise ValueError(f"overlap must lie in [0, tile_size={self.tile_size}), got {self.overlap}")

    def lr_tile(self, sr_scale: int) -> int:
        """Largest side of a model input tile (LR pixels); 0 when the whole scene is one tile."""
        return self.tile_size // int(sr_scale)


def scene_windows(width: int, height: int, tile_size: int, overlap: int) -> list[Window]:
    """Tile windows of a scene (``tile_size = 0``: one window covering everything)."""
    if tile_size == 0:
        return [(0, 0, width, height)]
    return tile_windows(width, height, tile_size, overlap)


@dataclass(frozen=True)
class ScenePlan:
    """The tiles of one scene.

    Attributes:
        width, height: scene size in its own pixels.
        sr_scale: the model's SR factor s.
        options: the run's :class:`TilingOptions`.
        tiles: ``(tile_id, window)`` pairs to predict; windows in scene pixels (what is read). A subset of all the
            scene's windows when the work is split over processes.
        full_image: whether the whole-scene pass is part of this plan.
        num_windows: number of windows of the whole scene (before any split).
    """

    width: int
    height: int
    sr_scale: int
    options: TilingOptions
    tiles: tuple[tuple[int, Window], ...]
    full_image: bool
    num_windows: int

    @property
    def num_tasks(self) -> int:
        """Model inputs of this plan (tiles + the whole-scene pass)."""
        return len(self.tiles) + int(self.full_image)

    @property
    def factor(self) -> int:
        """Model-input pixel -> scene pixel scale of a tile (s in ``hr`` mode, 1 in ``native`` mode)."""
        return self.sr_scale if self.options.mode == "hr" else 1

    @property
    def margin(self) -> float:
        """Border "cut" margin in scene pixels."""
        if self.options.border_margin is not None:
            return float(self.options.border_margin)
        return DEFAULT_BORDER_MARGIN_LR * self.factor

    @property
    def lr_tile(self) -> int:
        """Largest side of a model input tile (0: the scene is one tile)."""
        return self.options.lr_tile(self.sr_scale)


def plan_scene(width: int, height: int, sr_scale: int, options: TilingOptions) -> ScenePlan:
    """The tiles of a ``width x height`` scene.

    Raises:
        ValueError: the scene is smaller than the SR factor (``hr`` mode), or the tile smaller than it.
    """
    s = int(sr_scale)
    if width < 1 or height < 1:
        raise ValueError(f"the scene is empty ({width}x{height})")
    if options.mode == "hr" and min(width, height) < s:
        raise ValueError(f"a {width}x{height} scene is smaller than the SR factor {s}")
    step = s if options.mode == "native" else 1  # native mode: tile sizes are given in HR pixels
    tile, overlap = options.tile_size // step, options.overlap // step
    if options.tile_size and tile < 1:
        raise ValueError(f"tile_size {options.tile_size} is smaller than the SR factor {s}")
    windows = scene_windows(width, height, tile, overlap)
    return ScenePlan(
        width=int(width),
        height=int(height),
        sr_scale=s,
        options=options,
        tiles=tuple(enumerate(windows)),
        full_image=bool(options.full_image and tile),
        num_windows=len(windows),
    )


@dataclass
class TileTask:
    """One model input and how its boxes map back to the scene.

    Attributes:
        scene: index of the scene in the run.
        tile_id: index of the window in the scene's plan, or :data:`FULL_IMAGE_TILE`.
        window: ``(x0, y0, x1, y1)`` in scene pixels (the whole scene for the full-image pass).
        image: (h, w, 3) uint8 RGB model input (LR).
        scale: ``(sx, sy)``: a model-input pixel is this many scene pixels.
        offset: ``(ox, oy)``: scene pixel of the input's top-left corner.
    """

    scene: int
    tile_id: int
    window: Window
    image: np.ndarray
    scale: tuple[float, float]
    offset: tuple[float, float]


def _shrink_to_tile(image: np.ndarray, tile_size: int, multiple: int) -> np.ndarray:
    """The scene resized (area interpolation) so its long side is at most ``tile_size``; sides are multiples of
    ``multiple`` (the SR factor, so that degrading loses no row)."""
    h, w = image.shape[:2]
    factor = min(1.0, tile_size / max(h, w))
    nh = max(multiple, int(round(h * factor / multiple)) * multiple)
    nw = max(multiple, int(round(w * factor / multiple)) * multiple)
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA) if (nh, nw) != (h, w) else image


@dataclass(frozen=True)
class SkippedTile:
    """A tile not predicted because it holds no valid pixel (nodata / masked everywhere); it counts as done."""

    scene: int
    tile_id: int


def iter_tile_tasks(source, plan: ScenePlan, scene: int) -> Iterator[TileTask | SkippedTile]:
    """Read, and in ``hr`` mode degrade, every tile of ``plan`` from ``source`` (a scene source).

    Sources with ``read_with_mask`` (georeferenced rasters with nodata or masks) report their valid pixels; a tile
    without any is yielded as :class:`SkippedTile` instead of being predicted. The whole-scene pass (if planned)
    comes last: it reads the whole scene once (shrunk by the source itself when it has ``read_thumbnail``).
    """
    hr = plan.options.mode == "hr"
    s = plan.sr_scale
    factor = float(plan.factor)
    masked = hasattr(source, "read_with_mask")
    for tile_id, win in plan.tiles:
        if masked:
            crop, valid = source.read_with_mask(win)
            if valid is not None and not valid.any():
                yield SkippedTile(scene, tile_id)
                continue
        else:
            crop = source.read(win)
        image = degrade(np.ascontiguousarray(crop), s) if hr else np.ascontiguousarray(crop)
        yield TileTask(scene, tile_id, win, image, (factor, factor), (float(win[0]), float(win[1])))
    if plan.full_image:
        tile = plan.options.tile_size // (1 if hr else s)
        if getattr(source, "image", None) is None and hasattr(source, "read_thumbnail"):  # not in memory
            whole = source.read_thumbnail(tile)[0]
        else:
            whole = source.read((0, 0, plan.width, plan.height))
        small = _shrink_to_tile(whole, tile, s if hr else 1)
        fx, fy = plan.width / small.shape[1], plan.height / small.shape[0]
        image = degrade(small, s) if hr else small
        yield TileTask(
            scene,
            FULL_IMAGE_TILE,
            (0, 0, plan.width, plan.height),
            np.ascontiguousarray(image),
            (fx * factor, fy * factor),
            (0.0, 0.0),
        )
