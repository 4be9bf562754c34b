"""Sliced prediction of a whole scene: tile, predict every tile, map boxes to the scene, merge.

Tiles are the dataset tiler's windows (:func:`sdconet.data.tiler.tile_windows`: DOTA_devkit starts, the last
window moved back to end at the scene edge), so a model sees the same kind of tiles as in training. Two input modes:

* ``"hr"``: the scene is a high-resolution image (as in the datasets). ``tile_size``/``overlap`` are HR pixels
  (the presets, e.g. 512/200 for NWPU); every HR tile is degraded with
  :func:`sdconet.data.degradation.degrade` (bicubic ×1/s) into the LR model input, and the predicted boxes are scaled
  by s back into the HR tile, then offset into the scene. Results are in HR scene pixels.
* ``"native"``: the scene already is the low-quality model input. It is cut into tiles of ``tile_size // s`` with
  overlap ``overlap // s`` (the LR size of the same tiles, so the model sees objects at its training scale) and the
  boxes stay in the image's own pixels.

``tile_size = 0`` runs the whole scene as one tile. Tiles are cut, degraded and predicted ``batch_size`` at a time
(a generator: only one batch of tiles is in memory); tiles smaller than ``tile_size`` at the scene edges of small
scenes are not padded (the model receives a padding mask instead). ``full_image=True`` adds SAHI's "standard
prediction": the whole scene shrunk to one tile, for objects larger than the overlap. Merging:
:mod:`sdconet.inference.merge`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from ..data.degradation import degrade
from ..data.tiler import Window, crop_tile, tile_windows
from .merge import MergeOptions, cut_by_window, merge_detections

logger = logging.getLogger(__name__)

__all__ = ["MODES", "SceneDetections", "TileDetector", "predict_scene", "scene_windows"]

MODES = ("hr", "native")
#: Default border margin in LR (model-input) pixels: a box edge this close to an inner tile edge is "cut".
DEFAULT_BORDER_MARGIN_LR = 3.0
#: Tile id of the detections of the optional whole-scene pass.
FULL_IMAGE_TILE = -1


class TileDetector(Protocol):
    """What :func:`predict_scene` needs from a model (a :class:`~sdconet.inference.predictor.Predictor`)."""

    batch_size: int

    @property
    def sr_scale(self) -> int: ...

    def predict(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """(h, w, 3) uint8 LR inputs -> per image ``boxes`` (k, 4) in its pixels, ``scores``, ``labels``."""
        ...


@dataclass
class SceneDetections:
    """Detections of one scene.

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in scene pixels (HR pixels in ``hr`` mode, the image's own pixels in
            ``native`` mode), clipped to the scene.
        scores: (N,) float32, descending.
        labels: (N,) int64 class indices in ``[0, num_classes)``.
        width: scene width in pixels.
        height: scene height.
        stats: ``num_tiles``, ``num_raw`` (tile detections above the score threshold), ``num_border_cut``,
            ``num_merged`` (= N), ``seconds``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    width: int
    height: int
    stats: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)


