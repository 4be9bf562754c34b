"""Per-scene collection of tile detections, and the merge into scene detections once the last tile is in.

A tile's boxes are mapped into scene pixels (:class:`~sdconet.inference.tiling.TileTask` ``scale``/``offset``),
flagged *cut* when they touch an inner tile edge, and kept in :class:`RawTileDetections` (score threshold applied).
When every task of a scene's plan has been added, :class:`SceneAccumulator` returns the raw detections; the runner
merges them (:func:`merge_raw`: border-cut suppression, NMS/WBF, clipping, see :mod:`sdconet.inference.merge`) or,
when the work of one scene is split over processes, hands them on unmerged so that the merge runs after a gather.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .merge import MergeOptions, cut_by_window, merge_detections
from .tiling import FULL_IMAGE_TILE, ScenePlan, TileTask

__all__ = ["RawTileDetections", "SceneAccumulator", "SceneDetections", "merge_raw", "tile_detections"]


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


@dataclass
class RawTileDetections:
    """Tile detections of a scene in scene pixels, before merging.

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in scene pixels (not clipped).
        scores: (N,) float32.
        labels: (N,) int64.
        cut: (N,) bool, the box touches an inner edge of its tile.
        tile_ids: (N,) int64 window index in the scene's plan (:data:`~sdconet.inference.tiling.FULL_IMAGE_TILE` for
            the whole-scene pass).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    cut: np.ndarray
    tile_ids: np.ndarray

    @classmethod
    def empty(cls) -> RawTileDetections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, bool),
            np.zeros(0, np.int64),
        )

    @classmethod
    def concat(cls, parts: Sequence[RawTileDetections]) -> RawTileDetections:
        """All detections of ``parts`` (e.g. the pieces of one scene predicted by several processes)."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]).astype(np.float32).reshape(-1, 4),
            np.concatenate([p.scores for p in parts]).astype(np.float32),
            np.concatenate([p.labels for p in parts]).astype(np.int64),
            np.concatenate([p.cut for p in parts]).astype(bool),
            np.concatenate([p.tile_ids for p in parts]).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.scores)


def tile_detections(
    task: TileTask, result: Mapping[str, Any], plan: ScenePlan, score_thresh: float
) -> RawTileDetections:
    """One tile's detector output (boxes in model-input pixels) as scene detections above ``score_thresh``."""
    boxes = np.asarray(result["boxes"], dtype=np.float32).reshape(-1, 4).copy()
    scores = np.asarray(result["scores"], dtype=np.float32).reshape(-1)
    labels = np.asarray(result["labels"], dtype=np.int64).reshape(-1)
    sx, sy = task.scale
    ox, oy = task.offset
    boxes *= np.array([sx, sy, sx, sy], dtype=np.float32)
    boxes[:, 0::2] += np.float32(ox)
    boxes[:, 1::2] += np.float32(oy)
    if task.tile_id == FULL_IMAGE_TILE:
        cut = np.zeros(len(boxes), dtype=bool)  # the whole scene: never cut
    else:
        cut = cut_by_window(boxes, task.window, (plan.width, plan.height), plan.margin)
    keep = scores >= score_thresh
    return RawTileDetections(
        boxes[keep], scores[keep], labels[keep], cut[keep], np.full(int(keep.sum()), task.tile_id, np.int64)
    )


def merge_raw(
    raw: RawTileDetections, width: int, height: int, options: MergeOptions = MergeOptions()
) -> SceneDetections:
    """Merge a scene's raw tile detections into :class:`SceneDetections` (stats without ``num_tiles``/``seconds``)."""
    boxes, scores, labels = merge_detections(
        raw.boxes, raw.scores, raw.labels, raw.cut, raw.tile_ids, (width, height), options
    )
    stats = {"num_raw": len(raw), "num_border_cut": int(raw.cut.sum()), "num_merged": len(scores)}
    return SceneDetections(boxes=boxes, scores=scores, labels=labels, width=width, height=height, stats=stats)


@dataclass
class _Pending:
    plan: ScenePlan
    parts: list[RawTileDetections] = field(default_factory=list)
    done: int = 0


class SceneAccumulator:
    """Collects tile detections per scene until the scene's last task is in.

    Args:
        score_thresh: tile detections below this score are dropped before merging.
    """

    def __init__(self, score_thresh: float = 0.05) -> None:
        self.score_thresh = float(score_thresh)
        self._pending: dict[int, _Pending] = {}

    def start(self, scene: int, plan: ScenePlan) -> None:
        """A scene's tiles will follow (``plan.num_tasks`` of them)."""
        self._pending[scene] = _Pending(plan)

    def drop(self, scene: int) -> None:
        """Forget a scene (it failed); its tiles still in flight are ignored."""
        self._pending.pop(scene, None)

    def is_active(self, scene: int) -> bool:
        return scene in self._pending

    @property
    def active(self) -> list[int]:
        """Scenes started and not finished."""
        return list(self._pending)

    def skip(self, scene: int) -> RawTileDetections | None:
        """Count a task of ``scene`` as done without detections (a tile without valid pixels); returns the scene's
        raw detections when this was its last task."""
        pending = self._pending.get(scene)
        if pending is None:
            return None
        pending.done += 1
        if pending.done < pending.plan.num_tasks:
            return None
        del self._pending[scene]
        return RawTileDetections.concat(pending.parts)

    def add(self, task: TileTask, result: Mapping[str, Any]) -> RawTileDetections | None:
        """Add one tile's detector output; returns the scene's raw detections when this was its last task."""
        pending = self._pending.get(task.scene)
        if pending is None:  # the scene failed meanwhile
            return None
        pending.parts.append(tile_detections(task, result, pending.plan, self.score_thresh))
        pending.done += 1
        if pending.done < pending.plan.num_tasks:
            return None
        del self._pending[task.scene]
        return RawTileDetections.concat(pending.parts)
