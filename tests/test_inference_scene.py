"""Sliced scene prediction: tiling, mapping to scene coordinates, merging, both input modes, batching.

Most tests use a colour detector (connected components of pure-colour rectangles on black) so that the expected
scene boxes are known exactly; the real tiny model checks the plumbing (modes, batching, bounds).
"""

import cv2
import numpy as np
import pytest
import torch

from sdconet.data.degradation import degrade
from sdconet.data.tiler import tile_windows
from sdconet.inference.merge import MergeOptions
from sdconet.inference.predictor import Predictor
from sdconet.inference.scene import predict_scene
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

torch.set_num_threads(2)

COLOURS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}


class ColourDetector:
    """Finds solid red / green / blue blobs: one box per connected component (its pixel extent)."""

    def __init__(self, sr_scale=2, batch_size=4):
        self.sr_scale = sr_scale
        self.batch_size = batch_size
        self.calls = []

    def predict(self, images):
        self.calls.append([im.shape for im in images])
        out = []
        for im in images:
            boxes, labels = [], []
            for label, colour in COLOURS.items():
                mask = np.all(np.abs(im.astype(int) - colour) < 100, axis=2).astype(np.uint8)
                n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
                for x, y, w, h, _ in stats[1:n]:
                    boxes.append([x, y, x + w, y + h])
                    labels.append(label)
            out.append(
                {
                    "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                    "scores": np.full(len(boxes), 0.9, np.float32),
                    "labels": np.asarray(labels, np.int64),
                }
            )
        return out


def paint(width, height, boxes, labels):
    img = np.zeros((height, width, 3), np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes, labels):
        img[int(y1) : int(y2), int(x1) : int(x2)] = COLOURS[int(c)]
    return img


