"""SDCoNetDatasetMapper: LR/HR sizes, box frames, train/test degradation parity, real-LR mode."""

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("detectron2")

from detectron2.data import transforms as T  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402

from sdconet.d2 import SDCoNetDatasetMapper, get_sdconet_cfg  # noqa: E402
from sdconet.data.degradation import degrade  # noqa: E402


def _tile(tmp_path, h, w, name="tile.png"):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(img).save(path)
    return str(path), img


def _record(path, h, w, boxes):
    annos = [
        {"bbox": list(b), "bbox_mode": BoxMode.XYWH_ABS, "category_id": c, "iscrowd": 0, "segmentation": []}
        for b, c in boxes
    ]
    return {"file_name": path, "image_id": 7, "height": h, "width": w, "annotations": annos}


def test_train_mapping_sizes_frames_and_flip(tmp_path):
    path, hr = _tile(tmp_path, 64, 48)
    rec = _record(path, 64, 48, [((4, 8, 10, 20), 1), ((30, 40, 12, 6), 0)])
    mapper = SDCoNetDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0, horizontal=True)], sr_scale=2)
    out = mapper(rec)
    assert tuple(out["image"].shape) == (3, 32, 24) and str(out["image"].dtype) == "torch.uint8"
    assert tuple(out["hr_image"].shape) == (3, 64, 48)
    assert (out["height"], out["width"]) == (64, 48)  # evaluation frame = original tile
    flipped = hr[:, ::-1]
    assert np.array_equal(out["hr_image"].permute(1, 2, 0).numpy(), flipped)
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), degrade(np.ascontiguousarray(flipped), 2))
    inst = out["instances"]
    assert inst.image_size == (32, 24)
    # XYWH (4, 8, 10, 20) in HR -> flipped x1 = 48 - 14 = 34 -> LR frame / 2
    assert inst.gt_boxes.tensor.tolist()[0] == pytest.approx([17.0, 4.0, 22.0, 14.0])
    assert inst.gt_boxes.tensor.tolist()[1] == pytest.approx([3.0, 20.0, 9.0, 23.0])
    assert inst.gt_classes.tolist() == [1, 0]
    assert "annotations" not in out and not inst.has("gt_masks")


def test_test_mapping_is_deterministic_and_identical_degradation(tmp_path):
    path, hr = _tile(tmp_path, 40, 40)
    rec = _record(path, 40, 40, [((1, 1, 5, 5), 0)])
    cfg = get_sdconet_cfg()
    test_mapper = SDCoNetDatasetMapper(cfg, is_train=False)
    train_mapper = SDCoNetDatasetMapper(cfg, is_train=True)
    assert train_mapper.augmentations and not test_mapper.augmentations
    a, b = test_mapper(rec), test_mapper(rec)
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    assert np.array_equal(a["image"].permute(1, 2, 0).numpy(), degrade(hr, 2))
    assert "instances" not in a and "annotations" not in a and "hr_image" in a


def test_odd_tile_is_cropped_to_a_multiple_of_the_scale(tmp_path):
    path, hr = _tile(tmp_path, 33, 31)
    rec = _record(path, 33, 31, [((20, 20, 11, 13), 2)])  # touches the cropped border
    out = SDCoNetDatasetMapper(True, augmentations=[], sr_scale=2)(rec)
    assert tuple(out["image"].shape) == (3, 16, 15) and tuple(out["hr_image"].shape) == (3, 32, 30)
    assert (out["height"], out["width"]) == (33, 31)
    x1, y1, x2, y2 = out["instances"].gt_boxes.tensor[0].tolist()
    assert (x1, y1) == pytest.approx((10, 10)) and x2 <= 15 and y2 <= 16


def test_real_lr_mode_uses_the_file_as_input(tmp_path):
    path, img = _tile(tmp_path, 20, 30)
    rec = _record(path, 20, 30, [((2, 3, 4, 5), 0)])
    out = SDCoNetDatasetMapper(True, augmentations=[], lr_mode="real")(rec)
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), img)
    assert "hr_image" not in out
    assert out["instances"].gt_boxes.tensor.tolist()[0] == pytest.approx([2, 3, 6, 8])


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="lr_mode"):
        SDCoNetDatasetMapper(True, lr_mode="fancy")
    cfg = get_sdconet_cfg()
    cfg.INPUT.RANDOM_FLIP = "diagonal"
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        SDCoNetDatasetMapper(cfg, is_train=True)
