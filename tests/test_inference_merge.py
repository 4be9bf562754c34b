"""Tile-merging primitives: overlap pairs, greedy NMS (IoU/IoS), WBF, border-cut flags and suppression."""

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, box_iou

from sdconet.inference.merge import (
    MergeOptions,
    cut_by_window,
    greedy_nms,
    merge_detections,
    overlapping_pairs,
    suppress_border_cut,
    weighted_box_fusion,
)


def random_boxes(n, seed=0, extent=500.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(4, 60, (n, 2))
    return np.concatenate([xy, xy + wh], 1), rng.permutation(n).astype(np.float64) / n, rng.integers(0, 3, n)


def test_overlapping_pairs_match_brute_force():
    boxes, _, labels = random_boxes(400)
    i, j, inter = overlapping_pairs(boxes, labels)
    iou = box_iou(torch.tensor(boxes), torch.tensor(boxes)).numpy()
    want = {
        (a, b)
        for a in range(len(boxes))
        for b in range(a + 1, len(boxes))
        if iou[a, b] > 0 and labels[a] == labels[b]
    }
    got = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist())}
    assert got == want
    # Intersection areas are right.
    a, b = i[0], j[0]
    w = min(boxes[a, 2], boxes[b, 2]) - max(boxes[a, 0], boxes[b, 0])
    h = min(boxes[a, 3], boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
    assert inter[0] == pytest.approx(w * h)


def test_greedy_nms_iou_equals_torchvision_and_ios_suppresses_nested_boxes():
    boxes, scores, labels = random_boxes(600, seed=1, extent=300.0)
    keep = greedy_nms(boxes, scores, labels, "iou", 0.4)
    ref = batched_nms(
        torch.tensor(boxes, dtype=torch.float32),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(labels),
        0.4,
    ).numpy()
    assert keep.tolist() == ref.tolist()
    # IoS: a small box inside a big one has IoU 0.25 (kept by IoU NMS) but IoS 1 (merged).
    nested = np.array([[0, 0, 20, 20], [0, 0, 10, 10]], dtype=np.float64)
    s = np.array([0.9, 0.8])
    assert greedy_nms(nested, s, None, "iou", 0.5).tolist() == [0, 1]
    assert greedy_nms(nested, s, None, "ios", 0.5).tolist() == [0]
    # Class-wise: different classes never suppress each other.
    assert greedy_nms(nested, s, np.array([0, 1]), "ios", 0.5).tolist() == [0, 1]


def test_weighted_box_fusion_averages_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [100, 100, 110, 110]], dtype=np.float64)
    scores = np.array([0.9, 0.3, 0.5])
    fb, fs, fl = weighted_box_fusion(boxes, scores, np.array([1, 1, 2]))
    assert len(fb) == 2
    np.testing.assert_allclose(fb[0], [0.5, 0, 10.5, 10], atol=1e-5)  # (0.9*0 + 0.3*2) / 1.2
    assert fs[0] == pytest.approx(0.6) and fl.tolist() == [1, 2]
    np.testing.assert_allclose(fb[1], boxes[2])


def test_cut_by_window_ignores_scene_borders():
    win = (0, 100, 128, 228)  # left edge = scene border, right and top edges inside the scene
    boxes = np.array([[0, 150, 20, 170], [120, 150, 128, 170], [50, 100, 60, 120], [50, 150, 60, 170]], float)
    cut = cut_by_window(boxes, win, (400, 228), margin=2)
    assert cut.tolist() == [False, True, True, False]  # bottom edge 228 = scene border: not a cut


def test_border_suppression_needs_another_tile_and_a_whole_box():
    boxes = np.array([[120, 10, 128, 30], [120, 10, 140, 30], [120, 10, 128, 30]], float)
    labels = np.array([0, 0, 0])
    cut = np.array([True, False, True])
    keep = suppress_border_cut(boxes, labels, cut, np.array([0, 1, 1]))
    # box 0 (tile 0) is covered by the whole box of tile 1; box 2 is in the same tile as the whole box.
    assert keep.tolist() == [False, True, True]
    assert suppress_border_cut(boxes, np.array([0, 1, 1]), cut, np.array([0, 1, 1])).tolist() == [
        True,
        True,
        True,
    ]


def test_merge_detections_clips_sorts_and_caps():
    boxes = np.array([[-5, -5, 10, 10], [50, 50, 600, 70], [51, 50, 600, 70]], float)
    scores = np.array([0.2, 0.9, 0.5])
    b, s, lab = merge_detections(boxes, scores, np.zeros(3, int), np.zeros(3, bool), np.arange(3), (300, 200))
    assert s.tolist() == pytest.approx([0.9, 0.2])
    np.testing.assert_allclose(b, [[50, 50, 300, 70], [0, 0, 10, 10]])
    b, s, _ = merge_detections(
        boxes,
        scores,
        np.zeros(3, int),
        np.zeros(3, bool),
        np.arange(3),
        (300, 200),
        MergeOptions(method="none", max_detections=2),
    )
    assert s.tolist() == pytest.approx([0.9, 0.5])
    with pytest.raises(ValueError, match="method"):
        MergeOptions(method="soft")
