"""The whole-scene loop (sdconet.inference.runner): cross-scene batching, fixed-shape batches, per-scene failures,
raw detections before the merge, split plans, the reader thread, and the sources."""

import threading
import time

import numpy as np
import pytest
from test_inference_scene import ColourDetector, paint, random_layout

from sdconet.data.errors import ImageReadError
from sdconet.inference.accumulator import RawTileDetections, merge_raw
from sdconet.inference.batching import TileBatch, batch_tiles, prefetch
from sdconet.inference.runner import SceneFailure, SceneResult, SceneRunner
from sdconet.inference.scene import predict_scene
from sdconet.inference.sources import ArraySource, ImageSource, SceneInput, SceneSource, open_scene
from sdconet.inference.tiling import TilingOptions, plan_scene

TILING = TilingOptions(mode="native", tile_size=256, overlap=64)  # native, s = 2: 128-px tiles, 32 px overlap


class PaddingDetector(ColourDetector):
    """The colour detector that also honours ``pad_to`` (records every batch's padded shape) and fails on any
    input holding a magenta pixel."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.padded = []

    def predict(self, images, pad_to=None):
        if any(np.all(im == (255, 0, 255), axis=2).any() for im in images):
            raise RuntimeError("poisoned tile")
        if pad_to is not None:
            assert all(im.shape[0] <= pad_to[0] and im.shape[1] <= pad_to[1] for im in images)
            self.padded.append((len(images), *pad_to))
        return super().predict(images)


def scene(width, height, seed, n=12):
    boxes, labels = random_layout(width, height, n, seed=seed)
    return paint(width, height, boxes, labels)


def same(a, b):
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)


def same_set(a, b):
    """The same detections, in any order (equal scores make the order depend on the input order)."""
    key = lambda d: sorted(zip(d.labels.tolist(), d.boxes.tolist(), d.scores.tolist()))  # noqa: E731
    assert key(a) == key(b)


def test_tiles_of_several_scenes_share_batches_and_match_one_scene_at_a_time():
    images = [scene(300, 200, 1), scene(200, 260, 2), scene(260, 130, 3)]
    alone = [predict_scene(ColourDetector(), im, mode="native", tile_size=256, overlap=64) for im in images]
    det = ColourDetector(batch_size=4)
    events = list(
        SceneRunner(det, TILING, batch_size=4).run([ArraySource(im, f"s{i}") for i, im in enumerate(images)])
    )
    assert [e.key for e in events] == ["s0", "s1", "s2"] and all(isinstance(e, SceneResult) for e in events)
    n_tiles = [plan_scene(im.shape[1], im.shape[0], 2, TILING).num_tasks for im in images]
    assert [len(c) for c in det.calls] == [4] * (sum(n_tiles) // 4) + (
        [sum(n_tiles) % 4] if sum(n_tiles) % 4 else []
    )
    assert any(n % 4 for n in n_tiles[:2])  # so at least one batch holds tiles of two scenes
    for event, ref in zip(events, alone):
        same(event.detections, ref)
        assert event.detections.stats["num_tiles"] == ref.stats["num_tiles"]


def test_fixed_shape_pads_every_batch_to_one_shape_with_dummy_tiles():
    images = [scene(300, 200, 4), scene(150, 100, 5)]  # the second is smaller than a tile: padded
    det = PaddingDetector(batch_size=4)
    runner = SceneRunner(det, TILING, batch_size=4, fixed_shape=True)
    events = list(runner.run([ArraySource(im, f"s{i}") for i, im in enumerate(images)]))
    assert det.padded and set(det.padded) == {(4, 128, 128)}  # every forward pass: 4 inputs of 128 x 128
    assert sum(len(c) for c in det.calls) % 4 == 0  # the last batch was filled with dummy tiles
    for event, im in zip(events, images):
        same(event.detections, predict_scene(ColourDetector(), im, mode="native", tile_size=256, overlap=64))
    with pytest.raises(ValueError, match="tile size > 0"):
        SceneRunner(det, TilingOptions(mode="native", tile_size=0, overlap=0), fixed_shape=True)


def test_a_failing_scene_is_named_and_the_others_are_done():
    good_a, good_b = scene(300, 200, 6), scene(260, 200, 7)
    poisoned = scene(200, 200, 8)
    poisoned[150:160, 150:160] = (255, 0, 255)  # the detector raises on the tiles that hold these pixels

    def broken():
        raise ImageReadError("broken.png", "truncated")

    inputs = [
        SceneInput.from_source(ArraySource(good_a, "a.png")),
        SceneInput("broken.png", broken),
        SceneInput.from_source(ArraySource(np.zeros((1, 1, 3), np.uint8), "tiny.png")),
        SceneInput.from_source(ArraySource(poisoned, "poisoned.png")),
        SceneInput.from_source(ArraySource(good_b, "b.png")),
    ]
    runner = SceneRunner(PaddingDetector(batch_size=5), TilingOptions(mode="hr", tile_size=128, overlap=32))
    events = {e.key: e for e in runner.run(inputs)}
    assert set(events) == {"a.png", "broken.png", "tiny.png", "poisoned.png", "b.png"}
    failures = {k: e for k, e in events.items() if isinstance(e, SceneFailure)}
    assert {k: e.stage for k, e in failures.items()} == {
        "broken.png": "open",
        "tiny.png": "plan",
        "poisoned.png": "predict",
    }
    assert "smaller than the SR factor" in failures["tiny.png"].message
    assert failures["poisoned.png"].message == "poisoned.png: predict failed: poisoned tile"
    for key, im in (("a.png", good_a), ("b.png", good_b)):
        same(
            events[key].detections, predict_scene(ColourDetector(), im, mode="hr", tile_size=128, overlap=32)
        )


def test_raw_detections_before_the_merge_and_a_plan_split_over_two_processes():
    im = scene(400, 300, 9, n=25)
    merged = next(iter(SceneRunner(ColourDetector(), TILING).run([ArraySource(im)])))
    raw_only = next(iter(SceneRunner(ColourDetector(), TILING, merge=None).run([ArraySource(im)])))
    assert raw_only.detections is None and len(raw_only.raw) == merged.detections.stats["num_raw"] > 25
    same(merge_raw(raw_only.raw, 400, 300), merged.detections)
    # Two "ranks" each predict every other tile; the gathered raw detections merge to the same result.
    parts = []
    for rank in (0, 1):

        def shard(plan, rank=rank):
            return type(plan)(**{**plan.__dict__, "tiles": plan.tiles[rank::2]})

        parts.append(
            next(
                iter(SceneRunner(ColourDetector(), TILING, merge=None, shard=shard).run([ArraySource(im)]))
            ).raw
        )
    same_set(merge_raw(RawTileDetections.concat(parts), 400, 300), merged.detections)


def test_batch_tiles_passes_events_through_in_order():
    class Task:  # not a TileTask: passed through
        pass

    marker = Task()
    out = list(batch_tiles([marker], 2))
    assert out == [marker]
    with pytest.raises(ValueError, match="fixed_shape needs pad_to"):
        list(batch_tiles([], 2, fixed_shape=True))
    assert TileBatch([], [np.zeros((2, 2, 3), np.uint8)]).num_dummy == 1


def test_prefetch_runs_ahead_reraises_and_stops_its_thread():
    def produce(fail_at=None):
        for i in range(50):
            if i == fail_at:
                raise OSError(f"disk error at {i}")
            yield i

    before = threading.active_count()
    assert list(prefetch(produce(), depth=3)) == list(range(50))
    with pytest.raises(OSError, match="disk error at 7"):
        list(prefetch(produce(fail_at=7), depth=3))
    for i in prefetch(produce(), depth=3):  # the consumer stops early: the reader thread must end too
        if i == 2:
            break
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_sources(tmp_path):
    from sdconet.data.image_io import write_image

    im = scene(60, 40, 10, n=2)
    src = ArraySource(im, "mem")
    assert isinstance(src, SceneSource) and (src.width, src.height, src.georef) == (60, 40, None)
    np.testing.assert_array_equal(src.read((10, 5, 30, 25)), im[5:25, 10:30])
    with pytest.raises(ValueError, match="mem: window"):
        src.read((50, 0, 70, 10))
    with pytest.raises(ValueError, match="uint8 RGB"):
        ArraySource(np.zeros((4, 4), np.uint8), "grey")
    write_image(tmp_path / "a.png", im)
    opened = open_scene(tmp_path / "a.png")
    assert isinstance(opened, ImageSource) and opened.key == str(tmp_path / "a.png")
    np.testing.assert_array_equal(opened.read((0, 0, 60, 40)), im)
    with pytest.raises(ImageReadError, match="missing.png"):
        open_scene(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="unexpected keyword"):
        open_scene(tmp_path / "a.png", colours=(1, 2, 3))
    np.testing.assert_array_equal(
        open_scene(tmp_path / "a.png", bands=(3, 2, 1)).read((0, 0, 60, 40)), im[..., ::-1]
    )
