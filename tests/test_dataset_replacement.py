"""Class 2 of issue 12: a wrong input path never destroys a good dataset.

Every datasets/prepare_*.py tool refuses (before touching anything) a run that finds no usable source image or fewer
than half the sources of the dataset already in --out (``--force`` overrides); the json files, stats and source lists
are staged and swapped in together, so a crash leaves either the old or the new dataset, never a mix.
"""

import json
from pathlib import Path

import pytest
from test_data_formats import _coco, _dota, _hrrsd, _nwpu, _save, _tool

from sdconet.data.prepare import TilingOptions, prepare_split_dataset
from sdconet.data.records import SourceDataset, SourceImage, SourceObject

STAGE_DIR = ".staging"  # sdconet.data.staging.STAGE_DIR


def metadata(out):
    """The dataset's json files, stats and source lists (bytes), as a dict."""
    out = Path(out)
    files = [
        *out.glob("annotations/*.json"),
        *out.glob("*_sources.txt"),
        out / "stats.json",
        out / "stats.md",
    ]
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(files) if p.is_file()}


def check_refused(capsys, code, out, before, *words):
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:"), err
    for word in words:
        assert word in err, err
    assert metadata(out) == before and not (Path(out) / STAGE_DIR).exists()


def test_prepare_coco_with_a_mistyped_image_root_keeps_the_dataset(tmp_path, capsys):
    root, out = _coco(tmp_path), tmp_path / "out"
    args = [
        "--json",
        str(root / "ann.json"),
        "--out",
        str(out),
        "--tile-size",
        "64",
        "--overlap",
        "0",
        "--quiet",
    ]
    assert _tool("prepare_coco").main(args + ["--image-root", str(root / "images")]) == 0
    before = metadata(out)
    assert len(json.loads(before["annotations/instances_train.json"])["images"]) > 0
    code = _tool("prepare_coco").main(args + ["--image-root", str(root / "imgs")])
    check_refused(capsys, code, out, before, "no usable source images", str(root / "imgs"))
    # --force writes what it finds (here: an empty dataset), on purpose.
    assert _tool("prepare_coco").main(args + ["--image-root", str(root / "imgs"), "--force"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["issues"]["unreadable_images"] == 2 and stats["total"]["images"] == 0


def test_prepare_dota_with_src_one_level_too_deep_keeps_the_dataset(tmp_path, capsys):
    src, out = _dota(tmp_path / "dota"), tmp_path / "out"
    args = ["--out", str(out), "--tile-size", "128", "--overlap", "28", "--quiet"]
    assert _tool("prepare_dota").main(args + ["--src", str(src)]) == 0
    before = metadata(out)
    code = _tool("prepare_dota").main(args + ["--src", str(src / "train")])
    check_refused(capsys, code, out, before, "no source images found", "--src")


def test_prepare_nwpu_with_fewer_than_half_the_sources_needs_force(tmp_path, capsys):
    src, out = _nwpu(tmp_path / "nwpu"), tmp_path / "out"
    for i in (3, 4):  # four positive images in all
        _save(src / "positive_image_set" / f"00{i}.jpg", 140, 140, i)
        (src / "ground_truth" / f"00{i}.txt").write_text("(5,5),(25,25),2\n")
    args = ["--src", str(src), "--out", str(out), "--tile-size", "128", "--overlap", "28", "--quiet"]
    assert _tool("prepare_nwpu_vhr10").main(args + ["--train-ratio", "0.5"]) == 0
    before = metadata(out)
    code = _tool("prepare_nwpu_vhr10").main(args + ["--limit", "1"])
    check_refused(capsys, code, out, before, "holds a dataset of 4 source images", "--force")
    assert _tool("prepare_nwpu_vhr10").main(args + ["--limit", "2"]) == 0  # half is enough
    assert _tool("prepare_nwpu_vhr10").main(args + ["--limit", "1", "--force"]) == 0
    sources = [p.read_text() for p in sorted(out.glob("*_sources.txt"))]
    assert "".join(sources).split() == ["001"]  # the earlier run's lists are replaced, none left over
    assert sorted(p.name for p in out.glob("*_sources.txt")) == ["train_sources.txt"]
    assert sorted(p.name for p in (out / "annotations").iterdir()) == [
        "instances_train.json",
        "scenes_train.json",
    ]


def test_prepare_hrrsd_with_most_images_missing_keeps_the_dataset(tmp_path, capsys):
    src, out = _hrrsd(tmp_path / "hrrsd"), tmp_path / "out"
    args = [
        "--src",
        str(src),
        "--out",
        str(out),
        "--tile-size",
        "128",
        "--overlap",
        "0",
        "--quiet",
        "--lenient",
    ]
    assert _tool("prepare_hrrsd").main(args) == 0
    before = metadata(out)
    for name in (
        "00001.jpg",
        "00002.jpg",
    ):  # e.g. images moved away, annotations still there (lenient: skipped)
        (src / "OPT2017" / "JPEGImages" / name).rename(tmp_path / name)
    code = _tool("prepare_hrrsd").main(args)
    check_refused(capsys, code, out, before, "holds a dataset of 3 source images", "only 1 of the 1")


def _toy(root, n=4):
    images = []
    for i in range(n):
        path = root / f"s{i}.png"
        _save(path, 70, 60, i)
        images.append(
            SourceImage(f"s{i}", str(path), [SourceObject((5.0, 5.0, 30.0, 20.0), i % 2)], rel_path=path.name)
        )
    return SourceDataset("toy", ("a", "b"), images)


def _prepare(ds, out, splits=None):
    splits = splits or {"train": [im.image_id for im in ds.images[:3]], "test": [ds.images[3].image_id]}
    return prepare_split_dataset(ds, out, splits, TilingOptions(tile_size=64, overlap=16), progress=False)


def test_unreadable_sources_are_caught_after_tiling_before_the_swap(tmp_path):
    from sdconet.data.errors import DatasetGuardError

    ds, out = _toy(tmp_path), tmp_path / "out"
    _prepare(ds, out)
    before = metadata(out)
    for im in ds.images:
        Path(im.path).write_bytes(b"not an image")  # the files exist, but none can be read
    with pytest.raises(DatasetGuardError, match="none of the 4 source images could be read"):
        _prepare(ds, out)
    assert metadata(out) == before and not (out / STAGE_DIR).exists()


def test_a_crash_leaves_the_old_or_the_new_dataset_never_a_mix(tmp_path, monkeypatch):
    from sdconet.data import staging
    from sdconet.data.staging import recover_staged

    ds, out = _toy(tmp_path), tmp_path / "out"
    _prepare(ds, out)
    old = metadata(out)
    new_splits = {"train": ["s0", "s1"], "test": ["s2", "s3"]}
    _prepare(ds, tmp_path / "clean", new_splits)
    new = metadata(tmp_path / "clean")
    assert new != old

    # 1. A crash while the files are staged (here: writing the statistics): the old dataset is untouched.
    import sdconet.data.prepare as prepare

    def boom(*a, **k):
        raise RuntimeError("crash while writing stats.md")

    monkeypatch.setattr(prepare, "stats_markdown", boom)
    with pytest.raises(RuntimeError, match="crash"):
        _prepare(ds, out, new_splits)
    monkeypatch.undo()
    assert metadata(out) == old and not (out / STAGE_DIR).exists()

    # 2. A crash half way through the swap (after the journal): the next run finishes it; never a mix.
    calls = []
    real_move = staging._move

    def move_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError("killed during the swap")
        return real_move(src, dst)

    monkeypatch.setattr(staging, "_move", move_then_die)
    with pytest.raises(OSError, match="killed"):
        _prepare(ds, out, new_splits)
    monkeypatch.undo()
    assert metadata(out) not in (old, new)  # the state a kill at that moment would leave on disk ...
    assert recover_staged(out) == "rolled forward"  # ... which the next run (or this call) completes
    assert metadata(out) == new and not (out / STAGE_DIR).exists()
    # A staging folder without a journal (killed before the swap) is discarded: the dataset stays as it was.
    (out / STAGE_DIR / "annotations").mkdir(parents=True)
    (out / STAGE_DIR / "annotations" / "instances_train.json").write_text("{}")
    assert recover_staged(out) == "discarded" and metadata(out) == new
