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
    non_maximum_merging,
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


# ------------------------------------------------------------------------ SAHI's NMM / GREEDYNMM, as SAHI writes them
def _metric(a, b, kind):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    aa, ab = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter / (aa + ab - inter) if kind == "iou" else inter / min(aa, ab)


def _sahi_reference(boxes, scores, labels, kind, thr, greedy):
    """sahi.postprocess.combine.(greedy_)nmm + NMMPostprocess, transcribed literally (one class, '>' matching)."""
    n = len(scores)
    keep_to_merge = {}
    if greedy:
        order = sorted(range(n), key=lambda k: scores[k])  # ascending, highest last
        while order:
            idx = order.pop()
            matched = [m for m in order if _metric(boxes[idx], boxes[m], kind) > thr][::-1]
            order = sorted((m for m in order if m not in matched), key=lambda k: scores[k])
            keep_to_merge[idx] = matched
    else:
        merge_to_keep = {}
        order = sorted(range(n), key=lambda k: -scores[k])
        for k in order:
            others = [m for m in order if m != k]
            matched = [m for m in others if _metric(boxes[k], boxes[m], kind) > thr][::-1]
            if k not in merge_to_keep:
                keep_to_merge[k] = []
                for m in matched:
                    if m not in merge_to_keep:
                        keep_to_merge[k].append(m)
                        merge_to_keep[m] = k
            else:
                keeper = merge_to_keep[k]
                for m in matched:
                    if m not in keep_to_merge and m not in merge_to_keep:
                        keep_to_merge[keeper].append(m)
                        merge_to_keep[m] = keeper
    out = []
    for k, members in keep_to_merge.items():
        box = list(boxes[k])
        for m in members:
            if _metric(box, boxes[m], kind) > thr:
                box = [
                    min(box[0], boxes[m][0]),
                    min(box[1], boxes[m][1]),
                    max(box[2], boxes[m][2]),
                    max(box[3], boxes[m][3]),
                ]
        out.append((round(scores[k], 6), labels[k], *np.round(box, 3)))
    return sorted(out)


@pytest.mark.parametrize("greedy", [True, False])
@pytest.mark.parametrize("kind", ["iou", "ios"])
def test_non_maximum_merging_equals_sahi(greedy, kind):
    boxes, scores, labels = random_boxes(150, seed=3, extent=200.0)
    labels = np.zeros_like(labels)
    b, s, lab = non_maximum_merging(boxes, scores, labels, False, kind, 0.3, greedy=greedy)
    got = sorted(
        (round(float(x), 6), int(c), *np.round(bb.astype(np.float64), 3)) for bb, x, c in zip(b, s, lab)
    )
    want = _sahi_reference(boxes.tolist(), scores.tolist(), labels.tolist(), kind, 0.3, greedy)
    assert len(got) == len(want) < len(boxes)
    for g, w in zip(got, want):
        assert g[:2] == w[:2] and np.allclose(g[2:], w[2:], atol=1e-3)


def test_nmm_grows_clusters_greedy_nmm_does_not():
    # IoU: A-B 0.54, B-C 0.43, A-C 0.18; the box grown from A and B has IoU 0.35 with C.
    boxes = np.array([[0, 0, 10, 10], [3, 0, 13, 10], [7, 0, 17, 10]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7])
    labels = np.zeros(3, dtype=np.int64)
    gb, gs, _ = non_maximum_merging(boxes, scores, labels, metric="iou", threshold=0.3, greedy=True)
    assert gb.tolist() == [[0, 0, 13, 10], [7, 0, 17, 10]] and gs.tolist() == pytest.approx([0.9, 0.7])
    nb, ns, _ = non_maximum_merging(boxes, scores, labels, metric="iou", threshold=0.3, greedy=False)
    assert nb.tolist() == [[0, 0, 17, 10]] and ns.tolist() == pytest.approx([0.9])
    # Class-wise by default; merge_detections dispatches both names.
    two = non_maximum_merging(boxes[:2], scores[:2], np.array([0, 1]), threshold=0.4)
    assert len(two[0]) == 2
    opts = MergeOptions(method="greedynmm", match_threshold=0.3, border_suppression=False)
    mb, ms, _ = merge_detections(boxes, scores, labels, np.zeros(3, bool), np.arange(3), (100, 100), opts)
    assert mb.tolist() == gb.tolist()
    # At 0.4 the grown box no longer matches C: SAHI drops C from A's cluster (it is not kept on its own).
    lone, _, _ = non_maximum_merging(boxes, scores, labels, metric="iou", threshold=0.4, greedy=False)
    assert lone.tolist() == [[0, 0, 13, 10]]
