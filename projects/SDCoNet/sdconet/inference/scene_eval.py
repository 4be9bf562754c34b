"""Score scene-level detections against the original (unsliced) ground truth with pycocotools.

The ground truth is a COCO json of whole scenes (``annotations/scenes_<split>.json`` written by the dataset tools,
boxes in source-image pixels). The numbers come from :func:`sdconet.evaluation.coco_protocol.evaluate_coco` (the
same protocol code as the detectron2 evaluator): every number is reported with the maxDets it used (COCO-standard
100 and a dense-scene cap, 1000 by default: whole scenes hold far more than 100 objects), and the full protocol
report (headline, size buckets with GT counts, per-class x size tables) is kept under ``"protocol"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sdconet.evaluation.coco_protocol import evaluate_coco
from sdconet.evaluation.report import format_coco_tables

from ..data.coco_check import validate_coco

__all__ = ["DEFAULT_MAX_DETS", "evaluate_scenes", "format_report"]

DEFAULT_MAX_DETS = (100, 1000)


def evaluate_scenes(
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    max_dets: Sequence[int] = DEFAULT_MAX_DETS,
    ignore_difficult: bool = False,
    image_ids: Sequence[int] | None = None,
    *,
    protocol: str = "coco",
    area_ranges: str = "coco",
) -> dict[str, Any]:
    """COCO box AP of scene detections.

    Args:
        gt: whole-scene COCO ground truth (dict).
        results: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        max_dets: detection caps per image (and class, as pycocotools applies them) to report; each gets its own
            row. Under the ``coco`` protocol the smallest is the headline maxDets.
        ignore_difficult: treat ``difficult`` objects as ``iscrowd`` (detections on them neither count nor hurt).
        image_ids: evaluate only these images; results of other images are ignored (default: the images that have
            results -- scenes you did not predict are left out; pass all ids to count them as misses).
        protocol: ``coco`` or ``mmdet`` (see :mod:`sdconet.evaluation.coco_protocol`).
        area_ranges: size buckets, ``coco`` or ``aitod`` (scene pixels).

    Raises:
        CocoFormatError: the ground truth or the results fail :func:`sdconet.data.coco_check.validate_coco`
            (duplicate ids, which pycocotools would silently mis-score, missing keys, bad boxes, ...).
        ValueError: results of images that are not in the ground truth, or bad ``max_dets``.

    Returns:
        ``{"max_dets": [...], "num_images", "num_gt", "num_dets", "metrics": {str(maxDets): {"AP", "AP50", "AP75",
        "AP<bucket>"..., "AR", "AR<bucket>"...}}, "per_class": {name: AP at the largest maxDets},
        "protocol": evaluate_coco's report}``; AP values in percent, NaN where undefined (e.g. no GT of that size).
    """
    validate_coco(gt, "instances", "ground truth").raise_errors()
    validate_coco(list(results), "results", "results", gt=gt).raise_errors()
    max_dets = sorted({int(m) for m in max_dets})
    if not max_dets or max_dets[0] < 1:
        raise ValueError(f"max_dets must be positive integers, got {max_dets}")
    ids = sorted({int(r["image_id"]) for r in results} if image_ids is None else {int(i) for i in image_ids})
    known = {int(img["id"]) for img in gt.get("images", [])}
    unknown = sorted(set(ids) - known)
    if unknown:
        raise ValueError(f"image ids {unknown[:10]} of the results are not in the ground truth")
    selected = set(ids)
    results = [r for r in results if int(r["image_id"]) in selected]
    rep = evaluate_coco(
        gt,
        results,
        protocol=protocol,
        max_dets=max_dets[0],
        area_ranges=area_ranges,
        frame="scene",
        image_ids=ids,
        extra_max_dets=max_dets,
        ignore_difficult=ignore_difficult,
    )
    last = max(rep["max_dets"])
    per_class_at_last = {row["name"]: row["AP"]["all"] for row in rep["per_class"]}
    if last != rep["per_class_max_dets"]:  # per-class AP at the largest maxDets requested
        per_class_at_last = _per_class_ap_at(gt, results, ids, last, area_ranges, ignore_difficult)
    return {
        "max_dets": max_dets,
        "num_images": rep["num_images"],
        "num_gt": rep["num_gt"],
        "num_dets": rep["num_dets"],
        "metrics": {str(m): rep["at_max_dets"][str(m)] for m in max_dets},
        "per_class": per_class_at_last,
        "protocol": rep,
    }


def _per_class_ap_at(gt, results, ids, m, area_ranges, ignore_difficult) -> dict[str, float]:
    rep = evaluate_coco(
        gt, results, protocol="coco", max_dets=m, area_ranges=area_ranges, image_ids=ids,
        ignore_difficult=ignore_difficult,
    )  # fmt: skip
    return {row["name"]: row["AP"]["all"] for row in rep["per_class"]}


def format_report(report: Mapping[str, Any]) -> str:
    """Markdown tables of :func:`evaluate_scenes`'s report: one row per maxDets, per class, then the protocol's
    headline, size buckets (with GT counts) and per-class x size tables."""
    first = next(iter(report["metrics"].values()), {})
    keys = [k for k in first if k.startswith("AP")] + [k for k in first if k.startswith("AR")]
    lines = [
        f"Scene-level COCO box AP: {report['num_images']} images, {report['num_gt']} GT objects, "
        f"{report['num_dets']} detections",
        "",
        "| maxDets | " + " | ".join(keys) + " |",
        "|---:|" + "---:|" * len(keys),
    ]
    for m, v in report["metrics"].items():
        lines.append(f"| {m} | " + " | ".join(f"{v[k]:.2f}" for k in keys) + " |")
    if report["per_class"]:
        lines += ["", f"| class | AP (maxDets {report['max_dets'][-1]}) |", "|---|---:|"]
        lines += [f"| {name} | {ap:.2f} |" for name, ap in report["per_class"].items()]
    if "protocol" in report:
        lines += ["", format_coco_tables(report["protocol"]).rstrip()]
    return "\n".join(lines)
