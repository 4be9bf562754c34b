"""Error breakdown of box detections with TIDE's definitions (Bolya et al., ECCV 2020), framework-free.

Why not the ``tidecv`` package: it works with numpy 2 through its ``Data`` API, but its COCO loader needs a
``segmentation`` in every ground-truth annotation (box-only datasets fail), and installing it pulls ``opencv-python``
beside the ``opencv-python-headless`` this project uses (two packages owning ``cv2``) plus pandas and seaborn. This
module re-implements TIDE's box-mode definitions and fixes; ``tests/test_evaluation_errors.py`` checks it against
``tidecv`` when that is installed.

Definitions (per image, detections sorted by score and cut to ``max_dets``; foreground IoU ``t_f`` =
``pos_thresh`` = 0.5, background IoU ``t_b`` = ``bg_thresh`` = 0.1). A detection is a true positive when its best
still-unmatched GT of its class has IoU >= t_f (greedy in score order). Every other detection is, in this order:

* ``Bkg`` if the image has no GT;
* ``Loc`` (localisation): its best same-class IoU lies in [t_b, t_f];
* ``Cls`` (classification): IoU >= t_f with a GT of another class;
* ``Dupe`` (duplicate): IoU >= t_f with a same-class GT already matched by a higher-scoring detection;
* ``Bkg`` (background): IoU <= t_b with every GT;
* ``Both`` (wrong class and localisation): anything else.

A GT that is not matched is ``Miss`` unless a ``Cls``/``Loc`` error points at it. Each type's ``dAP`` is the AP50 gained
by fixing only that type ("oracle"): ``Cls`` gets the GT's class, ``Loc`` the GT's box (only the highest-scoring error
per GT becomes a true positive, the rest are suppressed, as are errors pointing at an already matched GT); ``Both``,
``Dupe`` and ``Bkg`` are suppressed; ``Miss`` removes those GT from the count. AP is TIDE's: per class 101-point
interpolated AP at t_f, averaged over the classes with GT or detections (a class with detections but no GT counts
as 0). ``FalsePos``/``FalseNeg`` are TIDE's special errors (all false positives scored last / all misses removed).
Crowd GT (``iscrowd``) are ignore regions: an unmatched same-class detection inside one (crowd IoU > t_f) does not
count in AP.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["ERROR_TYPES", "error_breakdown"]

#: TIDE's main error types, in its order.
ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _ap(points: Sequence[tuple[float, bool]], num_gt: int) -> float:
    """TIDE's per-class AP in percent (0 when the class has no GT)."""
    if num_gt <= 0:
        return 0.0
    pts = sorted(points, key=lambda p: -p[0])  # stable, like TIDE
    if not pts:
        return 0.0
    correct = np.array([p[1] for p in pts], dtype=np.float64)
    tp = np.cumsum(correct)
    precision = tp / np.arange(1, len(pts) + 1)
    recall = tp / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    y = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(y.mean() * 100.0)


class _APData:
    """Per-class data points ``id -> (score, correct)`` in insertion order, plus GT counts."""

    def __init__(self) -> None:
        self.points: dict[Any, OrderedDict] = defaultdict(OrderedDict)
        self.num_gt: dict[Any, int] = defaultdict(int)

    def touch(self, cls) -> None:
        self.points[cls]  # noqa: B018 -- create the class entry (TIDE's defaultdict order)
        self.num_gt[cls] += 0

    def push(self, cls, key, score: float, correct: bool) -> None:
        self.touch(cls)
        self.points[cls][key] = (score, correct)

    def add_gt(self, cls, n: int) -> None:
        self.touch(cls)
        self.num_gt[cls] += n

    def mean_ap(self) -> float:
        aps = [
            _ap(list(self.points[c].values()), self.num_gt[c])
            for c in self.points
            if self.points[c] or self.num_gt[c] > 0
        ]
        return sum(aps) / len(aps) if aps else float("nan")


