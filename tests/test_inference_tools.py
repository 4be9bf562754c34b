"""The command-line tools end to end on CPU: predict.py (folder/glob, bad files, GT ids, evaluation, PNGs),
evaluate_scenes.py and visualize.py, with a tiny checkpoint in detectron2's format made here."""

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sdconet.data.image_io import read_image_rgb, write_image
from sdconet.inference.synthetic_scene import make_synthetic_scene, scenes_ground_truth
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "projects" / "SDCoNet" / "configs" / "quick_synthetic.yaml"


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    torch.manual_seed(0)
    model = build_sdconet(SDCoNetConfig.tiny(num_classes=3))
    ckpt = root / "model_final.pth"
    torch.save({"model": {f"core.{k}": v for k, v in model.state_dict().items()}, "iteration": 1}, ckpt)
    scenes = root / "scenes"
    scene = make_synthetic_scene(240, 200, seed=2)
    write_image(scenes / "scene_a.png", scene.image)
    gray16 = (np.linspace(0, 65535, 100 * 128).reshape(100, 128)).astype(np.uint16)
    cv2.imwrite(str(scenes / "gray16.png"), gray16)
    (scenes / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (scenes / "notes.txt").write_text("not an image")
    gt = root / "scenes.json"
    gt.write_text(json.dumps(scenes_ground_truth([scene], ["scenes/scene_a.png"])))
    return {"root": root, "ckpt": ckpt, "scenes": scenes, "gt": gt, "num_objects": len(scene.boxes)}


def test_predict_folder_with_bad_files_gt_ids_evaluation_and_pngs(setup, capsys):
    out = setup["root"] / "pred"
    args = [
        "--config-file",
        str(QUICK),
        "--weights",
        str(setup["ckpt"]),
        "--input",
        str(setup["scenes"]),
        "--output",
        str(out),
        "--gt",
        str(setup["gt"]),
        "--score-thresh",
        "0.0",
        "--quiet",
    ]
    assert load_tool("predict").main(args) == 3  # some inputs failed, the others' results are written
    printed = capsys.readouterr()
    assert "broken.png" in printed.err  # reported ...
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_done"] == 2 and summary["images_unreadable"] == 1  # ... skipped and counted
    assert summary["images_failed"] == 1 and summary["failed"][0]["file_name"].endswith("broken.png")
    assert summary["tile"] == 128 and summary["overlap"] == 64  # the synthetic preset of the config's dataset
    assert summary["tiles"] == 9 + 1
    images = json.loads((out / "images.json").read_text())
    by_name = {Path(i["file_name"]).name: i for i in images["images"]}
    assert by_name["scene_a.png"]["id"] == 1  # the GT's id, matched by file name
    assert by_name["gray16.png"]["id"] == 2 and summary["not_in_gt"] == [by_name["gray16.png"]["file_name"]]
    assert [c["name"] for c in images["categories"]] == ["vehicle", "plane", "tank"]
    results = json.loads((out / "results.json").read_text())
    assert results and {r["image_id"] for r in results} <= {1, 2}
    for r in results:
        x, y, w, h = r["bbox"]
        size = (240, 200) if r["image_id"] == 1 else (128, 100)
        assert (
            x >= 0
            and y >= 0
            and x + w <= size[0] + 1e-6
            and y + h <= size[1] + 1e-6
            and r["category_id"] in (1, 2, 3)
        )
    assert any(r["bbox"][0] > 130 for r in results if r["image_id"] == 1)  # scene, not tile, coordinates
    report = json.loads((out / "scene_eval.json").read_text())
    assert report["num_gt"] == setup["num_objects"] and report["num_images"] == 1
    assert "Scene-level COCO box AP" in printed.out
    assert read_image_rgb(out / "vis" / "scene_a.png").shape == (200, 240, 3)
    assert read_image_rgb(out / "vis" / "gray16.png").shape == (100, 128, 3)
    # The evaluation tool scores the same results (ids remapped through images.json) to the same numbers; the
    # predicted image that is not in the ground truth is named and makes the exit status "partial".
    assert (
        load_tool("evaluate_scenes").main(
            [
                "--gt",
                str(setup["gt"]),
                "--results",
                str(out / "results.json"),
                "--out",
                str(out / "again.json"),
            ]
        )
        == 3
    )
    assert "gray16.png" in capsys.readouterr().err
    again = json.loads((out / "again.json").read_text())
    assert again["metrics"] == report["metrics"] and len(again["images_not_in_gt"]) == 1


def test_predict_glob_native_mode_wbf_and_errors(setup, capsys):
    out = setup["root"] / "pred_native"
    base = ["--config-file", str(QUICK), "--weights", str(setup["ckpt"]), "--quiet", "--no-vis"]
    args = base + [
        "--input",
        str(setup["scenes"] / "scene_*.png"),
        "--output",
        str(out),
        "--mode",
        "native",
        "--tile",
        "256",
        "--overlap",
        "0.25",
        "--merge",
        "wbf",
        "--batch-size",
        "3",
    ]
    assert load_tool("predict").main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "native" and summary["overlap"] == 64 and summary["images_done"] == 1
    assert summary["tiles"] == 6  # 240x200 native pixels cut into 128-px tiles with 32 px overlap
    assert not (out / "vis").exists()
    predict = load_tool("predict")
    fresh = setup["root"] / "pred_errors"  # (a folder with earlier results would be refused first)
    assert predict.main(base + ["--input", str(setup["root"] / "nothing_*.png"), "--output", str(fresh)]) == 2
    assert "no file matches" in capsys.readouterr().err
    five = setup["root"] / "five.yaml"
    five.write_text(f"_BASE_: {QUICK}\nMODEL:\n  SDCONET:\n    NUM_CLASSES: 5\n")
    bad = [
        "--config-file",
        str(five),
        "--weights",
        str(setup["ckpt"]),
        "--input",
        str(setup["scenes"]),
        "--output",
        str(fresh),
    ]
    assert predict.main(bad) == 2
    assert "enc_class_head.weight (checkpoint (3, 64) vs model (5, 64))" in capsys.readouterr().err


def test_visualize_writes_all_pictures(setup):
    out = setup["root"] / "vis"
    args = [
        "--config-file",
        str(QUICK),
        "--weights",
        str(setup["ckpt"]),
        "--input",
        str(setup["scenes"] / "scene_a.png"),
        "--output",
        str(out),
        "--window",
        "100",
        "50",
    ]
    assert load_tool("visualize").main(args) == 0
    stem = "scene_a_x100_y50"
    for name in ("boxes", "saliency", "sr", "kept"):
        picture = read_image_rgb(out / f"{stem}_{name}.png")
        assert picture.shape[0] >= 256 and picture.shape[1] >= 256, name
    assert read_image_rgb(out / f"{stem}_saliency.png").shape == (6 * 2 + 28 + 256, 5 * 256 + 6 * 6, 3)
