"""Every yaml under projects/SDCoNet/configs loads and translates into a valid core config."""

from pathlib import Path

import pytest

pytest.importorskip("detectron2")

from sdconet.d2 import get_sdconet_cfg, sdconet_config_from_cfg  # noqa: E402
from sdconet.modeling.config import SDCoNetConfig  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "projects" / "SDCoNet" / "configs"
# SDCoNet configs; configs/baselines holds detectron2's own detectors (tests/test_d2_baselines.py)
YAMLS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "baselines" not in p.relative_to(CONFIG_DIR).parts)


def _load(path):
    cfg = get_sdconet_cfg()
    cfg.merge_from_file(str(path))
    return cfg


def test_configs_exist():
    names = {p.name for p in YAMLS}
    assert "Base-SDCoNet.yaml" in names and len(YAMLS) >= 14


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_yaml_loads_and_builds_a_valid_core_config(path):
    cfg = _load(path)
    assert cfg.MODEL.META_ARCHITECTURE == "SDCoNet"
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model" and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.1
    assert not cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    assert 0 < cfg.SOLVER.SR_LR_MULTIPLIER <= 1
    if cfg.MODEL.SDCONET.NUM_CLASSES == 0:
        cfg.MODEL.SDCONET.NUM_CLASSES = 3
    core = sdconet_config_from_cfg(cfg)  # validates every field
    assert core.variant == cfg.MODEL.SDCONET.VARIANT


def test_defaults_translate_to_the_core_defaults():
    cfg = get_sdconet_cfg()
    cfg.MODEL.SDCONET.NUM_CLASSES = 10
    assert sdconet_config_from_cfg(cfg) == SDCoNetConfig()


def test_unresolved_num_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        sdconet_config_from_cfg(get_sdconet_cfg())


def test_dataset_configs_and_ablations():
    def get(rel):
        return _load(CONFIG_DIR / rel)

    nwpu = get("sdconet_swinT_x2_nwpu.yaml")
    assert nwpu.MODEL.SDCONET.NUM_CLASSES == 10 and list(nwpu.MODEL.SWIN.IMG_SIZE) == [256, 256]
    assert nwpu.DATASETS.TRAIN == ("nwpu_vhr10_split_train",)
    assert get("sdconet_swinT_x2_dota15.yaml").MODEL.SDCONET.NUM_CLASSES == 16
    assert get("sdconet_swinT_x2_hrrsd.yaml").MODEL.SDCONET.NUM_CLASSES == 13
    variants = {get(f"ablations/{n}_swinT_x2_nwpu.yaml").MODEL.SDCONET.VARIANT for n in (
        "dino", "dino_saliency", "dino_sr", "sdconet_serial")}  # fmt: skip
    assert variants == {"dino", "dino_saliency", "dino_sr", "serial"}
    assert get("ablations/alpha_fixed_nwpu.yaml").MODEL.SDCONET.SALIENCY.ALPHA_MODE == "fixed"
    assert get("ablations/alpha_none_nwpu.yaml").MODEL.SDCONET.SALIENCY.ALPHA_MODE == "none"
    for mode in ("none", "layer", "level"):
        assert get(f"ablations/filter_{mode}_nwpu.yaml").MODEL.SDCONET.SALIENCY.FILTER_MODE == mode
    official = get("ablations/official_behaviour_nwpu.yaml")
    assert official.SOLVER.SR_LR_MULTIPLIER == 1.0
    official.MODEL.SDCONET.NUM_CLASSES = 10
    core = sdconet_config_from_cfg(official)
    assert core.saliency_level_bounds == (64.0, 128.0, 256.0) and not core.saliency_always_mark_center
    assert (
        core.saliency_target == "cone"
        and core.value_mode == "initial"
        and core.background_mode == "per_layer"
    )
    assert get("ablations/sdconet_serial_swinT_x2_nwpu.yaml").SOLVER.SR_START_EPOCH == 0
    # HR upper bounds: the detection-only variant on the stored HR tiles (no degradation), twice the LR tile size
    for ds in ("nwpu", "dota15", "hrrsd"):
        hr = get(f"hr_upper_bound/dino_swinT_hr_{ds}.yaml")
        lr = get(f"sdconet_swinT_x2_{ds}.yaml")
        assert hr.MODEL.SDCONET.VARIANT == "dino" and hr.INPUT.LR_MODE == "real"
        assert list(hr.MODEL.SWIN.IMG_SIZE) == [2 * v for v in lr.MODEL.SWIN.IMG_SIZE]
        assert hr.DATASETS.TRAIN == lr.DATASETS.TRAIN and hr.DATASETS.TEST == lr.DATASETS.TEST


def test_every_core_field_has_a_config_key():
    from dataclasses import fields

    from sdconet.d2.config import core_config_kwargs
    from sdconet.modeling.config import SRConfig, SwinConfig

    cfg = get_sdconet_cfg()
    cfg.MODEL.SDCONET.NUM_CLASSES = 4
    kw = core_config_kwargs(cfg)
    fixed = {"num_feature_levels"}  # SDCoNet always uses 4 levels (strides 8/16/32/64): no key
    assert set(kw) == {f.name for f in fields(SDCoNetConfig)} - fixed
    assert set(vars(kw["swin"])) == {f.name for f in fields(SwinConfig)}
    assert set(vars(kw["sr"])) == {f.name for f in fields(SRConfig)}
