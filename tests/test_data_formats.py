"""Readers and prepare tools for NWPU VHR-10, DOTA, HRRSD and COCO, on small fixtures in the real formats."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdconet.data.errors import AnnotationParseError, UnknownClassError
from sdconet.data.layout import split_paths
from sdconet.data.readers import (
    DOTA15_CLASSES,
    HRRSD_CLASSES,
    NWPU_VHR10_CLASSES,
    read_coco,
    read_dota,
    read_hrrsd,
    read_nwpu_vhr10,
)

REPO = Path(__file__).resolve().parents[1]


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save(path, w, h, seed=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


# ---------------------------------------------------------------- NWPU VHR-10


def _nwpu(root):
    _save(root / "positive_image_set" / "001.jpg", 300, 200, 1)
    _save(root / "positive_image_set" / "002.jpg", 150, 120, 2)
    _save(root / "negative_image_set" / "001.jpg", 100, 100, 3)
    gt = root / "ground_truth"
    gt.mkdir(parents=True)
    # the released files have trailing spaces, CRLF endings, blank lines and spaces inside the brackets
    (gt / "001.txt").write_bytes(b"(10,20),(60,80),1 \r\n\r\n( 100, 30),(140 ,70),10\r\n")
    (gt / "002.txt").write_text("(5,5),(25,25),3\n")
    return root


def test_nwpu_reader_parses_the_released_quirks(tmp_path):
    ds = read_nwpu_vhr10(_nwpu(tmp_path / "nwpu"))
    assert ds.class_names == NWPU_VHR10_CLASSES and len(ds.class_names) == 10
    assert [im.image_id for im in ds.images] == ["001", "002"]
    objs = ds.images[0].objects
    assert [o.box for o in objs] == [(10.0, 20.0, 60.0, 80.0), (100.0, 30.0, 140.0, 70.0)]
    assert [ds.class_names[o.category] for o in objs] == ["airplane", "vehicle"]
    with_neg = read_nwpu_vhr10(tmp_path / "nwpu", include_negative=True)
    assert [im.image_id for im in with_neg.images] == ["001", "002", "neg_001"]
    assert with_neg.images[-1].objects == []


def test_nwpu_bad_line_names_file_and_line_or_is_counted(tmp_path):
    root = _nwpu(tmp_path / "nwpu")
    (root / "ground_truth" / "002.txt").write_text("(5,5),(25,25),3\n(5,5),(25,x),3\n")
    with pytest.raises(AnnotationParseError) as info:
        read_nwpu_vhr10(root)
    assert info.value.line_number == 2 and "002.txt:2" in str(info.value)
    ds = read_nwpu_vhr10(root, lenient=True)
    assert ds.issues["unparsed_lines"] == 1 and len(ds.images[1].objects) == 1


def test_nwpu_unknown_class_lists_the_known_ones(tmp_path):
    root = _nwpu(tmp_path / "nwpu")
    (root / "ground_truth" / "002.txt").write_text("(5,5),(25,25),11\n")
    with pytest.raises(UnknownClassError, match="airplane") as info:
        read_nwpu_vhr10(root, lenient=True)
    assert "002.txt:1" in str(info.value)


def test_prepare_nwpu_cli_writes_the_layout(tmp_path):
    src, out = _nwpu(tmp_path / "nwpu"), tmp_path / "out"
    args = ["--src", str(src), "--out", str(out), "--tile-size", "128", "--overlap", "28", "--workers", "1"]
    assert _tool("prepare_nwpu_vhr10").main(args + ["--quiet", "--train-ratio", "0.5"]) == 0
    json_path, image_root = split_paths(out, "train")
    train = json.loads(Path(json_path).read_text())
    test = json.loads(Path(split_paths(out, "test")[0]).read_text())
    assert [c["name"] for c in train["categories"]] == list(NWPU_VHR10_CLASSES)
    sources = {im["source_image"] for part in (train, test) for im in part["images"]}
    assert sources == {"001", "002"}
    for im in train["images"]:
        size = Image.open(Path(image_root) / im["file_name"]).size
        assert size == (im["width"], im["height"]) == (128, 128)
    assert (out / "stats.md").read_text().startswith("# nwpu_vhr10")


# ---------------------------------------------------------------- DOTA


def _dota(root):
    _save(root / "train" / "images" / "P0001.png", 260, 200, 1)
    _save(root / "val" / "images" / "P0002.png", 120, 90, 2)
    (root / "train" / "labelTxt").mkdir(parents=True)
    (root / "val" / "labelTxt").mkdir(parents=True)
    (root / "train" / "labelTxt" / "P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.146343590398\n"
        "10.5 20 50 22 48 60 8 58 small-vehicle 0\n"
        "100 100 140 100 140 130 100 130 container-crane 1\n"
        "200 10 230 10 230 40 200 40 plane\n"
    )
    (root / "val" / "labelTxt" / "P0002.txt").write_text("gsd:null\n5 5 25 5 25 25 5 25 ship 0\n")
    return root


def test_dota_reader_makes_horizontal_boxes_and_keeps_difficult(tmp_path):
    ds = read_dota(_dota(tmp_path / "dota"))
    assert ds.class_names == DOTA15_CLASSES and len(DOTA15_CLASSES) == 16
    assert ds.official_splits == {"train": ["P0001"], "val": ["P0002"]}
    objs = ds.images[0].objects
    assert objs[0].box == (8.0, 20.0, 50.0, 60.0) and not objs[0].difficult
    assert ds.class_names[objs[1].category] == "container-crane" and objs[1].difficult
    assert ds.class_names[objs[2].category] == "plane" and not objs[2].difficult
    with pytest.raises(UnknownClassError, match="helicopter"):
        read_dota(tmp_path / "dota", version="1.0")  # container-crane is v1.5 only


def test_dota_bad_line_is_an_error_unless_lenient(tmp_path):
    root = _dota(tmp_path / "dota")
    with open(root / "val" / "labelTxt" / "P0002.txt", "a") as f:
        f.write("1 2 3 plane 0\n")
    with pytest.raises(AnnotationParseError, match="P0002.txt:3"):
        read_dota(root)
    assert read_dota(root, lenient=True).issues["unparsed_lines"] == 1


def test_prepare_dota_cli_keeps_official_splits_and_difficult(tmp_path):
    src, out = _dota(tmp_path / "dota"), tmp_path / "out"
    args = ["--src", str(src), "--out", str(out), "--tile-size", "128", "--overlap", "28", "--quiet"]
    assert _tool("prepare_dota").main(args) == 0
    train = json.loads(Path(split_paths(out, "train")[0]).read_text())
    val = json.loads(Path(split_paths(out, "val")[0]).read_text())
    assert {im["source_image"] for im in train["images"]} == {"P0001"}
    assert {im["source_image"] for im in val["images"]} == {"P0002"}
    assert len(train["categories"]) == 16
    crane_id = DOTA15_CLASSES.index("container-crane") + 1
    crane = [a for a in train["annotations"] if a["category_id"] == crane_id]
    assert crane and all(a["difficult"] == 1 for a in crane)
    (small,) = val["images"]  # 120x90 < 128: one zero-padded tile
    assert (small["width"], small["height"], small["pad_w"], small["pad_h"]) == (128, 128, 8, 38)
    assert (out / "train_sources.txt").read_text() == "P0001\n"


# ---------------------------------------------------------------- HRRSD


_VOC = """<annotation><filename>{name}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
_VOC_OBJ = "<object><name>{cls}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>\
<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"


