"""Class 4 of issue 12: inputs outside the documented contract get a one-line error naming the file, line or
argument (DOTA lines with the wrong number of coordinates, corrupt tiles in training, model inputs of the wrong dtype
/ empty / with a mismatched HR target, a ground truth that is not JSON). Multispectral band selection is issue 15's.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdconet.data.errors import AnnotationParseError
from sdconet.data.readers import read_dota
from sdconet.data.readers._common import IssueLog
from sdconet.data.readers.dota import DOTA15_CLASSES, parse_dota_label_file
from sdconet.data.records import ClassBook
from sdconet.modeling.build import build_sdconet
from sdconet.modeling.config import SDCoNetConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "line,reason",
    [
        ("1 2 3 4 5 6 7 plane 0", "expected 8 coordinates before the class name, found 7"),
        ("1 2 3 4 5 6 7 8 9 plane 0", "expected 8 coordinates before the class name, found 9"),
        (
            "1 2 3 4 5 6 7 8 plane 0 extra",
            "expected 'class [difficult]' after the 8 coordinates, found 3 fields",
        ),
        ("1 2 3 4 5 6 7 8 plane x", "difficult must be 0 or 1, got 'x'"),
    ],
)
def test_dota_lines_with_the_wrong_layout_say_what_is_wrong(tmp_path, line, reason):
    label = tmp_path / "P0001.txt"
    label.write_text(f"gsd:0.1\n{line}\n")
    with pytest.raises(AnnotationParseError) as err:
        parse_dota_label_file(label, ClassBook(DOTA15_CLASSES), IssueLog())
    assert str(err.value).startswith(f"{label}:2: {reason}")
    # --lenient: skipped and counted, the run goes on.
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "labelTxt").mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "train" / "images" / "P0001.png")
    (tmp_path / "train" / "labelTxt" / "P0001.txt").write_text(f"{line}\n0 0 9 0 9 9 0 9 ship\n")
    ds = read_dota(tmp_path, splits=["train"], lenient=True)
    assert ds.issues["unparsed_lines"] == 1 and len(ds.images[0].objects) == 1


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_sdconet(SDCoNetConfig.tiny(num_classes=3))


def _targets(n):
    return [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])} for _ in range(n)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_model_refuses_other_dtypes(tiny, dtype):
    tiny.eval()
    with pytest.raises(ValueError, match=f"images are {dtype} but the model's weights are torch.float32"):
        tiny(torch.zeros(1, 3, 32, 32, dtype=dtype))


def test_model_refuses_an_empty_batch(tiny):
    tiny.eval()
    with pytest.raises(ValueError, match=r"empty batch: images of shape \(0, 3, 32, 32\)"):
        tiny(torch.zeros(0, 3, 32, 32))


def test_model_refuses_hr_images_of_the_wrong_size(tiny):
    tiny.train()
    tiny.set_sr_enabled(True)
    lr = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"hr_images are \(60, 64\), expected exactly 2 x the LR images"):
        tiny(lr, None, _targets(2), torch.zeros(2, 3, 60, 64))  # was silently zero-padded and trained on
    with pytest.raises(ValueError, match="hr_images are torch.float64 but images are torch.float32"):
        tiny(lr, None, _targets(2), torch.zeros(2, 3, 64, 64, dtype=torch.float64))
    losses = tiny(lr, None, _targets(2), torch.zeros(2, 3, 64, 64))  # the right size trains
    assert "loss_sr" in losses and all(torch.isfinite(v) for v in losses.values())
    tiny.eval()


def test_corrupt_tile_in_training_is_named_by_the_mapper(tmp_path):
    pytest.importorskip("detectron2")
    from PIL import Image

    from sdconet.d2.mapper import SDCoNetDatasetMapper
    from sdconet.data.errors import ImageReadError

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    bad = tmp_path / "tile_0042.png"
    bad.write_bytes(good.read_bytes()[:60])  # truncated: PIL says "image file is truncated" without the name
    mapper = SDCoNetDatasetMapper(is_train=True, augmentations=[], sr_scale=2)
    assert mapper({"file_name": str(good), "image_id": 1, "annotations": []})["image"].shape == (3, 16, 16)
    with pytest.raises(ImageReadError, match=r"cannot read image '.*tile_0042.png'"):
        mapper({"file_name": str(bad), "image_id": 2, "annotations": []})


def test_ground_truth_that_is_not_json_is_named(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "tool_evaluate_scenes", ROOT / "tools" / "evaluate_scenes.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / "gt.json").write_text('{"images": [}')
    (tmp_path / "res.json").write_text(json.dumps([]))
    assert tool.main(["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json")]) == 2
    assert f"--gt '{tmp_path / 'gt.json'}':1:" in capsys.readouterr().err