def error_breakdown(
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    *,
    pos_thresh: float = 0.5,
    bg_thresh: float = 0.1,
    max_dets: int = 100,
    image_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """TIDE error breakdown of COCO box results.

    Args:
        gt: COCO ground truth dict (``bbox`` xywh; ``iscrowd`` annotations are ignore regions).
        results: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        pos_thresh: foreground IoU t_f (TIDE: 0.5).
        bg_thresh: background IoU t_b (TIDE: 0.1).
        max_dets: detections per image considered (highest scores; TIDE: 100).
        image_ids: images to evaluate (default: all images of ``gt``).

    Returns:
        ``{"ap": TIDE's AP at t_f (%), "pos_thresh", "bg_thresh", "max_dets", "dAP": {type: AP gained (%)},
        "counts": {type: number of errors}, "special": {"FalsePos": dAP, "FalseNeg": dAP}}``.
    """
    ids = [int(i["id"]) for i in gt.get("images", [])] if image_ids is None else [int(i) for i in image_ids]
    gts: dict[int, list] = defaultdict(list)
    for k, a in enumerate(gt.get("annotations", [])):
        gts[int(a["image_id"])].append(
            {"key": ("g", k), "cls": int(a["category_id"]), "box": list(map(float, a["bbox"])),
             "ignore": bool(a.get("iscrowd", 0))}
        )  # fmt: skip
    preds: dict[int, list] = defaultdict(list)
    for k, r in enumerate(results):
        preds[int(r["image_id"])].append(
            {"key": ("d", k), "cls": int(r["category_id"]), "box": list(map(float, r["bbox"])),
             "score": float(r["score"])}
        )  # fmt: skip

    base = _APData()
    errors: list[
        dict
    ] = []  # {"type", "orig": (cls, key, score, correct) | None, "fix": ... | None | ("miss", cls)}
    counts = dict.fromkeys(ERROR_TYPES, 0)
    false_negatives: dict[int, int] = defaultdict(int)
    best: dict[Any, tuple[float, Any]] = {}  # GT key -> (best error score, pred key) among Cls/Loc errors
    fixable: list[dict] = []

    for img in ids:
        g_all = gts.get(img, [])
        for g in g_all:
            if not g["ignore"]:
                base.add_gt(g["cls"], 1)
        p_all = sorted(preds.get(img, []), key=lambda p: -p["score"])[:max_dets]
        g_pos = [g for g in g_all if not g["ignore"]]
        g_ign = [g for g in g_all if g["ignore"]]
        if not p_all:
            for g in g_pos:
                false_negatives[g["cls"]] += 1
                errors.append({"type": "Miss", "orig": None, "fix": ("miss", g["cls"])})
                counts["Miss"] += 1
            continue
        boxes = [p["box"] for p in p_all]
        used = [False] * len(p_all)  # True / False / None (ignored)
        g_used = [False] * len(g_pos)
        g_usable = [False] * len(g_pos)
        if g_pos:
            iou = np.asarray(
                mask_utils.iou(boxes, [g["box"] for g in g_pos], [0] * len(g_pos)), dtype=np.float64
            )
            iou = iou.reshape(len(p_all), len(g_pos))
            same = (
                np.array([p["cls"] for p in p_all])[:, None] == np.array([g["cls"] for g in g_pos])[None, :]
            )
            cls_iou = iou * same
            buf = cls_iou.copy()
            for i in range(len(p_all)):
                j = int(np.argmax(buf[i]))
                if buf[i, j] >= pos_thresh:
                    used[i] = True
                    g_used[j] = True
                    buf[:, j] = 0
        for reg in g_ign:
            crowd = np.asarray(mask_utils.iou(boxes, [reg["box"]], [1]), dtype=np.float64).reshape(-1)
            for i, p in enumerate(p_all):
                if used[i] is False and crowd[i] > pos_thresh and reg["cls"] == p["cls"]:
                    used[i] = None
        for i, p in enumerate(p_all):
            if used[i] is not None:
                base.push(p["cls"], p["key"], p["score"], bool(used[i]))
        if g_pos:
            gu = np.array(g_used)[None, :]
            noncls_iou = iou * ~same
            used_cls = iou * gu * same
        for i, p in enumerate(p_all):
            if used[i] is True:
                continue
            orig = None if used[i] is None else (p["cls"], p["key"], p["score"], False)
            err = {"orig": orig, "fix": None}
            if not g_pos:
                err["type"] = "Bkg"
            else:
                j = int(np.argmax(cls_iou[i]))
                k = int(np.argmax(noncls_iou[i]))
                if bg_thresh <= cls_iou[i, j] <= pos_thresh:
                    err["type"], target, fix_cls = "Loc", j, p["cls"]
                elif noncls_iou[i, k] >= pos_thresh:
                    err["type"], target, fix_cls = "Cls", k, g_pos[k]["cls"]
                elif used_cls[i].max() >= pos_thresh:
                    err["type"] = "Dupe"
                elif iou[i].max() <= bg_thresh:
                    err["type"] = "Bkg"
                else:
                    err["type"] = "Both"
                if err["type"] in ("Loc", "Cls") and not g_used[target]:
                    g_usable[target] = True
                    gkey = g_pos[target]["key"]
                    if gkey not in best or best[gkey][0] < p["score"]:
                        best[gkey] = (p["score"], p["key"])
                    err["candidate"] = (gkey, (fix_cls, p["key"], p["score"], True))
                    fixable.append(err)
            counts[err["type"]] += 1
            errors.append(err)
        for j, g in enumerate(g_pos):
            if not g_used[j]:
                false_negatives[g["cls"]] += 1
                if not g_usable[j]:
                    errors.append({"type": "Miss", "orig": None, "fix": ("miss", g["cls"])})
                    counts["Miss"] += 1
    for err in fixable:  # only the best-scoring error per GT becomes a true positive
        gkey, point = err["candidate"]
        err["fix"] = point if best[gkey][1] == point[1] else None

    ap = base.mean_ap()

    def fixed(types=(), false_pos=False, drop_misses=False) -> float:
        new = _APData()
        num_gt = dict(base.num_gt)
        for err in errors:
            point = err["orig"]
            if err["type"] in types:
                point = err["fix"]
                if point is not None and point[0] == "miss":
                    num_gt[point[1]] -= 1
                    point = None
            if point is not None:
                cls, key, score, correct = point
                if false_pos and not correct:
                    score = 0.0
                new.push(cls, key, score, correct)
        for cls in num_gt:
            for key, (score, correct) in base.points[cls].items():
                if correct:
                    new.push(cls, key, score, correct)
        for cls, n in num_gt.items():
            new.add_gt(cls, n - (false_negatives.get(cls, 0) if drop_misses else 0))
        return new.mean_ap()

    d_ap = {t: max(fixed((t,)) - ap, 0.0) for t in ERROR_TYPES}
    special = {"FalsePos": fixed(false_pos=True) - ap, "FalseNeg": fixed(drop_misses=True) - ap}
    return {
        "ap": ap,
        "pos_thresh": pos_thresh,
        "bg_thresh": bg_thresh,
        "max_dets": int(max_dets),
        "dAP": d_ap,
        "counts": counts,
        "special": special,
    }
