"""Merge the detections of overlapping tiles into one set per scene (numpy + torchvision, framework-free).

Three steps, in this order (:func:`merge_detections`):

1. **Border-cut suppression.** A tile detection is *cut* when one of its edges lies within ``border_margin`` pixels
   of a tile edge that is inside the scene (not the scene border): the tile saw only part of the object. A cut box
   is dropped when a detection of the same class from *another* tile is not cut and covers it: ``area(cut ∩ whole) /
   area(cut) >= border_ios``. Objects larger than the overlap, seen whole by no tile, keep their cut boxes.
2. **Duplicate merging**, class-wise by default (``class_agnostic`` merges across classes):
   ``"nms"`` greedy non-maximum suppression (highest score first); ``"wbf"`` weighted box fusion: each
   highest-scoring unassigned box gathers the unassigned boxes that match it, the fused box is their
   score-weighted mean and its score their mean score (single-model WBF); ``"nmm"`` and ``"greedynmm"``: SAHI's
   non-maximum *merging* (:func:`non_maximum_merging`): matching boxes are merged into their highest-scoring
   box, which grows to the enclosing box of the merged ones and keeps its score and class (``greedynmm``, SAHI's
   default, takes each keeper's direct matches like NMS; ``nmm`` also gathers matches of matches); ``"none"`` keeps
   everything. Two boxes match when their ``match_metric`` exceeds ``match_threshold``: ``"iou"`` (intersection over
   union) or ``"ios"`` (intersection over the smaller box, SAHI's IOS).
3. Boxes are clipped to the scene; optionally only the ``max_detections`` best are kept.

Boxes are ``x1, y1, x2, y2`` in scene pixels throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms

__all__ = [
    "MERGE_METHODS",
    "MATCH_METRICS",
    "MergeOptions",
    "cut_by_window",
    "greedy_nms",
    "merge_detections",
    "non_maximum_merging",
    "overlapping_pairs",
    "suppress_border_cut",
    "weighted_box_fusion",
]

MERGE_METHODS = ("nms", "wbf", "nmm", "greedynmm", "none")
MATCH_METRICS = ("iou", "ios")


@dataclass(frozen=True)
class MergeOptions:
    """How tile detections become scene detections (see the module docstring).

    Attributes:
        method: ``"nms"`` (default), ``"wbf"``, ``"nmm"``, ``"greedynmm"`` or ``"none"``.
        match_metric: ``"iou"`` (default) or ``"ios"``.
        match_threshold: two boxes are duplicates when the metric is > this (default 0.5, SAHI's default).
        class_agnostic: merge boxes of different classes too.
        border_suppression: drop cut boxes of objects another tile sees whole.
        border_ios: coverage needed to call a whole box the same object as a cut one.
        max_detections: keep at most this many boxes per scene (highest scores); 0 = all.
    """

    method: str = "nms"
    match_metric: str = "iou"
    match_threshold: float = 0.5
    class_agnostic: bool = False
    border_suppression: bool = True
    border_ios: float = 0.6
    max_detections: int = 0

    def __post_init__(self) -> None:
        if self.method not in MERGE_METHODS:
            raise ValueError(f"MergeOptions.method must be one of {MERGE_METHODS}, got {self.method!r}")
        if self.match_metric not in MATCH_METRICS:
            raise ValueError(
                f"MergeOptions.match_metric must be one of {MATCH_METRICS}, got {self.match_metric!r}"
            )
        if not 0.0 <= self.match_threshold <= 1.0:
            raise ValueError(f"MergeOptions.match_threshold must lie in [0, 1], got {self.match_threshold}")
        if not 0.0 < self.border_ios <= 1.0:
            raise ValueError(f"MergeOptions.border_ios must lie in (0, 1], got {self.border_ios}")
        if self.max_detections < 0:
            raise ValueError(f"MergeOptions.max_detections must be >= 0, got {self.max_detections}")


# ---------------------------------------------------------------------------------------------------- geometry
def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def overlapping_pairs(boxes: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """All pairs of intersecting boxes (positive intersection area), found by a sweep along x.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2``.
        groups: (N,) ints; only boxes of the same group are paired (None = one group).

    Returns:
        ``(i, j, inter)``: (P,) int64 indices with ``i != j`` (each unordered pair once) and (P,) float64
        intersection areas.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.float64)
    order = np.argsort(boxes[:, 0], kind="stable")
    b = boxes[order]
    g = None if groups is None else np.asarray(groups)[order]
    ends = np.searchsorted(b[:, 0], b[:, 2], side="left")  # candidates start before this box ends
    out_i, out_j, out_inter = [], [], []
    for a in range(n - 1):
        stop = ends[a]
        if stop <= a + 1:
            continue
        c = slice(a + 1, stop)
        iw = np.minimum(b[a, 2], b[c, 2]) - b[c, 0]
        ih = np.minimum(b[a, 3], b[c, 3]) - np.maximum(b[a, 1], b[c, 1])
        hit = (iw > 0) & (ih > 0)
        if g is not None:
            hit &= g[c] == g[a]
        idx = np.nonzero(hit)[0]
        if idx.size:
            out_i.append(np.full(idx.size, a, dtype=np.int64))
            out_j.append(idx + a + 1)
            out_inter.append(iw[idx] * ih[idx])
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.float64)
    i = order[np.concatenate(out_i)]
    j = order[np.concatenate(out_j)]
    return i, j, np.concatenate(out_inter)