def random_layout(width, height, n, seed, max_side=30, gap=6):
    """Non-overlapping rectangles (even coordinates, so that x1/2 degradation keeps them aligned)."""
    rng = np.random.default_rng(seed)
    occupied = np.zeros((height, width), bool)
    boxes, labels = [], []
    while len(boxes) < n:
        w, h = (int(v) * 2 for v in rng.integers(4, max_side // 2, 2))
        x, y = int(rng.integers(0, (width - w) // 2)) * 2, int(rng.integers(0, (height - h) // 2)) * 2
        if occupied[max(0, y - gap) : y + h + gap, max(0, x - gap) : x + w + gap].any():
            continue
        occupied[y : y + h, x : x + w] = True
        boxes.append([x, y, x + w, y + h])
        labels.append(int(rng.integers(0, 3)))
    return np.asarray(boxes, np.float64), np.asarray(labels)


def test_object_cut_by_tile_borders_is_reported_once_in_scene_coordinates():
    # native mode, s = 2: tiles of 256/2 = 128 px, overlap 64/2 = 32 -> x starts 0, 96, 192, 272 in a 400 px scene.
    obj = np.array(
        [[120.0, 118.0, 140.0, 140.0]]
    )  # crosses x = 128 and y = 128 (right/bottom edges of tile 0)
    scene = paint(400, 400, obj, [1])
    det = ColourDetector()
    res = predict_scene(det, scene, mode="native", tile_size=256, overlap=64)
    assert res.stats["num_tiles"] == 16
    assert res.stats["num_raw"] > 1  # several tiles saw (part of) it
    assert len(res) == 1
    np.testing.assert_array_equal(res.boxes[0], obj[0])
    assert res.labels.tolist() == [1]
    # Without border suppression the cut pieces survive NMS (IoU with the whole box < 0.5).
    raw = predict_scene(
        det, scene, mode="native", tile_size=256, overlap=64, merge=MergeOptions(border_suppression=False)
    )
    assert len(raw) > 1


@pytest.mark.parametrize("mode", ["native", "hr"])
def test_tiles_and_merge_round_trip_on_a_scene_with_known_boxes(mode):
    width, height = 700, 520  # several tiles of 256 (hr) / 128 (native) each way, partial last tiles
    boxes, labels = random_layout(width, height, 40, seed=3)
    scene = paint(width, height, boxes, labels)
    det = ColourDetector(batch_size=3)
    res = predict_scene(det, scene, mode=mode, tile_size=256, overlap=64)
    assert res.width == width and res.height == height
    want = sorted(zip(labels.tolist(), boxes.tolist()))
    got = sorted(zip(res.labels.tolist(), res.boxes.tolist()))
    assert len(got) == len(want)
    tol = 0 if mode == "native" else 2.5  # hr: boxes found in the bicubic x1/2 LR tile, scaled back by 2
    for (gl, gb), (wl, wb) in zip(got, want):
        assert gl == wl
        np.testing.assert_allclose(gb, wb, atol=tol)
    # hr mode predicts on degraded HR tiles of 256 -> 128 px; native mode on 128 px crops.
    sizes = {s[:2] for call in det.calls for s in call}
    assert max(max(s) for s in sizes) == 128
    # Tiles are streamed in batches of batch_size.
    assert max(len(c) for c in det.calls) == 3
    tile, overlap = (128, 32) if mode == "native" else (256, 64)  # native: the same tiles at LR size
    n_tiles = len(tile_windows(width, height, tile, overlap))
    assert res.stats["num_tiles"] == n_tiles == sum(len(c) for c in det.calls)


def test_full_image_pass_recovers_an_object_larger_than_the_overlap():
    big = np.array([[40.0, 40.0, 300.0, 200.0]])  # wider than a 128 px tile: no tile sees it whole
    scene = paint(400, 300, big, [2])
    det = ColourDetector(sr_scale=1)
    sliced = predict_scene(det, scene, mode="hr", tile_size=128, overlap=32)
    assert len(sliced) > 1  # only pieces
    full = predict_scene(det, scene, mode="hr", tile_size=128, overlap=32, full_image=True)
    assert len(full) == 1
    np.testing.assert_allclose(full.boxes[0], big[0], atol=4)


def test_bad_arguments_are_named():
    det = ColourDetector()
    with pytest.raises(ValueError, match="mode"):
        predict_scene(det, np.zeros((10, 10, 3), np.uint8), mode="lr")
    with pytest.raises(ValueError, match="uint8"):
        predict_scene(det, np.zeros((10, 10), np.uint8))


@pytest.fixture(scope="module")
def tiny_predictor():
    torch.manual_seed(0)
    model = build_sdconet(SDCoNetConfig.tiny(num_classes=3))
    return Predictor(model, class_names=["a", "b", "c"], batch_size=4)


def test_real_model_scene_larger_than_several_tiles_in_both_modes(tiny_predictor):
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (220, 280, 3), dtype=np.uint8)
    hr = predict_scene(tiny_predictor, scene, mode="hr", tile_size=128, overlap=32, score_thresh=0.0)
    native = predict_scene(tiny_predictor, scene, mode="native", tile_size=128, overlap=32, score_thresh=0.0)
    assert hr.stats["num_tiles"] == len(tile_windows(280, 220, 128, 32)) == 6
    assert native.stats["num_tiles"] == len(tile_windows(280, 220, 64, 16)) == 30
    for res in (hr, native):
        assert len(res) > 0 and res.boxes.dtype == np.float32
        assert (res.boxes[:, 0] >= 0).all() and (res.boxes[:, 2] <= 280).all()
        assert (res.boxes[:, 1] >= 0).all() and (res.boxes[:, 3] <= 220).all()
        assert (np.diff(res.scores) <= 0).all()
        assert set(res.labels.tolist()) <= {0, 1, 2}
    # Boxes spread over the whole scene, not only the first tile.
    assert hr.boxes[:, 2].max() > 200 and hr.boxes[:, 3].max() > 160


def test_real_model_batching_and_whole_image_tile(tiny_predictor):
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 255, (160, 230, 3), dtype=np.uint8)
    a = predict_scene(tiny_predictor, scene, tile_size=128, overlap=32, batch_size=1)
    b = predict_scene(tiny_predictor, scene, tile_size=128, overlap=32, batch_size=5)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    # tile 0 = one pass over the whole scene == the predictor on the degraded scene, boxes x2.
    whole = predict_scene(
        tiny_predictor, scene, tile_size=0, score_thresh=0.0, merge=MergeOptions(method="none")
    )
    direct = tiny_predictor.predict([degrade(scene, 2)])[0]
    order = np.argsort(-direct["scores"], kind="stable")
    np.testing.assert_allclose(whole.boxes, direct["boxes"][order] * 2, atol=1e-3)