def _hrrsd(root, with_sets=True):
    opt = root / "OPT2017"
    boxes = {"00001": [("T junction", 11, 21, 60, 70)], "00002": [("parking lot", 1, 1, 40, 30)], "00003": []}
    for i, (name, objs) in enumerate(boxes.items()):
        _save(opt / "JPEGImages" / f"{name}.jpg", 150, 100, i)
        (opt / "Annotations").mkdir(parents=True, exist_ok=True)
        xml_objs = "".join(_VOC_OBJ.format(cls=c, x1=a, y1=b, x2=x, y2=y) for c, a, b, x, y in objs)
        xml = _VOC.format(name=name, w=150, h=100, objects=xml_objs)
        (opt / "Annotations" / f"{name}.xml").write_text(xml)
    if with_sets:
        sets = opt / "ImageSets" / "Main"
        sets.mkdir(parents=True)
        (sets / "trainval.txt").write_text("00001\n00003\n")
        (sets / "test.txt").write_text("00002\n")
    return root


def test_hrrsd_reader_voc_boxes_and_official_split(tmp_path):
    ds = read_hrrsd(_hrrsd(tmp_path / "hrrsd"))
    assert ds.class_names == HRRSD_CLASSES and len(HRRSD_CLASSES) == 13
    assert ds.official_splits == {"train": ["00001", "00003"], "test": ["00002"]}
    (obj,) = ds.images[0].objects
    assert obj.box == (10.0, 20.0, 60.0, 70.0)  # VOC 1-based inclusive -> continuous
    assert ds.class_names[obj.category] == "T junction"
    assert (ds.images[0].width, ds.images[0].height) == (150, 100)


def test_hrrsd_unknown_class_and_malformed_xml(tmp_path):
    root = _hrrsd(tmp_path / "hrrsd")
    ann = root / "OPT2017" / "Annotations"
    (ann / "00003.xml").write_text(_VOC.format(name="00003", w=150, h=100, objects=_VOC_OBJ.format(
        cls="submarine", x1=1, y1=1, x2=5, y2=5)))  # fmt: skip
    with pytest.raises(UnknownClassError, match="parking lot"):
        read_hrrsd(root)
    (ann / "00003.xml").write_text("<annotation><object>")
    with pytest.raises(AnnotationParseError, match="00003.xml"):
        read_hrrsd(root)
    assert read_hrrsd(root, lenient=True).issues["unparsed_files"] == 1


