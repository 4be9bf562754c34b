"""TIDE error breakdown (sdconet.evaluation.errors): each error type on a constructed case, and agreement with the
tidecv package where it is installed."""

import numpy as np
import pytest

from sdconet.evaluation.errors import ERROR_TYPES, error_breakdown


def _gt(boxes, num_images=1):
    """boxes: (image, class, [x, y, w, h]) -> COCO GT with classes 1 and 2."""
    return {
        "images": [
            {"id": i, "width": 200, "height": 200, "file_name": f"{i}.png"} for i in range(1, num_images + 1)
        ],
        "annotations": [
            {"id": k + 1, "image_id": img, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (img, c, b) in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def _det(img, c, b, s):
    return {"image_id": img, "category_id": c, "bbox": b, "score": s}


def test_perfect_detections_have_no_errors():
    gt = _gt([(1, 1, [10, 10, 20, 20]), (1, 2, [100, 100, 30, 30])])
    res = [_det(1, a["category_id"], a["bbox"], 0.9) for a in gt["annotations"]]
    out = error_breakdown(gt, res)
    assert out["ap"] == pytest.approx(100.0)
    assert all(v == 0 for v in out["counts"].values()) and all(v == 0 for v in out["dAP"].values())


def test_each_error_type_on_a_constructed_image():
    gt = _gt([
        (1, 1, [10, 10, 20, 20]),     # found (TP) and duplicated
        (1, 1, [60, 10, 20, 20]),     # found with the wrong class -> Cls
        (1, 2, [10, 60, 20, 20]),     # found with a poor box -> Loc
        (1, 2, [60, 60, 20, 20]),     # never found -> Miss
        (1, 1, [120, 120, 40, 40]),   # wrong class and poor box -> Both; a Both error does not cover it: Miss
        (1, 1, [150, 150, 20, 20]),   # low-score TPs, so that removing any false positive above them helps
        (1, 2, [150, 60, 20, 20]),
    ])  # fmt: skip
    res = [
        _det(1, 1, [10, 10, 20, 20], 0.95),  # TP
        _det(1, 1, [11, 10, 20, 20], 0.90),  # Dupe (IoU 0.9 with the GT just matched)
        _det(1, 2, [60, 10, 20, 20], 0.85),  # Cls
        _det(1, 2, [22, 60, 20, 20], 0.80),  # Loc: overlap 8 x 20 -> IoU 160 / 640 = 0.25
        _det(1, 2, [120, 120, 20, 20], 0.75),  # Both: other class, IoU 0.25
        _det(1, 1, [170, 10, 20, 20], 0.70),  # Bkg
        _det(1, 1, [150, 150, 20, 20], 0.20),  # TP
        _det(1, 2, [150, 60, 20, 20], 0.20),  # TP
    ]
    out = error_breakdown(gt, res)
    assert out["counts"] == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 1, "Miss": 2}
    for t in ERROR_TYPES:
        assert out["dAP"][t] > 0, t  # fixing any one type raises AP50
    assert out["special"]["FalseNeg"] >= out["dAP"]["Miss"] and out["special"]["FalsePos"] > 0
    # class 1: TP FP FP TP over 4 GT -> precision 1 up to recall .25 (26 of 101 points), .5 up to .5 (25 points);
    # class 2: FP FP FP TP over 3 GT -> .25 up to recall 1/3 (34 points): AP50 = (38.5 + 8.5) / 101 / 2
    assert out["ap"] == pytest.approx(100 * 47 / 202)


def test_errors_pointing_at_a_matched_gt_are_suppressed_and_one_fix_per_gt():
    gt = _gt([(1, 1, [10, 10, 40, 40]), (1, 1, [100, 100, 40, 40])])
    res = [
        _det(1, 1, [10, 10, 40, 40], 0.9),  # TP
        _det(1, 1, [30, 10, 40, 40], 0.8),  # Loc on the matched GT: fixing it suppresses it
        _det(1, 1, [120, 100, 40, 40], 0.7),  # Loc on the unmatched GT (IoU 0.33): the best one is fixed ...
        _det(1, 1, [100, 120, 40, 40], 0.6),  # ... this weaker one is suppressed
    ]
    out = error_breakdown(gt, res)
    assert out["counts"]["Loc"] == 3 and out["counts"]["Miss"] == 0  # the second GT is covered by Loc errors
    # after fixing Loc: TP (0.9), TP (0.7) and nothing else -> AP 100
    assert out["ap"] + out["dAP"]["Loc"] == pytest.approx(100.0)


def test_no_detections_and_empty_images():
    gt = _gt([(1, 1, [10, 10, 20, 20])], num_images=2)
    out = error_breakdown(gt, [_det(2, 1, [0, 0, 10, 10], 0.5)])
    assert out["counts"]["Miss"] == 1 and out["counts"]["Bkg"] == 1 and out["ap"] == 0.0


def _random_case(seed):
    rng = np.random.default_rng(seed)
    boxes, res = [], []
    for img in range(1, 7):
        for _ in range(int(rng.integers(0, 12))):
            w, h = rng.uniform(8, 50, 2)
            boxes.append((img, int(rng.integers(1, 3)), [*rng.uniform(0, 150, 2).tolist(), w, h]))
    gt = _gt(boxes, 6)
    gt["annotations"][0]["iscrowd"] = 1  # one ignore region
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(int(rng.integers(0, 3))):
            j = rng.normal(0, 0.25, 4) * [w, h, w, h]
            c = a["category_id"] if rng.random() < 0.8 else 3 - a["category_id"]
            res.append(
                _det(
                    a["image_id"], c, [x + j[0], y + j[1], abs(w + j[2]), abs(h + j[3])], float(rng.random())
                )
            )
    for img in range(1, 7):
        for _ in range(3):
            res.append(
                _det(
                    img,
                    int(rng.integers(1, 3)),
                    [*rng.uniform(0, 180, 2).tolist(), 15, 15],
                    float(rng.random()),
                )
            )
    return gt, res


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_tidecv(seed):
    tidecv = pytest.importorskip("tidecv")
    from tidecv.data import Data

    gt, res = _random_case(seed)
    g = Data("gt", max_dets=100)
    for im in gt["images"]:
        g.add_image(im["id"], im["file_name"])
    for c in gt["categories"]:
        g.add_class(c["id"], c["name"])
    for a in gt["annotations"]:
        if a["iscrowd"]:
            g.add_ignore_region(a["image_id"], a["category_id"], a["bbox"])
        else:
            g.add_ground_truth(a["image_id"], a["category_id"], a["bbox"])
    d = Data("det")
    for r in res:
        d.add_detection(r["image_id"], r["category_id"], r["score"], r["bbox"])
    tide = tidecv.TIDE()
    run = tide.evaluate(g, d, mode=tidecv.TIDE.BOX)
    ref = {k.short_name: v for k, v in run.fix_main_errors().items()}
    ref_counts = {k.short_name: v for k, v in run.count_errors().items()}
    ref_special = {k.short_name: v for k, v in run.fix_special_errors().items()}
    ours = error_breakdown(gt, res)
    assert ours["ap"] == pytest.approx(run.ap, abs=1e-9)
    assert ours["counts"] == ref_counts
    for t in ERROR_TYPES:
        assert ours["dAP"][t] == pytest.approx(ref[t], abs=1e-9), t
    for t in ("FalsePos", "FalseNeg"):
        assert ours["special"][t] == pytest.approx(ref_special[t], abs=1e-9), t
