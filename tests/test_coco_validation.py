"""Class 3 of issue 12: one COCO-json validation routine for every reader (dataset inputs, ground truths, results).

Duplicate or missing ids are errors that name the file and the id; harmless oddities are counted warnings; the
readers (prepare_coco.py, predict.py --gt, evaluate_scenes.py, the scene evaluation) all use it.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from test_data_formats import _coco, _tool

from sdconet.data.coco_check import CocoFormatError, load_coco_json, validate_coco
from sdconet.data.image_io import write_image
from sdconet.data.readers import read_coco
from sdconet.inference.coco_results import detections_to_coco
from sdconet.inference.scene_eval import evaluate_scenes
from sdconet.inference.synthetic_scene import make_synthetic_scene, scenes_ground_truth

GOOD = {
    "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}, {"id": 2, "file_name": "b.png"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10], "area": 200.0, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "boat"}],
}


def broken(**changes):
    data = copy.deepcopy(GOOD)
    for path, value in changes.items():
        section, index, key = path.split("__")
        data[section][int(index)][key] = value
    return data


@pytest.mark.parametrize(
    "data,message",
    [
        (broken(images__1__id=1), "duplicate image ids 1"),
        (broken(annotations__1__id=1), "duplicate annotation ids 1"),
        (broken(categories__1__id=1), "duplicate category ids 1"),
        ({**GOOD, "images": [{"id": 1}]}, "images 1 lack 'id' or 'file_name'"),
        ({**GOOD, "categories": [{"id": 1}, {"id": 2, "name": "boat"}]}, "lack 'id' or 'name'"),
        (broken(annotations__0__bbox=[1, 2, 3]), "bbox must be [x, y, w, h]"),
        (broken(annotations__0__bbox=[1, 2, "w", 4]), "non-numeric"),
        (broken(annotations__0__image_id=7), "annotations 1 refer to image ids that are not in 'images'"),
        (broken(annotations__1__category_id=9), "annotations 2 refer to category ids"),
        ({"images": [], "categories": []}, "missing the top-level key 'annotations'"),
    ],
)
def test_errors_name_the_file_and_the_offending_id(data, message):
    report = validate_coco(data, source="gt.json")
    assert not report.ok and any(message in e for e in report.errors), report.errors
    with pytest.raises(CocoFormatError, match="^gt.json: "):
        report.raise_errors()


def test_harmless_oddities_are_counted_warnings():
    data = copy.deepcopy(GOOD)
    for c in data["categories"]:
        c["id"] -= 1  # 0-based
    for a in data["annotations"]:
        a["category_id"] -= 1
    data["annotations"][0]["area"] = 5.0  # inconsistent with the box
    del data["annotations"][1]["area"]
    report = validate_coco(data, source="gt.json")
    assert report.ok and report.counts == {"category_ids_renumbered": 2, "area_recomputed": 2}
    assert report.category_map == {0: 1, 1: 2}
    assert "0->1, 1->2" in report.describe() and "0-based" in report.describe()
    assert validate_coco(GOOD).describe().endswith("nothing to renumber or recompute")


def test_results_are_checked_against_the_ground_truth():
    res = [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]
    assert validate_coco(res, "results", gt=GOOD).ok
    bad = validate_coco(
        res + [dict(res[0], score=float("nan")), dict(res[0], category_id=5)], "results", gt=GOOD
    )
    assert any("non-finite score" in e for e in bad.errors) and any("category ids 5" in e for e in bad.errors)
    assert validate_coco([dict(res[0], image_id=3)], "results", gt=GOOD).counts == {
        "results_images_not_in_gt": 1
    }


def test_load_names_bad_json_with_its_line(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(CocoFormatError, match=r"--gt '.*x.json':2:\d+: not valid JSON"):
        load_coco_json(path, option="--gt")
    with pytest.raises(CocoFormatError, match="cannot be read"):
        load_coco_json(tmp_path / "missing.json")


def test_prepare_coco_refuses_duplicate_image_ids_and_dry_run_prints_the_renumbering(tmp_path, capsys):
    root = _coco(tmp_path)
    data = json.loads((root / "ann.json").read_text())
    dup = copy.deepcopy(data)
    dup["images"][1]["id"] = dup["images"][0]["id"]  # before: b.png vanished and its boxes went to a.png
    (root / "dup.json").write_text(json.dumps(dup))
    args = ["--image-root", str(root / "images"), "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"]
    assert _tool("prepare_coco").main(["--json", str(root / "dup.json")] + args) == 2
    err = capsys.readouterr().err
    assert "dup.json" in err and "duplicate image ids 7" in err
    with pytest.raises(CocoFormatError, match="duplicate image ids 7"):
        read_coco(root / "dup.json", root / "images")
    nokey = copy.deepcopy(data)
    del nokey["images"][0]["file_name"]  # before: a bare KeyError
    (root / "nokey.json").write_text(json.dumps(nokey))
    assert _tool("prepare_coco").main(["--json", str(root / "nokey.json")] + args) == 2
    assert "images 7 lack 'id' or 'file_name'" in capsys.readouterr().err
    # --dry-run says what it would renumber (ids 5, 20 -> 1, 2) and recompute (no 'area' in the input).
    assert _tool("prepare_coco").main(["--json", str(root / "ann.json"), "--dry-run"] + args) == 0
    out = capsys.readouterr().out
    assert "5->1, 20->2" in out and "without 'area'" in out and not (tmp_path / "out").exists()


def test_predict_gt_and_evaluate_scenes_refuse_duplicate_ids(tmp_path, capsys):
    scenes = [make_synthetic_scene(128, 96, seed=i) for i in range(2)]
    gt = scenes_ground_truth(scenes, ["a.png", "b.png"])
    dup = copy.deepcopy(gt)
    dup["images"][1]["id"] = dup["images"][0]["id"]
    # The scene evaluation itself refuses a ground truth that pycocotools would mis-score.
    perfect = detections_to_coco(
        scenes[0].boxes, np.ones(len(scenes[0].boxes)), scenes[0].labels, 1, [1, 2, 3]
    )
    assert evaluate_scenes(gt, perfect)["metrics"]["100"]["AP"] == pytest.approx(100.0)
    dup_ann = copy.deepcopy(gt)
    dup_ann["annotations"][1]["id"] = dup_ann["annotations"][0]["id"]
    with pytest.raises(CocoFormatError, match="duplicate annotation ids 1"):
        evaluate_scenes(dup_ann, perfect)
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    (tmp_path / "res.json").write_text(json.dumps(perfect))
    code = _tool_inference("evaluate_scenes").main(
        ["--gt", str(tmp_path / "dup.json"), "--results", str(tmp_path / "res.json")]
    )
    assert code == 2 and "duplicate image ids 1" in capsys.readouterr().err
    write_image(tmp_path / "scenes" / "a.png", scenes[0].image)
    code = _tool_inference("predict").main(
        ["--config-file", "x.yaml", "--weights", "x.pth", "--input", str(tmp_path / "scenes"),
         "--output", str(tmp_path / "o"), "--gt", str(tmp_path / "dup.json")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--gt" in err and "dup.json" in err and "duplicate image ids 1" in err


def _tool_inference(name):
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(f"tool_{name}", root / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detectron2_registration_validates_on_load(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.data import DatasetCatalog

    from sdconet.d2.datasets import register_checked_coco_instances

    dup = copy.deepcopy(GOOD)
    dup["annotations"][1]["id"] = 1
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    name = "i12_dup_annotation_ids"
    register_checked_coco_instances(name, {}, str(tmp_path / "dup.json"), str(tmp_path))
    try:
        with pytest.raises(CocoFormatError, match=r"dup.json.*duplicate annotation ids 1"):
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
