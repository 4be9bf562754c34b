"""COCO box evaluation under a chosen protocol, size buckets and frame (framework-free, pycocotools).

One function, :func:`evaluate_coco`, scores COCO-format detections against a COCO ground-truth dict. It configures
``COCOeval.params`` (maxDets, area ranges) and reads the ``precision``/``recall`` arrays directly -- pycocotools'
``summarize()`` hard-codes COCO's labels and maxDets -- so every number carries the maxDets it was computed at.

**Protocols** (:func:`make_protocol`):

* ``coco``: ``maxDets = [1, 10, M]`` (``M`` = the requested headline maxDets, 100 = COCO standard); AP, AP50, AP75,
  the size-bucket APs and ARs are all at ``M`` (what detectron2's COCOEvaluator prints).
* ``mmdet``: ``maxDets = [100, 300, 1000]`` (mmdet's ``CocoMetric`` with ``proposal_nums``, the protocol the paper's
  numbers come from): AP at 100, AP50/AP75/size-bucket APs and ARs at 1000 -- exactly what pycocotools'
  ``summarize`` returns for that list (``stats[0]`` is at its default 100, the others at ``maxDets[2]``).

**Size buckets** (:data:`AREA_PRESETS`), by ``sqrt(area)`` in the pixels of the chosen *frame*:

* ``coco``: small < 32, medium 32-96, large >= 96 (``APs/APm/APl``);
* ``aitod``: very tiny < 8, tiny 8-16, small 16-32, medium >= 32 (``APvt/APt/APs/APm``, AI-TOD).

A bucket ``(lo, hi)`` holds an object whose area ``a`` (GT-frame pixels) satisfies ``(lo * f)^2 <= a <= (hi * f)^2``
(both ends inclusive, as pycocotools), where ``f`` = ``frame_scale`` = GT-frame pixels per frame pixel: 1 for the
frame the ground truth is in (``hr``: SDCoNet scores in the HR tile frame), ``s`` for the ``lr`` frame of an x``s``
SR model (the input the detector sees). GT areas are ``bbox w * h`` by default (``gt_area="bbox"``; horizontal
boxes), not the json's ``area`` field, which converters sometimes fill with a polygon area.

GT counts per bucket (and per class x bucket) are the objects pycocotools scores in that bucket: not ``iscrowd``
(nor ``ignore``), area inside the bucket, image and class evaluated.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "AREA_PRESETS",
    "MMDET_MAX_DETS",
    "PROTOCOLS",
    "AreaBucket",
    "Protocol",
    "area_buckets",
    "evaluate_coco",
    "make_protocol",
    "max_dets_note",
]

PROTOCOLS = ("coco", "mmdet")
#: mmdet CocoMetric's default ``proposal_nums``.
MMDET_MAX_DETS = (100, 300, 1000)
#: pycocotools' "infinite" side length (its area ranges end at ``1e5 ** 2``).
_INF_SIDE = 1e5
#: IoU thresholds whose precision-recall curves the report keeps.
PR_IOUS = (0.5, 0.75)


@dataclass(frozen=True)
class AreaBucket:
    """One size bucket: ``key`` (metric suffix: ``APs``), ``name`` (``small``), ``sqrt(area)`` range in frame px."""

    key: str
    name: str
    lo: float
    hi: float  # math.inf = no upper bound


#: Size-bucket presets (sqrt of area in frame pixels).
AREA_PRESETS: dict[str, tuple[AreaBucket, ...]] = {
    "coco": (
        AreaBucket("s", "small", 0.0, 32.0),
        AreaBucket("m", "medium", 32.0, 96.0),
        AreaBucket("l", "large", 96.0, math.inf),
    ),
    "aitod": (
        AreaBucket("vt", "very tiny", 0.0, 8.0),
        AreaBucket("t", "tiny", 8.0, 16.0),
        AreaBucket("s", "small", 16.0, 32.0),
        AreaBucket("m", "medium", 32.0, math.inf),
    ),
}


def area_buckets(preset: str) -> tuple[AreaBucket, ...]:
    """The buckets of an :data:`AREA_PRESETS` name (ValueError naming the choices otherwise)."""
    if preset not in AREA_PRESETS:
        raise ValueError(f"area ranges must be one of {sorted(AREA_PRESETS)} (got {preset!r})")
    return AREA_PRESETS[preset]


@dataclass(frozen=True)
class Protocol:
    """Which maxDets COCOeval runs with and which one each headline number is read at.

    Attributes:
        name: ``coco`` or ``mmdet``.
        max_dets: ``COCOeval.params.maxDets`` (increasing; the last one caps matching).
        ap_max_dets: maxDets of ``AP`` (AP@[.5:.95], all sizes).
        max_dets_rest: maxDets of AP50, AP75, the size-bucket APs/ARs and the per-class tables.
    """

    name: str
    max_dets: tuple[int, ...]
    ap_max_dets: int
    max_dets_rest: int


def make_protocol(name: str, max_dets: int = 100) -> Protocol:
    """The :class:`Protocol` ``name`` (``coco``: headline maxDets ``max_dets``; ``mmdet``: fixed 100/300/1000).

    Raises:
        ValueError: unknown name or ``max_dets < 1``.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS} (got {name!r})")
    if name == "mmdet":
        return Protocol("mmdet", MMDET_MAX_DETS, MMDET_MAX_DETS[0], MMDET_MAX_DETS[-1])
    m = int(max_dets)
    if m < 1:
        raise ValueError(f"maxDets must be >= 1 (got {max_dets})")
    return Protocol("coco", tuple(sorted({1, 10, m})), m, m)


