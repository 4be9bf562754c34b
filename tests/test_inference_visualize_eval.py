"""PNG figures (sizes, colours), COCO results, image-id matching and scene-level evaluation."""

import math

import numpy as np
import pytest

from sdconet.data.image_io import read_image_rgb, write_image
from sdconet.inference.coco_results import category_ids_for, detections_to_coco, match_image_ids
from sdconet.inference.scene_eval import evaluate_scenes, format_report
from sdconet.inference.synthetic_scene import make_synthetic_scene, scenes_ground_truth
from sdconet.inference.visualize import (
    class_colors,
    draw_detections,
    grid_size,
    kept_tokens_figure,
    panel_size,
    psnr,
    saliency_figure,
    sr_figure,
)


def test_draw_detections_keeps_size_and_uses_one_colour_per_class(tmp_path):
    img = np.full((300, 400, 3), 128, np.uint8)
    boxes = np.array([[50, 60, 150, 160], [200, 100, 300, 200], [10, 250, 30, 270]], float)
    out = draw_detections(
        img,
        boxes,
        [0, 2, 1],
        [0.9, 0.8, 0.1],
        ["car", "ship", "tank"],
        score_thresh=0.5,
        thickness=2,
        legend=False,
    )
    assert out.shape == img.shape and out.dtype == np.uint8 and (img == 128).all()  # input untouched
    colors = class_colors(3)
    assert tuple(out[110, 50]) == colors[0]  # left edge of box 0
    assert tuple(out[150, 300]) == colors[2]  # right edge of box 1
    assert (out[255:265, 10] == 128).all()  # below the score threshold: not drawn
    assert len(set(colors)) == 3 and len(set(class_colors(30))) == 30
    path = tmp_path / "boxes.png"
    write_image(path, draw_detections(img, boxes, [0, 2, 1], [0.9, 0.8, 0.1], ["car", "ship", "tank"]))
    assert read_image_rgb(path).shape == (300, 400, 3)


def test_figures_have_the_documented_sizes(tmp_path):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 255, (128, 96, 3), dtype=np.uint8)
    maps = [rng.random((8, 6)), rng.random((4, 3)), rng.random((2, 2)), rng.random((1, 1))]
    hw = panel_size(128, 96)
    assert hw == (256, 192)  # enlarged x2 to reach 256
    fig = saliency_figure(hr, maps)
    assert fig.shape == grid_size(1, 5, hw) + (3,)
    lr = hr[::2, ::2]
    sr = rng.integers(0, 255, (128, 96, 3), dtype=np.uint8)
    assert sr_figure(lr, sr, hr).shape == grid_size(1, 3, hw) + (3,)
    assert sr_figure(lr, sr).shape == grid_size(1, 2, hw) + (3,)
    kept = [[m > 0.5 for m in maps] for _ in range(3)]
    fig = kept_tokens_figure(hr, kept)
    assert fig.shape == grid_size(3, 4, hw) + (3,)
    # Kept tokens are bright, dropped ones dimmed: compare the first panel's token cells.
    y0, x0 = grid_size(0, 0, hw)[0] + 28, 6  # pad + title band
    cell = (hw[0] // 8, hw[1] // 6)
    for r in range(8):
        for c in range(6):
            patch = fig[
                y0 + r * cell[0] + 4 : y0 + (r + 1) * cell[0] - 4,
                x0 + c * cell[1] + 4 : x0 + (c + 1) * cell[1] - 4,
            ]
            src = np.repeat(np.repeat(hr, 2, 0), 2, 1)[
                r * cell[0] + 4 : (r + 1) * cell[0] - 4, c * cell[1] + 4 : (c + 1) * cell[1] - 4
            ]
            ratio = patch.astype(float).mean() / max(src.astype(float).mean(), 1)
            assert ratio == pytest.approx(1.0 if kept[0][0][r, c] else 0.25, abs=0.1)
    write_image(tmp_path / "kept.png", fig)
    assert read_image_rgb(tmp_path / "kept.png").shape == fig.shape


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))
    assert psnr(a, a) == math.inf


def test_coco_results_and_image_matching():
    res = detections_to_coco(np.array([[10, 20, 30, 60.5]]), np.array([0.87654]), np.array([1]), 7, [3, 5])
    assert res == [{"image_id": 7, "category_id": 5, "bbox": [10.0, 20.0, 20.0, 40.5], "score": 0.8765}]
    gt = {
        "images": [
            {"id": 1, "file_name": "a/P0001.png"},
            {"id": 2, "file_name": "b/P0001.png"},
            {"id": 3, "file_name": "x/P0002.png"},
        ],
        "categories": [{"id": 4}, {"id": 2}],
    }
    found = match_image_ids(
        gt, ["/data/a/P0001.png", "/elsewhere/P0001.png", "/tmp/P0002.png", "/tmp/P9.png"]
    )
    assert found == {
        "/data/a/P0001.png": 1,
        "/tmp/P0002.png": 3,
    }  # ambiguous base name and unknown file: absent
    assert category_ids_for(2, gt) == [2, 4] and category_ids_for(3) == [1, 2, 3]
    with pytest.raises(ValueError, match="categories"):
        category_ids_for(3, gt)


def test_scene_evaluation_against_the_unsliced_ground_truth():
    scene = make_synthetic_scene(400, 300, seed=1)
    assert scene.image.shape == (300, 400, 3) and len(scene.boxes) > 10
    assert (scene.boxes[:, 2] <= 400).all() and (scene.boxes[:, 3] <= 300).all()
    gt = scenes_ground_truth([scene], ["s.png"])
    assert len(gt["annotations"]) == len(scene.boxes)
    perfect = detections_to_coco(
        scene.boxes, np.linspace(1, 0.5, len(scene.boxes)), scene.labels, 1, [1, 2, 3]
    )
    report = evaluate_scenes(gt, perfect)
    assert report["metrics"]["100"]["AP"] == pytest.approx(100.0)
    assert report["metrics"]["100"]["AP50"] == pytest.approx(100.0)
    # Half the objects found and one box shifted off its object: AP drops, per class too.
    half = perfect[::2] + [dict(perfect[1], bbox=[b + 200 for b in perfect[1]["bbox"]])]
    r2 = evaluate_scenes(gt, half)
    assert 30 < r2["metrics"]["1000"]["AP"] < 70 and r2["metrics"]["1000"]["AR"] == pytest.approx(
        100 * len(perfect[::2]) / len(perfect), abs=10
    )
    assert set(r2["per_class"]) == {"vehicle", "plane", "tank"}
    assert evaluate_scenes(gt, [], image_ids=[1])["metrics"]["100"]["AP"] == 0.0
    assert "| 1000 |" in format_report(r2)
    # the same protocol code as the detectron2 evaluator: mmdet maxDets, AI-TOD buckets with GT counts
    r3 = evaluate_scenes(gt, perfect, protocol="mmdet", area_ranges="aitod")
    assert r3["protocol"]["metrics"]["AP"] == pytest.approx(100.0)
    assert r3["protocol"]["metric_max_dets"]["AP50"] == 1000
    assert sum(b["num_gt"] for b in r3["protocol"]["buckets"]) >= len(scene.boxes)  # boundaries count twice
    assert "very tiny (APvt)" in format_report(r3)
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_scenes(gt, [dict(perfect[0], image_id=9)])