def test_prepare_hrrsd_cli_and_random_fallback(tmp_path):
    out = tmp_path / "out"
    args = ["--src", str(_hrrsd(tmp_path / "hrrsd")), "--out", str(out), "--quiet", "--workers", "1"]
    assert _tool("prepare_hrrsd").main(args) == 0
    train = json.loads(Path(split_paths(out, "train")[0]).read_text())
    assert [im["width"] for im in train["images"]] == [1024, 1024]  # preset 1024, padded
    assert (out / "test_sources.txt").read_text() == "00002\n"
    out2 = tmp_path / "out2"
    args = ["--src", str(_hrrsd(tmp_path / "nosets", with_sets=False)), "--out", str(out2), "--quiet"]
    args += ["--train-ratio", "0.67", "--tile-size", "128", "--overlap", "0"]
    assert _tool("prepare_hrrsd").main(args) == 0
    stats = json.loads((out2 / "stats.json").read_text())
    assert stats["splits"]["train"]["source_images"] == 2 and stats["splits"]["test"]["source_images"] == 1


# ---------------------------------------------------------------- COCO


def _coco(root):
    _save(root / "images" / "a.png", 100, 80, 1)
    _save(root / "images" / "sub" / "b.png", 90, 90, 2)
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": 100, "height": 80},
                   {"id": 9, "file_name": "sub/b.png", "width": 90, "height": 90}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 20, "bbox": [10, 10, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 9, "category_id": 5, "bbox": [0, 0, 30, 30], "iscrowd": 0},
            {"id": 3, "image_id": 9, "category_id": 5, "bbox": [40, 40, 30, 30], "iscrowd": 1},
        ],
        "categories": [{"id": 20, "name": "boat"}, {"id": 5, "name": "car"}],
    }  # fmt: skip
    (root / "ann.json").write_text(json.dumps(data))
    return root


def test_coco_reader_renumbers_categories_and_skips_crowd(tmp_path):
    ds = read_coco(_coco(tmp_path) / "ann.json", tmp_path / "images")
    assert ds.class_names == ("car", "boat")  # ordered by category id
    assert [im.image_id for im in ds.images] == ["a", "sub/b"]
    assert ds.images[0].objects[0].box == (10.0, 10.0, 30.0, 20.0) and ds.images[0].objects[0].category == 1
    assert len(ds.images[1].objects) == 1 and ds.issues["crowd_skipped"] == 1


def test_coco_unknown_category_is_an_error(tmp_path):
    root = _coco(tmp_path)
    data = json.loads((root / "ann.json").read_text())
    data["annotations"][0]["category_id"] = 99
    (root / "ann.json").write_text(json.dumps(data))
    with pytest.raises(UnknownClassError, match="5=car"):
        read_coco(root / "ann.json", root / "images")


def test_prepare_coco_cli_with_named_splits(tmp_path):
    root, out = _coco(tmp_path), tmp_path / "out"
    data = json.loads((root / "ann.json").read_text())
    a = dict(data, images=data["images"][:1], annotations=data["annotations"][:1])
    b = dict(data, images=data["images"][1:], annotations=data["annotations"][1:])
    (root / "a.json").write_text(json.dumps(a))
    (root / "b.json").write_text(json.dumps(b))
    args = ["--json", f"train={root / 'a.json'}", "--json", f"test={root / 'b.json'}"]
    args += ["--image-root", str(root / "images"), "--out", str(out), "--tile-size", "64", "--overlap", "0"]
    assert _tool("prepare_coco").main(args + ["--quiet"]) == 0
    test = json.loads(Path(split_paths(out, "test")[0]).read_text())
    names = {im["file_name"] for im in test["images"]}
    assert names == {"sub_b__0_0.png", "sub_b__26_0.png", "sub_b__0_26.png", "sub_b__26_26.png"}
    assert [c["name"] for c in test["categories"]] == ["car", "boat"]


def test_cli_reports_bad_input_as_one_error_line(tmp_path, capsys):
    root = _nwpu(tmp_path / "nwpu")
    (root / "ground_truth" / "002.txt").write_text("(5,5),(25,25),0\n")
    code = _tool("prepare_nwpu_vhr10").main(["--src", str(root), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "002.txt:1" in err and "10=vehicle" in err
    args = ["--src", str(tmp_path), "--out", str(tmp_path / "o"), "--overlap", "2000"]
    code = _tool("prepare_dota").main(args)
    assert code == 2 and "overlap" in capsys.readouterr().err