def max_dets_note(protocol: Protocol, model_max_dets: int) -> str | None:
    """A sentence for the log/report when a maxDets exceeds what the model returns per image (else None).

    Under ``mmdet`` the model usually keeps fewer detections (300) than maxDets 1000: then 1000 simply scores all of
    them, as in the authors' mmdet runs (not an error; see :func:`sdconet.d2.config.check_max_dets` for the
    headline check).
    """
    above = [m for m in protocol.max_dets if m > model_max_dets and m >= 100]
    if not above:
        return None
    return (
        f"maxDets {', '.join(map(str, above))} > the {model_max_dets} detections the model keeps per image: "
        f"those numbers score all {model_max_dets} of them"
    )


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _pct(v: float) -> float:
    return 100.0 * v if math.isfinite(v) else float("nan")


def _empty_results_coco(coco_gt: COCO) -> COCO:
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": coco_gt.dataset["images"],
        "categories": coco_gt.dataset["categories"],
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def evaluate_coco(
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    *,
    protocol: str | Protocol = "coco",
    max_dets: int = 100,
    area_ranges: str = "coco",
    frame: str = "hr",
    frame_scale: float = 1.0,
    image_ids: Sequence[int] | None = None,
    extra_max_dets: Sequence[int] = (),
    gt_area: str = "bbox",
    ignore_difficult: bool = False,
    cocoeval_cls: type = COCOeval,
) -> dict[str, Any]:
    """Score COCO box detections; returns a JSON-serialisable report (values in percent, NaN where undefined).

    Args:
        gt: COCO ground truth dict (``images``, ``annotations`` with ``bbox`` xywh, ``categories``); not modified.
        results: COCO results (``image_id``, ``category_id`` as in ``gt``, ``bbox`` xywh, ``score``).
        protocol: ``coco`` | ``mmdet`` or a :class:`Protocol`.
        max_dets: the ``coco`` protocol's headline maxDets (ignored by ``mmdet``).
        area_ranges: :data:`AREA_PRESETS` name.
        frame: label of the frame bucket sizes are measured in (``hr``/``lr``; reported only).
        frame_scale: GT-frame pixels per frame pixel (``s`` for the LR frame of an x``s`` model, 1 otherwise).
        image_ids: evaluate these images (default: every image of ``gt``); results of other images are dropped.
        extra_max_dets: more maxDets to report in ``at_max_dets`` (e.g. the scene tool's 1000).
        gt_area: ``bbox`` (area = w * h) or ``json`` (the annotations' ``area`` field).
        ignore_difficult: treat annotations flagged ``difficult`` as ``iscrowd`` (neither count nor hurt).
        cocoeval_cls: ``COCOeval`` or a drop-in (detectron2's ``COCOeval_opt``).

    Returns:
        dict with

        * ``protocol``, ``max_dets`` (COCOeval's list), ``area_ranges``, ``frame``, ``frame_scale``,
          ``num_images``, ``num_gt`` (scored objects), ``num_dets``;
        * ``buckets``: ``[{"key", "name", "range", "num_gt"}]`` (range = sqrt-area ``[lo, hi]`` in frame px,
          ``hi`` None = unbounded; ``num_gt`` = objects scored in that bucket);
        * ``metrics``: ordered ``{name: value}`` -- ``AP``, ``AP50``, ``AP75``, ``AP<key>`` per bucket,
          ``AR@<m>`` per maxDets of the protocol, ``AR<key>`` per bucket -- and ``metric_max_dets``
          ``{name: maxDets it was read at}``;
        * ``at_max_dets``: ``{str(m): {"AP", "AP50", "AP75", "AP<key>"..., "AR", "AR<key>"...}}`` for every maxDets;
        * ``per_class``: ``[{"id", "name", "num_gt": {"all", <key>...}, "AP": {...}, "AR": {...}}]`` at
          ``per_class_max_dets`` (= the protocol's last maxDets);
        * ``pr_curves``: ``{"max_dets", "recall": [101 thresholds], "iou": [0.5, 0.75],
          "precision": {class name: [[101 values] per iou]}}`` (area all; NaN where a class has no GT).

    Raises:
        ValueError: result image ids missing from ``gt``, unknown protocol/preset/gt_area, ``frame_scale <= 0``.
    """
    proto = protocol if isinstance(protocol, Protocol) else make_protocol(protocol, max_dets)
    buckets = area_buckets(area_ranges)
    if not frame_scale > 0:
        raise ValueError(f"frame_scale must be > 0 (got {frame_scale})")
    if gt_area not in ("bbox", "json"):
        raise ValueError(f"gt_area must be 'bbox' or 'json' (got {gt_area!r})")
    extra = sorted({int(m) for m in extra_max_dets})
    if extra and extra[0] < 1:
        raise ValueError(f"extra maxDets must be >= 1 (got {extra})")
    max_dets_list = sorted({*proto.max_dets, *extra})

    gt = copy.deepcopy(dict(gt))
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    for ann in gt.get("annotations", []):
        if gt_area == "bbox":
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        if ignore_difficult and ann.get("difficult"):
            ann["iscrowd"] = 1
    known = [int(img["id"]) for img in gt.get("images", [])]
    ids = sorted(set(known) if image_ids is None else {int(i) for i in image_ids})
    unknown = sorted(set(ids) - set(known))
    if unknown:
        raise ValueError(f"image ids {unknown[:10]} are not in the ground truth")
    unknown_res = sorted({int(r["image_id"]) for r in results} - set(known))
    if unknown_res:
        raise ValueError(f"image ids {unknown_res[:10]} of the results are not in the ground truth")
    selected = set(ids)
    results = [dict(r) for r in results if int(r["image_id"]) in selected]
    cats = sorted(gt.get("categories", []), key=lambda c: int(c["id"]))
    cat_ids = [int(c["id"]) for c in cats]

    # Area ranges in GT-frame pixels: index 0 = all, then the buckets.
    f2 = float(frame_scale) ** 2
    rng = [[0.0, _INF_SIDE**2 * f2]] + [
        [(b.lo**2) * f2, (_INF_SIDE if math.isinf(b.hi) else b.hi) ** 2 * f2] for b in buckets
    ]

    # GT counts exactly as COCOeval ignores: iscrowd/ignore, or area outside the range.
    scored = [
        a
        for a in gt.get("annotations", [])
        if int(a["image_id"]) in selected
        and int(a["category_id"]) in cat_ids
        and not a.get("iscrowd", 0)
        and not a.get("ignore", 0)
    ]

    def count(cat_id: int | None, r: Sequence[float]) -> int:
        return sum(
            1
            for a in scored
            if (cat_id is None or int(a["category_id"]) == cat_id) and r[0] <= float(a["area"]) <= r[1]
        )

    bucket_rows = [
        {
            "key": b.key,
            "name": b.name,
            "range": [b.lo, None if math.isinf(b.hi) else b.hi],
            "num_gt": count(None, rng[i + 1]),
        }
        for i, b in enumerate(buckets)
    ]
    report: dict[str, Any] = {
        "protocol": proto.name,
        "max_dets": max_dets_list,
        "area_ranges": area_ranges,
        "frame": frame,
        "frame_scale": float(frame_scale),
        "num_images": len(ids),
        "num_gt": len(scored),
        "num_dets": len(results),
        "buckets": bucket_rows,
    }

    names = ["AP", "AP50", "AP75"] + [f"AP{b.key}" for b in buckets]
    ar_names = [f"AR@{m}" for m in proto.max_dets] + [f"AR{b.key}" for b in buckets]
    if not ids:
        nan = float("nan")
        report["metrics"] = {k: nan for k in names + ar_names}
        report["metric_max_dets"] = _metric_max_dets(proto, buckets)
        report["at_max_dets"] = {str(m): {k: nan for k in _at_names(buckets)} for m in max_dets_list}
        report["per_class_max_dets"] = proto.max_dets_rest
        report["per_class"] = [_class_row(c, {}, {}, {}, buckets) for c in cats]
        report["pr_curves"] = {
            "max_dets": proto.max_dets_rest,
            "recall": [],
            "iou": list(PR_IOUS),
            "precision": {},
        }
        return report

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else _empty_results_coco(coco_gt)
        ev = cocoeval_cls(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = ids
        ev.params.catIds = cat_ids
        ev.params.maxDets = list(max_dets_list)
        ev.params.areaRng = rng
        ev.params.areaRngLbl = ["all"] + [b.name for b in buckets]
        ev.evaluate()
        ev.accumulate()
    precision = np.asarray(ev.eval["precision"])  # (T iou, R recall, K classes, A areas, M maxDets)
    recall = np.asarray(ev.eval["recall"])  # (T, K, A, M)
    ious = np.asarray(ev.params.iouThrs)
    t50 = int(np.argmin(np.abs(ious - 0.5)))
    t75 = int(np.argmin(np.abs(ious - 0.75)))

    def at(m: int) -> dict[str, float]:
        mi = max_dets_list.index(m)
        out = {
            "AP": _pct(_mean_valid(precision[:, :, :, 0, mi])),
            "AP50": _pct(_mean_valid(precision[t50, :, :, 0, mi])),
            "AP75": _pct(_mean_valid(precision[t75, :, :, 0, mi])),
        }
        for a, b in enumerate(buckets, start=1):
            out[f"AP{b.key}"] = _pct(_mean_valid(precision[:, :, :, a, mi]))
        out["AR"] = _pct(_mean_valid(recall[:, :, 0, mi]))
        for a, b in enumerate(buckets, start=1):
            out[f"AR{b.key}"] = _pct(_mean_valid(recall[:, :, a, mi]))
        return out

    table = {str(m): at(m) for m in max_dets_list}
    report["at_max_dets"] = table
    rest, ap_m = table[str(proto.max_dets_rest)], table[str(proto.ap_max_dets)]
    metrics = {"AP": ap_m["AP"], "AP50": rest["AP50"], "AP75": rest["AP75"]}
    for b in buckets:
        metrics[f"AP{b.key}"] = rest[f"AP{b.key}"]
    for m in proto.max_dets:
        metrics[f"AR@{m}"] = table[str(m)]["AR"]
    for b in buckets:
        metrics[f"AR{b.key}"] = rest[f"AR{b.key}"]
    report["metrics"] = metrics
    report["metric_max_dets"] = _metric_max_dets(proto, buckets)

    mi = max_dets_list.index(proto.max_dets_rest)
    report["per_class_max_dets"] = proto.max_dets_rest
    rows = []
    for k, cat in enumerate(cats):
        num_gt = {"all": count(int(cat["id"]), rng[0])}
        ap = {"all": _pct(_mean_valid(precision[:, :, k, 0, mi]))}
        ar = {"all": _pct(_mean_valid(recall[:, k, 0, mi]))}
        for a, b in enumerate(buckets, start=1):
            num_gt[b.key] = count(int(cat["id"]), rng[a])
            ap[b.key] = _pct(_mean_valid(precision[:, :, k, a, mi]))
            ar[b.key] = _pct(_mean_valid(recall[:, k, a, mi]))
        rows.append(_class_row(cat, num_gt, ap, ar, buckets))
    report["per_class"] = rows

    pr_t = [int(np.argmin(np.abs(ious - t))) for t in PR_IOUS]
    report["pr_curves"] = {
        "max_dets": proto.max_dets_rest,
        "recall": [float(r) for r in ev.params.recThrs],
        "iou": list(PR_IOUS),
        "precision": {
            str(cat["name"]): [
                [float(v) if v > -1 else float("nan") for v in precision[t, :, k, 0, mi]] for t in pr_t
            ]
            for k, cat in enumerate(cats)
        },
    }
    return report


def _at_names(buckets: Sequence[AreaBucket]) -> list[str]:
    return ["AP", "AP50", "AP75"] + [f"AP{b.key}" for b in buckets] + ["AR"] + [f"AR{b.key}" for b in buckets]


def _metric_max_dets(proto: Protocol, buckets: Sequence[AreaBucket]) -> dict[str, int]:
    out = {"AP": proto.ap_max_dets, "AP50": proto.max_dets_rest, "AP75": proto.max_dets_rest}
    for b in buckets:
        out[f"AP{b.key}"] = proto.max_dets_rest
    for m in proto.max_dets:
        out[f"AR@{m}"] = m
    for b in buckets:
        out[f"AR{b.key}"] = proto.max_dets_rest
    return out


def _class_row(cat, num_gt, ap, ar, buckets) -> dict[str, Any]:
    keys = ["all"] + [b.key for b in buckets]
    nan = float("nan")
    return {
        "id": int(cat["id"]),
        "name": str(cat["name"]),
        "num_gt": {k: int(num_gt.get(k, 0)) for k in keys},
        "AP": {k: float(ap.get(k, nan)) for k in keys},
        "AR": {k: float(ar.get(k, nan)) for k in keys},
    }
