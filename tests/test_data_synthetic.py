"""The embedded synthetic demo dataset: format, determinism, object sizes, cached generation."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sdconet.data.image_io import read_image_rgb
from sdconet.data.synthetic import (
    SYNTHETIC_CLASSES,
    ensure_synthetic_dataset,
    make_synthetic_split,
    render_synthetic_tile,
)


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_default_dataset_is_small_and_in_the_split_format(tmp_path):
    paths = make_synthetic_split(tmp_path / "syn")
    train = json.loads(Path(paths["train_json"]).read_text())
    test = json.loads(Path(paths["test_json"]).read_text())
    assert len(train["images"]) == 192 and len(test["images"]) == 32
    assert [c["name"] for c in train["categories"]] == list(SYNTHETIC_CLASSES) == ["vehicle", "plane", "tank"]
    assert [c["id"] for c in train["categories"]] == [1, 2, 3]
    seen = set()
    for coco, root in ((train, paths["train_images"]), (test, paths["test_images"])):
        for im in coco["images"]:
            assert read_image_rgb(Path(root) / im["file_name"]).shape == (128, 128, 3)
            assert (im["width"], im["height"], im["tile_x"], im["pad_w"]) == (128, 128, 0, 0)
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            assert ann["area"] == w * h and ann["truncated"] == 0
            # LR (x2) object sides between ~4 and ~30 px
            assert 2 <= min(w, h) / 2 and max(w, h) / 2 <= 30
            seen.add(ann["category_id"])
    assert seen == {1, 2, 3}
    assert len(train["annotations"]) >= 2 * 192
    stats = json.loads(Path(paths["stats_json"]).read_text())
    assert stats["total"]["images"] == 224 and stats["dataset"] == "sdconet_synthetic"
    assert (tmp_path / "syn" / "train_sources.txt").read_text().split()[0] == "train_00000"


def test_generation_is_deterministic_and_seeded(tmp_path):
    make_synthetic_split(tmp_path / "a", num_train=3, num_test=2, tile_size=64)
    make_synthetic_split(tmp_path / "b", num_train=3, num_test=2, tile_size=64)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    make_synthetic_split(tmp_path / "c", num_train=3, num_test=2, tile_size=64, seed=1)
    assert _tree(tmp_path / "c") != _tree(tmp_path / "a")


def test_objects_are_high_contrast_against_the_ground():
    image, objects = render_synthetic_tile(np.random.default_rng(5), 128)
    assert objects
    for obj in objects:
        x1, y1, x2, y2 = (int(v) for v in obj.box)
        patch = image[y1:y2, x1:x2].astype(int)
        ground = np.median(image.reshape(-1, 3), axis=0)
        assert np.abs(patch - ground).sum(axis=2).max() > 150


def test_ensure_is_idempotent_race_safe_and_regenerates_on_new_parameters(tmp_path):
    root = tmp_path / "cache" / "syn"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: ensure_synthetic_dataset(root, num_train=4, num_test=2), range(2)))
    assert results[0] == results[1] and Path(results[0]["train_json"]).is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["syn"]  # no temporary folders left
    stamp = os.stat(results[0]["train_json"]).st_mtime_ns
    ensure_synthetic_dataset(root, num_train=4, num_test=2)
    assert os.stat(results[0]["train_json"]).st_mtime_ns == stamp  # not regenerated
    paths = ensure_synthetic_dataset(root, num_train=5, num_test=2)
    assert len(json.loads(Path(paths["train_json"]).read_text())["images"]) == 5
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["syn"]