def _match_pairs(
    boxes: np.ndarray, groups: np.ndarray | None, metric: str, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs whose ``metric`` (iou / ios) exceeds ``threshold``."""
    i, j, inter = overlapping_pairs(boxes, groups)
    area = _area(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    if metric == "iou":
        value = inter / np.maximum(area[i] + area[j] - inter, 1e-12)
    else:
        value = inter / np.maximum(np.minimum(area[i], area[j]), 1e-12)
    keep = value > threshold
    return i[keep], j[keep]


def _neighbours(n: int, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """Adjacency lists of an undirected graph with ``n`` nodes and edges ``(i, j)``."""
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    bounds = np.searchsorted(src, np.arange(n + 1))
    return [dst[bounds[k] : bounds[k + 1]] for k in range(n)]


def _score_order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties keep the input order (deterministic)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


# ----------------------------------------------------------------------------------------------------- merging
def greedy_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None = None,
    metric: str = "iou",
    threshold: float = 0.5,
) -> np.ndarray:
    """Greedy NMS with IoU or IoS matching.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2``.
        scores: (N,).
        groups: (N,) class ids for class-wise NMS, or None (class-agnostic).
        metric: ``"iou"`` or ``"ios"``.
        threshold: suppress a box whose metric with a kept, higher-scoring box is > this.

    Returns:
        Indices of the kept boxes, by descending score.
    """
    n = len(scores)
    if metric == "iou" and n:  # torchvision's kernel: same result, faster
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        s = torch.as_tensor(np.asarray(scores, dtype=np.float32))
        g = (
            torch.zeros(n, dtype=torch.int64)
            if groups is None
            else torch.as_tensor(np.asarray(groups, np.int64))
        )
        return batched_nms(b, s, g, threshold).numpy().astype(np.int64)
    i, j = _match_pairs(boxes, groups, metric, threshold)
    nbrs = _neighbours(n, i, j)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for k in _score_order(scores):
        if suppressed[k]:
            continue
        keep.append(k)
        suppressed[nbrs[k]] = True
    return np.asarray(keep, dtype=np.int64)


def weighted_box_fusion(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_agnostic: bool = False,
    metric: str = "iou",
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Single-model weighted box fusion (see the module docstring).

    Returns:
        ``(boxes, scores, labels)`` of the fused clusters, by descending seed score; a cluster takes its seed's label.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    i, j = _match_pairs(boxes, None if class_agnostic else labels, metric, threshold)
    nbrs = _neighbours(n, i, j)
    assigned = np.zeros(n, dtype=bool)
    out_b, out_s, out_l = [], [], []
    for k in _score_order(scores):
        if assigned[k]:
            continue
        members = np.concatenate([[k], nbrs[k][~assigned[nbrs[k]]]])
        assigned[members] = True
        w = scores[members]
        out_b.append((boxes[members] * w[:, None]).sum(0) / max(w.sum(), 1e-12))
        out_s.append(w.mean())
        out_l.append(labels[k])
    return (
        np.asarray(out_b, dtype=np.float32).reshape(-1, 4),
        np.asarray(out_s, dtype=np.float32),
        np.asarray(out_l, dtype=np.int64),
    )


def _pair_metric(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    if metric == "iou":
        return inter / max(area_a + area_b - inter, 1e-12)
    return inter / max(min(area_a, area_b), 1e-12)


def non_maximum_merging(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_agnostic: bool = False,
    metric: str = "iou",
    threshold: float = 0.5,
    greedy: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAHI's non-maximum merging (``GREEDYNMM`` with ``greedy=True``, ``NMM`` otherwise).

    Clusters: boxes are visited by descending score. *Greedy*: an unvisited box becomes a keeper and takes every
    still-free box that matches it (highest scores first). *NMM*: a free box becomes a keeper; a box already taken
    by a keeper hands its own free matches to that keeper too (clusters grow transitively). Merging: each keeper
    absorbs its cluster's boxes in that order, each only if it still matches the grown keeper box; the merged box is
    the enclosing box, the score and class stay the keeper's (its highest). Cluster members that no longer match are
    dropped, as in SAHI.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2``.
        scores: (N,).
        labels: (N,) ints; clusters are class-wise unless ``class_agnostic``.
        metric: ``"iou"`` or ``"ios"``; two boxes match when it is > ``threshold``.
        greedy: GREEDYNMM (True) or NMM (False).

    Returns:
        ``(boxes, scores, labels)`` of the merged boxes, by descending score.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(scores)
    i, j = _match_pairs(boxes, None if class_agnostic else labels, metric, threshold)
    nbrs = _neighbours(n, i, j)
    order = _score_order(scores)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    clusters: dict[int, list[int]] = {}
    if greedy:
        taken = np.zeros(n, dtype=bool)
        for k in order:
            if taken[k]:
                continue
            taken[k] = True
            free = nbrs[k][~taken[nbrs[k]]]
            free = free[np.argsort(rank[free], kind="stable")]  # highest score first
            taken[free] = True
            clusters[int(k)] = free.tolist()
    else:
        owner = np.full(n, -1, dtype=np.int64)
        keeper = np.zeros(n, dtype=bool)
        for k in order:
            matched = nbrs[k][np.argsort(-rank[nbrs[k]], kind="stable")]  # lowest score first (SAHI's order)
            target = int(k) if owner[k] < 0 else int(owner[k])
            if owner[k] < 0:
                keeper[k] = True
                clusters[target] = []
            for m in matched:
                if owner[m] < 0 and not keeper[m]:
                    clusters[target].append(int(m))
                    owner[m] = target
    out_b, out_s, out_l = [], [], []
    for k, members in clusters.items():
        box = boxes[k].copy()
        for m in members:
            if _pair_metric(box, boxes[m], metric) > threshold:
                box[:2] = np.minimum(box[:2], boxes[m, :2])
                box[2:] = np.maximum(box[2:], boxes[m, 2:])
        out_b.append(box)
        out_s.append(scores[k])
        out_l.append(labels[k])
    return (
        np.asarray(out_b, dtype=np.float32).reshape(-1, 4),
        np.asarray(out_s, dtype=np.float32),
        np.asarray(out_l, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------- border handling
def cut_by_window(
    boxes: np.ndarray, window: tuple[int, int, int, int], scene_size: tuple[int, int], margin: float
) -> np.ndarray:
    """Which boxes of one tile touch a tile edge that lies inside the scene.

    Args:
        boxes: (k, 4) ``x1, y1, x2, y2`` in scene pixels, predicted in ``window``.
        window: ``(x0, y0, x1, y1)`` of the tile in scene pixels.
        scene_size: ``(width, height)`` of the scene.
        margin: a box edge within this many pixels of an inner tile edge counts as cut.

    Returns:
        (k,) bool.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = window
    width, height = scene_size
    cut = np.zeros(len(boxes), dtype=bool)
    if x0 > 0:
        cut |= boxes[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= boxes[:, 1] <= y0 + margin
    if x1 < width:
        cut |= boxes[:, 2] >= x1 - margin
    if y1 < height:
        cut |= boxes[:, 3] >= y1 - margin
    return cut


def suppress_border_cut(
    boxes: np.ndarray,
    labels: np.ndarray,
    cut: np.ndarray,
    tile_ids: np.ndarray,
    ios: float = 0.6,
    class_agnostic: bool = False,
) -> np.ndarray:
    """Keep-mask that drops cut boxes whose object another tile sees whole (step 1 of the module docstring).

    Args:
        boxes: (N, 4) scene boxes.
        labels: (N,) classes.
        cut: (N,) bool from :func:`cut_by_window`.
        tile_ids: (N,) index of the tile each box came from.
        ios: minimum ``area(cut ∩ whole) / area(cut)``.
        class_agnostic: allow the whole box to have another class.

    Returns:
        (N,) bool, False for the suppressed cut boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep = np.ones(len(boxes), dtype=bool)
    cut = np.asarray(cut, dtype=bool)
    if not cut.any():
        return keep
    i, j, inter = overlapping_pairs(boxes, None if class_agnostic else labels)
    area = _area(boxes)
    tile_ids = np.asarray(tile_ids)
    other_tile = tile_ids[i] != tile_ids[j]
    # Pair (a, b) suppresses a when a is cut, b is whole, and b covers a.
    for a, b in ((i, j), (j, i)):
        hit = other_tile & cut[a] & ~cut[b] & (inter >= ios * np.maximum(area[a], 1e-12))
        keep[a[hit]] = False
    return keep


def merge_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    cut: np.ndarray,
    tile_ids: np.ndarray,
    scene_size: tuple[int, int],
    options: MergeOptions = MergeOptions(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn the detections of all tiles of a scene into scene detections (module docstring, steps 1-3).

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2`` in scene pixels.
        scores: (N,).
        labels: (N,) int.
        cut: (N,) bool, the box touches an inner edge of its tile.
        tile_ids: (N,) tile index per box.
        scene_size: ``(width, height)``.
        options: :class:`MergeOptions`.

    Returns:
        ``(boxes (M, 4) float32, scores (M,) float32, labels (M,) int64)`` sorted by descending score.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if options.border_suppression and len(boxes):
        keep = suppress_border_cut(boxes, labels, cut, tile_ids, options.border_ios, options.class_agnostic)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    groups = None if options.class_agnostic else labels
    if options.method == "nms":
        keep = greedy_nms(boxes, scores, groups, options.match_metric, options.match_threshold)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    elif options.method == "wbf":
        boxes, scores, labels = weighted_box_fusion(
            boxes, scores, labels, options.class_agnostic, options.match_metric, options.match_threshold
        )
    elif options.method in ("nmm", "greedynmm"):
        boxes, scores, labels = non_maximum_merging(
            boxes,
            scores,
            labels,
            options.class_agnostic,
            options.match_metric,
            options.match_threshold,
            greedy=options.method == "greedynmm",
        )
    width, height = scene_size
    boxes = boxes.copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    order = _score_order(scores)
    if options.max_detections:
        order = order[: options.max_detections]
    return boxes[order].astype(np.float32), scores[order].astype(np.float32), labels[order].astype(np.int64)
