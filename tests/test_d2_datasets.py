"""Dataset registration: split datasets under $SDCONET_DATASETS, idempotent, with thing_classes; synthetic on demand."""

import pytest

pytest.importorskip("detectron2")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from sdconet.d2 import register_sdconet_datasets  # noqa: E402
from sdconet.d2.datasets import datasets_root  # noqa: E402
from sdconet.data.readers import DOTA15_CLASSES, HRRSD_CLASSES, NWPU_VHR10_CLASSES  # noqa: E402
from sdconet.data.synthetic import DEFAULT_NUM_TEST  # noqa: E402

NAMES = [
    "nwpu_vhr10_split_train", "nwpu_vhr10_split_test", "dota15_split_train", "dota15_split_val",
    "hrrsd_split_train", "hrrsd_split_test", "sdconet_synthetic_train", "sdconet_synthetic_test",
]  # fmt: skip


def _unregister():
    for n in NAMES:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


@pytest.fixture
def fresh_registry():
    _unregister()
    yield
    _unregister()
    register_sdconet_datasets()  # restore the import-time registration for other tests


def test_import_registers_everything_with_classes():
    assert set(NAMES) <= set(DatasetCatalog.list())
    assert MetadataCatalog.get("nwpu_vhr10_split_test").thing_classes == list(NWPU_VHR10_CLASSES)
    assert len(MetadataCatalog.get("dota15_split_val").thing_classes) == len(DOTA15_CLASSES) == 16
    assert len(MetadataCatalog.get("hrrsd_split_train").thing_classes) == len(HRRSD_CLASSES) == 13
    assert register_sdconet_datasets() == []  # idempotent


def test_root_from_environment_and_lazy_synthetic(fresh_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("SDCONET_DATASETS", str(tmp_path))
    assert datasets_root() == str(tmp_path)
    assert sorted(register_sdconet_datasets()) == sorted(NAMES)
    assert register_sdconet_datasets() == []
    meta = MetadataCatalog.get("hrrsd_split_test")
    assert meta.json_file == str(tmp_path / "hrrsd_split" / "annotations" / "instances_test.json")
    assert (
        meta.image_root == str(tmp_path / "hrrsd_split" / "test" / "images") and meta.evaluator_type == "coco"
    )
    synth = tmp_path / "sdconet_synthetic"
    assert not synth.exists()  # nothing generated until used
    dicts = DatasetCatalog.get("sdconet_synthetic_test")
    assert len(dicts) == DEFAULT_NUM_TEST == 32 and (synth / "annotations" / "instances_test.json").exists()
    assert MetadataCatalog.get("sdconet_synthetic_test").thing_classes == ["vehicle", "plane", "tank"]
    assert {a["category_id"] for d in dicts for a in d["annotations"]} <= {0, 1, 2}
