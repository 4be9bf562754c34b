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

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["ERROR_TYPES", "error_breakdown"]

#: TIDE's main error types, in its order.
ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
_CLS, _LOC, _BOTH, _DUPE, _BKG, _MISS = range(6)
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _class_ap(score: np.ndarray, correct: np.ndarray, order: np.ndarray, num_gt: int) -> float:
    """TIDE's AP of one class in percent: points sorted by score (ties: ``order``), 101-point interpolation."""
    if num_gt <= 0 or score.size == 0:
        return 0.0
    idx = np.lexsort((order, -score))
    tp = np.cumsum(correct[idx], dtype=np.float64)
    precision = tp / np.arange(1, idx.size + 1)
    recall = tp / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(recall, _RECALL_POINTS, side="left")
    y = np.where(at < precision.size, precision[np.minimum(at, precision.size - 1)], 0.0)
    return float(y.mean() * 100.0)


def _mean_ap(
    cls: np.ndarray, score: np.ndarray, correct: np.ndarray, order: np.ndarray, num_gt: dict
) -> float:
    """Mean of the class APs over the classes with points or GT (a class with points but no GT counts as 0)."""
    classes = set(num_gt) | set(np.unique(cls).tolist())
    aps = []
    for c in sorted(classes):
        m = cls == c
        if m.any() or num_gt.get(c, 0) > 0:
            aps.append(_class_ap(score[m], correct[m], order[m], num_gt.get(c, 0)))
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
    for a in gt.get("annotations", []):
        gts[int(a["image_id"])].append(
            (int(a["category_id"]), list(map(float, a["bbox"])), bool(a.get("iscrowd", 0)))
        )
    preds: dict[int, list] = defaultdict(list)
    for r in results:
        preds[int(r["image_id"])].append(
            (float(r["score"]), int(r["category_id"]), list(map(float, r["bbox"])))
        )

    num_gt: dict[int, int] = defaultdict(int)
    false_negatives: dict[int, int] = defaultdict(int)
    # base AP points (detections not ignored), in TIDE's push order
    b_cls, b_score, b_correct = [], [], []
    # errors, in TIDE's order: type, original point (cls, score) or none, fix point (cls) or none, missed class
    e_type, e_has_orig, e_cls, e_score, e_fix_cls, e_miss_cls = [], [], [], [], [], []

    for img in ids:
        g_all = gts.get(img, [])
        g_pos = [g for g in g_all if not g[2]]
        g_ign = [g for g in g_all if g[2]]
        for c, _, _ in g_pos:
            num_gt[c] += 1
        p_all = sorted(preds.get(img, []), key=lambda p: -p[0])[:max_dets]  # stable, like TIDE
        n_p, n_g = len(p_all), len(g_pos)
        if n_p == 0:
            for c, _, _ in g_pos:
                false_negatives[c] += 1
                e_type.append(_MISS), e_has_orig.append(False), e_cls.append(c), e_score.append(0.0)
                e_fix_cls.append(-1), e_miss_cls.append(c)
            continue
        score = np.array([p[0] for p in p_all])
        pcls = np.array([p[1] for p in p_all])
        boxes = [p[2] for p in p_all]
        used = np.zeros(
            n_p, dtype=np.int8
        )  # 1 = true positive, -1 = ignored (crowd region), 0 = false positive
        g_used = np.zeros(n_g, dtype=bool)
        if n_g:
            iou = np.asarray(mask_utils.iou(boxes, [g[1] for g in g_pos], [0] * n_g), dtype=np.float64)
            iou = iou.reshape(n_p, n_g)
            same = pcls[:, None] == np.array([g[0] for g in g_pos])[None, :]
            cls_iou = iou * same
            buf = cls_iou.copy()
            for i in np.nonzero(cls_iou.max(1) >= pos_thresh)[0]:  # greedy, in score order
                j = int(np.argmax(buf[i]))
                if buf[i, j] >= pos_thresh:
                    used[i] = 1
                    g_used[j] = True
                    buf[:, j] = 0
        for c, box, _ in g_ign:
            crowd = np.asarray(mask_utils.iou(boxes, [box], [1]), dtype=np.float64).reshape(-1)
            used[(used == 0) & (crowd > pos_thresh) & (pcls == c)] = -1
        keep = used != -1
        b_cls.append(pcls[keep]), b_score.append(score[keep]), b_correct.append(used[keep] == 1)

        fp = np.nonzero(used != 1)[0]
        g_usable = np.zeros(n_g, dtype=bool)
        fix_cls = np.full(fp.size, -1)
        if n_g == 0:
            types = np.full(fp.size, _BKG)
        else:
            rows = np.arange(n_p)
            j = np.argmax(cls_iou, 1)
            noncls = iou * ~same
            k = np.argmax(noncls, 1)
            loc_v, cls_v = cls_iou[rows, j], noncls[rows, k]
            dupe_v = (iou * same * g_used[None, :]).max(1)
            conds = [
                (bg_thresh <= loc_v) & (loc_v <= pos_thresh),
                cls_v >= pos_thresh,
                dupe_v >= pos_thresh,
                iou.max(1) <= bg_thresh,
            ]
            types = np.select(conds, [_LOC, _CLS, _DUPE, _BKG], default=_BOTH)[fp]
            target = np.where(types == _LOC, j[fp], k[fp])
            fixable = ((types == _LOC) | (types == _CLS)) & ~g_used[target]
            g_usable[target[fixable]] = True
            claimed = np.zeros(n_g, dtype=bool)
            for e in np.nonzero(fixable)[
                0
            ]:  # the first (highest-scoring) error per GT is fixed, the rest suppressed
                t = target[e]
                if not claimed[t]:
                    claimed[t] = True
                    fix_cls[e] = pcls[fp[e]] if types[e] == _LOC else g_pos[t][0]
        e_type.extend(types.tolist())
        e_has_orig.extend((used[fp] == 0).tolist())
        e_cls.extend(pcls[fp].tolist())
        e_score.extend(score[fp].tolist())
        e_fix_cls.extend(fix_cls.tolist())
        e_miss_cls.extend([-1] * fp.size)
        for jg in np.nonzero(~g_used)[0]:
            c = g_pos[jg][0]
            false_negatives[c] += 1
            if not g_usable[jg]:
                e_type.append(_MISS), e_has_orig.append(False), e_cls.append(c), e_score.append(0.0)
                e_fix_cls.append(-1), e_miss_cls.append(c)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    b_cls, b_score, b_correct = cat(b_cls, np.int64), cat(b_score, np.float64), cat(b_correct, bool)
    base_order = np.arange(b_cls.size)
    num_gt = dict(num_gt)
    ap = _mean_ap(b_cls, b_score, b_correct, base_order, num_gt)
    e_type = np.asarray(e_type, dtype=np.int64)
    e_has_orig = np.asarray(e_has_orig, dtype=bool)
    e_cls = np.asarray(e_cls, dtype=np.int64)
    e_score = np.asarray(e_score, dtype=np.float64)
    e_fix_cls = np.asarray(e_fix_cls, dtype=np.int64)
    tp = b_correct
    n_err = e_type.size

    def fixed(fix_type: int = -1, false_pos: bool = False, drop_misses: bool = False) -> float:
        """mAP after fixing the errors of ``fix_type`` (TIDE's ``fix_errors``): errors first, then the TPs."""
        fixing = e_type == fix_type
        orig = e_has_orig & ~fixing
        fix = fixing & (e_fix_cls >= 0)
        cls = np.concatenate([e_cls[orig], e_fix_cls[fix], b_cls[tp]])
        score = np.concatenate([e_score[orig] * (0.0 if false_pos else 1.0), e_score[fix], b_score[tp]])
        correct = np.concatenate(
            [np.zeros(orig.sum(), bool), np.ones(fix.sum(), bool), np.ones(tp.sum(), bool)]
        )
        order = np.concatenate([np.nonzero(orig)[0], np.nonzero(fix)[0], n_err + np.nonzero(tp)[0]])
        counts = dict(num_gt)
        if fix_type == _MISS:
            for c in e_cls[fixing]:
                counts[int(c)] -= 1
        if drop_misses:
            for c, n in false_negatives.items():
                counts[c] = counts.get(c, 0) - n
        return _mean_ap(cls, score, correct, order, counts)

    d_ap = {t: max(fixed(code) - ap, 0.0) for code, t in enumerate(ERROR_TYPES)}
    special = {"FalsePos": fixed(false_pos=True) - ap, "FalseNeg": fixed(drop_misses=True) - ap}
    counts = {t: int((e_type == code).sum()) for code, t in enumerate(ERROR_TYPES)}
    return {
        "ap": ap,
        "pos_thresh": pos_thresh,
        "bg_thresh": bg_thresh,
        "max_dets": int(max_dets),
        "dAP": d_ap,
        "counts": counts,
        "special": special,
    }
