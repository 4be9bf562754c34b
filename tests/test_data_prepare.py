"""The split writer: bad input, determinism, idempotence, no split leak, dry run, LR copies, workers."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdconet.data.degradation import degrade
from sdconet.data.image_io import read_image_rgb
from sdconet.data.layout import lr_image_root, scenes_json_path, sources_path, split_paths
from sdconet.data.prepare import TilingOptions, prepare_split_dataset
from sdconet.data.records import SourceDataset, SourceImage, SourceObject
from sdconet.data.split import check_disjoint, split_by_source

OPTS = TilingOptions(tile_size=64, overlap=16)


def _dataset(root, n=6, corrupt=False):
    """n scenes of varied sizes (some smaller than a tile) with a few objects each."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        w, h = int(rng.integers(40, 150)), int(rng.integers(40, 150))
        path = root / f"scene{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
        objs = []
        for _ in range(3):
            bw = int(rng.integers(4, 30))
            x, y = float(rng.integers(0, w - bw)), float(rng.integers(0, h - 8))
            objs.append(SourceObject((x, y, x + bw, y + 8.0), int(rng.integers(2))))
        images.append(SourceImage(f"scene{i}", str(path), objs, rel_path=path.name))
    if corrupt:
        data = Path(images[1].path).read_bytes()
        Path(images[1].path).write_bytes(data[: len(data) // 2])  # truncated JPEG
        Path(images[2].path).write_bytes(b"garbage")
        images[3].objects += [
            SourceObject((-5.0, -5.0, 10.0, 10.0), 0),  # partly outside: clipped
            SourceObject((20.0, 20.0, 20.0, 30.0), 0),  # zero area: dropped
            SourceObject((30.0, 30.0, 25.0, 40.0), 1),  # inverted: dropped
        ]
    return SourceDataset("toy", ("car", "ship"), images)


def _splits(ds):
    return split_by_source([im.image_id for im in ds.images], 0.5, seed=3)


def _run(ds, out, **kw):
    return prepare_split_dataset(ds, out, _splits(ds), kw.pop("options", OPTS), progress=False, **kw)


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_layout_fields_and_mapping_back_to_the_scene(tmp_path):
    ds = _dataset(tmp_path)
    result = _run(ds, tmp_path / "out")
    by_id = {im.image_id: im for im in ds.images}
    for split in ("train", "test"):
        json_path, image_root = split_paths(tmp_path / "out", split)
        coco = json.loads(Path(json_path).read_text())
        assert coco == result.coco[split]
        assert [c["id"] for c in coco["categories"]] == [1, 2]
        for im in coco["images"]:
            tile = read_image_rgb(Path(image_root) / im["file_name"])
            assert tile.shape == (im["height"], im["width"], 3) == (64, 64, 3)
            scene = read_image_rgb(by_id[im["source_image"]].path)
            vw, vh = im["width"] - im["pad_w"], im["height"] - im["pad_h"]
            x, y = im["tile_x"], im["tile_y"]
            np.testing.assert_array_equal(tile[:vh, :vw], scene[y : y + vh, x : x + vw])
            assert (tile[vh:] == 0).all() and (tile[:, vw:] == 0).all()
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert ann["area"] == w * h and ann["iscrowd"] == 0 and w > 0 and h > 0
            assert ann["truncated"] in (0, 1) and ann["difficult"] == 0
        scenes = json.loads(Path(scenes_json_path(tmp_path / "out", split)).read_text())
        assert {im["source_image"] for im in scenes["images"]} == set(_splits(ds)[split])
    assert (tmp_path / "out" / "stats.json").is_file() and (tmp_path / "out" / "stats.md").is_file()


def test_split_never_leaks_a_source_image(tmp_path):
    ds = _dataset(tmp_path)
    _run(ds, tmp_path / "out")
    listed = {s: Path(sources_path(tmp_path / "out", s)).read_text().split() for s in ("train", "test")}
    assert not set(listed["train"]) & set(listed["test"])
    assert sorted(listed["train"] + listed["test"]) == sorted(im.image_id for im in ds.images)
    for split in ("train", "test"):
        coco = json.loads(Path(split_paths(tmp_path / "out", split)[0]).read_text())
        assert {im["source_image"] for im in coco["images"]} <= set(listed[split])
    with pytest.raises(ValueError, match="scene0"):
        prepare_split_dataset(ds, None, {"train": ["scene0"], "test": ["scene0"]}, OPTS, progress=False)
    with pytest.raises(ValueError):
        check_disjoint({"a": ["x", "y"], "b": ["y"]})


def test_split_by_source_is_seeded_and_complete():
    ids = [f"{i:03d}" for i in range(650)]
    a, b = split_by_source(ids, 0.7, seed=0), split_by_source(list(reversed(ids)), 0.7, seed=0)
    assert a == b and len(a["train"]) == 455 and len(a["test"]) == 195
    assert split_by_source(ids, 0.7, seed=1) != a


def test_deterministic_and_idempotent(tmp_path):
    ds = _dataset(tmp_path)
    _run(ds, tmp_path / "a")
    _run(ds, tmp_path / "b")
    first = _tree(tmp_path / "a")
    assert first == _tree(tmp_path / "b")  # two runs: identical json, tiles, lists and stats
    _run(ds, tmp_path / "a")  # re-run into the same folder
    assert _tree(tmp_path / "a") == first
    _run(ds, tmp_path / "a", skip_existing=True)
    assert _tree(tmp_path / "a") == first


def test_worker_processes_give_the_same_output(tmp_path):
    ds = _dataset(tmp_path, n=4)
    one = _run(ds, None)
    two = _run(ds, None, workers=2)
    assert one.coco == two.coco and one.stats == two.stats


def test_bad_input_is_reported_skipped_and_counted(tmp_path):
    ds = _dataset(tmp_path, corrupt=True)
    result = _run(ds, tmp_path / "out")
    failed = {Path(p).name for p, _ in result.failed}
    assert failed == {"scene1.jpg", "scene2.jpg"}
    issues = result.stats["issues"]
    assert issues["unreadable_images"] == 2 and issues["boxes_clipped"] == 1 and issues["boxes_dropped"] == 2
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert {Path(f["path"]).name for f in on_disk["failed_images"]} == failed
    assert all(str(tmp_path) in f["reason"] for f in on_disk["failed_images"])  # the message names the path
    sources = {im["source_image"] for c in result.coco.values() for im in c["images"]}
    assert "scene1" not in sources and "scene3" in sources


def test_dry_run_counts_equal_the_full_run_and_write_nothing(tmp_path):
    ds = _dataset(tmp_path)
    dry = _run(ds, None)
    full = _run(ds, tmp_path / "out")
    assert dry.coco == full.coco and dry.stats == full.stats and dry.written == 0
    assert full.written == sum(len(c["images"]) for c in full.coco.values())
    assert not (tmp_path / "never").exists()


def test_lr_copies_use_the_one_degradation(tmp_path):
    ds = _dataset(tmp_path, n=2)
    options = TilingOptions(tile_size=64, overlap=16, write_lr=True, lr_scale=2)
    result = _run(ds, tmp_path / "out", options=options)
    split = next(s for s, c in result.coco.items() if c["images"])
    name = result.coco[split]["images"][0]["file_name"]
    hr = read_image_rgb(Path(split_paths(tmp_path / "out", split)[1]) / name)
    lr = read_image_rgb(Path(lr_image_root(tmp_path / "out", split, 2)) / name)
    assert lr.shape == (32, 32, 3)
    np.testing.assert_array_equal(lr, degrade(hr, 2))


def test_drop_empty_and_no_pad_options(tmp_path):
    ds = _dataset(tmp_path)
    base = _run(ds, None).stats["total"]
    opts = TilingOptions(tile_size=64, overlap=16, keep_empty=False, pad=False)
    trimmed = _run(ds, None, options=opts)
    assert trimmed.stats["total"]["empty_images"] == 0
    assert trimmed.stats["total"]["objects"] == base["objects"]
    assert trimmed.stats["total"]["images"] == base["images"] - base["empty_images"]
    for coco in trimmed.coco.values():
        for im in coco["images"]:
            assert im["pad_w"] == im["pad_h"] == 0 and im["width"] <= 64 and im["height"] <= 64


@pytest.mark.parametrize(
    "kwargs",
    [{"overlap": 64}, {"tile_size": 0}, {"min_visible": 1.5}, {"image_ext": ".gif"}, {"lr_scale": 0}],
)
def test_bad_tiling_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        TilingOptions(**dict({"tile_size": 64, "overlap": 16}, **kwargs))
