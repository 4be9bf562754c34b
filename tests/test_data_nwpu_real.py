"""The real NWPU VHR-10 set reproduces the paper's Table I counts (skipped when the data is absent).

The data is looked up at $NWPU_VHR10_ROOT, else <repo>/../shared/data/nwpu_vhr10. Counts use the
count-only (dry-run) path of the same code; one full write runs on a handful of images.
"""

import json
import os
from pathlib import Path

import pytest

from sdconet.data.layout import split_paths
from sdconet.data.prepare import TilingOptions, prepare_split_dataset
from sdconet.data.readers import read_nwpu_vhr10
from sdconet.data.split import split_by_source
from sdconet.data.tiler import PRESETS

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("NWPU_VHR10_ROOT") or REPO.parent / "shared" / "data" / "nwpu_vhr10")

pytestmark = pytest.mark.skipif(
    not (ROOT / "positive_image_set").is_dir(), reason=f"NWPU VHR-10 not found at {ROOT}"
)

PAPER_PER_CLASS = {
    "airplane": 1827,
    "ship": 843,
    "storage tank": 1623,
    "baseball diamond": 1111,
    "tennis court": 1660,
    "basketball court": 459,
    "ground track field": 462,
    "harbor": 607,
    "bridge": 352,
    "vehicle": 1445,
}


@pytest.fixture(scope="module")
def nwpu():
    return read_nwpu_vhr10(ROOT)


def _count(ds, overlap):
    splits = split_by_source([im.image_id for im in ds.images], 0.7, seed=0)
    return prepare_split_dataset(ds, None, splits, TilingOptions(512, overlap), progress=False)


def test_source_annotations(nwpu):
    assert len(nwpu.images) == 650
    assert sum(len(im.objects) for im in nwpu.images) == 3896
    assert not nwpu.issues


def test_table_one_counts_with_overlap_200(nwpu):
    assert PRESETS["nwpu"] == (512, 200)
    result = _count(nwpu, 200)
    total = result.stats["total"]
    assert total["images"] == 3631 and total["objects"] == 10389
    assert total["per_class"] == PAPER_PER_CLASS and sum(PAPER_PER_CLASS.values()) == 10389
    assert result.stats["splits"]["train"]["source_images"] == 455
    assert result.stats["splits"]["test"]["source_images"] == 195
    assert result.stats["issues"]["boxes_clipped"] == 0 and not result.failed


def test_overlap_100_as_the_text_says_gives_fewer_tiles(nwpu):
    assert _count(nwpu, 100).stats["total"]["images"] == 3241


def test_full_write_on_a_handful_of_images(nwpu, tmp_path):
    few = [im.image_id for im in nwpu.images[:4]]
    splits = {"train": few[:3], "test": few[3:]}
    dry = prepare_split_dataset(nwpu, None, splits, TilingOptions(512, 200), progress=False)
    full = prepare_split_dataset(nwpu, tmp_path, splits, TilingOptions(512, 200), progress=False)
    assert full.coco == dry.coco
    for split in splits:
        json_path, image_root = split_paths(tmp_path, split)
        coco = json.loads(Path(json_path).read_text())
        files = sorted(p.name for p in Path(image_root).iterdir())
        assert files == sorted(im["file_name"] for im in coco["images"])
