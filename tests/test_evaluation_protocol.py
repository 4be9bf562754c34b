"""COCO protocols (coco / mmdet), size buckets (coco / aitod) and frames of sdconet.evaluation.coco_protocol,
checked against pycocotools' own summarize() and against hand counts."""

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sdconet.evaluation.coco_protocol import (
    AREA_PRESETS,
    evaluate_coco,
    make_protocol,
    max_dets_note,
)


def _gt(images, anns, num_classes=2):
    return {
        "images": [{"id": i, "width": 1024, "height": 1024, "file_name": f"{i}.png"} for i in images],
        "annotations": [
            {
                "id": k + 1,
                "image_id": img,
                "category_id": c,
                "bbox": list(map(float, b)),
                "area": b[2] * b[3],
                "iscrowd": 0,
            }
            for k, (img, c, b) in enumerate(anns)
        ],  # fmt: skip
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)],
    }


def _random_scene(rng, images, per_image, num_classes=2):
    anns = []
    for img in images:
        for _ in range(per_image):
            side = float(rng.choice([5, 12, 24, 40, 120]))
            w, h = side * rng.uniform(0.7, 1.3), side * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, 1024 - w), rng.uniform(0, 1024 - h)
            anns.append((img, int(rng.integers(1, num_classes + 1)), [x, y, w, h]))
    return _gt(images, anns, num_classes)


def _pycocotools_stats(gt, results, max_dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [100 * s if s >= 0 else float("nan") for s in ev.stats]


def test_gt_as_detections_500_objects_over_5_images_gives_ap_1_under_both_protocols():
    gt = _random_scene(np.random.default_rng(0), range(1, 6), 100)
    assert len(gt["annotations"]) == 500
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.5 + 1e-4 * k,
        }
        for k, a in enumerate(gt["annotations"])
    ]
    for protocol in ("coco", "mmdet"):
        for preset in ("coco", "aitod"):
            rep = evaluate_coco(gt, dets, protocol=protocol, max_dets=100, area_ranges=preset)
            m = rep["metrics"]
            assert m["AP"] == pytest.approx(100.0) and m["AP50"] == pytest.approx(100.0)
            assert m["AP75"] == pytest.approx(100.0)
            for b in rep["buckets"]:
                if b["num_gt"]:
                    assert m[f"AP{b['key']}"] == pytest.approx(100.0), (protocol, preset, b)
                else:
                    assert math.isnan(m[f"AP{b['key']}"])
            assert sum(row["num_gt"]["all"] for row in rep["per_class"]) == 500
            assert all(row["AP"]["all"] == pytest.approx(100.0) for row in rep["per_class"])


def _crowded_case(num_classes=2):
    """Two images with 150 objects each, jittered boxes, false positives. pycocotools applies maxDets per image
    AND class, so with one class maxDets 100 cuts recall to at most 2/3."""
    rng = np.random.default_rng(3)
    gt = _random_scene(rng, [1, 2], 150, num_classes)
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.08, 4) * [w, h, w, h]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                     "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]], "score": float(rng.uniform(0.2, 1.0))})  # fmt: skip
    for img in (1, 2):
        for _ in range(60):  # background false positives
            dets.append({"image_id": img, "category_id": int(rng.integers(1, num_classes + 1)),
                         "bbox": [*rng.uniform(0, 900, 2), 20.0, 20.0], "score": float(rng.uniform(0, 0.9))})  # fmt: skip
    return gt, dets


@pytest.mark.parametrize("num_classes", [1, 2])
def test_coco_and_mmdet_ap50_differ_exactly_as_pycocotools_predicts(num_classes):
    gt, dets = _crowded_case(num_classes)
    coco = evaluate_coco(gt, dets, protocol="coco", max_dets=100)
    mmdet = evaluate_coco(gt, dets, protocol="mmdet")
    ref_coco = _pycocotools_stats(gt, dets, [1, 10, 100])
    ref_mmdet = _pycocotools_stats(gt, dets, [100, 300, 1000])
    # pycocotools summarize(): AP, AP50, AP75, APs, APm, APl, AR@m0, AR@m1, AR@m2, ARs, ARm, ARl
    order = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    for rep, ref, ms in ((coco, ref_coco, (1, 10, 100)), (mmdet, ref_mmdet, (100, 300, 1000))):
        ours = [rep["metrics"][k] for k in order] + [rep["metrics"][f"AR@{m}"] for m in ms]
        ours += [rep["metrics"][k] for k in ("ARs", "ARm", "ARl")]
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    assert mmdet["metrics"]["AP50"] != coco["metrics"]["AP50"]
    if num_classes == 2:
        return  # ~75 objects per image and class: maxDets 100 cuts little
    # The crowded image caps recall at maxDets 100: mmdet's AP50 (read at 1000) is higher, its AP (at 100) equal.
    assert mmdet["metrics"]["AP50"] > coco["metrics"]["AP50"] + 10
    assert mmdet["metrics"]["AP"] == pytest.approx(coco["metrics"]["AP"])
    assert mmdet["metric_max_dets"]["AP"] == 100 and mmdet["metric_max_dets"]["AP50"] == 1000
    assert coco["metric_max_dets"]["AP50"] == 100
    # coco protocol at maxDets 300 equals mmdet's AP50 at 1000 here (no image has > 300 detections)
    coco300 = evaluate_coco(gt, dets, protocol="coco", max_dets=300)
    assert coco300["metrics"]["AP50"] == pytest.approx(mmdet["metrics"]["AP50"])


