"""Crops of detections (SAHI's export_crop): one PNG per detection, read through the scene source."""

import numpy as np

from sdconet.data.image_io import read_image_rgb
from sdconet.inference.crops import crop_window, export_crops
from sdconet.inference.sources import ArraySource


def test_crop_window_rounds_outwards_pads_and_clips():
    assert crop_window((10.2, 5.7, 20.1, 9.0), 100, 50) == (10, 5, 21, 9)
    assert crop_window((10.2, 5.7, 20.1, 9.0), 100, 50, pad=6) == (4, 0, 27, 15)
    assert crop_window((95, 45, 120, 60), 100, 50) == (95, 45, 100, 50)
    assert crop_window((120, 10, 130, 20), 100, 50) is None


def test_export_crops_writes_the_detection_pixels_per_class(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    source = ArraySource(image, "scene")
    boxes = np.array([[10, 10, 20, 30], [40.5, 5, 60, 15], [0, 0, 5, 5]], np.float32)
    n = export_crops(
        source,
        boxes,
        np.array([0.9, 0.5, 0.1]),
        np.array([0, 1, 0]),
        ["car", "ship"],
        tmp_path,
        "a/b scene",
        min_score=0.3,
    )
    assert n == 2
    car = read_image_rgb(tmp_path / "car" / "a_b_scene_00000.png")
    np.testing.assert_array_equal(car, image[10:30, 10:20])
    ship = read_image_rgb(tmp_path / "ship" / "a_b_scene_00001.png")
    np.testing.assert_array_equal(ship, image[5:15, 40:60])
    assert not (tmp_path / "car" / "a_b_scene_00002.png").exists()  # below min_score
