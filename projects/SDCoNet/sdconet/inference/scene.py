"""Sliced prediction of one in-memory scene: :func:`predict_scene`, a thin wrapper over the whole-scene loop.

Tiling (modes ``hr`` / ``native``, tile size, overlap, the whole-scene pass) is described in
:mod:`sdconet.inference.tiling`, the loop (reader thread, batching, per-scene merge) in
:mod:`sdconet.inference.runner`, merging in :mod:`sdconet.inference.merge`. Tiles are cut, degraded and predicted
``batch_size`` at a time (only one batch of tiles is in memory); tiles smaller than ``tile_size`` at the scene edges
are not padded (the model receives a padding mask instead).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .accumulator import SceneDetections
from .merge import MergeOptions
from .runner import SceneFailure, SceneRunner, TileDetector
from .sources import ArraySource
from .tiling import DEFAULT_BORDER_MARGIN_LR, FULL_IMAGE_TILE, MODES, TilingOptions, scene_windows

__all__ = [
    "DEFAULT_BORDER_MARGIN_LR",
    "FULL_IMAGE_TILE",
    "MODES",
    "SceneDetections",
    "TileDetector",
    "predict_scene",
    "scene_windows",
]


def predict_scene(
    detector: TileDetector,
    image: np.ndarray,
    *,
    mode: str = "hr",
    tile_size: int = 512,
    overlap: int = 200,
    score_thresh: float = 0.05,
    merge: MergeOptions = MergeOptions(),
    border_margin: float | None = None,
    full_image: bool = False,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SceneDetections:
    """Predict every object of a large image, in scene coordinates.

    Args:
        detector: a :class:`~sdconet.inference.predictor.Predictor` (or anything with ``predict``, ``sr_scale``,
            ``batch_size``).
        image: (H, W, 3) uint8 RGB scene (:func:`sdconet.data.image_io.read_image_rgb` gives this for any
            grayscale / RGBA / 16-bit file).
        mode: ``"hr"`` or ``"native"`` (:mod:`sdconet.inference.tiling`).
        tile_size: tile side in HR pixels (both modes; native mode cuts ``tile_size // s``); 0 = whole scene.
        overlap: overlap of neighbouring tiles in HR pixels (native: ``overlap // s``).
        score_thresh: tile detections below this score are dropped before merging.
        merge: merging options (:class:`~sdconet.inference.merge.MergeOptions`).
        border_margin: "cut" margin in scene pixels; default 3 LR pixels (``3 s`` in ``hr`` mode).
        full_image: also run the whole scene shrunk to one tile and merge its boxes in (never "cut").
        batch_size: tiles per forward pass (default: the detector's).
        progress: called with the number of tiles finished after every batch (e.g. ``tqdm.update``).

    Returns:
        :class:`SceneDetections`.

    Raises:
        ValueError: a bad argument (named), or a scene smaller than the SR factor in ``hr`` mode.
        Exception: whatever the detector raised.
    """
    if mode not in MODES:
        raise ValueError(f"predict_scene: mode must be one of {MODES}, got {mode!r}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"predict_scene: image must be an (H, W, 3) uint8 RGB array, got {desc}")
    tiling = TilingOptions(
        mode=mode, tile_size=tile_size, overlap=overlap, full_image=full_image, border_margin=border_margin
    )
    runner = SceneRunner(
        detector,
        tiling,
        score_thresh=score_thresh,
        merge=merge,
        batch_size=batch_size,
        prefetch=0,
        on_tiles=None if progress is None else (lambda _scene, n: progress(n)),
    )
    (event,) = list(runner.run([ArraySource(image, key="<array>")]))
    if isinstance(event, SceneFailure):
        if isinstance(event.error, ValueError):
            raise ValueError(f"predict_scene: {event.reason}") from event.error
        raise event.error
    return event.detections
