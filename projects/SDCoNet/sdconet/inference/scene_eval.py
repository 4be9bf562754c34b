"""Score scene-level detections against the original (unsliced) ground truth with pycocotools.

The ground truth is a COCO json of whole scenes (``annotations/scenes_<split>.json`` written by the dataset tools,
boxes in source-image pixels). AP is computed from ``COCOeval``'s precision array directly rather than with
``summarize()``, whose printed table is hard-wired to maxDets 100: every number is reported with the maxDets it used
(COCO-standard 100 and a dense-scene cap, 1000 by default: whole scenes hold far more than 100 objects).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["DEFAULT_MAX_DETS", "evaluate_scenes", "format_report"]

DEFAULT_MAX_DETS = (100, 1000)
_AREAS = ("all", "small", "medium", "large")


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def evaluate_scenes(
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    max_dets: Sequence[int] = DEFAULT_MAX_DETS,
    ignore_difficult: bool = False,
    image_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """COCO box AP of scene detections.

    Args:
        gt: whole-scene COCO ground truth (dict).
        results: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        max_dets: detection caps per image to report (each gets its own AP numbers).
        ignore_difficult: treat ``difficult`` objects as ``iscrowd`` (detections on them neither count nor hurt).
        image_ids: evaluate only these images; results of other images are ignored (default: the images that have
            results -- scenes you did not predict are left out; pass all ids to count them as misses).

    Returns:
        ``{"max_dets": [...], "num_images", "num_gt", "num_dets", "metrics": {str(maxDets): {"AP", "AP50", "AP75",
        "APs", "APm", "APl", "AR"}}, "per_class": {name: AP at the largest maxDets}}``; AP values in percent,
        NaN where undefined (e.g. no GT of that size).
    """
    gt = copy.deepcopy(dict(gt))
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    if ignore_difficult:
        for ann in gt.get("annotations", []):
            if ann.get("difficult"):
                ann["iscrowd"] = 1
    max_dets = sorted({int(m) for m in max_dets})
    if not max_dets or max_dets[0] < 1:
        raise ValueError(f"max_dets must be positive integers, got {max_dets}")
    known = {int(img["id"]) for img in gt.get("images", [])}
    ids = sorted({int(r["image_id"]) for r in results} if image_ids is None else {int(i) for i in image_ids})
    unknown = sorted(set(ids) - known)
    if unknown:
        raise ValueError(f"image ids {unknown[:10]} of the results are not in the ground truth")
    selected = set(ids)
    results = [r for r in results if int(r["image_id"]) in selected]
    cats = sorted(gt.get("categories", []), key=lambda c: int(c["id"]))
    report: dict[str, Any] = {
        "max_dets": max_dets,
        "num_images": len(ids),
        "num_gt": sum(1 for a in gt.get("annotations", []) if int(a["image_id"]) in set(ids)),
        "num_dets": len(results),
        "metrics": {},
        "per_class": {},
    }
    nan_metrics = {k: float("nan") for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR")}
    if not ids:
        report["metrics"] = {str(m): dict(nan_metrics) for m in max_dets}
        return report
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes([dict(r) for r in results])
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = ids
        ev.params.maxDets = sorted({1, 10, *max_dets})  # the last one is used for matching
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # (T iou, R recall, K classes, A areas, M maxDets)
    recall = ev.eval["recall"]  # (T, K, A, M)
    for m in max_dets:
        mi = ev.params.maxDets.index(m)
        metrics = {
            "AP": _mean_valid(precision[:, :, :, 0, mi]),
            "AP50": _mean_valid(precision[0, :, :, 0, mi]),
            "AP75": _mean_valid(precision[5, :, :, 0, mi]),
        }
        for a, name in zip((1, 2, 3), ("APs", "APm", "APl")):
            metrics[name] = _mean_valid(precision[:, :, :, a, mi])
        metrics["AR"] = _mean_valid(recall[:, :, 0, mi])
        report["metrics"][str(m)] = {k: 100.0 * v for k, v in metrics.items()}
    last = ev.params.maxDets.index(max_dets[-1])
    for k, cat in enumerate(cats):
        report["per_class"][str(cat["name"])] = 100.0 * _mean_valid(precision[:, :, k, 0, last])
    return report


def format_report(report: Mapping[str, Any]) -> str:
    """Markdown tables of :func:`evaluate_scenes`'s report (overall per maxDets, then per class)."""
    lines = [
        f"Scene-level COCO box AP: {report['num_images']} images, {report['num_gt']} GT objects, "
        f"{report['num_dets']} detections",
        "",
        "| maxDets | AP | AP50 | AP75 | APs | APm | APl | AR |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m, v in report["metrics"].items():
        cells = " | ".join(f"{v[k]:.2f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR"))
        lines.append(f"| {m} | {cells} |")
    if report["per_class"]:
        lines += ["", f"| class | AP (maxDets {report['max_dets'][-1]}) |", "|---|---:|"]
        lines += [f"| {name} | {ap:.2f} |" for name, ap in report["per_class"].items()]
    return "\n".join(lines)
