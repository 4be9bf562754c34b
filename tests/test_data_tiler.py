"""Tiler: DOTA_devkit windows, the visible-fraction rule, padding."""

import numpy as np
import pytest

from sdconet.data.records import SourceImage, SourceObject
from sdconet.data.scene_tiles import tile_scene
from sdconet.data.tiler import PRESETS, crop_tile, select_objects, tile_windows, window_starts


def test_presets_are_the_paper_settings():
    assert PRESETS == {"nwpu": (512, 200), "dota15": (1024, 200), "hrrsd": (1024, 200)}


@pytest.mark.parametrize(
    "length, expected",
    [
        (300, [0]),  # smaller than a tile: one window, padded later
        (512, [0]),  # exactly one tile
        (513, [0, 1]),  # one pixel larger: the last window is shifted to end at the edge
        (1000, [0, 312, 488]),
        (824, [0, 312]),  # 312 + 512 == 824 reaches the edge exactly
        (825, [0, 312, 313]),
    ],
)
def test_window_starts_follow_dota_devkit(length, expected):
    assert window_starts(length, 512, 200) == expected


def test_tile_windows_row_major_and_clipped():
    windows = tile_windows(600, 300, 512, 200)
    assert windows == [(0, 0, 512, 300), (88, 0, 600, 300)]
    for x0, y0, x1, y1 in tile_windows(1500, 1100, 512, 100):
        assert x1 - x0 == 512 and y1 - y0 == 512
        assert 0 <= x0 and x1 <= 1500 and 0 <= y0 and y1 <= 1100


@pytest.mark.parametrize("tile, overlap", [(0, 0), (512, 512), (512, -1), (512, 600)])
def test_bad_tiling_arguments_are_refused(tile, overlap):
    with pytest.raises(ValueError):
        tile_windows(1000, 1000, tile, overlap)


def test_object_exactly_on_the_border_is_fully_inside():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [502.0, 502.0, 512.0, 512.0]])
    sel = select_objects(boxes, (0, 0, 512, 512))
    assert sel.indices.tolist() == [0, 1]
    assert not sel.truncated.any()
    np.testing.assert_array_equal(sel.boxes, boxes)


def test_visible_fraction_exactly_threshold_is_dropped_and_above_is_kept():
    window = (100, 0, 612, 512)
    # 10 px wide boxes, 7 px visible = 0.7 exactly -> dropped; 8 px visible = 0.8 -> kept and clipped.
    boxes = np.array([[93.0, 10.0, 103.0, 20.0], [92.0, 30.0, 102.0, 40.0], [98.0, 50.0, 108.0, 60.0]])
    sel = select_objects(boxes, window, min_visible=0.7)
    assert sel.indices.tolist() == [2]
    assert sel.truncated.tolist() == [True]
    np.testing.assert_allclose(sel.boxes, [[0.0, 50.0, 8.0, 60.0]])
    np.testing.assert_allclose(sel.visible, [0.8])
    assert sel.num_dropped_cut == 2
    # a 100 px box with exactly 70 px visible is also not kept (true division, no rounding up)
    assert select_objects(np.array([[70.0, 0.0, 170.0, 1.0]]), (100, 0, 612, 512)).indices.size == 0


def test_outside_and_zero_area_objects_are_never_kept():
    boxes = np.array([[600.0, 600.0, 610.0, 610.0], [5.0, 5.0, 5.0, 9.0]])
    sel = select_objects(boxes, (0, 0, 512, 512))
    assert sel.indices.size == 0 and sel.num_dropped_cut == 0


def test_crop_tile_zero_pads_right_and_bottom():
    image = np.full((300, 400, 3), 7, dtype=np.uint8)
    tile = crop_tile(image, (0, 0, 400, 300), 512)
    assert tile.shape == (512, 512, 3)
    assert (tile[:300, :400] == 7).all() and (tile[300:] == 0).all() and (tile[:, 400:] == 0).all()
    assert crop_tile(image, (0, 0, 400, 300), 512, pad=False).shape == (300, 400, 3)


def test_tile_scene_records_offsets_padding_and_truncation():
    record = SourceImage("s1", "unused.png", [SourceObject((500.0, 10.0, 540.0, 30.0), 1, True)])
    scene = tile_scene(record, 600, 300, 512, 200)
    assert [(t.tile_x, t.tile_y, t.width, t.height, t.pad_w, t.pad_h) for t in scene.tiles] == [
        (0, 0, 512, 512, 0, 212),
        (88, 0, 512, 512, 0, 212),
    ]
    first, second = scene.tiles
    assert first.annotations == []  # 12 of 40 px visible
    (ann,) = second.annotations
    assert ann.box == (412.0, 10.0, 452.0, 30.0) and not ann.truncated and ann.difficult and ann.category == 1
    assert scene.num_cut_dropped == 1
    assert second.file_name == "s1__88_0.png"
    assert len(tile_scene(record, 600, 300, 512, 200, keep_empty=False).tiles) == 1