def test_aitod_bucket_counts_match_a_hand_count_in_both_frames():
    # sqrt(area) of each box (HR px): 4, 6, 7.75 (6x10), 8 (boundary: vt AND t, as pycocotools), 12, 15.9, 16
    # (boundary: t AND s), 20, 31, 33, 64, and a crowd box of 10 that is never counted.
    sides = [
        (4, 4),
        (6, 6),
        (6, 10),
        (8, 8),
        (12, 12),
        (15.9, 15.9),
        (16, 16),
        (20, 20),
        (31, 31),
        (33, 33),
        (64, 64),
    ]
    anns = [(1 + k % 3, 1 + k % 2, [10.0 * k, 10.0, w, h]) for k, (w, h) in enumerate(sides)]
    gt = _gt([1, 2, 3], anns)
    gt["annotations"].append(
        {
            "id": 99,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0.0, 0.0, 10.0, 10.0],
            "area": 100.0,
            "iscrowd": 1,
        }
    )
    rep = evaluate_coco(gt, [], area_ranges="aitod")
    counts = {b["key"]: b["num_gt"] for b in rep["buckets"]}
    # hand count, HR frame: vt {4, 6, 7.75, 8}; t {8, 12, 15.9, 16}; s {16, 20, 31}; m {33, 64}
    assert counts == {"vt": 4, "t": 4, "s": 3, "m": 2}
    assert rep["num_gt"] == 11
    # class 1 holds the boxes with even k: 4, 7.75, 12, 16, 31, 64
    cls1 = rep["per_class"][0]["num_gt"]
    assert cls1 == {"all": 6, "vt": 2, "t": 2, "s": 2, "m": 1}
    # LR frame of an x2 model: sides halve -> 2, 3, 3.9, 4, 6, 7.95, 8, 10, 15.5, 16.5, 32
    lr = evaluate_coco(gt, [], area_ranges="aitod", frame="lr", frame_scale=2.0)
    assert {b["key"]: b["num_gt"] for b in lr["buckets"]} == {"vt": 7, "t": 3, "s": 2, "m": 1}
    assert (
        lr["frame"] == "lr"
        and lr["buckets"][0]["range"] == [0.0, 8.0]
        and lr["buckets"][-1]["range"][1] is None
    )
    coco = evaluate_coco(gt, [], area_ranges="coco")
    assert {b["key"]: b["num_gt"] for b in coco["buckets"]} == {"s": 9, "m": 2, "l": 0}


def test_gt_area_from_bbox_not_from_the_json_field():
    gt = _gt([1], [(1, 1, [0, 0, 10, 10])])
    gt["annotations"][0]["area"] = 5000.0  # e.g. a polygon area written by a converter
    by_box = evaluate_coco(gt, [], area_ranges="coco")
    by_json = evaluate_coco(gt, [], area_ranges="coco", gt_area="json")
    assert by_box["buckets"][0]["num_gt"] == 1 and by_json["buckets"][1]["num_gt"] == 1


def test_empty_results_and_bad_input():
    gt = _gt([1, 2], [(1, 1, [0, 0, 10, 10])])
    rep = evaluate_coco(gt, [])
    assert rep["metrics"]["AP"] == 0.0 and rep["num_dets"] == 0
    assert math.isnan(rep["metrics"]["APm"])  # no GT in that bucket: NaN, never -1
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(gt, [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_coco(gt, [], protocol="voc")
    with pytest.raises(ValueError, match="area ranges must be one of"):
        evaluate_coco(gt, [], area_ranges="tiny")
    none = evaluate_coco(gt, [], image_ids=[])
    assert none["num_images"] == 0 and math.isnan(none["metrics"]["AP"])


def test_protocol_definitions_and_max_dets_note():
    assert make_protocol("coco", 100).max_dets == (1, 10, 100)
    assert make_protocol("coco", 300).ap_max_dets == 300
    mm = make_protocol("mmdet", 100)
    assert (mm.max_dets, mm.ap_max_dets, mm.max_dets_rest) == ((100, 300, 1000), 100, 1000)
    assert "1000" in max_dets_note(mm, 300) and "all 300" in max_dets_note(mm, 300)
    assert max_dets_note(make_protocol("coco", 100), 300) is None
    assert set(AREA_PRESETS) == {"coco", "aitod"}


def test_pr_curves_and_per_class_tables_are_consistent():
    gt, dets = _crowded_case()
    rep = evaluate_coco(gt, dets, protocol="mmdet", area_ranges="aitod")
    assert len(rep["pr_curves"]["recall"]) == 101
    for row in rep["per_class"]:
        curve = np.array(rep["pr_curves"]["precision"][row["name"]][0])  # IoU 0.5
        assert curve.shape == (101,) and np.all(np.diff(curve) <= 1e-12)  # COCO precision is monotone
    # per-class AP (all sizes, at maxDets 1000) averages to the AP read at 1000
    mean = np.mean([row["AP"]["all"] for row in rep["per_class"]])
    assert mean == pytest.approx(rep["at_max_dets"]["1000"]["AP"])