def scene_windows(width: int, height: int, tile_size: int, overlap: int) -> list[Window]:
    """Tile windows of a scene (``tile_size = 0``: one window covering everything)."""
    if tile_size == 0:
        return [(0, 0, width, height)]
    return tile_windows(width, height, tile_size, overlap)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _shrink_to_tile(image: np.ndarray, tile_size: int, multiple: int) -> np.ndarray:
    """The scene resized (area interpolation) so its long side is at most ``tile_size``; sides are multiples of
    ``multiple`` (the SR factor, so that degrading loses no row)."""
    h, w = image.shape[:2]
    factor = min(1.0, tile_size / max(h, w))
    nh = max(multiple, int(round(h * factor / multiple)) * multiple)
    nw = max(multiple, int(round(w * factor / multiple)) * multiple)
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA) if (nh, nw) != (h, w) else image


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
        mode: ``"hr"`` or ``"native"`` (module docstring).
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
    """
    if mode not in MODES:
        raise ValueError(f"predict_scene: mode must be one of {MODES}, got {mode!r}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"predict_scene: image must be an (H, W, 3) uint8 RGB array, got {desc}")
    s = int(detector.sr_scale)
    height, width = image.shape[:2]
    if mode == "hr" and min(height, width) < s:
        raise ValueError(f"predict_scene: a {width}x{height} scene is smaller than the SR factor {s}")
    step = s if mode == "native" else 1  # native mode: tile sizes are given in HR pixels
    tile, ovl = tile_size // step, overlap // step
    if tile_size and tile < 1:
        raise ValueError(f"predict_scene: tile_size {tile_size} is smaller than the SR factor {s}")
    margin = (
        float(border_margin)
        if border_margin is not None
        else DEFAULT_BORDER_MARGIN_LR * (s if mode == "hr" else 1)
    )
    windows = scene_windows(width, height, tile, ovl)
    batch_size = int(batch_size or getattr(detector, "batch_size", 1) or 1)
    t0 = time.perf_counter()

    parts_b, parts_s, parts_l, parts_cut, parts_t = [], [], [], [], []

    def add(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, cut: np.ndarray, tile_id: int) -> None:
        keep = scores >= score_thresh
        parts_b.append(boxes[keep])
        parts_s.append(scores[keep])
        parts_l.append(labels[keep])
        parts_cut.append(cut[keep])
        parts_t.append(np.full(int(keep.sum()), tile_id, dtype=np.int64))

    for batch_windows in _batches(list(enumerate(windows)), batch_size):
        inputs, factors = [], []
        for _, win in batch_windows:
            crop = crop_tile(image, win, tile or max(width, height), pad=False)
            if mode == "hr":
                inputs.append(degrade(crop, s))
                factors.append(s)  # LR pixel i spans HR [s*i, s*(i+1))
            else:
                inputs.append(crop)
                factors.append(1)
        results = detector.predict(inputs)
        for (tile_id, win), res, factor in zip(batch_windows, results, factors):
            boxes = np.asarray(res["boxes"], dtype=np.float32).reshape(-1, 4) * factor
            boxes[:, 0::2] += win[0]
            boxes[:, 1::2] += win[1]
            cut = cut_by_window(boxes, win, (width, height), margin)
            add(
                boxes,
                np.asarray(res["scores"], np.float32),
                np.asarray(res["labels"], np.int64),
                cut,
                tile_id,
            )
        if progress is not None:
            progress(len(batch_windows))

    if full_image and tile:
        small = _shrink_to_tile(image, tile, s if mode == "hr" else 1)
        fx, fy = width / small.shape[1], height / small.shape[0]
        res = detector.predict([degrade(small, s) if mode == "hr" else small])[0]
        boxes = np.asarray(res["boxes"], dtype=np.float32).reshape(-1, 4) * (s if mode == "hr" else 1)
        boxes *= np.array([fx, fy, fx, fy], dtype=np.float32)
        no_cut = np.zeros(len(boxes), dtype=bool)
        add(
            boxes,
            np.asarray(res["scores"], np.float32),
            np.asarray(res["labels"], np.int64),
            no_cut,
            FULL_IMAGE_TILE,
        )

    boxes = np.concatenate(parts_b) if parts_b else np.zeros((0, 4), np.float32)
    scores = np.concatenate(parts_s) if parts_s else np.zeros(0, np.float32)
    labels = np.concatenate(parts_l) if parts_l else np.zeros(0, np.int64)
    cut = np.concatenate(parts_cut) if parts_cut else np.zeros(0, bool)
    tiles = np.concatenate(parts_t) if parts_t else np.zeros(0, np.int64)
    mb, ms, ml = merge_detections(boxes, scores, labels, cut, tiles, (width, height), merge)
    stats = {
        "num_tiles": len(windows),
        "num_raw": int(len(scores)),
        "num_border_cut": int(cut.sum()),
        "num_merged": int(len(ms)),
        "seconds": time.perf_counter() - t0,
    }
    logger.debug("scene %dx%d: %s", width, height, stats)
    return SceneDetections(boxes=mb, scores=ms, labels=ml, width=width, height=height, stats=stats)
